"""Per-pixel classification (land cover) with a light decoder on the encoder's patch features.

    ds = eossl.datasets.load_sample("slovenia_s2")              # image (time, band, y, x), lulc (y, x)
    run = eossl.finetune(model, ds, labels="lulc", task="segmentation", shots=50)  # 50 px per class
    classmap = eossl.predict(run, ds.image.isel(time=0))       # (y, x) class values, the scene's CRS

The labels are a raster on the image's grid (or a Dataset variable). ``shots`` labeled pixels of
every class are drawn for training; every other labeled pixel is held out and scored on the
tiled whole-scene prediction. A stack trains on all its dates with the same labels (land cover
does not change between the dates; the dates add spectral variety).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from eossl import validate as check
from eossl.errors import DataError
from eossl.finetune.heads import build
from eossl.data.patches import tile_size, window_starts
from eossl.device import resolve_device
from eossl.finetune.loop import (LoopConfig, base_of, check_grid, check_out, draw, make_card, metrics_table, predict_tiled,
                                 resolve_classes, save_run, train_loop)
from eossl.finetune.predict import FinetuneRun, predict_scene, stack_values  # noqa: F401 (predict_scene: re-exported)


def image_and_labels(data, labels, what: str = "labels") -> tuple[xr.DataArray, xr.DataArray]:
    """The image and a label raster checked to be on its grid.

    ``data`` is a Dataset (``image`` + label variables) or a DataArray; ``labels`` a DataArray
    (y, x), a variable name, or None for the Dataset's only variable besides ``image``."""
    if isinstance(data, xr.Dataset):
        if "image" not in data:
            raise DataError(f"a Dataset needs an 'image' variable; it has {list(data.data_vars)}")
        image = data["image"]
        if labels is None:
            others = [v for v in data.data_vars if v != "image"]
            if len(others) != 1:
                raise DataError(f"say which variable holds the {what}: labels=NAME, one of {others}")
            labels = others[0]
        if isinstance(labels, str):
            if labels not in data:
                raise DataError(f"the Dataset has no variable {labels!r}; it has {list(data.data_vars)}")
            labels = data[labels]
    else:
        image = data
    if not isinstance(image, xr.DataArray) or not {"band", "y", "x"} <= set(image.dims):
        raise DataError(f"need an image with dims (band, y, x) or (time, band, y, x), got "
                        f"{getattr(image, 'dims', type(image).__name__)}")
    if not isinstance(labels, xr.DataArray):
        if labels is None:
            raise DataError(f"no {what}: pass labels=DataArray (y, x) on the image's grid")
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise DataError(f"{what} must be a 2-D raster (y, x), got shape {labels.shape}")
        labels = xr.DataArray(labels, dims=("y", "x"))
    check_grid(image, labels, what)
    return image, labels.transpose("y", "x")


def fit_dense(task: str, model, inputs, lab: xr.DataArray, *, shots, classes, ignore,
              test_fraction, window, stride, train, last_blocks, steps, batch_size, lr, encoder_lr_scale,
              loss, class_weight, augment, encoder, out, overwrite, device, seed, random_data,
              head) -> FinetuneRun:
    """Shared by segmentation and change detection. ``inputs(card)`` gives the training inputs,
    normalised as the card says: (T, C, H, W) for segmentation (T dates sharing one label raster)
    or (1, 2, C, H, W) for a pair. (A callable: a random base's statistics exist only here.)"""
    cfg = LoopConfig(steps=steps, batch_size=batch_size, lr=lr, encoder_lr_scale=encoder_lr_scale,
                     loss=loss, class_weight=class_weight, train=train, last_blocks=last_blocks,
                     augment=augment, seed=seed)
    dev = resolve_device(device)
    if window is not None:
        window = check.integer("window", window, minimum=1)
    if stride is not None:
        stride = check.integer("stride", stride, minimum=1)
    out = check_out(out, overwrite)
    enc, base_card, base_path = base_of(model, random_data, encoder, seed)
    arr = inputs(base_card)
    values = lab.values
    classes, names, ignored = resolve_classes(values, lab.attrs.get("classes"), classes, ignore)
    index = np.full(values.shape, -1, dtype="int64")  # (H, W) class index, -1 unlabeled
    for i, c in enumerate(classes):
        index[values == c] = i
    unit = "pixel"
    train_px, test_px = draw(index.ravel(), shots, classes, names, np.random.default_rng(seed),
                             test_fraction, unit)
    target = np.full(index.size, -1, dtype="int64")
    target[train_px] = index.ravel()[train_px]
    target = target.reshape(index.shape)  # (H, W) training labels only

    H, W = index.shape
    p = enc.patch_size
    win = window or base_card["encoder"].get("img_size", 64)
    wy, wx = tile_size(H, win, p), tile_size(W, win, p)
    sy, sx = (stride or wy // 2), (stride or wx // 2)
    xs, ys = [], []
    for t in range(arr.shape[0]):
        valid = np.isfinite(arr[t]).all(axis=tuple(range(arr[t].ndim - 2)))  # (H, W)
        date_target = np.where(valid, target, -1)
        for r in window_starts(H, wy, sy):
            for c in window_starts(W, wx, sx):
                tile_t = date_target[r:r + wy, c:c + wx]
                if (tile_t >= 0).any():  # a tile without a training pixel teaches nothing
                    xs.append(np.nan_to_num(arr[t][..., r:r + wy, c:c + wx]))
                    ys.append(tile_t)
    if not xs:
        raise DataError("no training pixel lies on valid (non-NaN) image data")
    x = torch.from_numpy(np.stack(xs))  # (N, C, wy, wx) or (N, 2, C, wy, wx)
    y = torch.from_numpy(np.stack(ys))  # (N, wy, wx)

    ft = build(enc, task, len(classes), head)
    ft.card = make_card(task, base_card, base_path, ft, classes, names, cfg, shots=shots,
                        window=[wy, wx], ignored=[int(v) if isinstance(v, (int, np.integer)) else v for v in ignored])
    history = train_loop(ft, x, y, cfg, dev, desc=f"finetune {task} ({train})")

    # Score the tiled whole-scene prediction on the held-out labeled pixels (of every date).
    truth, pred = [], []
    for t in range(arr.shape[0]):
        probs = predict_tiled(ft, arr[t], window, None, dev, desc=f"score {task}")  # (K, H, W)
        flat = probs.reshape(len(classes), -1)[:, test_px]  # (K, n_test)
        ok = np.isfinite(flat).all(axis=0)
        truth.append(index.ravel()[test_px][ok])
        pred.append(flat[:, ok].argmax(axis=0))
    metrics = metrics_table(np.concatenate(truth), np.concatenate(pred), names)
    path = save_run(out, ft, history, metrics)
    split = {"train": np.unravel_index(np.sort(train_px), index.shape),
             "test": np.unravel_index(np.sort(test_px), index.shape)}
    return FinetuneRun(ft, history, path, metrics, task, split)


def finetune_segmentation(model, data, labels=None, *, shots: int | None = None, classes=None,
                          ignore=None, test_fraction: float = 0.5, window: int | None = None,
                          stride: int | None = None, decoder: str = "patch", hidden: int = 64,
                          train: str = "head", last_blocks: int = 1, steps: int = 150, batch_size: int = 16,
                          lr: float = 1e-3, encoder_lr_scale: float = 0.1, loss: str = "ce",
                          class_weight=None, augment: bool = True, encoder=None, out=None,
                          overwrite: bool = False, device: str = "auto", seed: int = 0) -> FinetuneRun:
    """Train a per-pixel classifier on a scene or stack; see :func:`eossl.finetune`."""
    image, lab = image_and_labels(data, labels)
    return fit_dense("segmentation", model, lambda card: stack_values(image, card), lab, shots=shots, classes=classes, ignore=ignore,
                     test_fraction=test_fraction, window=window, stride=stride, train=train,
                     last_blocks=last_blocks, steps=steps, batch_size=batch_size, lr=lr,
                     encoder_lr_scale=encoder_lr_scale, loss=loss, class_weight=class_weight,
                     augment=augment, encoder=encoder, out=out, overwrite=overwrite, device=device,
                     seed=seed, random_data=image, head={"decoder": decoder, "hidden": hidden})
