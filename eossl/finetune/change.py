"""Change detection: a siamese head on two dates' patch features, trained on change labels.

Both dates go through the same encoder; the head sees ``[f1, f2, |f1 - f2|]`` per patch and
predicts a change class per pixel.

    ds = eossl.datasets.load_sample("taizhou_change")    # image (time=2, ...), change: 0 unknown,
    run = eossl.finetune(model, ds, labels="change",      #   1 unchanged, 2 changed (0 is ignored)
                         task="change", shots=100)
    change_map = eossl.predict(run, ds)                   # (y, x) of 1 / 2 with the scene's CRS

OSCD (Daudt et al. 2018; not bundled, CC BY-NC-SA) opens with :func:`open_oscd` into the same form.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import xarray as xr

from eossl.errors import DataError
from eossl.finetune.predict import FinetuneRun, pair_of, predict_pair, stack_values  # noqa: F401 (predict_pair: re-exported)
from eossl.finetune.segmentation import fit_dense, image_and_labels

OSCD_CLASSES = {1: "unchanged", 2: "changed"}


def finetune_change(model, data, labels=None, *, dates=None, shots: int | None = None, classes=None,
                    ignore=None, test_fraction: float = 0.5, window: int | None = None,
                    stride: int | None = None, decoder: str = "patch", hidden: int = 64, train: str = "head",
                    last_blocks: int = 1, steps: int = 150, batch_size: int = 16, lr: float = 1e-3,
                    encoder_lr_scale: float = 0.1, loss: str = "ce", class_weight="balanced",
                    augment: bool = True, encoder=None, out=None, overwrite: bool = False,
                    device: str = "auto", seed: int = 0) -> FinetuneRun:
    """Train a siamese change classifier on a pair of dates; see :func:`eossl.finetune`.

    Changed pixels are usually rare, so ``class_weight`` defaults to ``"balanced"`` here."""
    image, lab = image_and_labels(data, labels, "change labels")
    pair = pair_of(image, dates)
    return fit_dense("change", model, lambda card: stack_values(pair, card)[None], lab, shots=shots,
                     classes=classes, ignore=ignore, test_fraction=test_fraction, window=window,
                     stride=stride, train=train, last_blocks=last_blocks, steps=steps,
                     batch_size=batch_size, lr=lr, encoder_lr_scale=encoder_lr_scale, loss=loss,
                     class_weight=class_weight, augment=augment, encoder=encoder, out=out,
                     overwrite=overwrite, device=device, seed=seed, random_data=pair,
                     head={"decoder": decoder, "hidden": hidden})


def open_oscd(city) -> xr.Dataset:
    """An OSCD city folder (``imgs_1``, ``imgs_2``, ``cm.tif``) as ``Dataset(image (time=2, band,
    y, x) on the 10 m grid, change (y, x): 1 unchanged, 2 changed)``.

    The label file carries no georeferencing; it is on the date-1 10 m grid, so it takes the
    image's coordinates (cropped where date 2 is a few pixels smaller, as in abudhabi)."""
    import rasterio
    import rasterio.errors

    from eossl.data.scenes import open_stack

    city = Path(city)
    if not (city / "cm.tif").is_file():
        raise DataError(f"{city}: no cm.tif; OSCD labels exist for aguasclaras, bercy, bordeaux, nantes, "
                        "rennes, abudhabi and mumbai only")
    image = open_stack([city / "imgs_1", city / "imgs_2"])
    with warnings.catch_warnings():  # known: cm.tif has no geotransform (see the docstring)
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(city / "cm.tif") as src:
            cm = src.read(1)
    H, W = image.sizes["y"], image.sizes["x"]
    if cm.shape[0] < H or cm.shape[1] < W:
        raise DataError(f"{city}/cm.tif is {cm.shape} but the images are {(H, W)}")
    change = xr.DataArray(cm[:H, :W].astype("uint8"), dims=("y", "x"),
                          coords={"y": image.y, "x": image.x}, attrs={"classes": dict(OSCD_CLASSES)})
    ds = xr.Dataset({"image": image, "change": change})
    return ds.rio.write_crs(image.rio.crs)

