"""The bundled sample: small real data that ships inside the package and works offline.

Built from the MIT / public-domain sets by ``scripts/make_sample.py``; sources and licenses in
``sample_files/NOTICE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import xarray as xr

from eossl.data.bands import EUROSAT_MS_BANDS
from eossl.data.chips import open_chips
from eossl.data.scenes import open_scene, open_stack

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_files"


@dataclass(frozen=True)
class _Sample:
    description: str
    returns: str
    source: str
    license: str


SAMPLES = {
    "eurosat_ms": _Sample(
        "120 labeled Sentinel-2 L1C chips, 12 per class, 10 land-use classes, 13 bands, 64x64 px, DN",
        "DataArray (sample, band, y, x) with a 'label' coordinate",
        "EuroSAT-MS (Helber et al. 2019)", "MIT"),
    "slovenia_s2": _Sample(
        "A 101x100 px Sentinel-2 L1C patch in Slovenia at 5 dates, 13 bands, DN, with a land-cover map",
        "Dataset: image (time, band, y, x), lulc (y, x)",
        "eo-learn example data", "MIT; Copernicus Sentinel data"),
    "taizhou_change": _Sample(
        "Landsat 7 ETM+ scene, 400x400 px at 30 m, 2000 and 2003, 6 bands (uint8 stretched), change labels",
        "Dataset: image (time, band, y, x), change (y, x): 0 unknown, 1 unchanged, 2 changed",
        "Landsat change pairs (Wu et al. 2014)", "public domain (USGS)"),
}

LULC_CLASSES = {0: "no data", 1: "cultivated land", 2: "forest", 3: "grassland", 4: "shrubland",
                8: "artificial surface"}
CHANGE_CLASSES = {0: "unknown", 1: "unchanged", 2: "changed"}


def list_samples() -> pd.DataFrame:
    """The bundled samples, one line each, with what :func:`load_sample` returns for them."""
    return pd.DataFrame(
        [{"name": k, "description": s.description, "returns": s.returns, "source": s.source,
          "license": s.license} for k, s in SAMPLES.items()]).set_index("name")


def load_sample(name: str):
    """Load a bundled sample by name (see :func:`list_samples`). Works offline."""
    if name not in SAMPLES:
        raise KeyError(f"no bundled sample {name!r}; available: {sorted(SAMPLES)}")
    folder = SAMPLE_DIR / name
    if name == "eurosat_ms":
        return open_chips(folder, bands=list(EUROSAT_MS_BANDS))
    if name == "slovenia_s2":
        image = open_stack(sorted(folder.glob("slovenia_date*.tif")))
        lulc = open_scene(folder / "lulc.tif").isel(band=0, drop=True).astype("uint8")
        return _dataset(image, lulc=_labels(lulc, LULC_CLASSES))
    image = open_stack(sorted(folder.glob("taizhou_*_L7.tif")), times=["2000", "2003"])
    change = open_scene(folder / "change.tif").isel(band=0, drop=True).astype("uint8")
    return _dataset(image, change=_labels(change, CHANGE_CLASSES))


def _labels(da: xr.DataArray, classes: dict) -> xr.DataArray:
    da = da.drop_vars([c for c in ("common_name", "wavelength", "resolution") if c in da.coords])
    da.attrs = {"classes": classes}
    return da


def _dataset(image: xr.DataArray, **labels) -> xr.Dataset:
    image.attrs.pop("sources", None)
    for name, lab in labels.items():
        labels[name] = lab.assign_coords(x=image.x, y=image.y)
    ds = xr.Dataset({"image": image, **labels})
    return ds.rio.write_crs(image.rio.crs)


def sample_dir() -> Path:
    """Where the bundled files live (to open them with the ordinary loaders)."""
    return SAMPLE_DIR


__all__ = ["list_samples", "load_sample", "sample_dir", "LULC_CLASSES", "CHANGE_CLASSES"]
