"""Which bands does an embedding rely on? ``eossl.band_importance(model, data)``.

Three readings, for any encoder unless noted:

- ``method="occlusion"``: replace one band by its training mean (0 after normalisation, the value
  the model sees for "no information") and measure how far the embedding moves relative to its
  length, ``|e - e'| / |e|``. One forward pass per band; exact and model-agnostic.
- ``method="gradient"``: gradient x input, summed over a band's pixels: the first-order (Taylor)
  version of the same occlusion, ``J(x) x_c`` with ``x_c`` the input restricted to band ``c``, in
  the same units, ``|J x_c| / |e|``. The embedding is a vector, so its change is kept whole: not the
  gradient of the embedding *norm* (blind to changes that turn the embedding, which is what cosine
  search and kNN see) and not of one projection (an arbitrary direction). ``J x_c`` is a
  Jacobian-vector product, computed in forward mode: one pass per band, whatever the embedding
  width. Where the two methods differ the model is far from linear in that band.
- ``method="attention"``: for band-group token models (``method="spectral_mae"``'s
  :class:`~eossl.models.spectral.GroupedEncoder`), the share of attention the tokens of each band
  group receive, averaged over heads and layers. It is per group: every band of a group gets its
  group's share (a ``group`` coordinate says which), and bands in no group get 0 (never seen).

Output: an ``xr.DataArray`` named ``importance`` with a ``band`` dimension (band names, plus
``wavelength`` in nm and ``common_name`` when the model's card knows them) and, by ``per``:
``"scene"`` nothing more (the mean over chips or patches); ``"patch"`` a ``sample`` dimension for
chips or ``(y, x)`` on the embedding grid with the scene's CRS; ``"class"`` a ``class`` dimension
(the mean over the chips or patches of each class; needs labels).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import xarray as xr

from eossl.analysis.embed import _grid_to_xarray
from eossl.analysis.probe import _missing
from eossl.card import card_of, conform, normalized
from eossl.data.patches import window_starts
from eossl.device import resolve_device
from eossl.errors import DataError
from eossl.progress import progress

METHODS = ("occlusion", "gradient", "attention")
PER = ("scene", "patch", "class")
_UNITS = {"occlusion": "|e - e_without_band| / |e| (relative embedding change)",
          "gradient": "|J x_band| / |embedding| (gradient x input, first-order embedding change)",
          "attention": "share of attention received by the band's group"}


def _features(encoder, x: torch.Tensor, pooled: bool) -> torch.Tensor:
    """(B, C, H, W) -> (B, D) pooled or (B, D, h, w) per patch."""
    fm = encoder.feature_map(x)  # (B, D, h, w)
    return fm.mean(dim=(2, 3)) if pooled else fm


@contextmanager
def _explicit_attention(encoder):
    """Switch timm's attention layers from the fused kernel to the explicit softmax for a while:
    the fused kernel hides the attention weights and has no forward-mode derivative on CPU."""
    layers = [m for m in encoder.modules() if hasattr(m, "fused_attn") and hasattr(m, "attn_drop")]
    saved = [m.fused_attn for m in layers]
    for m in layers:
        m.fused_attn = False
    try:
        yield layers
    finally:
        for m, fused in zip(layers, saved):
            m.fused_attn = fused


@torch.no_grad()
def _occlusion(encoder, x: torch.Tensor, pooled: bool) -> torch.Tensor:
    """(B, C, H, W) normalised -> (B, C) or (B, C, h, w): |e - e without band c| / |e|."""
    ref = _features(encoder, x, pooled)
    length = ref.norm(dim=1).clamp_min(1e-12)
    out = []
    for c in range(x.shape[1]):
        occluded = x.clone()
        occluded[:, c] = 0.0  # the band's training mean
        out.append((ref - _features(encoder, occluded, pooled)).norm(dim=1) / length)
    return torch.stack(out, dim=1)


def _gradient(encoder, x: torch.Tensor, pooled: bool) -> torch.Tensor:
    """(B, C, H, W) normalised -> (B, C) or (B, C, h, w): |J x_c| / |e| (see the module doc)."""
    out = []
    with _explicit_attention(encoder):
        for c in range(x.shape[1]):
            direction = torch.zeros_like(x)
            direction[:, c] = x[:, c]  # the input, band c only: gradient x input summed over its pixels
            ref, change = torch.func.jvp(lambda z: _features(encoder, z, pooled), (x,), (direction,))
            out.append(change.norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12))
    return torch.stack(out, dim=1).detach()


@torch.no_grad()
def _attention(encoder, x: torch.Tensor, pooled: bool) -> torch.Tensor:
    """(B, C, H, W) -> per-group attention shares (B, G) or (B, G, h, w), G = band groups."""
    B, _, H, W = x.shape
    h, w = H // encoder.patch_size, W // encoder.patch_size
    G, L, P = len(encoder.band_groups), h * w, encoder.num_prefix_tokens
    weights = []
    with _explicit_attention(encoder) as layers:
        # On the explicit path timm passes the softmax weights through attn_drop: a hook there sees them.
        hooks = [m.attn_drop.register_forward_hook(lambda mod, inp, out: weights.append(out)) for m in layers]
        try:
            encoder.feature_map(x)
        finally:
            for hook in hooks:
                hook.remove()
    A = torch.stack(weights).mean(dim=(0, 2))            # (B, P+N, P+N): mean over layers and heads
    A = A[:, P:, P:].reshape(B, G, L, G, L)              # query (group, patch) -> key (group, patch)
    to_group = A.sum(dim=4)                              # (B, Gq, L, Gk)
    # shares among the groups (attention to the class token left out), from the G tokens of a patch,
    # whose mean is that patch's embedding
    shares = (to_group / to_group.sum(dim=-1, keepdim=True).clamp_min(1e-12)).mean(dim=1)  # (B, L, G)
    if pooled:
        return shares.mean(dim=1)                        # (B, G)
    return shares.transpose(1, 2).reshape(B, G, h, w)    # (B, G, h, w)


def _run(fn, encoder, arr: np.ndarray, device, batch_size: int, pooled: bool, desc: str) -> np.ndarray:
    encoder = encoder.to(device).eval()
    out = []
    for start in progress(range(0, len(arr), batch_size), desc=desc, unit="batch", leave=False):
        x = torch.from_numpy(np.ascontiguousarray(arr[start:start + batch_size])).to(device)
        out.append(fn(encoder, x, pooled).float().cpu().numpy())
    return np.concatenate(out)


def _band_coords(card: dict, group_of=None) -> dict:
    bands = card["bands"]
    coords = {"band": [b["name"] for b in bands]}
    wl = [b.get("wavelength_nm") for b in bands]
    if any(v is not None for v in wl):
        coords["wavelength"] = ("band", np.array([np.nan if v is None else v for v in wl], dtype="float64"),
                                {"units": "nm"})
    if any(b.get("common_name") for b in bands):
        coords["common_name"] = ("band", [b.get("common_name") or "" for b in bands])
    if group_of is not None:
        coords["group"] = ("band", np.asarray(group_of, dtype="int64"))
    return coords


def _to_bands(values: np.ndarray, group_of: np.ndarray, axis: int = 1) -> np.ndarray:
    """Per-group values (G along ``axis``) -> per-band values: each band its group's, 0 for none."""
    padded = np.concatenate([values, np.zeros_like(np.take(values, [0], axis=axis))], axis=axis)
    return np.take(padded, np.where(group_of >= 0, group_of, values.shape[axis]), axis=axis)


def band_importance(model, data, method: str = "occlusion", per: str = "scene", labels=None, *,
                    batch_size: int = 32, window: int | None = None, device: str = "auto") -> xr.DataArray:
    """How much the embedding of ``data`` relies on each band (see the module docstring).

    Args:
        model: from :func:`eossl.pretrain` (``run.model``) or :func:`eossl.load_model`.
        data: chips ``(sample, band, y, x)`` or a scene ``(band, y, x)`` (or a Dataset with ``image``);
            normalised with the model's card as :func:`eossl.embed` does. For a stack pick one date.
        method: ``"occlusion"``, ``"gradient"`` or ``"attention"`` (band-group token models only).
        per: ``"scene"`` (one value per band), ``"patch"`` (per chip, or per patch of a scene's
            embedding grid) or ``"class"`` (mean per class).
        labels: for ``per="class"``: one per chip (default: the chips' ``label`` coordinate) or patch
            labels ``(y, x)`` on the scene's embedding grid (e.g. :func:`eossl.scene_labels`).
            Unlabeled entries (``""``, None, NaN) are left out.
        window: for scenes, the tile size fed to the encoder (default: its training size), as in embed.

    Patches of a scene with nodata pixels get NaN and are left out of the means.
    """
    if method not in METHODS:
        raise DataError(f"method must be one of {METHODS}, got {method!r}")
    if per not in PER:
        raise DataError(f"per must be one of {PER}, got {per!r}")
    encoder, card = card_of(model)
    if isinstance(data, xr.Dataset):
        data = data["image"]
    if not isinstance(data, xr.DataArray) or "band" not in data.dims:
        raise DataError("band_importance needs a DataArray with a 'band' dimension (chips or a scene)")
    group_of = None
    if method == "attention":
        if not hasattr(encoder, "band_groups"):
            raise DataError(f"method='attention' reads the attention given to band-group tokens, which only "
                            f"band-group models have (method='spectral_mae'); this model is "
                            f"{card['method']!r}: use method='occlusion' or 'gradient'")
        group_of = np.full(encoder.in_chans, -1)
        for g, group in enumerate(encoder.band_groups):
            group_of[group] = g
    fn = {"occlusion": _occlusion, "gradient": _gradient, "attention": _attention}[method]
    dev = resolve_device(device)
    # the card's bands, in its units (converted, with a warning), checked once for the whole call
    da, norm_card = conform(data, card)

    if da.ndim == 4 and "sample" in da.dims:
        chips = normalized(da.transpose("sample", "band", "y", "x").values, norm_card, 1, da.attrs.get("nodata"))
        values = _run(fn, encoder, np.nan_to_num(chips), dev, batch_size, pooled=True,
                      desc=f"band importance ({method})")  # (N, C) or (N, G)
        if group_of is not None:
            values = _to_bands(values, group_of)
        coords = {k: v for k, v in da.coords.items() if v.dims == ("sample",)}
        imp = xr.DataArray(values, dims=("sample", "band"), coords=coords)
        unit_dims = ("sample",)
    elif da.ndim == 3:
        imp = _scene_importance(fn, encoder, norm_card, da, dev, batch_size, window, method, group_of)
        unit_dims = ("y", "x")
    else:
        raise DataError(f"band_importance takes chips (sample, band, y, x) or a scene (band, y, x), got "
                        f"{da.dims}; for a stack pick one date, e.g. data.isel(time=0)")
    imp = imp.assign_coords(_band_coords(card, group_of))

    if per == "scene":
        imp = imp.mean(dim=unit_dims, skipna=True)  # coordinates along the averaged dims go with them
    elif per == "class":
        imp = _per_class(imp, labels, unit_dims)
    imp.name = "importance"
    imp.attrs = {"method": method, "per": per, "units": _UNITS[method], "model_method": card.get("method", "")}
    if method == "attention":
        imp.attrs["band_groups"] = [[card["bands"][i]["name"] for i in g] for g in encoder.band_groups]
    return imp


def _scene_importance(fn, encoder, card, da, dev, batch_size, window, method, group_of) -> xr.DataArray:
    """A scene (band, y, x) -> importance (band, y, x) on the embedding grid, tiled as embed tiles."""
    p = encoder.patch_size
    H, W = da.sizes["y"], da.sizes["x"]
    rows, cols = H // p, W // p
    if rows == 0 or cols == 0:
        raise DataError(f"the scene is {H}x{W} px, smaller than one {p}x{p} patch of this encoder")
    raw = da.transpose("band", "y", "x").values[:, :rows * p, :cols * p]
    arr = normalized(raw, card, 0, da.attrs.get("nodata"))  # (C, H', W'), NaN for nodata
    valid = np.isfinite(arr).all(axis=0).reshape(rows, p, cols, p).all(axis=(1, 3))  # (rows, cols)
    arr = np.nan_to_num(arr)  # nodata as 0, the band mean
    win = window or card["encoder"].get("img_size", 64)
    win = max(p, (win // p) * p)
    win_y, win_x = min(win, rows * p), min(win, cols * p)
    starts = [(r, c) for r in window_starts(rows * p, win_y) for c in window_starts(cols * p, win_x)]
    tiles = np.stack([arr[:, r:r + win_y, c:c + win_x] for r, c in starts])  # (N, C, wy, wx)
    maps = _run(fn, encoder, tiles, dev, batch_size, pooled=False, desc=f"band importance ({method})")
    if group_of is not None:
        maps = _to_bands(maps, group_of)  # (N, C, hy, hx)
    grid = np.zeros((rows, cols, maps.shape[1]), dtype="float32")
    for (r, c), m in zip(starts, maps):
        grid[r // p:r // p + m.shape[1], c // p:c // p + m.shape[2]] = np.moveaxis(m, 0, -1)
    grid[~valid] = np.nan  # a patch with nodata has no embedding, so no importance
    out = _grid_to_xarray(da, grid, p, card)  # (y, x, dim) with coordinates and CRS
    return out.rename(dim="band").transpose("band", "y", "x")


def _per_class(imp: xr.DataArray, labels, unit_dims) -> xr.DataArray:
    """Mean importance over the chips or patches of each class -> (class, band)."""
    if unit_dims == ("sample",):
        if labels is None:
            if "label" not in imp.coords:
                raise DataError("per='class' needs labels: pass labels=... or chips with a 'label' coordinate")
            labels = imp["label"].values
        labels = np.asarray(labels)
        if labels.shape != (imp.sizes["sample"],):
            raise DataError(f"{labels.size} labels for {imp.sizes['sample']} chips; give one label per chip")
        flat = imp.transpose("sample", "band").values  # (N, C)
    else:
        if labels is None:
            raise DataError("per='class' on a scene needs patch labels (y, x) on its embedding grid; make them "
                            "from a label raster with eossl.scene_labels(raster, eossl.embed(model, scene))")
        labels = np.asarray(labels.transpose("y", "x") if isinstance(labels, xr.DataArray) else labels)
        if labels.shape != (imp.sizes["y"], imp.sizes["x"]):
            raise DataError(f"labels of shape {labels.shape} do not match the embedding grid of "
                            f"{imp.sizes['y']}x{imp.sizes['x']} patches; make them with eossl.scene_labels")
        flat = imp.transpose("y", "x", "band").values.reshape(-1, imp.sizes["band"])  # (y*x, C)
        labels = labels.reshape(-1)
    keep = ~_missing(labels) & np.isfinite(flat).all(axis=1)
    if not keep.any():
        raise DataError("no chip or patch has both a label and an importance value")
    classes, counts = np.unique(labels[keep], return_counts=True)
    means = np.stack([flat[keep][labels[keep] == c].mean(axis=0) for c in classes])  # (K, C)
    band_coords = {k: v for k, v in imp.coords.items() if v.dims == ("band",)}
    return xr.DataArray(means, dims=("class", "band"),
                        coords={**band_coords, "class": classes, "count": ("class", counts)})
