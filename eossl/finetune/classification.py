"""Chip classification with few labels: a linear probe on the pooled features, then partial or full
fine-tuning of the encoder (``train="head" | "last_blocks" | "all"``).

    run = eossl.finetune(model, chips, task="classification", shots=5)      # 5 labeled chips per class
    run.metrics                                                            # per-class P / R / F1 / IoU
    eossl.predict(run, other_chips)                                        # (sample,) class labels
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from eossl.errors import DataError
from eossl.finetune.heads import build
from eossl.card import prepare
from eossl.device import resolve_device
from eossl.finetune.loop import (LoopConfig, base_of, check_out, draw, make_card, metrics_table,
                                 resolve_classes, save_run, train_loop)
from eossl.finetune.predict import FinetuneRun, _logits, chips_of, predict_chips  # noqa: F401 (predict_chips: re-exported)


def labels_of(chips: xr.DataArray, labels) -> np.ndarray:
    if labels is None:
        if "label" not in chips.coords:
            raise DataError("no labels: pass labels=[...] (one per chip) or give chips with a 'label' coordinate")
        return chips["label"].values
    if isinstance(labels, str):
        if labels not in chips.coords:
            raise DataError(f"the chips have no coordinate {labels!r}; they have {list(chips.coords)}")
        return chips[labels].values
    labels = np.asarray(labels)
    if labels.shape != (chips.sizes["sample"],):
        raise DataError(f"{labels.shape[0] if labels.ndim else 0} labels for {chips.sizes['sample']} chips: "
                        "give exactly one label per chip")
    return labels


def finetune_classification(model, data, labels=None, *, shots: int | None = None, classes=None,
                            test_fraction: float = 0.25, train: str = "head", last_blocks: int = 1,
                            steps: int = 150, batch_size: int = 32, lr: float = 1e-3,
                            encoder_lr_scale: float = 0.1, loss: str = "ce", class_weight=None,
                            augment: bool = True, encoder=None, out=None, overwrite: bool = False,
                            device: str = "auto", seed: int = 0) -> FinetuneRun:
    """Train a classifier on labeled chips; see :func:`eossl.finetune` for the arguments."""
    cfg = LoopConfig(steps=steps, batch_size=batch_size, lr=lr, encoder_lr_scale=encoder_lr_scale,
                     loss=loss, class_weight=class_weight, train=train, last_blocks=last_blocks,
                     augment=augment, seed=seed)
    dev = resolve_device(device)
    out = check_out(out, overwrite)
    chips = chips_of(data)
    y_raw = labels_of(chips, labels)
    enc, base_card, base_path = base_of(model, chips, encoder, seed)
    classes, names, _ = resolve_classes(y_raw, None, classes, ignore=[])
    lookup = {c: i for i, c in enumerate(classes)}
    index = np.array([lookup.get(v.item() if hasattr(v, "item") else v, -1) for v in y_raw])
    train_idx, test_idx = draw(index, shots, classes, names, np.random.default_rng(seed), test_fraction, "chip")

    x = torch.from_numpy(prepare(chips, base_card, fill=0.0))  # (N, C, H, W)
    y = torch.from_numpy(index).long()
    ft = build(enc, "classification", len(classes))
    history = train_loop(ft, x[train_idx], y[train_idx], cfg, dev, desc=f"finetune classification ({train})")
    pred = _logits(ft, x[test_idx], dev).argmax(1).numpy()
    metrics = metrics_table(index[test_idx], pred, names)
    ft.card = make_card("classification", base_card, base_path, ft, classes, names, cfg,
                        shots=shots, chip_size=int(chips.sizes["y"]))
    path = save_run(out, ft, history, metrics)
    return FinetuneRun(ft, history, path, metrics, "classification",
                       {"train": np.sort(train_idx), "test": np.sort(test_idx)})
