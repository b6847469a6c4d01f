"""Prediction with a fine-tuned model, and the run that holds one.

The task files (classification, segmentation, change) train; this module predicts for all three
(chips -> classes, a scene -> a class map, two dates -> a change map), so a :class:`FinetuneRun`
can predict without importing the training code that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from eossl.device import resolve_device
from eossl.errors import DataError
from eossl.finetune.heads import FinetuneModel, load
from eossl.card import prepare
from eossl.finetune.loop import check_grid, class_map, predict_tiled


# ---------------------------------------------------------------- inputs

def chips_of(data) -> xr.DataArray:
    """Chips ``(sample, band, y, x)`` from a DataArray or a Dataset's ``image``."""
    if isinstance(data, xr.Dataset):
        data = data["image"]
    if not isinstance(data, xr.DataArray) or set(data.dims) != {"sample", "band", "y", "x"}:
        dims = getattr(data, "dims", type(data).__name__)
        raise DataError(f"classification trains on chips (sample, band, y, x), got {dims}; open a chip "
                        "folder with eossl.open_chips, or use task='segmentation' for per-pixel labels on a scene")
    return data.transpose("sample", "band", "y", "x")


def stack_values(image: xr.DataArray, card: dict) -> np.ndarray:
    """(band, y, x) or (time, band, y, x) -> normalised float32 (T, C, H, W), NaN kept."""
    lead = [d for d in image.dims if d not in ("band", "y", "x")]
    if len(lead) > 1:
        raise DataError(f"an image with dims {image.dims}: give (band, y, x) or one extra dim such as time")
    da = image.transpose(*lead, "band", "y", "x")
    arr = prepare(da, card)  # as the encoder sees it, NaN kept
    return arr[None] if arr.ndim == 3 else arr


def pair_of(data, dates=None) -> xr.DataArray:
    """Two dates as ``(time=2, band, y, x)`` from a stack (``dates`` picks two indices when it has
    more), a Dataset's ``image``, or a pair ``(scene_1, scene_2)`` on one grid."""
    if isinstance(data, xr.Dataset):
        data = data["image"]
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataError(f"change detection needs two scenes, got {len(data)}")
        a, b = data
        check_grid(a, b.isel(band=0, drop=True) if "band" in b.dims else b, "the second scene")
        return xr.concat([a, b.assign_coords(x=a.x, y=a.y)], dim="time").transpose("time", "band", "y", "x")
    if not isinstance(data, xr.DataArray) or data.ndim != 4 or not {"band", "y", "x"} <= set(data.dims):
        raise DataError(f"change detection needs two dates: a stack (time, band, y, x) or a pair of scenes, "
                        f"got {getattr(data, 'dims', type(data).__name__)}")
    lead = [d for d in data.dims if d not in ("band", "y", "x")][0]
    n = data.sizes[lead]
    if dates is None:
        if n != 2:
            raise DataError(f"the stack has {n} dates; say which two to compare with dates=(i, j)")
        dates = (0, 1)
    if len(dates) != 2 or not all(-n <= d < n for d in dates):
        raise DataError(f"dates must be two indices into the {n} dates, got {dates}")
    return data.isel({lead: list(dates)}).transpose(lead, "band", "y", "x")


# ---------------------------------------------------------------- prediction

@torch.no_grad()
def _logits(model, x: torch.Tensor, device, batch_size: int = 64) -> torch.Tensor:
    model.to(device).eval()
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def predict_chips(model, chips: xr.DataArray, proba: bool = False, device: str = "auto",
                  batch_size: int = 64) -> xr.DataArray:
    """``(sample,)`` predicted class values for chips (or ``(sample, class)`` probabilities),
    keeping the chips' sample coordinates."""
    chips = chips_of(chips)
    x = torch.from_numpy(prepare(chips, model.card, fill=0.0))
    probs = torch.softmax(_logits(model, x, resolve_device(device), batch_size), dim=1).numpy()
    classes = [c["value"] for c in model.card["classes"]]
    coords = {k: v for k, v in chips.coords.items() if v.dims == ("sample",)}
    if proba:
        return xr.DataArray(probs, dims=("sample", "class"), name="probability",
                            coords={**coords, "class": [str(c) for c in classes]})
    return xr.DataArray(np.asarray(classes)[probs.argmax(1)], dims=("sample",), coords=coords,
                        name="prediction")


def predict_scene(model, image: xr.DataArray, window=None, overlap=None, proba=False, device="auto",
                  batch_size: int = 16) -> xr.DataArray:
    """A scene (band, y, x) -> class map (y, x); a stack (time, band, y, x) -> (time, y, x)."""
    if not isinstance(image, xr.DataArray) or not {"band", "y", "x"} <= set(image.dims):
        raise DataError(f"predict needs a scene (band, y, x) or a stack (time, band, y, x), got "
                        f"{getattr(image, 'dims', type(image).__name__)}")
    arr = stack_values(image, model.card)  # (T, C, H, W)
    dev = resolve_device(device)
    classes = [c["value"] for c in model.card["classes"]]
    names = [c["name"] for c in model.card["classes"]]
    attrs = {"task": model.card["task"], "encoder": model.card["encoder"].get("name", "")}
    maps = [class_map(predict_tiled(model, a, window, overlap, dev, batch_size), classes, image, "prediction",
                      proba, names, attrs) for a in arr]
    lead = [d for d in image.dims if d not in ("band", "y", "x")]
    if not lead:
        return maps[0]
    out = xr.concat(maps, dim=lead[0]).assign_coords({lead[0]: image[lead[0]].values})
    return out.rio.write_crs(maps[0].rio.crs) if maps[0].rio.crs is not None else out


def predict_pair(model, data, dates=None, window=None, overlap=None, proba=False, device="auto",
                 batch_size: int = 16) -> xr.DataArray:
    """Two dates -> change class map (y, x) (or (class, y, x) probabilities) with the scene's CRS."""
    pair = pair_of(data, dates)
    arr = stack_values(pair, model.card)  # (2, C, H, W)
    classes = [c["value"] for c in model.card["classes"]]
    names = [c["name"] for c in model.card["classes"]]
    probs = predict_tiled(model, arr, window, overlap, resolve_device(device), batch_size, desc="predict change")
    attrs = {"task": "change", "encoder": model.card["encoder"].get("name", ""),
             "dates": [str(v) for v in pair[pair.dims[0]].values]}
    return class_map(probs, classes, pair.isel({pair.dims[0]: 0}), "change", proba, names, attrs)


def predict(finetuned, data, *, window: int | None = None, overlap: int | None = None,
            proba: bool = False, dates=None, device: str = "auto", batch_size: int = 16):
    """Predict with a fine-tuned model (a :class:`FinetuneRun`, its ``.model``, or a checkpoint path).

    - chips (sample, band, y, x) -> ``(sample,)`` class values (classification);
    - a scene (band, y, x) -> a class map ``(y, x)`` with the scene's CRS and transform, computed
      on overlapping ``window`` px tiles (default: the encoder's training size; ``overlap`` default a
      quarter tile) blended with a tapered weight; a stack -> ``(time, y, x)``; a classifier gives
      one class per tile, blended the same way;
    - change: two dates (stack, Dataset or pair of scenes) -> change class map ``(y, x)``.

    ``proba=True`` gives class probabilities (``class`` dim) instead. Pixels with no data in the
    input come out as -1 (``nodata`` attribute) / NaN probabilities.
    """
    model = load(finetuned) if isinstance(finetuned, (str, Path)) else getattr(finetuned, "model", finetuned)
    if not isinstance(model, FinetuneModel) or not hasattr(model, "card"):
        raise DataError("predict needs a fine-tuned model: the run from eossl.finetune(...), its .model, "
                        "or the path of its checkpoint")
    task = model.card["task"]
    if task == "change":
        return predict_pair(model, data, dates, window, overlap, proba, device, batch_size)
    if isinstance(data, xr.Dataset):
        data = data["image"]
    if task == "classification" and isinstance(data, xr.DataArray) and "sample" in data.dims:
        return predict_chips(model, data, proba, device)
    return predict_scene(model, data, window, overlap, proba, device, batch_size)



# ---------------------------------------------------------------- the run

@dataclass
class FinetuneRun:
    """What :func:`eossl.finetune` gives back: the fine-tuned ``model`` (with ``.card``), the
    training ``history``, the ``checkpoint_path``, per-class ``metrics`` on the held-out labels, and
    the ``split`` (which labeled items trained and which were scored)."""

    model: FinetuneModel
    history: pd.DataFrame
    checkpoint_path: Path | None
    metrics: pd.DataFrame
    task: str
    split: dict

    def predict(self, data, **kwargs):
        """:func:`eossl.predict` with this run's model."""
        return predict(self.model, data, **kwargs)

    @property
    def classes(self) -> dict:
        return {c["value"]: c["name"] for c in self.model.card["classes"]}
