"""``eossl.embed``: encoder features as xarray, aligned with the data they came from.

- chips ``(sample, band, y, x)`` -> ``(sample, dim)``, keeping ``label`` and other sample coords; the
  chip's token grid is pooled by the card's ``readout`` (:func:`pool_grid`: the mean of the tokens,
  or their mean and std), the same rule for every method;
- a scene ``(band, y, x)`` -> ``(y, x, dim)`` on the encoder's patch grid, with the scene's CRS and
  a transform whose pixels are patches, so an embedding map overlays the scene;
- a stack ``(time, band, y, x)`` -> ``(time, y, x, dim)``.

``layers="all"`` (ViT encoders) gives every stage's tokens side by side instead of the last block's
(``dim`` = width x (depth + 2)): the input to change detection, where single patches are compared
(``eossl.change``; measured on OSCD in the README).

The data are normalised with the statistics in the model's card, after checking that the bands
match (reordered by name when needed, missing ones named in an error) and that the values are in
the units the model expects. A card with ``units`` ("DN" or "reflectance") decides what happens to
data in the other units (``card["on_mismatch"]``): ``"convert"`` (DN <-> reflectance with the
sensor's scale, and a warning that says so), ``"warn"`` or ``"error"``. Cards without units still
get a warning when the values sit far from the training statistics.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import xarray as xr
from affine import Affine

from eossl.data.normalize import nodata_to_nan, normalize_array
from eossl.data.units import dn_scale, guess_units, normalise_units
from eossl.errors import CheckpointError, DataError
from eossl import validate as check
from eossl.models.backbones import check_layers
from eossl.progress import progress
from eossl.train.loop import resolve_device


def _encoder_and_card(model):
    encoder = getattr(model, "encoder", model)
    card = getattr(model, "card", None)
    if card is None:
        raise CheckpointError("this model has no card (bands and normalisation); use the model from "
                              "eossl.pretrain(...).model or eossl.load_model(path)")
    return encoder, card


def match_bands(da: xr.DataArray, card: dict) -> xr.DataArray:
    """``da`` with exactly the card's bands in the card's order, or a clear error.

    Data whose bands carry no names (``band_1`` ... ``band_N``, what a file without band
    descriptions gives) and whose count equals the model's is taken to be in the model's band
    order, with a warning saying so; a different count is an error."""
    if not isinstance(card.get("bands"), list) or not card["bands"]:
        raise CheckpointError("the model's card lists no bands ('bands' missing or empty), so eossl cannot "
                              "tell which input channels it expects; the checkpoint is damaged or not "
                              "eossl's: load a foreign state dict with eossl.load_model(path, bands=[...])")
    want = [b["name"] if isinstance(b, dict) else str(b) for b in card["bands"]]
    have = da["band"].values.tolist()
    if have == want:
        return da
    missing = [b for b in want if b not in have]
    unnamed = have == [f"band_{i + 1}" for i in range(len(have))]
    if missing and unnamed and len(have) == len(want):
        warnings.warn(f"the data's {len(have)} bands have no names; using them as the model's bands in "
                      f"its order {want}. Name them (open with bands=[...]) to silence this", stacklevel=3)
        return da.assign_coords(band=want)
    if missing:
        hint = ""
        if unnamed:
            hint = (f" The data's bands have no names and their count ({len(have)}) differs from the "
                    f"model's ({len(want)}), so they cannot be the model's bands")
        raise CheckpointError(
            f"the model was trained on bands {want} but the data has {have}; missing {missing}. "
            "Give data with those bands (or open it with bands=[...] naming them)." + hint)
    return da.sel(band=want)  # same bands, other order: reorder by name


def sample_values(da: xr.DataArray, max_pixels: int = 100_000) -> np.ndarray:
    """A strided sample of ``da``'s values as ``(band, N)`` float64, NaN for nodata. From lazy
    (dask) data it reads a central window of a few dates / chips only, not every chunk."""
    if da.chunks is not None:
        window = {}
        for d in da.dims:
            n = da.sizes[d]
            if d in ("y", "x"):
                window[d] = slice(max(0, n // 2 - 128), n // 2 + 128)
            elif d != "band":
                window[d] = np.unique(np.linspace(0, n - 1, min(n, 3)).round().astype(int))
        da = da.isel(window)
    spatial = {d: da.sizes[d] for d in da.dims if d != "band"}
    total = int(np.prod(list(spatial.values()))) if spatial else 1
    step = max(1, int(np.ceil((total / max_pixels) ** (1 / max(1, len(spatial))))))
    small = da.isel({d: slice(None, None, step) for d in spatial}) if step > 1 else da
    values = np.asarray(small.transpose("band", ...).values, dtype="float64").reshape(da.sizes["band"], -1)
    return nodata_to_nan(values, da.attrs.get("nodata"))


def units_guard(da: xr.DataArray, card: dict, sample: np.ndarray | None = None,
                on_mismatch: str | None = None) -> dict:
    """The card to normalise ``da`` with: ``card`` itself when the units agree (or either is
    unknown), otherwise, as ``on_mismatch`` (default: the card's) says, a card whose statistics
    also convert the units (with a warning naming the conversion), a warning, or an error.

    Converting inside the statistics costs nothing: (x * f + o - mean) / std is
    (x - (mean - o) / f) / (std / f).
    """
    want = normalise_units(card.get("units"))
    if want is None:
        return card
    declared = normalise_units(da.attrs.get("units"))
    if declared == want:  # no pixel needs reading
        return card
    values = sample if sample is not None else sample_values(da)
    have = guess_units(values, dtype=da.dtype, attrs=da.attrs)
    if have is None or have == want:
        return card
    conversion = dn_scale(card)
    mode = on_mismatch or card.get("on_mismatch") or ("convert" if conversion else "warn")
    if mode not in ("convert", "warn", "error"):
        raise CheckpointError(f"on_mismatch={mode!r}: use 'convert', 'warn' or 'error'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.round(np.nanmedian(values, axis=1)[:4], 4).tolist()
    problem = (f"the model expects {want} but the data look like {have} (band medians {medians}...; "
               f"different units)")
    if mode == "error":
        raise CheckpointError(problem + ". Convert the data to " + want + " first (Sentinel-2: "
                              "reflectance = DN / 10000), or load the model with on_mismatch='convert'")
    if mode == "convert" and conversion:
        scale, offset = conversion  # reflectance = DN * scale + offset
        f, o = (scale, offset) if want == "reflectance" else (1 / scale, -offset / scale)
        warnings.warn(f"{problem}: converting {have} to {want} (x * {f:g}{offset and f' + {o:g}' or ''}) "
                      "before embedding; pass data in the model's units to silence this", stacklevel=3)
        norm = card["normalization"]
        mean = (np.asarray(norm["mean"], dtype="float64") - o) / f
        std = np.asarray(norm["std"], dtype="float64") / f
        return {**card, "normalization": {**norm, "mean": mean.tolist(), "std": std.tolist()},
                "units": have}
    warnings.warn(problem + (f"; eossl knows no DN scale for sensor {card.get('sensor')!r} to convert"
                             if mode == "convert" else "")
                  + ". The embeddings will be meaningless: convert the data to " + want, stacklevel=3)
    return card


def check_units(da: xr.DataArray, card: dict, sample: np.ndarray | None = None) -> None:
    """Warn when the data's values sit far outside the training distribution (e.g. reflectance
    0..1 given to a model trained on DN 0..10000): the most common silent failure."""
    mean = np.asarray(card["normalization"]["mean"], dtype="float64")
    std = np.asarray(card["normalization"]["std"], dtype="float64")
    values = sample if sample is not None else da.transpose("band", ...).values.reshape(len(mean), -1)
    if values.shape[1] > 100_000:  # a median of 10^5 pixels per band is plenty, and 10x cheaper
        values = values[:, :: values.shape[1] // 100_000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands, log10(0)
        median = np.nanmedian(values.astype("float64"), axis=1)
        z = np.nanmedian(np.abs(median - mean) / std)
        # A shift of many std, or a factor of 10+ in scale: reflectance vs DN differs by 1e4 but
        # only ~2 std on the wide distributions of real scenes, so the z-score alone misses it.
        # The ratio is only meaningful for bands whose training mean is well away from zero.
        away = np.abs(mean) > 0.5 * std
        ratio = np.abs(np.log10(np.abs(median[away]) / np.abs(mean[away])))
        scale = np.nanmedian(ratio) if ratio.size else np.nan
    if z > 10 or scale > 1:
        warnings.warn(
            f"the data's values do not look like what the model was trained on: band medians "
            f"{np.round(median[:4], 3).tolist()}... vs training means {np.round(mean[:4], 3).tolist()}... "
            "(different units, e.g. reflectance vs DN, or another scaling?)", stacklevel=3)


def model_input(model, chips: xr.DataArray) -> np.ndarray:
    """Chips ``(sample, band, y, x)`` as the model sees them: its bands in its order, in its units
    (see :func:`units_guard`), normalised with its card's statistics, NaN as 0 (the band mean).
    Returns float32 ``(N, C, H, W)``."""
    _, card = _encoder_and_card(model)
    da = match_bands(chips, card)
    card = units_guard(da, card)
    values = nodata_to_nan(da.transpose("sample", "band", "y", "x").values.astype("float32"),
                           da.attrs.get("nodata"))
    norm = card["normalization"]
    return np.nan_to_num(normalize_array(values, norm["mean"], norm["std"], 1))


def _batches(n, size):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def pool_grid(fm: torch.Tensor, readout: str = "mean") -> torch.Tensor:
    """A chip's feature grid (B, D, h, w) -> its embedding: ``"mean"`` (B, D), the mean of the
    tokens; ``"mean_std"`` (B, 2D), their mean and standard deviation over the grid (how uniform
    the chip is). The card's ``readout`` says which one a model's embeddings use."""
    if readout == "mean":
        return fm.mean(dim=(2, 3))
    if readout == "mean_std":
        flat = fm.flatten(2)  # (B, D, h*w)
        spread = flat.std(dim=2) if flat.shape[2] > 1 else torch.zeros_like(flat[:, :, 0])
        return torch.cat([flat.mean(dim=2), spread], dim=1)
    raise ValueError(f"unknown readout {readout!r}; use 'mean' or 'mean_std'")


@torch.no_grad()
def _encode(encoder, arr: np.ndarray, device, batch_size: int, pooled: bool, desc: str,
            readout: str = "mean", layers: str = "last") -> np.ndarray:
    """arr (N, C, H, W) normalised, NaN allowed -> (N, D) pooled (by ``readout``) or (N, h, w, D) maps."""
    encoder = encoder.to(device).eval()
    out = []
    steps = list(_batches(len(arr), batch_size))
    for sl in progress(steps, desc=desc, unit="batch", leave=False):
        x = torch.from_numpy(np.nan_to_num(arr[sl], nan=0.0)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            fm = encoder.feature_map(x) if layers == "last" else encoder.feature_map(x, layers)  # (B, D, h, w)
        fm = fm.float()
        out.append((pool_grid(fm, readout) if pooled else fm.permute(0, 2, 3, 1)).cpu().numpy())
    return np.concatenate(out)


def embed(model, data, *, batch_size: int = 64, window: int | None = None, device: str = "auto",
          check_values: bool = True, on_mismatch: str | None = None, layers: str = "last") -> xr.DataArray:
    """Embed chips, a scene or a stack with a trained model (see the module docstring).

    Args:
        model: from :func:`eossl.pretrain` (``run.model``) or :func:`eossl.load_model`.
        data: DataArray (sample|time, band, y, x) or (band, y, x), or a Dataset with ``image``.
        window: for scenes, the tile size fed to the encoder (default: its training size).
        check_values: compare the data's units and value range with the card's (default); False
            skips every check and conversion.
        on_mismatch: data in other units than the card's: ``"convert"``, ``"warn"`` or ``"error"``
            (default: what the card says).
        layers: ``"last"`` (default), the last block's tokens; ``"all"``, every stage's tokens
            concatenated (ViTs; see the module docstring).
    """
    batch_size = check.integer("batch_size", batch_size, minimum=1)
    window = None if window is None else check.integer("window", window, minimum=1)
    check.choice("on_mismatch", on_mismatch, (None, "convert", "warn", "error"))
    dev = resolve_device(device)
    encoder, card = _encoder_and_card(model)
    check_layers(layers, encoder)
    if isinstance(data, xr.Dataset):
        if "image" not in data:
            raise DataError(f"embed needs a DataArray or a Dataset with an 'image' variable; this Dataset "
                            f"has {list(data.data_vars)}")
        data = data["image"]
    if not isinstance(data, xr.DataArray) or "band" not in data.dims:
        raise DataError("embed needs a DataArray with a 'band' dimension (chips, scene or stack)")
    if 0 in data.shape:
        raise DataError(f"embed got an empty array (sizes {dict(data.sizes)}); nothing to embed")
    da = match_bands(data, card)
    if check_values:
        card = units_guard(da, card, on_mismatch=on_mismatch)
    mean, std = card["normalization"]["mean"], card["normalization"]["std"]
    nodata = da.attrs.get("nodata")

    def prepared(values: np.ndarray, band_axis: int) -> np.ndarray:
        return normalize_array(nodata_to_nan(values.astype("float32"), nodata), mean, std, band_axis)

    if da.ndim == 4 and "sample" in da.dims:
        raw = da.transpose("sample", "band", "y", "x").values
        if check_values:
            check_units(da, card, np.moveaxis(raw, 1, 0).reshape(raw.shape[1], -1))
        vectors = _encode(encoder, prepared(raw, 1), dev, batch_size, pooled=True, desc="embed chips",
                          readout=card.get("readout", "mean"), layers=layers)
        coords = {k: v for k, v in da.coords.items() if v.dims == ("sample",)}
        return xr.DataArray(vectors, dims=("sample", "dim"), coords=coords, name="embedding",
                            attrs=_attrs(card, layers))
    if da.ndim == 3:
        if check_values:
            check_units(da, card)
        return _embed_scene(encoder, card, da, prepared, dev, batch_size, window, layers)
    if da.ndim == 4:
        lead = [d for d in da.dims if d not in ("band", "y", "x")][0]
        if check_values:
            check_units(da, card)
        maps = [_embed_scene(encoder, card, da.isel({lead: i}), prepared, dev, batch_size, window, layers)
                for i in range(da.sizes[lead])]
        out = xr.concat(maps, dim=lead).assign_coords({lead: da[lead].values})
        return out.transpose(lead, "y", "x", "dim")
    raise DataError(f"cannot embed an array with dims {da.dims}")


def _attrs(card, layers: str = "last"):
    attrs = {"method": card["method"], "encoder": card["encoder"].get("name", ""),
             "bands": [b["name"] for b in card["bands"]]}
    if layers != "last":
        attrs["layers"] = layers  # every stage's tokens side by side
    return attrs


def _window_starts(length: int, window: int) -> list[int]:
    """Tile starts covering [0, length) with the last tile flush with the end (overlap, no pad)."""
    starts = list(range(0, length - window + 1, window))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def _embed_scene(encoder, card, da, prepared, dev, batch_size, window, layers="last") -> xr.DataArray:
    """(band, y, x) -> (y, x, dim) on the patch grid."""
    p = encoder.patch_size
    H, W = da.sizes["y"], da.sizes["x"]
    rows, cols = H // p, W // p
    if rows == 0 or cols == 0:
        raise DataError(f"{da.attrs.get('source', 'the scene')}: is {H}x{W} px, smaller than one "
                        f"{p}x{p} patch of this encoder")
    arr = prepared(da.transpose("band", "y", "x").values[:, :rows * p, :cols * p], 0)  # (C, H', W')
    if not np.isfinite(arr).any():
        raise DataError(f"{da.attrs.get('source', 'the scene')}: every pixel is NaN or nodata")
    win = window or card["encoder"].get("img_size", 64)
    win = max(p, (win // p) * p)
    win_y, win_x = min(win, rows * p), min(win, cols * p)
    starts = [(r, c) for r in _window_starts(rows * p, win_y) for c in _window_starts(cols * p, win_x)]
    tiles = np.stack([arr[:, r:r + win_y, c:c + win_x] for r, c in starts])  # (N, C, wy, wx)
    maps = _encode(encoder, tiles, dev, batch_size, pooled=False, desc="embed scene", layers=layers)  # (N, hy, hx, D)
    D = maps.shape[-1]
    grid = np.zeros((rows, cols, D), dtype="float32")
    for (r, c), m in zip(starts, maps):
        grid[r // p:r // p + m.shape[0], c // p:c // p + m.shape[1]] = m
    # A patch with any invalid pixel gets no embedding (NaN) rather than a made-up one.
    valid = np.isfinite(arr).all(axis=0).reshape(rows, p, cols, p).all(axis=(1, 3))  # (rows, cols)
    grid[~valid] = np.nan
    return _grid_to_xarray(da, grid, p, card, layers)


def _grid_to_xarray(da, grid, p, card, layers="last") -> xr.DataArray:
    rows, cols, D = grid.shape
    out = xr.DataArray(grid, dims=("y", "x", "dim"), name="embedding", attrs=_attrs(card, layers))
    crs = da.rio.crs if "x" in da.coords else None
    if "x" in da.coords and "y" in da.coords:
        t = da.rio.transform()  # scaled by p (no `*` on Affine: deprecated in affine 3)
        transform = Affine(t.a * p, t.b * p, t.c, t.d * p, t.e * p, t.f)
        xs = transform.c + transform.a * (np.arange(cols) + 0.5)
        ys = transform.f + transform.e * (np.arange(rows) + 0.5)
        out = out.assign_coords(x=xs, y=ys)
        out = out.rio.write_transform(transform)
        if crs is not None:
            out = out.rio.write_crs(crs)
    out.attrs["patch_size"] = p
    return out
