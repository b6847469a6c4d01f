"""Scenes into xarray: ``open_scene`` gives ``(band, y, x)``, ``open_stack`` gives ``(time, band, y, x)``.

Every result carries its CRS and transform (``spatial_ref``), its nodata value, and a ``band``
coordinate naming the bands with wavelengths and resolutions (see :mod:`eossl.data.bands`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.warp import transform_bounds

from eossl.data import bands as bandtab
from eossl.errors import DataError

_BAND_IN_NAME = re.compile(r"(?:^|[_\-.])(B\d{1,2}A?)$", re.I)
_DATE_IN_NAME = re.compile(r"((?:19|20)\d{2})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?")


def open_scene(source, *, sensor: str | None = None, bands=None, masked: bool = True,
               chunks=None, resampling: str = "bilinear") -> xr.DataArray:
    """Open a scene as ``xr.DataArray (band, y, x)``.

    Args:
        source: a multi-band GeoTIFF/COG (path or URL), an ENVI file (the ``.hdr`` or the data
            file beside it), a list of single-band files (e.g. Sentinel-2 ``*_B02.tif`` at mixed
            10/20/60 m, resampled onto the finest grid), or a folder of such files.
        sensor: a key of :data:`eossl.data.bands.SENSORS`; guessed from file names and headers
            when None.
        bands: band names in file order, overriding what the file says.
        masked: turn the nodata value into NaN (float32). Integer data without nodata keep
            their dtype.
        chunks: passed to rioxarray for a lazy, dask-backed array (large scenes).
        resampling: how coarser bands are brought onto the finest grid.
    """
    if isinstance(source, (list, tuple)):
        files = [Path(s) for s in source]
    elif isinstance(source, (str, Path)) and Path(source).is_dir():
        files = sorted(p for p in Path(source).iterdir()
                       if p.suffix.lower() in (".tif", ".tiff", ".jp2") and _BAND_IN_NAME.search(p.stem))
        if not files:
            raise DataError(f"{source}: folder holds no band files named like '*_B02.tif'")
    else:
        return _open_one(source, sensor=sensor, bands=bands, masked=masked, chunks=chunks)
    if len(files) == 1 and (bands is not None or not _BAND_IN_NAME.search(files[0].stem)):
        return _open_one(files[0], sensor=sensor, bands=bands, masked=masked, chunks=chunks)
    # (a lone *_B02.tif still goes through the band-file path, which names its band B02)
    return _open_band_files(files, sensor=sensor, bands=bands, masked=masked, chunks=chunks,
                            resampling=resampling)


def open_stack(sources, *, times=None, **kwargs) -> xr.DataArray:
    """Open several dates of one place as ``xr.DataArray (time, band, y, x)``.

    ``sources`` are anything :func:`open_scene` takes, or DataArrays already opened. Dates whose
    grids differ by a few pixels (e.g. OSCD abudhabi) are cropped to their common extent; dates
    on other grids are resampled onto the first date's grid. ``times`` default to dates found in
    the file names, else to 0, 1, 2, ...
    """
    scenes = [s if isinstance(s, xr.DataArray) else open_scene(s, **kwargs) for s in sources]
    if not scenes:
        raise DataError("open_stack needs at least one scene")
    names0 = scenes[0]["band"].values.tolist()
    for i, s in enumerate(scenes[1:], 1):
        names = s["band"].values.tolist()
        if sorted(names) != sorted(names0):
            raise DataError(f"date {i} has bands {names}, date 0 has {names0}: "
                            "a stack needs the same bands at every date")
        if names != names0:
            scenes[i] = s.sel(band=names0)  # same bands, other order
    scenes = _common_grid(scenes)
    if times is None:
        found = [s.attrs.get("time") for s in scenes]
        times = pd.to_datetime(found) if all(found) else np.arange(len(scenes))
    elif len(times) != len(scenes):
        raise DataError(f"{len(times)} times given for {len(scenes)} scenes")
    else:
        times = pd.to_datetime(list(times)) if not np.issubdtype(np.asarray(times).dtype, np.integer) else times
    stack = xr.concat(scenes, dim="time", combine_attrs="drop_conflicts", coords="minimal",
                      compat="override", join="override")
    stack = stack.assign_coords(time=times)
    stack.attrs.pop("time", None)
    stack.attrs["sources"] = [str(s.attrs.get("source", "")) for s in scenes]
    return stack.rio.write_crs(scenes[0].rio.crs) if scenes[0].rio.crs else stack


# --------------------------------------------------------------------------- one file

def _rasterio_path(path) -> str:
    """ENVI: rasterio opens the data file, not the header; accept either."""
    p = Path(str(path))
    if p.suffix.lower() == ".hdr":
        stem = p.with_suffix("")
        for candidate in (stem, stem.with_suffix(".img"), stem.with_suffix(".dat"), stem.with_suffix(".bin")):
            if candidate.exists():
                return str(candidate)
        raise DataError(f"{path}: ENVI header without its data file (looked for {stem.name}, .img, .dat)")
    return str(path)


def _read(path, chunks=None) -> xr.DataArray:
    src = _rasterio_path(path)
    if "://" not in src and not Path(src).exists():
        raise DataError(f"{src}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            da = rioxarray.open_rasterio(src, chunks=chunks, masked=False)
        with rasterio.open(src) as ds:
            _check_complete(ds, src)
    except (RasterioIOError, rasterio.errors.RasterioError) as err:
        raise DataError(f"{src}: not a raster that GDAL can read ({err}). "
                        "eossl opens GeoTIFF/COG, ENVI (.hdr + data) and other GDAL formats.") from None
    if isinstance(da, list) or "band" not in da.dims:
        raise DataError(f"{src}: holds several subdatasets; open one of them")
    return da


def _check_complete(ds, src: str) -> None:
    """Refuse a (local) TIFF whose image blocks run past the end of the file: a truncated copy
    (an interrupted download or copy) opens fine and only fails when its pixels are read, which
    for a lazy scene is deep inside pretrain or embed. Reads the block index, not the pixels."""
    if ds.driver != "GTiff" or "://" in src or not Path(src).is_file():
        return
    size = Path(src).stat().st_size
    block_h, block_w = ds.block_shapes[0]
    rows, cols = -(-ds.height // block_h), -(-ds.width // block_w)
    corners = {(0, 0), (rows - 1, cols - 1), (rows - 1, 0), (0, cols - 1)}
    blocks = [(r, c) for r in range(rows) for c in range(cols)] if rows * cols <= 4096 else sorted(corners)
    for band in sorted({1, ds.count}):
        for r, c in blocks:
            offset = ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=band)
            length = ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=band)
            if offset is None or length is None:
                return  # GDAL does not expose the index for this layout: nothing to check
            if int(offset) + int(length) > size:
                raise DataError(f"{src}: truncated file: its image data runs to byte "
                                f"{int(offset) + int(length):,} but the file has {size:,} bytes (an "
                                "interrupted download or copy?). Fetch or copy it again")


def _file_metadata(src: str) -> dict:
    with rasterio.open(src) as ds:
        envi = ds.tags(ns="ENVI") if "ENVI" in (ds.tag_namespaces() or []) else {}
        wavelengths = []
        for i in range(1, ds.count + 1):
            wl = ds.tags(i).get("wavelength")
            units = ds.tags(i).get("wavelength_units", "").lower()
            if wl is None:
                break
            factor = 1000.0 if units.startswith("micro") or float(wl) < 30 else 1.0
            wavelengths.append(float(wl) * factor)
        return {"descriptions": list(ds.descriptions), "envi_sensor": envi.get("sensor_type", ""),
                "wavelengths": wavelengths if len(wavelengths) == ds.count else None,
                "tags": ds.tags()}


def _identify_bands(path, count, sensor, bands, meta) -> tuple[str | None, list]:
    """Band table entries for a file, from (in order of trust): the caller, the file's band
    descriptions, ENVI wavelengths, the sensor's table when the band count fits."""
    sensor = sensor or bandtab.guess_sensor(Path(str(path)).name, meta["envi_sensor"],
                                            meta["tags"].get("SENSOR", ""))
    if bands is not None:
        if len(bands) != count:
            raise DataError(f"{path}: {count} bands in the file but {len(bands)} band names given")
        sensor = sensor or _sensor_from_band_names(list(bands))  # as for band descriptions
        return sensor, bandtab.lookup(sensor, list(bands))
    desc = meta["descriptions"]
    if all(desc) and len(set(desc)) == count:
        names = [d.strip() for d in desc]
        sensor = sensor or _sensor_from_band_names(names)
        if sensor and all(n in {b.name for b in bandtab.sensor_bands(sensor)} for n in names):
            return sensor, bandtab.lookup(sensor, names)
    if sensor and meta["wavelengths"]:
        try:
            return sensor, bandtab.match_by_wavelength(sensor, meta["wavelengths"])
        except ValueError:
            pass
    found = bandtab.default_bands(sensor, count)
    if meta["wavelengths"] and not sensor:
        found = [bandtab.Band(b.name, "", wl, float("nan")) for b, wl in zip(found, meta["wavelengths"])]
    return sensor, found


def _sensor_from_band_names(names) -> str | None:
    """Names like B02..B8A are Sentinel-2 even when the file name is silent."""
    s2 = {b.name for b in bandtab.SENSORS["sentinel2_l1c"]}
    zero_padded = any(re.fullmatch(r"B0\d|B8A", n) for n in names)  # Landsat says B2, not B02
    return "sentinel2_l1c" if set(names) <= s2 and zero_padded else None


def _finish(da: xr.DataArray, band_list, sensor, masked, source, named=None) -> xr.DataArray:
    nodata = da.rio.nodata
    da = da.assign_coords(bandtab.band_coords(band_list))
    if masked and nodata is not None:
        da = da.where(da != nodata).astype("float32")
        da = da.rio.write_nodata(np.nan, encoded=False)
    da.attrs = {k: v for k, v in da.attrs.items() if k in ("scale_factor", "add_offset")}
    da.attrs.update(sensor=sensor or "generic", source=str(source),
                    nodata=float(nodata) if nodata is not None else None)
    time = _date_from_name(Path(str(named or source)).name)
    if time is not None:
        da.attrs["time"] = time
    return da.rename("reflectance" if sensor else "value")


def _open_one(path, *, sensor, bands, masked, chunks) -> xr.DataArray:
    da = _read(path, chunks)
    meta = _file_metadata(_rasterio_path(path))
    sensor, band_list = _identify_bands(path, da.sizes["band"], sensor, bands, meta)
    return _finish(da, band_list, sensor, masked, path)


def _date_from_name(name: str):
    m = _DATE_IN_NAME.search(name)
    if not m:
        return None
    try:
        return str(pd.Timestamp(f"{m[1]}-{m[2]}-{m[3]}" + (f"T{m[4]}:{m[5]}:{m[6]}" if m[4] else "")))
    except ValueError:
        return None


# --------------------------------------------------------------------------- band files

def _band_name(path: Path) -> str:
    m = _BAND_IN_NAME.search(path.stem)
    if not m:
        raise DataError(f"{path}: cannot tell which band this file holds (expected a name ending "
                        "in _B02, _B8A, ...); pass bands=[...] in file order")
    name = m[1].upper()
    return name


def _open_band_files(files, *, sensor, bands, masked, chunks, resampling) -> xr.DataArray:
    names = list(bands) if bands is not None else [_band_name(f) for f in files]
    if len(names) != len(files):
        raise DataError(f"{len(files)} band files but {len(names)} band names")
    sensor = sensor or bandtab.guess_sensor(*[f.name for f in files]) or _sensor_from_band_names(names)
    layers = []
    for f in files:
        layer = _read(f, chunks)
        if layer.sizes["band"] != 1:
            raise DataError(f"{f}: has {layer.sizes['band']} bands; a list of files must hold one band each")
        layers.append(layer)
    # The finest band defines the grid (Sentinel-2: the 10 m bands).
    ref_i = int(np.argmin([abs(layer.rio.resolution()[0]) for layer in layers]))
    ref = layers[ref_i]
    aligned = []
    for f, layer in zip(files, layers):
        _check_alignable(f, layer, files[ref_i], ref)
        if layer.rio.shape != ref.rio.shape or layer.rio.transform() != ref.rio.transform():
            layer = layer.rio.reproject_match(ref, resampling=Resampling[resampling])
        aligned.append(layer.isel(band=0, drop=True))
    # Reprojected bands carry a fill value for pixels they do not cover; use it for the whole scene
    # whatever the order of the files (not only when the first file happened to be reprojected).
    nodata = next((a.rio.nodata for a in aligned if a.rio.nodata is not None), None)
    da = xr.concat(aligned, dim="band", join="override", combine_attrs="override")
    da = da.rio.write_nodata(nodata, encoded=False)
    da = da.rio.write_crs(ref.rio.crs) if ref.rio.crs else da
    if sensor and all(n in {b.name for b in bandtab.sensor_bands(sensor)} for n in names):
        order = [b.name for b in bandtab.sensor_bands(sensor) if b.name in names]
        da = da.isel(band=[names.index(n) for n in order])  # canonical sensor order
        names = order
    band_list = bandtab.lookup(sensor, names)
    return _finish(da, band_list, sensor, masked, files[ref_i].parent, named=files[ref_i])


def _check_alignable(path, layer, ref_path, ref) -> None:
    """Bands of one scene must cover the same ground, to within one coarse pixel."""
    if (layer.rio.crs is None) != (ref.rio.crs is None):
        raise DataError(f"{path}: has no CRS while {ref_path} has one; cannot align the band files")
    bounds = layer.rio.bounds()
    if layer.rio.crs and ref.rio.crs and layer.rio.crs != ref.rio.crs:
        bounds = transform_bounds(layer.rio.crs, ref.rio.crs, *bounds)
    tolerance = max(abs(layer.rio.resolution()[0]), abs(ref.rio.resolution()[0])) * 1.01
    gaps = np.abs(np.array(bounds) - np.array(ref.rio.bounds()))
    if np.any(gaps > tolerance):
        raise DataError(f"{path}: covers {tuple(round(b, 6) for b in bounds)} but {ref_path} covers "
                        f"{tuple(round(b, 6) for b in ref.rio.bounds())}; band files must be on "
                        "grids that overlap to within one pixel to be aligned")


# --------------------------------------------------------------------------- stacks

def _common_grid(scenes: list[xr.DataArray]) -> list[xr.DataArray]:
    ref = scenes[0]
    same = all(s.rio.shape == ref.rio.shape and s.rio.transform() == ref.rio.transform()
               for s in scenes)
    if same:
        return scenes
    crs_ok = all(s.rio.crs == ref.rio.crs for s in scenes)
    res_ok = all(np.allclose(s.rio.resolution(), ref.rio.resolution(), rtol=1e-6) for s in scenes)
    if crs_ok and res_ok:
        # Same grid family: crop every date to the extent they all share.
        b = np.array([s.rio.bounds() for s in scenes])
        common = (b[:, 0].max(), b[:, 1].max(), b[:, 2].min(), b[:, 3].min())
        if common[0] >= common[2] or common[1] >= common[3]:
            raise DataError("the dates of this stack do not overlap")
        rx, ry = abs(ref.rio.resolution()[0]), abs(ref.rio.resolution()[1])
        ny = int(round((common[3] - common[1]) / ry))
        nx = int(round((common[2] - common[0]) / rx))
        cropped = []
        for s in scenes:
            row0 = int(round((s.rio.bounds()[3] - common[3]) / ry))
            col0 = int(round((common[0] - s.rio.bounds()[0]) / rx))
            cropped.append(s.isel(y=slice(row0, row0 + ny), x=slice(col0, col0 + nx)))
        ref = cropped[0]
        return [ref] + [c.assign_coords(x=ref.x, y=ref.y) for c in cropped[1:]]
    out = [ref]
    for i, s in enumerate(scenes[1:], 1):
        if s.rio.crs is None or ref.rio.crs is None:
            raise DataError(f"date {i} and date 0 are on different grids and one has no CRS; "
                            "cannot align them")
        out.append(s.rio.reproject_match(ref))
    return out
