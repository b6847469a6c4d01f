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


import numpy as np
import torch
import xarray as xr
from affine import Affine

from eossl import validate as check
from eossl.card import card_of, conform, normalized
from eossl.data.patches import window_starts
from eossl.device import resolve_device
from eossl.errors import DataError
from eossl.models.backbones import check_layers
from eossl.progress import progress


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


def zero_nan(arr: np.ndarray) -> np.ndarray:
    """``arr`` with NaN -> 0 (the band mean after normalising), in place (so only for arrays of
    our own): cheaper than ``np.nan_to_num``, which also looks for +-inf (normalised data hold
    none) and copies."""
    nan = np.isnan(arr)
    if nan.any():
        np.copyto(arr, 0.0, where=nan)
    return arr


def on_device(encoder, device):
    """``encoder`` in eval mode on ``device``, moved only when it is elsewhere (``.to`` and
    ``.eval`` walk every module: milliseconds per call that a loop of small embeds would pay)."""
    param = next(encoder.parameters(), None)
    if param is not None and param.device != device:
        encoder = encoder.to(device)
    return encoder.eval() if encoder.training else encoder


@torch.no_grad()
def feature_batches(encoder, count: int, batch_of, device, batch_size: int, *, readout: str | None = None,
                    desc: str | None = None, layers: str = "last"):
    """The encoder over ``count`` inputs, one batch at a time: yields ``(slice, features)`` as
    float32 numpy on the CPU, for the caller to place (no list of batches to concatenate):
    feature maps (b, h, w, D), a view; with ``readout``, each input's grid pooled on the device
    by :func:`pool_grid`, (b, D). ``batch_of(slice)`` gives the batch's normalised inputs
    (b, C, H, W), float32 without NaN. ``desc`` shows a per-batch progress bar."""
    encoder = on_device(encoder, device)
    steps = list(_batches(count, batch_size))
    for sl in (progress(steps, desc=desc, unit="batch", leave=False) if desc else steps):
        x = torch.from_numpy(batch_of(sl)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            fm = encoder.feature_map(x) if layers == "last" else encoder.feature_map(x, layers)  # (b, D, h, w)
        fm = fm.float()
        yield sl, (pool_grid(fm, readout) if readout else fm.permute(0, 2, 3, 1)).cpu().numpy()


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
    encoder, card = card_of(model)
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
    # the card's bands in its order, its units (converted inside the statistics when they differ),
    # and a warning when the values sit far from what the encoder was trained on
    da, card = conform(data, card, check_values=check_values, on_mismatch=on_mismatch)
    nodata = da.attrs.get("nodata")

    def prepared(values: np.ndarray, band_axis: int) -> np.ndarray:
        return normalized(values, card, band_axis, nodata)

    if da.ndim == 4 and "sample" in da.dims:
        arr = prepared(da.transpose("sample", "band", "y", "x").values, 1)  # (N, C, H, W), NaN = nodata
        zero_nan(arr)  # nodata as the band mean
        batches = feature_batches(encoder, len(arr), lambda sl: arr[sl], dev, batch_size,
                                  readout=card.get("readout", "mean"), desc="embed chips", layers=layers)
        vectors = np.concatenate([pooled for _, pooled in batches])  # (N, D)
        coords = {k: v for k, v in da.coords.items() if v.dims == ("sample",)}
        return xr.DataArray(vectors, dims=("sample", "dim"), coords=coords, name="embedding",
                            attrs=_attrs(card, layers))
    if da.ndim == 3:
        return _embed_scene(encoder, card, da, prepared, dev, batch_size, window, layers)
    if da.ndim == 4:
        lead = [d for d in da.dims if d not in ("band", "y", "x")][0]
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


def _embed_scene(encoder, card, da, prepared, dev, batch_size, window, layers="last") -> xr.DataArray:
    """(band, y, x) -> (y, x, dim) on the patch grid."""
    p = encoder.patch_size
    H, W = da.sizes["y"], da.sizes["x"]
    rows, cols = H // p, W // p
    if rows == 0 or cols == 0:
        raise DataError(f"{da.attrs.get('source', 'the scene')}: is {H}x{W} px, smaller than one "
                        f"{p}x{p} patch of this encoder")
    arr = prepared(da.transpose("band", "y", "x").values[:, :rows * p, :cols * p], 0)  # (C, H', W')
    finite = np.isfinite(arr)  # (C, H', W')
    if not finite.any():
        raise DataError(f"{da.attrs.get('source', 'the scene')}: every pixel is NaN or nodata")
    win = window or card["encoder"].get("img_size", 64)
    win = max(p, (win // p) * p)
    win_y, win_x = min(win, rows * p), min(win, cols * p)
    starts = [(r, c) for r in window_starts(rows * p, win_y) for c in window_starts(cols * p, win_x)]
    # A patch with any invalid pixel gets no embedding (NaN) rather than a made-up one; the
    # encoder sees 0 (the band mean) there, written in place: arr is our own normalised copy.
    valid = finite.all(axis=0).reshape(rows, p, cols, p).all(axis=(1, 3))  # (rows, cols)
    if not valid.all():
        zero_nan(arr)

    def windows(sl):  # (b, C, wy, wx), cut per batch: no second copy of the scene
        return np.stack([arr[:, r:r + win_y, c:c + win_x] for r, c in starts[sl]])

    grid = None  # (rows, cols, D), made when the first batch tells D
    for sl, maps in feature_batches(encoder, len(starts), windows, dev, batch_size, desc="embed scene",
                                    layers=layers):  # maps (b, hy, hx, D)
        if grid is None:
            grid = np.zeros((rows, cols, maps.shape[-1]), dtype="float32")
        for (r, c), m in zip(starts[sl], maps):  # later windows overwrite the overlap of earlier ones
            grid[r // p:r // p + m.shape[0], c // p:c // p + m.shape[1]] = m
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
        # inplace: rioxarray's default returns a deep copy, i.e. copies the whole grid each time
        out.rio.write_transform(transform, inplace=True)
        if crs is not None:
            out.rio.write_crs(crs, inplace=True)
    out.attrs["patch_size"] = p
    return out
