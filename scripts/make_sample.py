"""Rebuild the bundled sample (eossl/data/sample_files) from ../shared/data.

Run once by a developer; users never need it (the result is committed, ~10 MB). Only the MIT /
public-domain sets are used (see ../shared/data/README.md); OSCD is never bundled.

    python scripts/make_sample.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_bounds

from eossl.data.bands import EUROSAT_MS_BANDS, sensor_bands

OUT = Path(__file__).resolve().parents[1] / "eossl" / "data" / "sample_files"
CHIPS_PER_CLASS = 12
GTIFF = dict(driver="GTiff", compress="deflate", predictor=2, zlevel=9)


def _write(path: Path, data: np.ndarray, crs, transform, names=None, wavelengths=None, tags=None):
    profile = dict(GTIFF, count=data.shape[0], height=data.shape[1], width=data.shape[2],
                   dtype=data.dtype, crs=crs, transform=transform)
    if data.dtype.kind == "f":
        profile["predictor"] = 3
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i in range(data.shape[0]):
            if names:
                dst.set_band_description(i + 1, names[i])
            if wavelengths:
                dst.update_tags(i + 1, wavelength=f"{wavelengths[i]:.1f}", wavelength_units="nm")
        if tags:
            dst.update_tags(**tags)


def eurosat(shared: Path):
    wl = {b.name: b.wavelength_nm for b in sensor_bands("sentinel2_l1c")}
    for class_dir in sorted((shared / "eurosat_ms").iterdir()):
        files = sorted(class_dir.glob("*.tif"), key=lambda p: (len(p.stem), p.stem))[:CHIPS_PER_CLASS]
        (OUT / "eurosat_ms" / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in files:
            with rasterio.open(f) as src:
                _write(OUT / "eurosat_ms" / class_dir.name / f.name, src.read(), src.crs, src.transform,
                       list(EUROSAT_MS_BANDS), [wl[n] for n in EUROSAT_MS_BANDS],
                       {"SENSOR": "Sentinel-2 L1C"})


def taizhou(shared: Path):
    src_dir, out = shared / "landsat_cd" / "Taizhou", OUT / "taizhou_change"
    out.mkdir(parents=True, exist_ok=True)
    names = ["B1", "B2", "B3", "B4", "B5", "B7"]
    wl = {b.name: b.wavelength_nm for b in sensor_bands("landsat7")}
    for year, name in (("2000", "2000TM"), ("2003", "2003TM")):
        with rasterio.open(src_dir / name) as src:
            data, crs, transform = src.read(), src.crs, src.transform
        _write(out / f"taizhou_{year}0101_L7.tif", data, crs, transform, names, [wl[n] for n in names],
               {"SENSOR": "Landsat 7 ETM+"})
    change = np.array(Image.open(src_dir / "change.bmp").convert("L")) == 255
    unchanged = np.array(Image.open(src_dir / "unchanged.bmp").convert("L")) == 255
    labels = np.zeros(change.shape, "uint8")
    labels[unchanged] = 1
    labels[change] = 2
    _write(out / "change.tif", labels[None], crs, transform, ["change"],
           tags={"CLASSES": "0=unknown,1=unchanged,2=changed"})


def slovenia(shared: Path):
    src, out = shared / "eolearn_patch", OUT / "slovenia_s2"
    out.mkdir(parents=True, exist_ok=True)
    scenes = np.load(src / "REFERENCE_SCENES.npy")  # (T, H, W, C) TOA reflectance
    lulc = np.load(src / "LULC.npy")[..., 0]          # (H, W)
    ring = json.loads((src / "bbox.geojson").read_text())["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    h, w = lulc.shape
    transform = from_bounds(min(xs), min(ys), max(xs), max(ys), w, h)
    # eo-learn stores the canonical Sentinel-2 order (B8A after B08), not EuroSAT's: the band
    # values say so (index 10 is ~0.001, the cirrus band B10; index 8 is NIR-bright, B8A).
    s2 = [b.name for b in sensor_bands("sentinel2_l1c")]
    wl = {b.name: b.wavelength_nm for b in sensor_bands("sentinel2_l1c")}
    # L1C digital numbers are reflectance x 10000: store as uint16 DN, the unit of EuroSAT-MS.
    dn = np.clip(np.round(scenes * 10000), 0, 65535).astype("uint16")
    for t in range(dn.shape[0]):
        _write(out / f"slovenia_date{t + 1}.tif", dn[t].transpose(2, 0, 1), "EPSG:32633", transform,
               s2, [wl[n] for n in s2], {"SENSOR": "Sentinel-2 L1C"})
    _write(out / "lulc.tif", lulc.astype("uint8")[None], "EPSG:32633", transform, ["lulc"],
           tags={"CLASSES": "0=no data,1=cultivated land,2=forest,3=grassland,4=shrubland,"
                            "8=artificial surface"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    shared = Path(ap.parse_args().shared)
    for sub in ("eurosat_ms", "taizhou_change", "slovenia_s2"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    eurosat(shared)
    taizhou(shared)
    slovenia(shared)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"bundled sample: {total / 2**20:.1f} MiB in {OUT}")


if __name__ == "__main__":
    main()
