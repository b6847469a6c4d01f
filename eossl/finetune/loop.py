"""What the three tasks share: where the encoder comes from, the training loop, losses, per-class
metrics, label draws, grid checks and tiled whole-scene prediction."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr

from eossl import validate as check
from eossl.card import Card, finetune_card, training_card
from eossl.checkpoint import CHECKPOINT_FILE, atomic_write_bytes, resolve, save_checkpoint
from eossl.data.normalize import stats_of
from eossl.data.patches import tile_size, window_starts
from eossl.errors import CheckpointError, DataError, ParameterError
from eossl.finetune.heads import FinetuneModel, set_trainable
from eossl.models.backbones import Encoder
from eossl.models.load import load_model
from eossl.progress import progress
from eossl.train.loop import training_arrays

# ---------------------------------------------------------------- where the encoder comes from

DEFAULT_RANDOM_ENCODER = {"name": "vit_tiny", "patch_size": 8}


class _RandomBase(torch.nn.Module):
    """A randomly initialised encoder with a card (bands + statistics of the fine-tuning data)."""

    def __init__(self, encoder: Encoder, card: dict):
        super().__init__()
        self.encoder, self.card = encoder, card


def random_model(data, encoder: str | dict | None = None, img_size: int = 64, seed: int = 0):
    """A randomly initialised encoder for ``data``'s bands, normalised with ``data``'s own band
    statistics: the baseline every pretrained encoder must beat. Returns a module with
    ``.encoder`` and ``.card``, usable wherever a pretrained model is."""
    arrays = training_arrays(data)
    spec = dict(DEFAULT_RANDOM_ENCODER) if encoder is None else (
        {**DEFAULT_RANDOM_ENCODER, "name": encoder} if isinstance(encoder, str) else dict(encoder))
    spec = {**spec, "in_chans": arrays[0].sizes["band"], "img_size": spec.get("img_size", img_size)}
    torch.manual_seed(seed)
    enc = Encoder(**spec)
    card = training_card(method="random", encoder=enc, arrays=arrays, stats=stats_of(arrays),
                         config={"img_size": spec["img_size"], "seed": seed})
    card["step"] = 0
    return _RandomBase(enc, card)


def base_of(model, data=None, encoder=None, seed: int = 0):
    """``(encoder, card, where)`` from a pretrain run, a loaded model, a fine-tuned model, or
    ``None`` / ``"random"`` for random weights (``encoder`` then names the architecture)."""
    if model is None or (isinstance(model, str) and model == "random"):
        model = random_model(data, encoder, seed=seed)
    path = getattr(model, "checkpoint_path", None)
    if isinstance(model, (str, Path)):
        path, model = resolve(model), load_model(model)
    model = getattr(model, "model", model)  # a PretrainRun or FinetuneRun
    enc = getattr(model, "encoder", None)
    card = getattr(model, "card", None)
    if not isinstance(enc, Encoder) or card is None:
        raise CheckpointError("fine-tuning needs an encoder with its card: eossl.pretrain(...) (or its "
                              ".model), eossl.load_model(path), or None / 'random' for random weights")
    return enc, card, (str(path) if path else None)


# ---------------------------------------------------------------- inputs as the encoder sees them

def check_grid(image: xr.DataArray, labels: xr.DataArray, what: str = "labels") -> None:
    """``labels`` (y, x) must sit on the image's pixel grid: same size, coordinates and CRS."""
    if "y" not in labels.dims or "x" not in labels.dims:
        raise DataError(f"{what} need dims (y, x); got {labels.dims}")
    if (labels.sizes["y"], labels.sizes["x"]) != (image.sizes["y"], image.sizes["x"]):
        raise DataError(f"{what} are {labels.sizes['y']}x{labels.sizes['x']} px but the image is "
                        f"{image.sizes['y']}x{image.sizes['x']} px: they are on a different grid. Put them on "
                        "the image's grid first, e.g. labels.rio.reproject_match(image, resampling=0)")
    for dim in ("x", "y"):
        if dim in labels.coords and dim in image.coords:
            a, b = labels[dim].values.astype("float64"), image[dim].values.astype("float64")
            step = abs(b[1] - b[0]) if len(b) > 1 else 1.0
            if np.max(np.abs(a - b)) > 0.01 * step:
                raise DataError(f"{what} have other {dim} coordinates than the image (off by up to "
                                f"{np.max(np.abs(a - b)):.3g}): a different grid. Reproject them with "
                                "labels.rio.reproject_match(image, resampling=0)")
    crs_l, crs_i = _crs(labels), _crs(image)
    if crs_l is not None and crs_i is not None and crs_l != crs_i:
        raise DataError(f"{what} are in {crs_l} but the image is in {crs_i}; reproject them with "
                        "labels.rio.reproject_match(image, resampling=0)")


def _crs(da):
    try:
        return da.rio.crs
    except Exception:  # noqa: BLE001 - no spatial_ref at all
        return None


# ---------------------------------------------------------------- classes and label draws

NODATA_NAMES = ("no data", "nodata", "unknown", "unlabeled", "unlabelled")


def resolve_classes(values: np.ndarray, names: dict | None, classes=None, ignore=None):
    """``(class values in training order, their names, values ignored)``.

    By default every value present is a class except NaN and values whose name in ``names`` (the
    labels' ``classes`` attribute) says no data / unknown. ``classes=[...]`` picks and orders them;
    labeled values outside it are ignored (neither trained on nor scored).
    """
    names = {_key(k): v for k, v in (names or {}).items()}
    present = pd.unique(pd.Series(np.asarray(values).ravel()).dropna())
    if ignore is None:
        ignore = [k for k, v in names.items() if str(v).lower() in NODATA_NAMES]
    ignore = [_key(v) for v in np.atleast_1d(ignore)] if ignore is not None else []
    if classes is None:
        classes = sorted(_key(v) for v in present if _key(v) not in ignore)
    else:
        classes = [_key(c) for c in classes]
        have = {_key(v) for v in present}
        missing = [c for c in classes if c not in have]
        if missing:
            raise DataError(f"classes {missing} have no labeled example at all (labels hold "
                            f"{sorted(have, key=str)}); drop them from classes=[...] or label some")
    if len(classes) < 2:
        raise DataError(f"need at least two classes to train on, found {classes} (ignored: {ignore})")
    return classes, [str(names.get(c, c)) for c in classes], ignore


def _key(v):
    """Class values as plain Python scalars (numpy ints and floats 1.0 -> 1)."""
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return v


def draw(index: np.ndarray, shots: int | None, classes, names, rng, test_fraction: float,
         unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Split labeled items into a training draw and the held-out rest.

    ``index`` holds each item's class index (-1 for items not used). ``shots`` items of every class
    train (``None``: ``1 - test_fraction`` of each class); the rest of the labeled items are scored.
    A budget that leaves a class without any held-out item is an error, not a silent cap.
    """
    test_fraction = check.number("test_fraction", test_fraction, above=0, below=1)
    train, test = [], []
    for k, name in enumerate(names):
        items = np.flatnonzero(index == k)
        if shots is None:
            n = max(1, int(round(len(items) * (1 - test_fraction))))
        else:
            n = int(shots)
            if n < 1:
                raise DataError(f"shots must be at least 1 {unit} per class, got {shots}")
        if n >= len(items):
            raise DataError(f"class {name!r} has {len(items)} labeled {unit}s: a budget of {n} per class "
                            f"leaves none to score. Ask for at most shots={len(items) - 1}, or leave the "
                            "class out with classes=[...]")
        chosen = rng.choice(items, n, replace=False)
        train.append(chosen)
        test.append(np.setdiff1d(items, chosen))
    return np.concatenate(train), np.concatenate(test)


# ---------------------------------------------------------------- losses and metrics

def class_weights(y: np.ndarray, k: int, how) -> torch.Tensor | None:
    """``"balanced"``: n / (k * count) per class in the training draw; an array: as given."""
    if how is None:
        return None
    if isinstance(how, str):
        if how != "balanced":
            raise ValueError(f"class_weight must be None, 'balanced' or one weight per class, got {how!r}")
        counts = np.bincount(y[y >= 0], minlength=k).astype("float64")
        w = counts.sum() / (k * np.maximum(counts, 1))
    else:
        w = np.asarray(how, dtype="float64")
        if w.shape != (k,):
            raise ValueError(f"class_weight needs one weight per class ({k}), got {w.shape}")
    return torch.tensor(w, dtype=torch.float32)


def loss_fn(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, loss: str,
            gamma: float = 2.0) -> torch.Tensor:
    """Cross-entropy or focal loss (Lin et al. 2017) over labeled items (target -1 is ignored)."""
    if loss == "ce":
        return F.cross_entropy(logits, target, weight=weight, ignore_index=-1)
    if loss != "focal":
        raise ValueError(f"loss must be 'ce' or 'focal', got {loss!r}")
    ce = F.cross_entropy(logits, target, ignore_index=-1, reduction="none")  # (B,) or (B, H, W)
    pt = torch.exp(-ce)  # probability of the true class
    focal = (1 - pt) ** gamma * ce  # easy, well-classified items weigh little
    mask = target >= 0
    if weight is not None:
        focal = focal * weight[target.clamp(min=0)]
    return focal[mask].sum() / mask.sum().clamp(min=1)


def metrics_table(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Per-class precision, recall, F1, IoU and support (class indices 0..K-1), plus a ``macro``
    row (unweighted mean over classes) and an ``overall`` row whose recall is the accuracy."""
    k = len(names)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)  # rows: truth, cols: predicted
    tp = np.diag(cm).astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        union = cm.sum(0) + cm.sum(1) - tp
        iou = np.where(union > 0, tp / union, 0.0)
    table = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "iou": iou,
                          "support": cm.sum(1)}, index=pd.Index(names, name="class"))
    table.loc["macro"] = [precision.mean(), recall.mean(), f1.mean(), iou.mean(), cm.sum()]
    acc = tp.sum() / max(1, cm.sum())
    table.loc["overall"] = [acc, acc, acc, np.nan, cm.sum()]
    table["support"] = table["support"].astype(int)
    return table


# ---------------------------------------------------------------- the training loop

@dataclass
class LoopConfig:
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-3          # head; the encoder learns at lr * encoder_lr_scale
    encoder_lr_scale: float = 0.1  # pretrained weights move slowly, or few labels wipe them out
    weight_decay: float = 1e-4
    loss: str = "ce"
    class_weight: object = None
    train: str = "head"
    last_blocks: int = 1
    augment: bool = True      # flips and 90-degree turns when the encoder learns
    seed: int = 0

    def __post_init__(self):
        # checked where finetune_* enter, so a bad value fails before the encoder is loaded
        self.steps = check.integer("steps", self.steps, minimum=1)
        self.batch_size = check.integer("batch_size", self.batch_size, minimum=1)
        self.lr = check.number("lr", self.lr, above=0)
        self.encoder_lr_scale = check.number("encoder_lr_scale", self.encoder_lr_scale, minimum=0)
        self.weight_decay = check.number("weight_decay", self.weight_decay, minimum=0)
        self.last_blocks = check.integer("last_blocks", self.last_blocks, minimum=0)
        self.seed = check.integer("seed", self.seed, minimum=0)


def _augment(x: torch.Tensor, y: torch.Tensor, dense: bool, gen: torch.Generator):
    """One random flip / quarter turn for the whole batch, on the pixels and on dense targets alike
    (multispectral-safe: geometry only, no colour changes)."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    flip = bool(torch.randint(0, 2, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(-2, -1))
    if dense:
        y = torch.rot90(y, k, dims=(-2, -1))
    if flip:
        x = x.flip(-1)
        y = y.flip(-1) if dense else y
    return x.contiguous(), y.contiguous()


@torch.no_grad()
def _features(model: FinetuneModel, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def train_loop(model: FinetuneModel, x: torch.Tensor, y: torch.Tensor, cfg: LoopConfig, device,
               desc: str) -> pd.DataFrame:
    """Train ``model`` on inputs ``x`` and targets ``y`` (class indices, -1 = unlabeled).

    With a frozen encoder its features are computed once and only the head trains (fast, and the
    same result as running the encoder every step, since nothing in it changes).
    """
    dense = y.ndim > 1
    enc_params = set_trainable(model, cfg.train, cfg.last_blocks)
    model.to(device)
    frozen = not enc_params
    model.encoder.train(not frozen)
    model.head.train()
    weight = class_weights(y.numpy().ravel(), model.num_classes, cfg.class_weight)
    weight = weight.to(device) if weight is not None else None
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
    if enc_params:
        groups.append({"params": enc_params, "lr": cfg.lr * cfg.encoder_lr_scale})
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x, y = x.to(device), y.to(device)
    feats = _features(model, x, 64) if frozen else None
    history = []
    bar = progress(range(cfg.steps), desc=desc, unit="step", leave=False)
    for step in bar:
        for g in opt.param_groups:  # cosine decay: big steps first, settle at the end
            g["lr"] = g["base_lr"] * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        idx = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=gen).to(device)
        if frozen:
            logits = model.decode(feats[idx], x[idx])
            target = y[idx]
        else:
            xb, target = x[idx], y[idx]
            if cfg.augment:
                xb, target = _augment(xb, target, dense, gen)
            logits = model(xb)
        loss = loss_fn(logits, target, weight, cfg.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        history.append({"step": step + 1, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"]})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", refresh=False)
    if not np.isfinite(history[-1]["loss"]):
        raise FloatingPointError(f"{desc}: the loss became {history[-1]['loss']}; lower lr (now {cfg.lr})")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return pd.DataFrame(history)


# ---------------------------------------------------------------- tiled prediction

def _taper(n: int) -> np.ndarray:
    """Weights across a tile: highest in the middle, small but > 0 at the edges, so where tiles
    overlap the prediction from the tile that sees more context counts most."""
    t = (np.arange(n) + 0.5) / n
    return (1 - np.abs(2 * t - 1)) + 1e-3


@torch.no_grad()
def predict_tiled(model: FinetuneModel, arr: np.ndarray, window: int | None, overlap: int | None,
                  device, batch_size: int = 16, desc: str = "predict") -> np.ndarray:
    """Class probabilities ``(K, H, W)`` for a whole normalised scene ``arr`` ((C, H, W), or
    (2, C, H, W) for a pair), from overlapping tiles blended with a tapered weight.

    NaN pixels enter the encoder as 0 (the band mean) and come out as NaN probabilities.
    """
    H, W = arr.shape[-2:]
    p = model.patch_size
    win = window or model.card["encoder"].get("img_size", 64)
    wy, wx = tile_size(H, win, p), tile_size(W, win, p)
    ov = (min(wy, wx) // 4 // p) * p if overlap is None else int(overlap)
    if not 0 <= ov < min(wy, wx):
        raise DataError(f"overlap must be between 0 and the tile size ({min(wy, wx)} px), got {ov}")
    starts = [(r, c) for r in window_starts(H, wy, max(1, wy - ov)) for c in window_starts(W, wx, max(1, wx - ov))]
    weight = np.outer(_taper(wy), _taper(wx)).astype("float32")  # (wy, wx)
    K = model.num_classes
    total = np.zeros((K, H, W), dtype="float32")
    norm = np.zeros((H, W), dtype="float32")
    clean = np.nan_to_num(arr, nan=0.0)
    model.to(device).eval()
    batches = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
    for batch in progress(batches, desc=desc, unit="batch", leave=False):
        tiles = np.stack([clean[..., r:r + wy, c:c + wx] for r, c in batch])  # (N, [2,] C, wy, wx)
        logits = model(torch.from_numpy(tiles).to(device)).float()
        probs = torch.softmax(logits, dim=1).cpu().numpy()
        if probs.ndim == 2:  # classification: one answer for the whole tile
            probs = np.broadcast_to(probs[:, :, None, None], (len(batch), K, wy, wx))
        for (r, c), pr in zip(batch, probs):
            total[:, r:r + wy, c:c + wx] += pr * weight
            norm[r:r + wy, c:c + wx] += weight
    out = total / norm
    invalid = ~np.isfinite(arr).all(axis=tuple(range(arr.ndim - 2)))  # (H, W): any band / date NaN
    out[:, invalid] = np.nan
    return out


def class_map(probs: np.ndarray, classes: list, like: xr.DataArray, name: str, proba: bool,
              names: list[str], attrs: dict) -> xr.DataArray:
    """Probabilities (K, H, W) -> a georeferenced class map (y, x) holding the class *values*
    (nodata -1 where the input had no data), or (class, y, x) probabilities when ``proba``."""
    coords = {d: like[d] for d in ("y", "x") if d in like.coords}
    if proba:
        out = xr.DataArray(probs, dims=("class", "y", "x"),
                           coords={**coords, "class": [str(c) for c in classes]}, name=name)
    else:
        valid = np.isfinite(probs).all(axis=0)
        idx = np.nan_to_num(probs, nan=0.0).argmax(axis=0)
        values = np.asarray(classes)
        if values.dtype.kind in "iuf":
            mapped = np.where(valid, values[idx], -1).astype("int16")
        else:
            mapped = np.where(valid, values[idx], "").astype(str)
        out = xr.DataArray(mapped, dims=("y", "x"), coords=coords, name=name)
        out.attrs["nodata"] = -1
    out.attrs.update(attrs)
    out.attrs["classes"] = {_key(c): n for c, n in zip(classes, names)}
    crs = _crs(like)
    if crs is not None and "x" in coords:
        out = out.rio.write_crs(crs)
        out = out.rio.write_transform(like.rio.transform())
    return out


# ---------------------------------------------------------------- the run, its card and checkpoint

def check_out(out, overwrite: bool) -> Path | None:
    """Refuse to replace a checkpoint already in ``out`` before any training time is spent."""
    if out is None:
        return None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out={str(out)!r} is an existing file, not a folder; a fine-tuning run writes a "
                             "folder (checkpoint, history, metrics). Choose another path (the file was left as it is)")
    if (out / "checkpoint" / CHECKPOINT_FILE).exists() and not overwrite:
        raise CheckpointError(f"{out} already holds a checkpoint; choose another out folder or pass "
                              "overwrite=True (nothing was overwritten)")
    return out


def make_card(task: str, base_card, base_path, model: FinetuneModel, classes, names,
              cfg: LoopConfig, **extra) -> Card:
    """The fine-tuned checkpoint's card (see :func:`eossl.card.finetune_card`) with how it trained."""
    settings = {"train": cfg.train, "last_blocks": cfg.last_blocks, "steps": cfg.steps,
                "batch_size": cfg.batch_size, "lr": cfg.lr, "encoder_lr_scale": cfg.encoder_lr_scale,
                "loss": cfg.loss, "class_weight": cfg.class_weight if isinstance(cfg.class_weight, (str, type(None)))
                else list(map(float, cfg.class_weight)), "seed": cfg.seed, **extra}
    return finetune_card(base_card, task=task, encoder=model.encoder, head=model.head_config, base_path=base_path,
                         classes=[{"value": _key(c), "name": n} for c, n in zip(classes, names)],
                         settings=settings)


def save_run(out: Path | None, model: FinetuneModel, history: pd.DataFrame, metrics: pd.DataFrame) -> Path | None:
    """Checkpoint (atomic single-file safetensors + card.json), history.csv and metrics.csv."""
    if out is None:
        return None
    model.card["metrics"] = json.loads(metrics.to_json(orient="index"))
    path = save_checkpoint(out / "checkpoint", model, model.card)
    atomic_write_bytes(out / "history.csv", history.to_csv(index=False).encode())
    atomic_write_bytes(out / "metrics.csv", metrics.to_csv().encode())
    model.checkpoint_path = path
    return path
