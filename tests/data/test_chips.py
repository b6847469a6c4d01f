"""open_chips: class-per-folder chip sets (EuroSAT-MS layout) into (sample, band, y, x)."""

from __future__ import annotations

import collections
import shutil

import numpy as np
import pytest
import rasterio

from eossl.data.bands import EUROSAT_MS_BANDS
from eossl.data.chips import open_chips
from eossl.errors import DataError

CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake"]


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def _chip(tif, path, value, bands=2, size=8, **kw):
    return tif(path, np.full((bands, size, size), value, dtype="uint16"), **kw)


# --------------------------------------------------------------------------- bundled EuroSAT-MS

@pytest.fixture(scope="module")
def eurosat_dir(sample_files):
    return sample_files / "eurosat_ms"


def test_bundled_chip_set(eurosat_dir):
    da = open_chips(eurosat_dir, bands=list(EUROSAT_MS_BANDS))
    assert da.dims == ("sample", "band", "y", "x") and da.shape == (120, 13, 64, 64)
    assert da.dtype == np.uint16
    assert da["band"].values.tolist() == list(EUROSAT_MS_BANDS)
    assert da.sel(band="B8A")["wavelength"].item() == 865.0
    assert da.attrs["sensor"] == "sentinel2_l1c"
    assert da.attrs["source"] == str(eurosat_dir)
    # labels: class folders in sorted order, 12 chips each
    assert collections.Counter(da["label"].values.tolist()) == {c: 12 for c in CLASSES}
    assert list(dict.fromkeys(da["label"].values.tolist())) == CLASSES
    # values and file coordinate agree with the files themselves
    for i in (0, 57, 119):
        np.testing.assert_array_equal(da.isel(sample=i).values, _read(da["file"].values[i]))
        assert da["file"].values[i].split("/")[-2] == da["label"].values[i]


def test_natural_order_within_a_class(eurosat_dir):
    da = open_chips(eurosat_dir, bands=list(EUROSAT_MS_BANDS), classes=["Forest"])
    names = [f.split("/")[-1] for f in da["file"].values]
    assert names == [f"Forest_{i}.tif" for i in range(1, 13)]  # _2 before _10


def test_band_names_from_file_descriptions(eurosat_dir):
    da = open_chips(eurosat_dir, max_per_class=1)
    assert da["band"].values.tolist() == list(EUROSAT_MS_BANDS)
    assert da.attrs["sensor"] == "sentinel2_l1c"
    assert da["common_name"].values.tolist()[-1] == "nir08"


def test_max_per_class(eurosat_dir):
    da = open_chips(eurosat_dir, bands=list(EUROSAT_MS_BANDS), max_per_class=3)
    assert da.sizes["sample"] == 30
    assert collections.Counter(da["label"].values.tolist()) == {c: 3 for c in CLASSES}
    assert [f.split("/")[-1] for f in da["file"].values[:3]] == \
        ["AnnualCrop_1.tif", "AnnualCrop_2.tif", "AnnualCrop_3.tif"]


def test_classes_subset(eurosat_dir):
    da = open_chips(eurosat_dir, bands=list(EUROSAT_MS_BANDS), classes=["River", "Forest"])
    assert da.sizes["sample"] == 24
    assert list(dict.fromkeys(da["label"].values.tolist())) == ["Forest", "River"]  # folder order


def test_unknown_class_is_a_data_error(eurosat_dir):
    with pytest.raises(DataError, match=r"eurosat_ms: no class folder\(s\) \['Glacier'\]"):
        open_chips(eurosat_dir, classes=["Forest", "Glacier"])


def test_bands_of_wrong_length(eurosat_dir):
    with pytest.raises(DataError, match=r"AnnualCrop_1\.tif: 13 bands in the file but 12 band names given"):
        open_chips(eurosat_dir, bands=list(EUROSAT_MS_BANDS)[:12], max_per_class=1)


# --------------------------------------------------------------------------- built chip sets

def test_natural_sort_and_labels_of_built_set(tif, tmp_path):
    for i in (10, 2, 1):
        _chip(tif, f"set/water/img_{i}.tif", i)
    _chip(tif, "set/water/b_1.tif", 50)
    _chip(tif, "set/water/a_10.tif", 40)
    _chip(tif, "set/urban/u_1.TIF", 99)
    (tmp_path / "set" / "water" / "readme.txt").write_text("not a chip")
    (tmp_path / "set" / "stray.tif").write_bytes(b"files beside the class folders are ignored")
    da = open_chips(tmp_path / "set")
    names = [f.split("/")[-1] for f in da["file"].values]
    assert names == ["u_1.TIF", "a_10.tif", "b_1.tif", "img_1.tif", "img_2.tif", "img_10.tif"]
    assert da["label"].values.tolist() == ["urban"] + ["water"] * 5
    assert da.isel(x=0, y=0, band=0).values.tolist() == [99, 40, 50, 1, 2, 10]
    assert da["band"].values.tolist() == ["band_1", "band_2"]
    assert da.attrs["sensor"] == "generic"


def test_max_per_class_takes_the_first_in_natural_order(tif, tmp_path):
    for i in (1, 2, 10, 11):
        _chip(tif, f"set/a/c_{i}.tif", i)
    da = open_chips(tmp_path / "set", max_per_class=2)
    assert da.isel(x=0, y=0, band=0).values.tolist() == [1, 2]


def test_chip_band_names_given(tif, tmp_path):
    _chip(tif, "set/a/c_1.tif", 1, bands=3)
    da = open_chips(tmp_path / "set", bands=["B4", "B3", "B2"], sensor="landsat8")
    assert da["common_name"].values.tolist() == ["red", "green", "blue"]
    assert da.attrs["sensor"] == "landsat8"


def test_mixed_band_counts(tif, tmp_path):
    _chip(tif, "set/a/c_1.tif", 1, bands=4)
    _chip(tif, "set/b/c_1.tif", 1, bands=3)
    with pytest.raises(DataError, match=r"b/c_1\.tif: has 3 bands but .*a/c_1\.tif has 4; "
                                        "all chips of a set must have the same bands"):
        open_chips(tmp_path / "set")


def test_mixed_sizes(tif, tmp_path):
    _chip(tif, "set/a/c_1.tif", 1, size=16)
    _chip(tif, "set/a/c_2.tif", 1, size=8)
    with pytest.raises(DataError, match=r"c_2\.tif: is 8x8 px but .*c_1\.tif is 16x16; "
                                        "resample the chips to one size"):
        open_chips(tmp_path / "set")


def test_garbage_chip(tif, tmp_path):
    _chip(tif, "set/a/c_1.tif", 1)
    (tmp_path / "set" / "a" / "c_2.tif").write_bytes(b"\x89PNG not a tiff" * 20)
    with pytest.raises(DataError, match=r"c_2\.tif: not a raster that GDAL can read"):
        open_chips(tmp_path / "set")


def test_empty_chip_folder(tmp_path):
    (tmp_path / "set" / "Forest").mkdir(parents=True)
    (tmp_path / "set" / "Forest" / "notes.txt").write_text("no chips here")
    with pytest.raises(DataError, match=r"set: no chips found \(expected .*set/<Class>/<chip>\.tif\)"):
        open_chips(tmp_path / "set")


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no chips found"):
        open_chips(tmp_path / "flat")


def test_not_a_folder(tmp_path):
    with pytest.raises(DataError, match=r"missing: not a folder; open_chips expects"):
        open_chips(tmp_path / "missing")


def test_chip_set_copied_from_bundled_sample(eurosat_dir, tmp_path):
    """A chip set built from real chips (two classes, three chips each) keeps values and labels."""
    for cls in ("SeaLake", "Highway"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in (3, 1, 12):
            shutil.copy(eurosat_dir / cls / f"{cls}_{i}.tif", tmp_path / "set" / cls)
    da = open_chips(tmp_path / "set", bands=list(EUROSAT_MS_BANDS))
    assert da["label"].values.tolist() == ["Highway"] * 3 + ["SeaLake"] * 3
    assert [f.split("/")[-1] for f in da["file"].values[3:]] == \
        ["SeaLake_1.tif", "SeaLake_3.tif", "SeaLake_12.tif"]
    np.testing.assert_array_equal(da.isel(sample=5).values, _read(eurosat_dir / "SeaLake" / "SeaLake_12.tif"))


# --------------------------------------------------------------------------- shared EuroSAT-MS

def test_shared_eurosat(shared_data):
    root = shared_data / "eurosat_ms"
    files = {d.name: sorted(d.glob("*.tif")) for d in sorted(root.iterdir()) if d.is_dir()}
    da = open_chips(root, bands=list(EUROSAT_MS_BANDS), max_per_class=2)
    assert da.shape == (2 * len(files), 13, 64, 64)
    # these files carry no band descriptions: the EuroSAT band names still find Sentinel-2 metadata
    assert da.attrs["sensor"] == "sentinel2_l1c"
    assert da.sel(band="B04")["common_name"].item() == "red"
    assert sorted(set(da["label"].values.tolist())) == sorted(files)
    first = root / "AnnualCrop" / "AnnualCrop_1.tif"
    assert da["file"].values[0] == str(first)
    assert da["file"].values[1] == str(root / "AnnualCrop" / "AnnualCrop_2.tif")
    np.testing.assert_array_equal(da.isel(sample=0).values, _read(first))

    generic = open_chips(root, classes=["Highway"])
    assert generic.sizes["sample"] == len(files["Highway"])
    assert generic["band"].values.tolist()[:2] == ["band_1", "band_2"]
