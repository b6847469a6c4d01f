"""Labeled chip sets (one folder per class, e.g. EuroSAT-MS) into ``(sample, band, y, x)``."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from eossl.data import bands as bandtab
from eossl.data.scenes import _file_metadata, _identify_bands
from eossl.errors import DataError

CHIP_SUFFIXES = (".tif", ".tiff")


def _natural_key(path: Path):
    """Sort key comparing digit runs as numbers: a_2 < a_10 < b_1."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path.stem)]


def open_chips(folder, *, bands=None, sensor: str | None = None, classes=None,
               max_per_class: int | None = None) -> xr.DataArray:
    """Read a class-per-folder chip set into ``xr.DataArray (sample, band, y, x)``.

    ``folder/<Class>/<anything>.tif``: the sub-folder name becomes the ``label`` coordinate and
    the file path the ``file`` coordinate. All chips must have the same band count and size.

    Args:
        bands: band names in file order (EuroSAT-MS: :data:`eossl.data.bands.EUROSAT_MS_BANDS`);
            read from the files' band descriptions when None.
        sensor: sensor of the band table; guessed when None.
        classes: only these class folders (default: all, sorted).
        max_per_class: read at most this many chips per class (sorted by file name).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; open_chips expects <folder>/<Class>/<chip>.tif")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if classes is not None:
        missing = set(classes) - {p.name for p in class_dirs}
        if missing:
            raise DataError(f"{root}: no class folder(s) {sorted(missing)}")
        class_dirs = [p for p in class_dirs if p.name in classes]
    files, labels = [], []
    for d in class_dirs:
        chips = sorted((p for p in d.iterdir() if p.suffix.lower() in CHIP_SUFFIXES),
                       key=_natural_key)  # Forest_2 before Forest_10
        files += chips[:max_per_class]
        labels += [d.name] * len(chips[:max_per_class])
    if not files:
        raise DataError(f"{root}: no chips found (expected {root}/<Class>/<chip>.tif)")

    arrays, first_shape = [], None
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(f) as ds:
                    a = ds.read()
        except RasterioIOError as err:
            raise DataError(f"{f}: not a raster that GDAL can read ({err})") from None
        if first_shape is None:
            first_shape, first_file = a.shape, f
        elif a.shape[0] != first_shape[0]:
            raise DataError(f"{f}: has {a.shape[0]} bands but {first_file} has {first_shape[0]}; "
                            "all chips of a set must have the same bands")
        elif a.shape != first_shape:
            raise DataError(f"{f}: is {a.shape[1]}x{a.shape[2]} px but {first_file} is "
                            f"{first_shape[1]}x{first_shape[2]}; resample the chips to one size")
        arrays.append(a)

    sensor, band_list = _identify_bands(files[0], first_shape[0], sensor, bands,
                                        _file_metadata(str(files[0])))
    data = np.stack(arrays)  # (sample, band, y, x)
    coords = bandtab.band_coords(band_list)
    coords.update(label=("sample", np.array(labels)), file=("sample", [str(f) for f in files]))
    da = xr.DataArray(data, dims=("sample", "band", "y", "x"), coords=coords, name="chips",
                      attrs={"sensor": sensor or "generic", "source": str(root)})
    return da
