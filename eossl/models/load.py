"""``eossl.load_model``: an eossl checkpoint, or a community state dict, as a model with a card.

Two kinds of file load:

- eossl checkpoints (a run folder, its ``checkpoint`` folder or the ``.safetensors`` file), which
  carry their own card;
- foreign state dicts: timm / torchgeo weights (e.g. torchgeo's ``ResNet50_Weights.SENTINEL2_ALL_MOCO``
  or ``ViTSmall16_Weights.SENTINEL2_ALL_DINO`` files), the original SSL4EO-S12 checkpoints
  (``module.encoder_q.`` MoCo, ``module.base_encoder.`` MoCo v3, ``teacher`` / ``backbone.`` DINO,
  MAE with a decoder) and plain timm checkpoints (``{"arch", "state_dict"}``, or a
  ``model.safetensors`` with a timm ``config.json`` beside it). ``.pt/.pth`` files are read with
  ``torch.load(weights_only=True)``: a pickle that asks to run code is refused, never executed.

A foreign file rarely says which bands it expects or how to scale them, so the card is built from
what it says plus what the caller passes (``encoder=``, ``bands=``, ``normalization=``, ``units=``).
13-channel files default to the SSL4EO-S12 convention that torchgeo documents for all of these
weights: Sentinel-2 L1C bands B01..B08, B8A, B09..B12, DN divided by 10000.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from eossl.data.bands import SENSORS, lookup
from eossl.data.units import DN_SCALE, UNITS, normalise_units
from eossl.errors import CheckpointError
from eossl.models.backbones import Encoder
from eossl.models.registry import build_method
from eossl.card import CARD_SCHEMA, Card
from eossl.checkpoint import CHECKPOINT_FILE, FORMAT, read_checkpoint
from eossl.device import resolve_device
from eossl.validate import warn_renamed

#: The 13 Sentinel-2 L1C bands of SSL4EO-S12, in the order its models (and torchgeo's
#: SENTINEL2_ALL_* weights) take them: the canonical order, B8A after B08.
SSL4EO_S2_BANDS = [b.name for b in SENSORS["sentinel2_l1c"]]

#: SSL4EO-S12 / torchgeo: ``Normalize(mean=0, std=10000)`` on L1C DN (so inputs are ~0..1).
SSL4EO_NORMALIZATION = {"kind": "x / 10000 (SSL4EO-S12, as torchgeo's SENTINEL2_ALL_* weights)",
                        "mean": [0.0] * 13, "std": [10000.0] * 13}

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
# Files in a folder that hold foreign weights (timm / Hugging Face layouts), in order of preference.
FOREIGN_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
# Whole-model wrappers: DataParallel/DDP, torch.compile, Lightning modules and eossl's Encoder.
_WRAPPERS = ("module.", "_orig_mod.", "model.")
# The encoder inside an SSL model, and the method that names it that way.
_ENCODER_PREFIXES = (("encoder_q.", "moco"), ("base_encoder.", "moco_v3"), ("backbone.", "dino"),
                     ("encoder.", None))
# Parts of SSL / classification models that are not the encoder: ignored when present.
_NOT_ENCODER = re.compile(r"^(fc|head|head_dist|heads|decoder\w*|mask_token|projector|projection_head|"
                          r"predictor|prototypes|queue\w*|momentum_encoder|encoder_k|fc_norm)(\.|$)")
_KNOWN_VITS = {(192, 12, 3): "vit_tiny_patch16_224", (384, 12, 6): "vit_small_patch16_224",
               (768, 12, 12): "vit_base_patch16_224", (1024, 24, 16): "vit_large_patch16_224"}
_KNOWN_RESNETS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
                  ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
                  ((3, 8, 36, 3), True): "resnet152"}


class PretrainedModel(torch.nn.Module):
    """An encoder loaded from a foreign state dict, with its card (what :func:`eossl.embed` needs)."""

    input_kind = "image"

    def __init__(self, encoder: Encoder, card: dict):
        super().__init__()
        self.encoder = encoder
        self.card = card

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) pooled features."""
        return self.encoder(x)


def load_model(path, device: str | torch.device = "auto", *, encoder: str | dict | None = None,
               bands: list[str] | None = None, normalization=None, units: str | None = None,
               on_mismatch: str | None = None, normalisation=None) -> torch.nn.Module:
    """Load a model from an eossl checkpoint or a community state dict.

    Args:
        path: an eossl run folder / checkpoint folder / ``checkpoint.safetensors``; or a foreign
            ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` file (or a folder holding a
            ``model.safetensors`` / ``pytorch_model.bin``).
        encoder: for foreign files: the architecture, a short name (``"resnet50"``), a timm name
            (``"vit_small_patch16_224"``) or an :class:`~eossl.models.backbones.Encoder` spec dict.
            Default: read from the weights' names and shapes (ResNet-18/34/50/101/152 and ViTs).
        bands: for foreign files: the band names of the input channels, in order. Default for 13
            channels: SSL4EO-S12's Sentinel-2 L1C bands.
        normalization: for foreign files: ``"ssl4eo"`` (DN / 10000), a dict ``{"mean", "std"}``
            (per band or one number; an optional ``"scale"`` multiplies the raw values first), or
            the ``xr.Dataset`` of :func:`eossl.band_stats`. (``normalisation=``, the old spelling,
            still works and warns once.)
        units: the units the model expects its input in, ``"DN"`` or ``"reflectance"``.
        on_mismatch: what :func:`eossl.embed` does with data in the other units: ``"convert"``
            (with a warning), ``"warn"`` or ``"error"``.
        device: ``"auto"`` (default: a GPU when there is one), ``"cpu"``, ``"cuda"``, ...

    Returns an ``nn.Module`` in eval mode with ``.encoder`` and ``.card`` (bands, units,
    normalisation); for eossl checkpoints the SSL method module itself.
    """
    spelled = "normalization"
    if normalisation is not None:
        warn_renamed("normalisation", "normalization", "load_model")
        normalization, spelled = (normalization if normalization is not None else normalisation), "normalisation"
    device = resolve_device(device)
    if units is not None and normalise_units(units) is None:
        raise CheckpointError(f"units={units!r}: use one of {list(UNITS)}")
    if on_mismatch not in (None, "convert", "warn", "error"):
        raise CheckpointError(f"on_mismatch={on_mismatch!r}: use 'convert', 'warn' or 'error'")
    kind, file = _locate(path)
    if kind == "eossl":
        given = [n for n, v in (("encoder", encoder), ("bands", bands), ("normalization", normalization))
                 if v is not None]
        if given:
            raise CheckpointError(f"{file} is an eossl checkpoint: its card already records the encoder, "
                                  f"bands and normalisation; drop {given}")
        model = _load_eossl(file)
    else:
        model = _load_foreign(file, kind, encoder, bands, normalization, spelled)
    if units is not None:
        model.card["units"] = normalise_units(units)
    if on_mismatch is not None:
        model.card["on_mismatch"] = on_mismatch
    return model.to(device).eval()


# ----------------------------------------------------------------------------- finding the file

def _locate(path) -> tuple[str, Path]:
    """-> ("eossl" | "safetensors" | "torch", file)."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / CHECKPOINT_FILE, p / "checkpoint" / CHECKPOINT_FILE):
            if candidate.is_file():
                return "eossl", candidate
        for name in FOREIGN_NAMES:
            if (p / name).is_file():
                return _locate(p / name)
        raise CheckpointError(f"{path}: no eossl checkpoint here (looked for {CHECKPOINT_FILE} in it and "
                              f"in its 'checkpoint' folder) and no foreign weights ({list(FOREIGN_NAMES)})")
    if not p.is_file():
        raise CheckpointError(f"{path}: no such file or folder; give an eossl run folder or a "
                              ".safetensors / .pt / .pth weights file")
    if p.suffix == ".safetensors":
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{p}: damaged or truncated safetensors file ({err}); download or copy "
                                  "it again") from None
        return ("eossl" if meta.get("format") == FORMAT else "safetensors"), p
    if p.suffix in TORCH_SUFFIXES:
        return "torch", p
    raise CheckpointError(f"{p}: unknown checkpoint type {p.suffix!r}; eossl reads .safetensors and "
                          f"PyTorch {list(TORCH_SUFFIXES)} files")


def _load_eossl(file: Path) -> torch.nn.Module:
    ckpt = read_checkpoint(file)
    card = ckpt["card"]
    try:
        model = build_method(card["method"], card["encoder"], card.get("method_config"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt['file']}: its card describes a model eossl cannot build ({err})") from None
    try:
        result = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as err:  # same names, other shapes (e.g. another embed_dim)
        raise CheckpointError(f"{ckpt['file']}: weights do not fit the {card['method']} / "
                              f"{card['encoder'].get('name')} architecture in its card ({err})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{ckpt['file']}: weights do not fit the {card['method']} / {card['encoder'].get('name')} "
            f"architecture in its card (missing {result.missing_keys[:3]}, unexpected "
            f"{result.unexpected_keys[:3]})")
    model.card = card
    return model


# ----------------------------------------------------------------------------- foreign weights

def read_weights(file) -> tuple[dict, dict]:
    """The tensors of a foreign weights file and what else it says: ``(state_dict, meta)``.

    ``meta`` holds ``arch`` (a timm name, when the file or a ``config.json`` beside it names one),
    ``pretrained_cfg`` and any ``bands`` / ``units`` / ``mean`` / ``std`` it records. No code in
    the file is run: ``.pt/.pth`` go through ``torch.load(weights_only=True)``.
    """
    file = Path(file)
    meta: dict = {}
    if file.suffix == ".safetensors":
        try:
            with safe_open(str(file), framework="pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
                for key, value in (f.metadata() or {}).items():
                    try:
                        meta[key] = json.loads(value)
                    except json.JSONDecodeError:
                        meta[key] = value
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{file}: damaged or truncated safetensors file ({err}); download or "
                                  "copy it again") from None
    else:
        state = _torch_load(file)
        state, found = _unwrap(state, file)
        meta.update(found)
    sidecar = file.parent / "config.json"  # the timm / Hugging Face hub layout
    if sidecar.is_file():
        try:
            config = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{sidecar}: unreadable config beside the weights ({err})") from None
        if isinstance(config, dict):
            for key in ("bands", "units", "mean", "std"):
                if key in config:
                    meta.setdefault(key, config[key])
            if config.get("architecture"):
                meta.setdefault("arch", config["architecture"])
            if isinstance(config.get("pretrained_cfg"), dict):
                meta.setdefault("pretrained_cfg", config["pretrained_cfg"])
    if "architecture" in meta:
        meta.setdefault("arch", meta["architecture"])
    return state, meta


def _torch_load(file: Path):
    # argparse.Namespace is a plain attribute bag (DINO / MoCo training scripts save their args
    # in the checkpoint); allowing it runs no code.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4": noise here
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        wanted = re.search(r"GLOBAL ([\w.]+)", str(err))
        if wanted:
            raise CheckpointError(
                f"{file}: refused. Loading this pickle would run code or build objects "
                f"({wanted.group(1)}), and eossl only loads "
                "plain tensors. If you trust its source, re-save its state dict as weights only, e.g. "
                "save_file(torch.load(f, weights_only=False)['state_dict'], 'weights.safetensors') "
                "with safetensors.torch.save_file") from None
        lines = [ln for ln in str(err).splitlines() if "Unsupported" in ln or "unsupported" in ln]
        raise CheckpointError(
            f"{file}: damaged, or a pickle with more than plain tensors in it (the weights-only reader "
            f"stopped: {(lines[0] if lines else str(err))[:160]}); download or copy it again, or, if it "
            "is a full pickle from a source you trust, re-save its state dict with "
            "safetensors.torch.save_file") from None
    except Exception as err:  # truncated zip, garbage bytes: torch raises many kinds
        raise CheckpointError(f"{file}: damaged or truncated PyTorch file ({type(err).__name__}: "
                              f"{str(err)[:200]}); download or copy it again") from None


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and sum(torch.is_tensor(v) for v in obj.values()) > len(obj) / 2


def _unwrap(obj, file) -> tuple[dict, dict]:
    """A training checkpoint ``{"state_dict": ..., "arch": ..., "args": ...}`` -> its tensors."""
    meta: dict = {}
    for _ in range(4):  # nested at most a few levels ({"teacher": {...}}, {"model": {"state_dict"}})
        if _is_state_dict(obj):
            break
        if not isinstance(obj, dict):
            raise CheckpointError(f"{file}: holds a {type(obj).__name__}, not a state dict of weights")
        if isinstance(obj.get("arch"), str):
            meta.setdefault("arch", obj["arch"])
        args = obj.get("args")
        if isinstance(args, argparse.Namespace) and isinstance(getattr(args, "arch", None), str):
            meta.setdefault("arch", args.arch)
        # DINO keeps student and teacher; the teacher is the one evaluated
        for key in ("teacher", "state_dict", "model", "model_state_dict", "module", "net", "student"):
            if isinstance(obj.get(key), dict):
                if key == "teacher":
                    meta.setdefault("method", "dino")
                obj = obj[key]
                break
        else:
            raise CheckpointError(f"{file}: no weights found (top-level keys {sorted(obj)[:8]}); give a "
                                  "state dict or a checkpoint with 'state_dict' / 'model' in it")
    if not _is_state_dict(obj):
        raise CheckpointError(f"{file}: no weights found in it")
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}, meta


def encoder_weights(state: dict) -> tuple[dict, str | None]:
    """Strip wrappers and pick the encoder out of an SSL model's state dict.

    ``module.encoder_q.layer1...`` (MoCo), ``module.base_encoder.blocks...`` (MoCo v3),
    ``backbone.blocks...`` (DINO), ``encoder.model.blocks...`` (eossl) -> timm names. Returns the
    weights and the SSL method the names point to (or None).
    """
    method = None
    for _ in range(4):
        changed = False
        for prefix in _WRAPPERS:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
        for prefix, name in _ENCODER_PREFIXES:
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if sub:
                state, method = sub, method or name
                changed = True
                break
        if not changed:
            break
    if method is None and any(k.startswith("decoder") for k in state):
        method = "mae"
    return state, method


def infer_encoder(state: dict) -> dict | None:
    """An Encoder spec read from the weights' names and shapes (timm ViT or ResNet), or None."""
    if "patch_embed.proj.weight" in state:
        D, C, p, _ = state["patch_embed.proj.weight"].shape  # (D, C, p, p)
        depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
        heads = max(1, D // 64)  # timm's ViTs use 64-wide heads; the weights do not record it
        prefix = int("cls_token" in state) + (state["reg_token"].shape[1] if "reg_token" in state else 0)
        tokens = state["pos_embed"].shape[1] if "pos_embed" in state else None
        grid = int(round(math.sqrt(tokens - prefix))) if tokens else 14
        if tokens and grid * grid != tokens - prefix:  # pos_embed without the class token
            grid = int(round(math.sqrt(tokens)))
            spec_extra = {"no_embed_class": True}
        else:
            spec_extra = {}
        name = _KNOWN_VITS.get((D, depth, heads))
        spec = {"name": name or "vit_small_patch16_224", "in_chans": int(C), "img_size": grid * p,
                "patch_size": int(p), **spec_extra}
        if name is None:
            spec.update(embed_dim=int(D), depth=int(depth), num_heads=int(heads))
        fc1 = state.get("blocks.0.mlp.fc1.weight")
        if fc1 is not None and fc1.shape[0] != 4 * D:
            spec["mlp_ratio"] = fc1.shape[0] / D
        if "blocks.0.attn.qkv.weight" in state and "blocks.0.attn.qkv.bias" not in state:
            spec["qkv_bias"] = False
        if "cls_token" not in state:
            spec["class_token"] = False
        if "reg_token" in state:
            spec["reg_tokens"] = int(state["reg_token"].shape[1])
        return spec
    if "conv1.weight" in state and any(k.startswith("layer4.") for k in state):
        blocks = tuple(1 + max(int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}."))
                       for i in range(1, 5))
        name = _KNOWN_RESNETS.get((blocks, "layer1.0.conv3.weight" in state))
        if name is None:
            return None
        return {"name": name, "in_chans": int(state["conv1.weight"].shape[1]), "img_size": 224}
    return None


def _encoder_spec(state: dict, encoder, meta: dict, file) -> dict:
    inferred = infer_encoder(state)
    if encoder is None and meta.get("arch"):
        encoder = meta["arch"]
    if encoder is None:
        if inferred is None:
            raise CheckpointError(f"{file}: cannot tell the architecture from the weights' names; pass "
                                  "encoder='resnet50' or encoder='vit_small_patch16_224' (any timm ViT or "
                                  "ResNet name)")
        return inferred
    spec = dict(encoder) if isinstance(encoder, dict) else {"name": str(encoder)}
    # sizes the weights fix (bands, patch, window) unless the caller set them
    for key in ("in_chans", "patch_size", "img_size", "class_token", "no_embed_class", "reg_tokens"):
        if inferred and key in inferred and key not in spec:
            spec[key] = inferred[key]
    if "in_chans" not in spec:
        first = next((v for k, v in state.items() if k in ("conv1.weight", "patch_embed.proj.weight")), None)
        if first is not None:
            spec["in_chans"] = int(first.shape[1])
    if "patch_size" not in spec:
        m = re.search(r"patch(\d+)", spec["name"])
        if m:
            spec["patch_size"] = int(m.group(1))
    if "img_size" not in spec:
        m = re.search(r"_(\d{3})$", spec["name"])
        spec["img_size"] = int(m.group(1)) if m else 224
    return spec


def _check_fit(model: torch.nn.Module, state: dict, name: str, file) -> dict:
    """The weights to load, or a CheckpointError saying how far they are from the architecture."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not _NOT_ENCODER.match(k)]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {missing[:2]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[0]})")
        matched = sum(1 for k in own if k in state and state[k].shape == own[k].shape)
        raise CheckpointError(
            f"{file}: weights do not fit a {name} encoder ({matched} of {len(own)} match; "
            + "; ".join(parts) + "). Pass encoder= naming the architecture the file was trained with "
            "(e.g. 'resnet50', 'vit_small_patch16_224', or a dict with embed_dim/depth), and check it "
            "is an encoder / backbone checkpoint")
    return {k: state[k] for k in own if k in state}


def _band_entries(names: list[str]) -> tuple[list[dict], str]:
    for sensor in ("sentinel2_l1c", "landsat8", "landsat7", "landsat5"):
        table = {b.name for b in SENSORS[sensor]}
        if set(names) <= table:
            break
    else:
        sensor = None
    entries = []
    for b in lookup(sensor, names):
        entry = {"name": b.name, "common_name": b.common_name,
                 "wavelength_nm": None if math.isnan(b.wavelength_nm) else b.wavelength_nm,
                 "resolution_m": None if math.isnan(b.resolution_m) else b.resolution_m}
        entries.append(entry)
    if sensor == "sentinel2_l1c" and "B10" not in names:
        sensor = "sentinel2_l2a"
    return entries, sensor or "generic"


def _normalization(norm, names: list[str], file, spelled: str = "normalization") -> dict:
    """A user's ``normalization=`` -> ``{"kind", "mean", "std"}`` in the raw input units."""
    if isinstance(norm, str):
        if norm.lower().replace("-", "").replace("_", "") in ("ssl4eo", "ssl4eos12", "divide10000", "10000"):
            return {**SSL4EO_NORMALIZATION, "mean": [0.0] * len(names), "std": [10000.0] * len(names)}
        raise CheckpointError(f"{spelled}={norm!r}: use 'ssl4eo' (DN / 10000), a dict with mean and "
                              "std, or eossl.band_stats(data)")
    if hasattr(norm, "data_vars"):  # the Dataset of eossl.band_stats
        have = norm["band"].values.tolist()
        missing = [b for b in names if b not in have]
        if missing:
            raise CheckpointError(f"the statistics given have no {missing}; they cover {have}")
        norm = {"mean": norm["mean"].sel(band=names).values, "std": norm["std"].sel(band=names).values,
                "kind": "per-band standardisation, (x - mean) / std"}
    if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
        raise CheckpointError("normalization needs 'mean' and 'std' (per band, or one number for all)")
    scale = float(norm.get("scale", 1.0))
    mean = np.broadcast_to(np.asarray(norm["mean"], dtype="float64"), (len(names),))
    std = np.broadcast_to(np.asarray(norm["std"], dtype="float64"), (len(names),))
    if np.any(std <= 0):
        raise CheckpointError(f"normalization std must be positive, got {std.tolist()}")
    # (x * scale - mean) / std == (x - mean / scale) / (std / scale): kept in raw units, so every
    # reader of the card applies one formula
    kind = norm.get("kind") or ("(x * %g - mean) / std" % scale if scale != 1 else "(x - mean) / std")
    return {"kind": kind, "mean": (mean / scale).tolist(), "std": (std / scale).tolist()}


def _load_foreign(file: Path, kind: str, encoder, bands, normalization, spelled: str = "normalization") -> PretrainedModel:
    raw, meta = read_weights(file)
    state, method = encoder_weights(raw)
    method = meta.get("method") or method
    spec = _encoder_spec(state, encoder, meta, file)
    try:
        enc = Encoder(**spec)
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{file}: cannot build the encoder {spec} ({err})") from None
    weights = _check_fit(enc.model, state, spec["name"], file)
    enc.model.load_state_dict(weights, strict=False)  # only num_batches_tracked may be absent
    C = enc.in_chans

    assumed = []
    names = bands if bands is not None else meta.get("bands")
    if names is None:
        if C != 13:
            raise CheckpointError(f"{file}: the file does not say which bands its {C} input channels are; "
                                  f"pass bands=[...] with {C} names in the order the model was trained on")
        names, assumed = list(SSL4EO_S2_BANDS), ["bands"]
    names = [str(n) for n in names]
    if len(names) != C:
        raise CheckpointError(f"{file}: the model takes {C} bands but {len(names)} band names were given "
                              f"({names})")
    if len(set(names)) != C:
        raise CheckpointError(f"band names must be distinct, got {names}")
    entries, sensor = _band_entries(names)

    units = meta.get("units")
    if normalization is not None:
        norm = _normalization(normalization, names, file, spelled)
    elif "mean" in meta and "std" in meta:
        norm = _normalization({"mean": meta["mean"], "std": meta["std"]}, names, file)
    elif isinstance(meta.get("pretrained_cfg"), dict) and "mean" in meta["pretrained_cfg"]:
        cfg = meta["pretrained_cfg"]
        norm = _normalization({"mean": cfg["mean"], "std": cfg["std"],
                               "kind": "timm pretrained_cfg mean / std"}, names, file)
    elif C == 13 and sensor.startswith("sentinel2"):
        norm = {**SSL4EO_NORMALIZATION}
        units = units or "DN"
        assumed.append("normalization")
    else:
        raise CheckpointError(f"{file}: the file does not say how its inputs were scaled; pass "
                              "normalization='ssl4eo' (DN / 10000), {'mean': [...], 'std': [...]} or "
                              "eossl.band_stats(your_data)")
    if normalization == "ssl4eo" or (isinstance(normalization, str) and "10000" in normalization):
        units = units or "DN"

    card = Card(schema=CARD_SCHEMA, method=method or "pretrained", source={"file": str(file), "format": kind, "assumed": assumed},
                encoder=enc.spec, embedding_dim=enc.dim, bands=entries, sensor=sensor,
                units=normalise_units(units), normalization=norm, on_mismatch="convert")
    if sensor in DN_SCALE:
        card["dn_scale"], card["dn_offset"] = DN_SCALE[sensor]
    return PretrainedModel(enc, card)
