"""The bundled sample: list_samples, load_sample for every name, sample_dir, cross-checked against
the files themselves and (when present) the original data in ../shared/data."""

from __future__ import annotations

import collections
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

import eossl
from eossl.data import samples
from eossl.data.bands import EUROSAT_MS_BANDS, sensor_bands
from eossl.datasets import (CHANGE_CLASSES, LULC_CLASSES, list_samples, load_sample,
                            sample_dir)

NAMES = ["eurosat_ms", "slovenia_s2", "taizhou_change"]


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read()


# --------------------------------------------------------------------------- list_samples / sample_dir

def test_list_samples():
    table = list_samples()
    assert isinstance(table, pd.DataFrame)
    assert table.index.name == "name"
    assert table.index.tolist() == NAMES
    assert table.columns.tolist() == ["description", "returns", "source", "license"]
    assert table.loc["eurosat_ms", "license"] == "MIT"
    assert "public domain" in table.loc["taizhou_change", "license"]
    assert "EuroSAT" in table.loc["eurosat_ms", "source"]
    assert table.notna().all().all()


def test_sample_dir_holds_every_sample_and_the_notice():
    root = sample_dir()
    assert root == samples.SAMPLE_DIR and root.is_dir()
    for name in NAMES:
        assert (root / name).is_dir()
    notice = (root / "NOTICE.md").read_text()
    for word in ("EuroSAT", "eo-learn", "Taizhou", "MIT", "public domain"):
        assert word in notice


def test_bundled_sample_is_small():
    total = sum(f.stat().st_size for f in sample_dir().rglob("*") if f.is_file())
    assert total < 15 * 2**20


def test_datasets_module_is_the_public_front():
    assert eossl.datasets.load_sample is load_sample
    assert set(eossl.datasets.__all__) == {"load_sample", "list_samples", "sample_dir",
                                           "LULC_CLASSES", "CHANGE_CLASSES", "oscd_stacks"}


def test_unknown_sample_name():
    with pytest.raises(KeyError, match=r"no bundled sample 'sentinel1'; available: \['eurosat_ms'"):
        load_sample("sentinel1")


# --------------------------------------------------------------------------- eurosat_ms

def test_eurosat_sample(chips):
    assert chips.dims == ("sample", "band", "y", "x")
    assert chips.shape == (120, 13, 64, 64) and chips.dtype == np.uint16
    assert chips["band"].values.tolist() == list(EUROSAT_MS_BANDS)
    assert chips.attrs["sensor"] == "sentinel2_l1c"
    counts = collections.Counter(chips["label"].values.tolist())
    assert len(counts) == 10 and set(counts.values()) == {12}
    first = sample_dir() / "eurosat_ms" / "AnnualCrop" / "AnnualCrop_1.tif"
    assert chips["file"].values[0] == str(first)
    np.testing.assert_array_equal(chips.isel(sample=0).values, _read(first))
    # DN of real L1C land scenes: thousands in the visible bands, far below the uint16 ceiling
    assert 300 < float(chips.sel(band="B02").mean()) < 3000
    assert int(chips.max()) < 20000


def test_eurosat_sample_matches_shared_data(chips, shared_data):
    for i in (0, 30, 119):
        name = chips["file"].values[i].split("/")[-1]
        label = chips["label"].values[i]
        np.testing.assert_array_equal(chips.isel(sample=i).values,
                                      _read(shared_data / "eurosat_ms" / label / name))


# --------------------------------------------------------------------------- slovenia_s2

def test_slovenia_sample(slovenia):
    assert set(slovenia.data_vars) == {"image", "lulc"}
    image, lulc = slovenia["image"], slovenia["lulc"]
    assert image.dims == ("time", "band", "y", "x") and image.shape == (5, 13, 101, 100)
    assert image.dtype == np.uint16
    # eo-learn keeps the canonical Sentinel-2 order (B8A after B08), unlike EuroSAT
    assert image["band"].values.tolist() == [b.name for b in sensor_bands("sentinel2_l1c")]
    assert sorted(image["band"].values.tolist()) == sorted(EUROSAT_MS_BANDS)
    # the values agree: B10 (cirrus) is dark, B8A (narrow NIR) is bright over this forest
    median = image.isel(time=3).median(["y", "x"])
    assert median.sel(band="B10") < 50 and median.sel(band="B8A") > median.sel(band="B04") * 3
    assert image.time.values.tolist() == [0, 1, 2, 3, 4]  # the five scenes are undated
    assert lulc.dims == ("y", "x") and lulc.dtype == np.uint8
    assert set(np.unique(lulc.values).tolist()) <= set(LULC_CLASSES)
    assert lulc.attrs["classes"] == LULC_CLASSES
    assert "wavelength" not in lulc.coords
    np.testing.assert_array_equal(lulc.values, _read(sample_dir() / "slovenia_s2" / "lulc.tif")[0])
    np.testing.assert_array_equal(image.isel(time=4).values,
                                  _read(sample_dir() / "slovenia_s2" / "slovenia_date5.tif"))
    assert slovenia.rio.crs.to_epsg() == 32633
    np.testing.assert_array_equal(lulc.x.values, image.x.values)
    # the patch's bounding box, as written in shared/data/eolearn_patch/bbox.geojson
    left, bottom, right, top = image.rio.bounds()
    assert (left, top) == pytest.approx((465181.0522318204, 5080254.63349641))
    assert (right, bottom) == pytest.approx((466180.53145382757, 5079244.8912012065))


def test_slovenia_sample_matches_shared_data(slovenia, shared_data):
    src = shared_data / "eolearn_patch"
    reflectance = np.load(src / "REFERENCE_SCENES.npy")  # (T, H, W, C), B01..B08, B8A, B09..B12
    dn = np.clip(np.round(reflectance * 10000), 0, 65535).astype("uint16").transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(slovenia["image"].values, dn)
    np.testing.assert_array_equal(slovenia["lulc"].values, np.load(src / "LULC.npy")[..., 0])
    ring = json.loads((src / "bbox.geojson").read_text())["coordinates"][0]
    left, bottom, right, top = slovenia["image"].rio.bounds()
    assert left == pytest.approx(min(p[0] for p in ring)) and top == pytest.approx(max(p[1] for p in ring))


# --------------------------------------------------------------------------- taizhou_change

def test_taizhou_sample(taizhou):
    assert set(taizhou.data_vars) == {"image", "change"}
    image, change = taizhou["image"], taizhou["change"]
    assert image.shape == (2, 6, 400, 400) and image.dtype == np.uint8
    assert image.time.dt.year.values.tolist() == [2000, 2003]
    assert image["band"].values.tolist() == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert image["wavelength"].values.tolist() == [483.0, 560.0, 662.0, 835.0, 1648.0, 2206.0]
    assert image.attrs["sensor"] == "landsat7"
    assert "sources" not in image.attrs
    assert change.dtype == np.uint8 and change.dims == ("y", "x")
    assert change.attrs["classes"] == CHANGE_CLASSES == {0: "unknown", 1: "unchanged", 2: "changed"}
    values, counts = np.unique(change.values, return_counts=True)
    assert values.tolist() == [0, 1, 2]
    assert counts[0] > counts[1] > counts[2]  # most pixels are unlabeled
    np.testing.assert_array_equal(change.values, _read(sample_dir() / "taizhou_change" / "change.tif")[0])
    assert taizhou.rio.crs.to_epsg() == 32651
    assert tuple(image.rio.transform())[:6] == (30.0, 0.0, 203325.0, 0.0, -30.0, 3604935.0)


def test_taizhou_sample_matches_shared_data(taizhou, shared_data):
    folder = shared_data / "landsat_cd" / "Taizhou"
    for i, name in enumerate(["2000TM", "2003TM"]):
        np.testing.assert_array_equal(taizhou["image"].isel(time=i).values, _read(folder / name))
    changed = _read(folder / "change.bmp")[0] == 255
    unchanged = _read(folder / "unchanged.bmp")[0] == 255
    expected = np.zeros(changed.shape, "uint8")
    expected[unchanged] = 1
    expected[changed] = 2
    np.testing.assert_array_equal(taizhou["change"].values, expected)


def test_load_sample_returns_fresh_objects():
    a = load_sample("taizhou_change")
    a["image"].values[0, 0, 0, 0] = 0
    a["change"].attrs["classes"][9] = "edited"
    b = load_sample("taizhou_change")
    first = _read(sample_dir() / "taizhou_change" / "taizhou_20000101_L7.tif")
    assert b["image"].values[0, 0, 0, 0] == first[0, 0, 0]
    assert 9 not in b["change"].attrs["classes"]
    assert 9 not in CHANGE_CLASSES


def test_oscd_stacks_reads_every_city_as_a_two_date_stack(shared_data, tmp_path):
    import eossl
    from eossl.errors import DataError
    stacks = eossl.datasets.oscd_stacks(shared_data / "oscd", cities=["bercy", "nantes"])
    assert len(stacks) == 2
    for s in stacks:
        assert s.dims == ("time", "band", "y", "x") and s.sizes["time"] == 2 and s.sizes["band"] == 13
    with pytest.raises(DataError, match="no OSCD city"):
        eossl.datasets.oscd_stacks(shared_data / "oscd", cities=["atlantis"])
    with pytest.raises(DataError, match="download OSCD"):
        eossl.datasets.oscd_stacks(tmp_path)
