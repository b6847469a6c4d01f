"""Per-band statistics, computed from the data and carried with it as ``band`` coordinates.

``band_mean`` / ``band_std`` ride on the ``band`` dimension, so selecting bands keeps the right
statistics, and the trainer writes them into the checkpoint card (never ImageNet numbers).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from eossl.errors import DataError

MAX_PIXELS = 2_000_000  # per band: enough for 3-digit precision, cheap on a large scene


def nodata_to_nan(values: np.ndarray, nodata) -> np.ndarray:
    """``values`` with the nodata value and every non-finite value (+-inf) replaced by NaN, so all
    invalid pixels look alike to statistics, sampling and embedding. ``values`` must already be a
    float array; it is returned as it is when every value is valid."""
    invalid = np.isinf(values)
    if nodata is not None and not np.isnan(nodata):
        invalid |= values == nodata
    return np.where(invalid, np.nan, values) if invalid.any() else values


def fill_mask(scene) -> np.ndarray:
    """(y, x) booleans: the pixels of a (band, y, x) scene that hold no data.

    That is the scene's nodata value (``rio.nodata`` or ``attrs["nodata"]``) or a non-finite value in
    every band, and also 0 in every band: Level-1 products such as the Landsat 8 scene in
    ``shared/data`` carry no nodata tag but pad the tilted footprint with zeros (16 % of that
    scene), and a real surface is never exactly 0 in every band at once."""
    values = np.asarray(scene.transpose("band", "y", "x").values)                 # (band, y, x)
    nodata = scene.rio.nodata if scene.rio.nodata is not None else scene.attrs.get("nodata")
    empty = ~np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else np.zeros(values.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        empty |= values == nodata
    return (empty | (values == 0)).all(axis=0)


def band_stats(data, max_pixels: int = MAX_PIXELS, seed: int = 0) -> xr.Dataset:
    """Mean and standard deviation of every band over valid (finite, non-nodata) pixels.

    ``data`` is a DataArray with a ``band`` dimension, or a list of them with the same bands.
    Returns ``xr.Dataset(mean=(band,), std=(band,))``.
    """
    arrays = data if isinstance(data, (list, tuple)) else [data]
    names = arrays[0]["band"].values.tolist()
    columns = []
    for da in arrays:
        if da["band"].values.tolist() != names:
            raise DataError("band_stats: all arrays must have the same bands in the same order")
        flat = da.transpose("band", ...).data.reshape(len(names), -1)  # (C, N)
        if flat.shape[1] > max_pixels:
            idx = np.sort(np.random.default_rng(seed).choice(flat.shape[1], max_pixels, replace=False))
            flat = flat[:, idx]
        columns.append(nodata_to_nan(np.asarray(flat, dtype="float64"), da.attrs.get("nodata")))
    flat = np.concatenate(columns, axis=1)
    counts = np.isfinite(flat).sum(axis=1)
    if np.any(counts == 0):
        empty = [n for n, c in zip(names, counts) if c == 0]
        raise DataError(f"bands {empty} hold no valid pixels (all NaN or nodata)")
    mean = np.nanmean(flat, axis=1)
    std = np.nanstd(flat, axis=1)
    std = np.where(std > 0, std, 1.0)  # a constant band must not divide by zero
    return xr.Dataset({"mean": ("band", mean), "std": ("band", std)}, coords={"band": names})


def with_stats(da: xr.DataArray, stats: xr.Dataset | None = None) -> xr.DataArray:
    """``da`` with ``band_mean`` / ``band_std`` coordinates (computed from ``da`` when not given)."""
    stats = band_stats(da) if stats is None else stats
    stats = stats.sel(band=da["band"].values)
    return da.assign_coords(band_mean=("band", stats["mean"].values),
                            band_std=("band", stats["std"].values))


def stats_of(data) -> xr.Dataset:
    """The statistics carried by ``data`` (one DataArray with ``band_mean`` / ``band_std``), or
    fresh ones computed over it (a DataArray or a list of them, pooled)."""
    arrays = data if isinstance(data, (list, tuple)) else [data]
    da = arrays[0]
    if len(arrays) == 1 and "band_mean" in da.coords and "band_std" in da.coords:
        return xr.Dataset({"mean": ("band", da["band_mean"].values),
                           "std": ("band", da["band_std"].values)},
                          coords={"band": da["band"].values})
    return band_stats(arrays)


def normalize_array(x: np.ndarray, mean, std, band_axis: int) -> np.ndarray:
    """(x - mean) / std along ``band_axis``, NaN kept, as a new float32 array (``x`` is not
    changed, so callers may write into the result)."""
    shape = [1] * x.ndim
    shape[band_axis] = -1
    mean = np.asarray(mean, dtype="float32").reshape(shape)
    std = np.asarray(std, dtype="float32").reshape(shape)
    out = np.subtract(x, mean, dtype="float32")  # the one new array, cast on the fly from any dtype
    out /= std
    return out


def normalize_raw(values: np.ndarray, mean, std, band_axis: int, nodata=None) -> np.ndarray:
    """Raw pixel ``values`` of any dtype standardised along ``band_axis`` as a new float32 array,
    NaN where they were ``nodata``, NaN or +-inf. Integer data (DN) go through in one pass: they
    hold no NaN or inf, so only the nodata value needs looking for, and no float copy is made
    before normalising."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        return normalize_array(nodata_to_nan(values.astype("float32", copy=False), nodata), mean, std, band_axis)
    out = normalize_array(values, mean, std, band_axis)
    if nodata is not None and not np.isnan(nodata):
        invalid = values == nodata
        if invalid.any():
            out[invalid] = np.nan
    return out


def normalize(da: xr.DataArray, stats: xr.Dataset | None = None) -> xr.DataArray:
    """``da`` standardised per band, ``(x - mean) / std`` as float32, with the statistics it
    carries (or ``stats``, or ones computed from it); NaN stays NaN."""
    stats = stats_of(da) if stats is None else stats
    stats = stats.sel(band=da["band"].values)
    axis = da.dims.index("band")
    values = normalize_array(np.asarray(da.values), stats["mean"].values, stats["std"].values, axis)
    return da.copy(data=values)
