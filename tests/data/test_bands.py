"""Sensor band tables: sensor_bands, guess_sensor, lookup, match_by_wavelength, default_bands,
band_coords, rgb_bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from eossl.data import bands as bt
from eossl.data.bands import (EUROSAT_MS_BANDS, SENSORS, Band, band_coords, default_bands,
                              guess_sensor, lookup, match_by_wavelength, rgb_bands, sensor_bands)

S2_NAMES = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]

# Centre wavelengths in the real ENVI headers of shared/data/landsat_cd (micrometres -> nm).
TAIZHOU_WL = [482.5, 565.0, 660.0, 825.0, 1650.0, 2220.0]   # Landsat 7 ETM+, bands 1,2,3,4,5,7
NANJING_WL = [485.0, 569.0, 660.0, 840.0, 1676.0, 2223.0]   # Landsat 5 TM, bands 1,2,3,4,5,7


# --------------------------------------------------------------------------- sensor_bands

def test_sensor_bands_sentinel2_l1c_canonical_order():
    table = sensor_bands("sentinel2_l1c")
    assert [b.name for b in table] == S2_NAMES
    b8a = table[S2_NAMES.index("B8A")]
    assert (b8a.common_name, b8a.wavelength_nm, b8a.resolution_m) == ("nir08", 865, 20)
    assert {b.name for b in table if b.resolution_m == 10} == {"B02", "B03", "B04", "B08"}
    assert {b.name for b in table if b.resolution_m == 60} == {"B01", "B09", "B10"}


def test_sensor_bands_l2a_drops_cirrus_only():
    l2a = [b.name for b in sensor_bands("sentinel2_l2a")]
    assert l2a == [n for n in S2_NAMES if n != "B10"]
    assert len(l2a) == 12


@pytest.mark.parametrize("sensor, n, names_subset", [
    ("landsat5", 7, {"B1", "B6", "B7"}),
    ("landsat7", 8, {"B1", "B7", "B8"}),
    ("landsat8", 11, {"B1", "B10", "B11"}),
    ("landsat9", 11, {"B9"}),
])
def test_sensor_bands_landsat(sensor, n, names_subset):
    table = sensor_bands(sensor)
    assert len(table) == n
    assert names_subset <= {b.name for b in table}
    assert all(isinstance(b, Band) for b in table)


def test_landsat_band_meanings_differ_between_sensors():
    # TM/ETM+ band 5 is SWIR, OLI band 5 is NIR: the tables must not be shared.
    assert lookup("landsat7", ["B5"])[0].common_name == "swir16"
    assert lookup("landsat8", ["B5"])[0].common_name == "nir08"
    assert lookup("landsat7", ["B6"])[0].common_name == "lwir"


def test_sensor_bands_unknown_sensor_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown sensor 'sentinel3'.*landsat7.*sentinel2_l1c"):
        sensor_bands("sentinel3")


def test_sensors_registry_keys():
    assert set(SENSORS) == {"sentinel2_l1c", "sentinel2_l2a", "landsat5", "landsat7", "landsat8",
                            "landsat9"}


def test_eurosat_band_order_has_b8a_last():
    assert list(EUROSAT_MS_BANDS) == [n for n in S2_NAMES if n != "B8A"] + ["B8A"]


# --------------------------------------------------------------------------- guess_sensor

@pytest.mark.parametrize("text, sensor", [
    # real file names from shared/data
    ("S2A_OPER_MSI_L1C_TL_MTI__20160120T104345_A003020_T39QZG_B01.tif", "sentinel2_l1c"),
    ("S2A_MSIL2A_20170613T101031_87_48_B01.tif", "sentinel2_l2a"),
    ("S2B_MSIL1C_20200101T100319_N0208_R122_T33TUM.SAFE", "sentinel2_l1c"),
    ("LC08_L1TP_224078_20200518_20200518_01_RT.TIF", "landsat8"),
    ("LE07_L1TP_119038_20000317_20170212_01_T1_B1.TIF", "landsat7"),
    ("LT51200382000124BJC00_Nanjing", "landsat5"),
    # ENVI 'sensor type' and GeoTIFF SENSOR tags
    ("Landsat ETM", "landsat7"),
    ("Landsat 7 ETM+", "landsat7"),
    ("Landsat TM", "landsat5"),
    ("Landsat-9 OLI/TIRS", "landsat8"),
    ("Sentinel-2 L1C", "sentinel2_l1c"),
    ("sentinel2 L2A", "sentinel2_l2a"),
])
def test_guess_sensor_recognises_real_names(text, sensor):
    assert guess_sensor(text) == sensor


@pytest.mark.parametrize("text", [
    "T40QBM_20180328T065919_B01.tif",   # OSCD date 2: no sensor in the name
    "2000TM",                           # Taizhou data file: 'TM' glued to the year
    "olive_orchard.tif",                # 'OLI' inside a word is not Landsat 8
    "portfolio_scene.tif",
    "metmast_site.tif",                 # 'ETM' inside a word is not Landsat 7
    "",
])
def test_guess_sensor_none_when_nothing_matches(text):
    assert guess_sensor(text) is None


def test_guess_sensor_takes_first_text_that_matches():
    assert guess_sensor("2000TM", "", "Landsat ETM") == "landsat7"
    assert guess_sensor("S2A_MSIL2A_x.tif", "Landsat TM") == "sentinel2_l2a"
    assert guess_sensor() is None


# --------------------------------------------------------------------------- lookup

def test_lookup_known_bands_in_given_order():
    got = lookup("sentinel2_l1c", ["B8A", "B02"])
    assert [b.name for b in got] == ["B8A", "B02"]
    assert [b.common_name for b in got] == ["nir08", "blue"]
    assert [b.wavelength_nm for b in got] == [865, 490]
    assert [b.resolution_m for b in got] == [20, 10]


def test_lookup_unknown_names_become_generic_bands():
    got = lookup("landsat7", ["B3", "ndvi"])
    assert got[0] == Band("B3", "red", 662, 30)
    assert got[1].name == "ndvi" and got[1].common_name == ""
    assert math.isnan(got[1].wavelength_nm) and math.isnan(got[1].resolution_m)


def test_lookup_without_sensor_is_all_generic():
    got = lookup(None, ["B02"])
    assert got[0].name == "B02" and got[0].common_name == "" and math.isnan(got[0].wavelength_nm)


def test_lookup_unknown_sensor_raises():
    with pytest.raises(ValueError, match="unknown sensor"):
        lookup("modis", ["B1"])


# --------------------------------------------------------------------------- match_by_wavelength

def test_match_by_wavelength_taizhou_is_landsat7_bands_1_to_5_and_7():
    got = match_by_wavelength("landsat7", TAIZHOU_WL)
    assert [b.name for b in got] == ["B1", "B2", "B3", "B4", "B5", "B7"]  # not B1..B6
    assert [b.common_name for b in got] == ["blue", "green", "red", "nir", "swir16", "swir22"]


def test_match_by_wavelength_nanjing_is_landsat5_bands_1_to_5_and_7():
    got = match_by_wavelength("landsat5", NANJING_WL)
    assert [b.name for b in got] == ["B1", "B2", "B3", "B4", "B5", "B7"]


def test_match_by_wavelength_keeps_file_order():
    got = match_by_wavelength("sentinel2_l1c", [865.0, 490.0, 842.0])
    assert [b.name for b in got] == ["B8A", "B02", "B08"]


def test_match_by_wavelength_never_picks_pan():
    # 706 nm is the ETM+ pan band's centre; multispectral files hold no pan band, so B3 (662 nm).
    assert [b.name for b in match_by_wavelength("landsat7", [706.0])] == ["B3"]


def test_match_by_wavelength_uses_each_band_once():
    got = match_by_wavelength("sentinel2_l1c", [842.0, 842.0])
    assert [b.name for b in got] == ["B08", "B8A"]


def test_match_by_wavelength_refuses_far_wavelengths():
    with pytest.raises(ValueError, match="no landsat7 band near 300 nm"):
        match_by_wavelength("landsat7", [300.0])
    with pytest.raises(ValueError, match="no sentinel2_l1c band near 11450 nm"):
        match_by_wavelength("sentinel2_l1c", [11450.0])


# --------------------------------------------------------------------------- default_bands

def test_default_bands_uses_table_when_count_fits():
    assert [b.name for b in default_bands("sentinel2_l1c", 13)] == S2_NAMES
    assert [b.name for b in default_bands("sentinel2_l2a", 12)] == [n for n in S2_NAMES if n != "B10"]


@pytest.mark.parametrize("sensor", [None, "landsat7"])
def test_default_bands_generic_when_count_does_not_fit(sensor):
    got = default_bands(sensor, 6)  # a 6-band ETM+ file is not the 8-band table
    assert [b.name for b in got] == [f"band_{i}" for i in range(1, 7)]
    assert all(math.isnan(b.wavelength_nm) for b in got)


# --------------------------------------------------------------------------- band_coords

def test_band_coords_values_and_units():
    coords = band_coords(lookup("sentinel2_l1c", ["B04", "B8A", "xx"]))
    assert coords["band"] == ["B04", "B8A", "xx"]
    dim, common = coords["common_name"]
    assert dim == "band" and common == ["red", "nir08", ""]
    dim, wl, attrs = coords["wavelength"]
    assert dim == "band" and attrs == {"units": "nm"} and wl.dtype == np.float64
    np.testing.assert_array_equal(wl, [665.0, 865.0, np.nan])
    dim, res, attrs = coords["resolution"]
    assert attrs == {"units": "m"}
    np.testing.assert_array_equal(res, [10.0, 20.0, np.nan])


def test_band_coords_attach_to_a_dataarray():
    da = xr.DataArray(np.zeros((2, 3, 3)), dims=("band", "y", "x"))
    da = da.assign_coords(band_coords(lookup("landsat8", ["B4", "B5"])))
    assert da.sel(band="B5")["common_name"].item() == "nir08"
    assert da["wavelength"].attrs["units"] == "nm"
    assert da.isel(band=0)["wavelength"].item() == 655.0


# --------------------------------------------------------------------------- rgb_bands

def _da(names, sensor=None, bands=None):
    bands = bands if bands is not None else lookup(sensor, names)
    return xr.DataArray(np.zeros((len(bands), 2, 2)), dims=("band", "y", "x")).assign_coords(
        band_coords(bands))


def test_rgb_bands_by_common_name_sentinel2():
    assert rgb_bands(_da(list(EUROSAT_MS_BANDS), "sentinel2_l1c")) == ["B04", "B03", "B02"]


def test_rgb_bands_by_common_name_landsat():
    assert rgb_bands(_da(["B1", "B2", "B3", "B4", "B5", "B7"], "landsat7")) == ["B3", "B2", "B1"]
    assert rgb_bands(_da(["B2", "B3", "B4", "B5"], "landsat8")) == ["B4", "B3", "B2"]


def test_rgb_bands_by_wavelength_when_no_common_names():
    bands = [Band(f"band_{i}", "", wl, float("nan")) for i, wl in enumerate([480, 550, 670, 850], 1)]
    assert rgb_bands(_da(None, bands=bands)) == ["band_3", "band_2", "band_1"]


def test_rgb_bands_falls_back_to_first_three():
    assert rgb_bands(_da(["a", "b", "c", "d"])) == ["a", "b", "c"]
    bare = xr.DataArray(np.zeros((4, 2, 2)), dims=("band", "y", "x"), coords={"band": list("wxyz")})
    assert rgb_bands(bare) == ["w", "x", "y"]


def test_rgb_bands_single_band_repeats_it():
    assert rgb_bands(_da(["ndvi"])) == ["ndvi", "ndvi", "ndvi"]


def test_rgb_bands_on_bundled_samples(chips, taizhou):
    assert rgb_bands(chips) == ["B04", "B03", "B02"]
    assert rgb_bands(taizhou["image"]) == ["B3", "B2", "B1"]


def test_module_exports_tables():
    assert bt.RGB_COMMON_NAMES == ("red", "green", "blue")
