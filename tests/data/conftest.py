"""Helpers for the data-layer tests: small GeoTIFFs and ENVI files with controlled content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

CRS = "EPSG:32633"
X0, Y0 = 500_000.0, 5_000_000.0  # upper-left corner of the test rasters (UTM 33N)


def write_tif(path, data, *, res=10.0, x0=X0, y0=Y0, crs=CRS, nodata=None, descriptions=None,
              tags=None) -> Path:
    """Write ``data`` ((H, W) or (C, H, W)) as a GeoTIFF with a north-up transform."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                   dtype=data.dtype, transform=from_origin(x0, y0, res, res), nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or [], 1):
            ds.set_band_description(i, d)
        if tags:
            ds.update_tags(**tags)
    return path


def write_envi(data_path, data, *, wavelengths_um, sensor_type="Landsat ETM", res=30.0,
               x0=X0, y0=Y0, header=None) -> Path:
    """Write a uint8 BSQ ENVI file by hand (data file + ``.hdr``), like the Landsat change pairs:
    band names that are not sensor names, wavelengths in micrometres, UTM map info."""
    data = np.ascontiguousarray(np.asarray(data, dtype="uint8"))
    count, h, w = data.shape
    data_path = Path(data_path)
    data_path.write_bytes(data.tobytes())
    if header is None:  # scene -> scene.hdr, scene.img -> scene.hdr
        header = data_path.with_suffix(".hdr") if data_path.suffix else \
            data_path.with_name(data_path.name + ".hdr")
    wl = ", ".join(f"{v:.6f}" for v in wavelengths_um)
    names = ", ".join(f"Resize (ETM+ Meta (Band {i + 1}):L7_MTL.txt)" for i in range(count))
    Path(header).write_text(
        "ENVI\n"
        f"samples = {w}\nlines   = {h}\nbands   = {count}\nheader offset = 0\n"
        "file type = ENVI Standard\ndata type = 1\ninterleave = bsq\n"
        f"sensor type = {sensor_type}\nbyte order = 0\n"
        f"map info = {{UTM, 1.000, 1.000, {x0:.3f}, {y0:.3f}, {res}, {res}, 33, North, WGS-84, "
        "units=Meters}\n"
        "wavelength units = Micrometers\n"
        f"band names = {{{names}}}\n"
        f"wavelength = {{{wl}}}\n")
    return Path(header)


@pytest.fixture
def tif(tmp_path):
    """``tif(name, data, **kw)`` writes a GeoTIFF at tmp_path / name (sub-folders are made; an
    absolute path is used as it is) and returns its path. Keywords: see :func:`write_tif`."""
    def make(name, data, **kw):
        return write_tif(tmp_path / name, data, **kw)
    return make


@pytest.fixture
def envi(tmp_path):
    """``envi(name, data, wavelengths_um=..., **kw)`` writes an ENVI data file + header under
    tmp_path and returns the header path. Keywords: see :func:`write_envi`."""
    def make(name, data, **kw):
        if "header" in kw and kw["header"] is not None:
            kw["header"] = tmp_path / kw["header"]
        return write_envi(tmp_path / name, data, **kw)
    return make


@pytest.fixture(scope="session")
def sample_files():
    from eossl.datasets import sample_dir
    return sample_dir()
