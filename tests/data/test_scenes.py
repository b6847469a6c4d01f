"""open_scene / open_stack: GeoTIFF, ENVI, Sentinel-2 band files at mixed resolutions, stacks."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from rasterio.errors import NotGeoreferencedWarning

from eossl.data.scenes import open_scene, open_stack
from eossl.errors import DataError

X0, Y0 = 500_000.0, 5_000_000.0  # upper-left corner of the rasters the `tif` fixture writes

S2_NAMES = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
TAIZHOU_WL_UM = [0.4825, 0.565, 0.66, 0.825, 1.65, 2.22]


def _rng_uint16(shape, seed=0):
    return np.random.default_rng(seed).integers(1, 5000, shape).astype("uint16")


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


# =========================================================================== GeoTIFF

def test_multiband_geotiff_values_crs_and_coords(tif):
    data = _rng_uint16((3, 6, 7))
    path = tif("scene.tif", data, descriptions=["B04", "B03", "B02"])
    da = open_scene(path)
    assert da.dims == ("band", "y", "x") and da.shape == (3, 6, 7)
    assert da.dtype == np.uint16  # integer data without nodata keep their dtype
    np.testing.assert_array_equal(da.values, data)
    assert da.rio.crs.to_epsg() == 32633
    assert tuple(da.rio.transform())[:6] == (10.0, 0.0, X0, 0.0, -10.0, Y0)
    np.testing.assert_allclose(da.x.values, X0 + 5 + 10 * np.arange(7))  # pixel centres
    np.testing.assert_allclose(da.y.values, Y0 - 5 - 10 * np.arange(6))
    # band descriptions B02..B04 -> Sentinel-2, kept in file order
    assert da["band"].values.tolist() == ["B04", "B03", "B02"]
    assert da["common_name"].values.tolist() == ["red", "green", "blue"]
    assert da["wavelength"].values.tolist() == [665.0, 560.0, 490.0]
    assert da["resolution"].values.tolist() == [10.0, 10.0, 10.0]
    assert da.attrs["sensor"] == "sentinel2_l1c"
    assert da.attrs["source"] == str(path)
    assert da.attrs["nodata"] is None
    assert da.name == "reflectance"


def test_generic_geotiff_gets_generic_band_names(tif):
    da = open_scene(tif("plain.tif", _rng_uint16((4, 3, 3))))
    assert da["band"].values.tolist() == ["band_1", "band_2", "band_3", "band_4"]
    assert np.isnan(da["wavelength"].values).all()
    assert da.attrs["sensor"] == "generic"
    assert da.name == "value"


def test_thirteen_band_file_named_like_l1c_gets_the_s2_table(tif):
    da = open_scene(tif("S2A_MSIL1C_20200101T100319_T33TUM.tif", _rng_uint16((13, 2, 2))))
    assert da["band"].values.tolist() == S2_NAMES
    assert da.attrs["sensor"] == "sentinel2_l1c"
    assert da.attrs["time"] == "2020-01-01 10:03:19"


def test_sensor_from_geotiff_sensor_tag(sample_files):
    path = sample_files / "taizhou_change" / "taizhou_20000101_L7.tif"
    da = open_scene(path)
    assert da.attrs["sensor"] == "landsat7"  # SENSOR=Landsat 7 ETM+ tag
    assert da["band"].values.tolist() == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert da["common_name"].values.tolist()[-1] == "swir22"
    assert da.shape == (6, 400, 400) and da.dtype == np.uint8
    assert da.rio.crs.to_epsg() == 32651
    assert tuple(da.rio.transform())[:6] == (30.0, 0.0, 203325.0, 0.0, -30.0, 3604935.0)
    assert da.attrs["time"] == "2000-01-01 00:00:00"  # from the file name
    np.testing.assert_array_equal(da.values, _read(path))


def test_nodata_becomes_nan_when_masked(tif):
    data = np.arange(2 * 4 * 5, dtype="uint16").reshape(2, 4, 5)
    data[0, 0, 0] = data[1, 3, 4] = 0
    path = tif("nd.tif", data, nodata=0)
    da = open_scene(path)
    assert da.dtype == np.float32
    assert np.isnan(da.values[0, 0, 0]) and np.isnan(da.values[1, 3, 4])
    assert int(np.isnan(da.values).sum()) == 2
    np.testing.assert_array_equal(da.values[0, 1], data[0, 1].astype("float32"))
    assert da.attrs["nodata"] == 0.0

    raw = open_scene(path, masked=False)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw.values, data)
    assert raw.attrs["nodata"] == 0.0


def test_bands_argument_overrides_file(tif):
    path = tif("x.tif", _rng_uint16((3, 2, 2)), descriptions=["a", "b", "c"])
    da = open_scene(path, bands=["B4", "B3", "B2"], sensor="landsat8")
    assert da["band"].values.tolist() == ["B4", "B3", "B2"]
    assert da["common_name"].values.tolist() == ["red", "green", "blue"]
    assert da["wavelength"].values.tolist() == [655.0, 561.0, 482.0]
    assert da.attrs["sensor"] == "landsat8"


def test_bands_of_wrong_length_is_a_data_error(tif):
    path = tif("three.tif", _rng_uint16((3, 2, 2)))
    with pytest.raises(DataError, match=r"three\.tif: 3 bands in the file but 2 band names given"):
        open_scene(path, bands=["B02", "B03"])


def test_date_in_file_name_becomes_time_attr(tif):
    assert open_scene(tif("LC08_L1TP_224078_20200518_x.tif", _rng_uint16((1, 2, 2)))).attrs["time"] \
        == "2020-05-18 00:00:00"
    assert "time" not in open_scene(tif("nodate.tif", _rng_uint16((1, 2, 2)))).attrs
    assert "time" not in open_scene(tif("id_20201399.tif", _rng_uint16((1, 2, 2)))).attrs  # no such date


def test_chunks_give_a_lazy_array(tif):
    pytest.importorskip("dask")
    data = _rng_uint16((2, 8, 8))
    da = open_scene(tif("lazy.tif", data), chunks={"x": 4, "y": 4})
    assert da.chunks is not None
    np.testing.assert_array_equal(da.values, data)


# --------------------------------------------------------------------------- bad files

def test_garbage_file_is_a_data_error(tmp_path):
    bad = tmp_path / "x.tif"
    bad.write_bytes(b"this is not a raster\x00\x01\x02" * 50)
    with pytest.raises(DataError, match=r"x\.tif: not a raster that GDAL can read"):
        open_scene(bad)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.tif: no such file"):
        open_scene(tmp_path / "nothere.tif")


# =========================================================================== ENVI

@pytest.fixture
def envi_scene(envi, tmp_path):
    data = (np.arange(6 * 8 * 9).reshape(6, 8, 9) % 251).astype("uint8")
    header = envi("2000TM", data, wavelengths_um=TAIZHOU_WL_UM)
    return header, tmp_path / "2000TM", data


@pytest.mark.parametrize("which", ["header", "data file"])
def test_envi_opens_via_header_or_data_file(envi_scene, which):
    header, data_file, data = envi_scene
    da = open_scene(header if which == "header" else data_file)
    assert da.shape == (6, 8, 9) and da.dtype == np.uint8
    np.testing.assert_array_equal(da.values, data)
    assert da.rio.crs.to_epsg() == 32633
    assert tuple(da.rio.transform())[:6] == (30.0, 0.0, X0, 0.0, -30.0, Y0)
    # ENVI wavelengths + 'Landsat ETM' sensor type: bands 1,2,3,4,5,7, not 1..6
    assert da.attrs["sensor"] == "landsat7"
    assert da["band"].values.tolist() == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert da["wavelength"].values.tolist() == [483.0, 560.0, 662.0, 835.0, 1648.0, 2206.0]


def test_envi_header_with_uppercase_suffix_and_img_data(envi, tmp_path):
    data = np.full((6, 3, 4), 7, dtype="uint8")
    envi("scene.img", data, wavelengths_um=TAIZHOU_WL_UM, header="scene.HDR")
    da = open_scene(tmp_path / "scene.HDR")
    assert da["band"].values.tolist() == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert int(da.values.sum()) == 7 * data.size


def test_envi_without_sensor_keeps_wavelengths_on_generic_bands(envi):
    data = np.zeros((3, 2, 2), dtype="uint8")
    header = envi("mystery", data, wavelengths_um=[0.49, 0.56, 0.665], sensor_type="Unknown")
    da = open_scene(header)
    assert da.attrs["sensor"] == "generic"
    assert da["band"].values.tolist() == ["band_1", "band_2", "band_3"]
    np.testing.assert_allclose(da["wavelength"].values, [490.0, 560.0, 665.0])


def test_envi_header_without_data_file(tmp_path):
    hdr = tmp_path / "orphan.hdr"
    hdr.write_text("ENVI\nsamples = 2\nlines = 2\nbands = 1\ndata type = 1\ninterleave = bsq\n")
    with pytest.raises(DataError, match=r"orphan\.hdr: ENVI header without its data file"):
        open_scene(hdr)


def test_real_taizhou_envi(shared_data):
    folder = shared_data / "landsat_cd" / "Taizhou"
    via_header = open_scene(folder / "2000TM.HDR")
    via_data = open_scene(folder / "2000TM")
    for da in (via_header, via_data):
        assert da.shape == (6, 400, 400) and da.dtype == np.uint8
        assert da.attrs["sensor"] == "landsat7"
        assert da["band"].values.tolist() == ["B1", "B2", "B3", "B4", "B5", "B7"]
        assert da["common_name"].values.tolist() == ["blue", "green", "red", "nir", "swir16", "swir22"]
        assert da.rio.crs.to_epsg() == 32651
        assert tuple(da.rio.transform())[:6] == (30.0, 0.0, 203325.0, 0.0, -30.0, 3604935.0)
    np.testing.assert_array_equal(via_header.values, _read(folder / "2000TM"))
    np.testing.assert_array_equal(via_header.values, via_data.values)


def test_real_nanjing_envi_is_landsat5(shared_data):
    hdr = next((shared_data / "landsat_cd" / "Nanjing").glob("*2000124*.hdr"))
    da = open_scene(hdr)
    assert da.attrs["sensor"] == "landsat5"  # 'sensor type = Landsat TM'
    assert da["band"].values.tolist() == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert da.shape == (6, 800, 800)
    assert da.rio.crs.to_epsg() == 32650


# =========================================================================== band files

def _s2_band_files(tif, folder, prefix="S2A_MSIL1C_20200101T100319_T33TUM", seed=0):
    """B02/B03 at 10 m (12x12), B05/B8A at 20 m (6x6), B01 at 60 m (2x2), each a distinct pattern."""
    rng = np.random.default_rng(seed)
    spec = {"B01": 60, "B02": 10, "B03": 10, "B05": 20, "B8A": 20}
    files, arrays = {}, {}
    for name, res in spec.items():
        n = 120 // res
        arrays[name] = rng.integers(1, 4000, (n, n)).astype("uint16")
        files[name] = tif(Path(folder) / f"{prefix}_{name}.tif", arrays[name], res=res)
    return files, arrays


def test_band_files_resampled_onto_the_10m_grid(tif, tmp_path):
    files, arrays = _s2_band_files(tif, tmp_path)
    shuffled = [files[n] for n in ("B8A", "B03", "B01", "B05", "B02")]
    da = open_scene(shuffled, resampling="nearest")
    assert da.shape == (5, 12, 12)
    # canonical Sentinel-2 order whatever the order of the files
    assert da["band"].values.tolist() == ["B01", "B02", "B03", "B05", "B8A"]
    assert da["resolution"].values.tolist() == [60.0, 10.0, 10.0, 20.0, 20.0]
    assert da.attrs["sensor"] == "sentinel2_l1c"
    assert da.attrs["time"] == "2020-01-01 10:03:19"
    assert da.rio.crs.to_epsg() == 32633
    assert tuple(da.rio.transform())[:6] == (10.0, 0.0, X0, 0.0, -10.0, Y0)
    np.testing.assert_array_equal(da.sel(band="B02").values, arrays["B02"])
    # nearest upsampling of an aligned coarse band = each coarse pixel repeated
    for name, factor in (("B05", 2), ("B8A", 2), ("B01", 6)):
        expected = np.repeat(np.repeat(arrays[name], factor, 0), factor, 1)
        np.testing.assert_array_equal(da.sel(band=name).values, expected)


def test_band_files_bilinear_keeps_constant_fields(tif):
    a = tif("t_B04.tif", np.full((12, 12), 100, "uint16"), res=10)
    b = tif("t_B05.tif", np.full((6, 6), 250, "uint16"), res=20)
    da = open_scene([a, b])
    assert da.shape == (2, 12, 12)
    np.testing.assert_allclose(da.sel(band="B04").values, 100)
    np.testing.assert_allclose(da.sel(band="B05").values, 250)


def test_band_files_order_does_not_change_the_result(tif, tmp_path):
    files, _ = _s2_band_files(tif, tmp_path)
    forward = open_scene([files[n] for n in ("B01", "B02", "B03", "B05", "B8A")])
    backward = open_scene([files[n] for n in ("B02", "B8A", "B05", "B03", "B01")])
    assert forward.dtype == backward.dtype
    assert forward.attrs["nodata"] == backward.attrs["nodata"]
    assert forward["band"].values.tolist() == backward["band"].values.tolist()
    assert forward.attrs == backward.attrs
    xr.testing.assert_equal(forward, backward)


def test_band_files_all_on_one_grid_keep_dtype(tif):
    a = tif("t_B02.tif", _rng_uint16((4, 4), 1))
    b = tif("t_B03.tif", _rng_uint16((4, 4), 2))
    da = open_scene([b, a])
    assert da.dtype == np.uint16 and da.attrs["nodata"] is None
    np.testing.assert_array_equal(da.values, np.stack([_read(a)[0], _read(b)[0]]))


def test_band_files_with_explicit_names(tif):
    a = tif("red.tif", np.full((4, 4), 1, "uint16"))
    b = tif("nir.tif", np.full((4, 4), 2, "uint16"))
    da = open_scene([a, b], bands=["B4", "B5"], sensor="landsat8")
    assert da["band"].values.tolist() == ["B4", "B5"]
    assert da["common_name"].values.tolist() == ["red", "nir08"]
    assert da.sel(band="B5").values.max() == 2


def test_band_files_names_of_wrong_length(tif):
    a = tif("t_B02.tif", np.ones((4, 4), "uint16"))
    b = tif("t_B03.tif", np.ones((4, 4), "uint16"))
    with pytest.raises(DataError, match="2 band files but 3 band names"):
        open_scene([a, b], bands=["B02", "B03", "B04"])


def test_band_file_without_band_in_name(tif):
    a = tif("t_B02.tif", np.ones((4, 4), "uint16"))
    b = tif("preview.tif", np.ones((4, 4), "uint16"))
    with pytest.raises(DataError, match=r"preview\.tif: cannot tell which band this file holds"):
        open_scene([a, b])


def test_band_file_with_several_bands(tif):
    a = tif("t_B02.tif", np.ones((4, 4), "uint16"))
    b = tif("t_B03.tif", np.ones((2, 4, 4), "uint16"))
    with pytest.raises(DataError, match=r"t_B03\.tif: has 2 bands; a list of files must hold one band each"):
        open_scene([a, b])


def test_band_files_far_apart_cannot_be_aligned(tif):
    a = tif("t_B02.tif", np.ones((12, 12), "uint16"), res=10, x0=X0)
    b = tif("t_B05.tif", np.ones((6, 6), "uint16"), res=20, x0=X0 + 50_000)
    with pytest.raises(DataError, match=r"t_B05\.tif: covers .* but .*t_B02\.tif covers .*"
                                        r"overlap to within one pixel"):
        open_scene([a, b])


def test_band_files_shifted_by_more_than_a_pixel(tif):
    a = tif("t_B02.tif", np.ones((12, 12), "uint16"), res=10)
    b = tif("t_B03.tif", np.ones((12, 12), "uint16"), res=10, y0=Y0 + 30)
    with pytest.raises(DataError, match="band files must be on grids that overlap"):
        open_scene([a, b])


def test_band_file_without_crs_next_to_one_with(tif):
    a = tif("t_B02.tif", np.ones((4, 4), "uint16"))
    b = tif("t_B03.tif", np.ones((4, 4), "uint16"), crs=None)
    with pytest.raises(DataError, match=r"t_B03\.tif: has no CRS while .*t_B02\.tif has one"):
        open_scene([a, b])


def test_band_files_garbage_member(tif, tmp_path):
    a = tif("t_B02.tif", np.ones((4, 4), "uint16"))
    b = tmp_path / "t_B03.tif"
    b.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataError, match=r"t_B03\.tif: not a raster"):
        open_scene([a, b])


def test_band_folder(tif, tmp_path):
    folder = tmp_path / "imgs_1"
    files, arrays = _s2_band_files(tif, folder, prefix="T40QBM_20180328T065919")
    (folder / "notes.txt").write_text("not a band")
    tif(folder / "overview.tif", np.zeros((3, 3), "uint16"))  # no band in its name: ignored
    da = open_scene(folder)
    assert da["band"].values.tolist() == ["B01", "B02", "B03", "B05", "B8A"]
    assert da.attrs["sensor"] == "sentinel2_l1c"  # from the band names, the file names are silent
    assert da.attrs["time"] == "2018-03-28 06:59:19"
    assert da.attrs["source"] == str(folder)
    assert da.shape == (5, 12, 12)
    np.testing.assert_array_equal(da.sel(band="B03").values, arrays["B03"])


def test_band_folder_with_one_file_names_its_band(tif, tmp_path):
    tif("S2A_MSIL2A_20170613T101031_B8A.tif", _rng_uint16((5, 5)), res=20)
    da = open_scene(tmp_path)
    assert da["band"].values.tolist() == ["B8A"]
    assert da["resolution"].values.tolist() == [20.0]
    assert da.attrs["sensor"] == "sentinel2_l2a"
    assert da.shape == (1, 5, 5)


def test_folder_without_band_files(tif, tmp_path):
    tif("scene.tif", np.ones((4, 4), "uint16"))
    with pytest.raises(DataError, match="folder holds no band files named like"):
        open_scene(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: folder holds no band files"):
        open_scene(tmp_path / "empty")


# --------------------------------------------------------------------------- real band files

@pytest.fixture(scope="module")
def abudhabi(shared_data):
    return shared_data / "oscd" / "abudhabi"


def _band_file(folder, band):
    return next(Path(folder).glob(f"*_{band}.tif"))


def test_oscd_folder_resampled_to_10m(abudhabi):
    da = open_scene(abudhabi / "imgs_1")
    b02 = _read(_band_file(abudhabi / "imgs_1", "B02"))[0]
    assert da.shape == (13,) + b02.shape == (13, 799, 785)
    assert da["band"].values.tolist() == S2_NAMES
    assert da["resolution"].values.tolist() == [60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 60, 20, 20]
    assert da.attrs["sensor"] == "sentinel2_l1c"  # MSI_L1C in the name
    assert da.attrs["time"] == "2016-01-20 10:43:45"
    assert da.rio.crs.to_epsg() == 4326  # as the OSCD files say
    with rasterio.open(_band_file(abudhabi / "imgs_1", "B02")) as ds:
        np.testing.assert_allclose(tuple(da.rio.transform())[:6], tuple(ds.transform)[:6])
    np.testing.assert_array_equal(da.sel(band="B02").values, b02.astype("float32"))
    assert not np.isnan(da.values).any()
    # a 60 m band upsampled bilinearly keeps its overall level
    b01 = _read(_band_file(abudhabi / "imgs_1", "B01"))[0].astype(float)
    assert abs(float(da.sel(band="B01").mean()) - b01.mean()) < 0.01 * b01.mean()


def test_bigearthnet_band_list(shared_data):
    folder = next((shared_data / "bigearthnet" / "S2").glob("S2A_MSIL2A_20170613T101031_87_48"))
    files = sorted(folder.glob("*_B*.tif"))
    da = open_scene(files)
    assert da.shape == (12, 120, 120)
    assert da["band"].values.tolist() == [n for n in S2_NAMES if n != "B10"]
    assert da.attrs["sensor"] == "sentinel2_l2a"
    assert da.attrs["time"] == "2017-06-13 10:10:31"
    assert da.rio.crs.to_epsg() == 32633
    assert tuple(da.rio.transform())[:6] == (10.0, 0.0, 404400.0, 0.0, -10.0, 5342400.0)
    np.testing.assert_array_equal(da.sel(band="B04").values, _read(_band_file(folder, "B04"))[0])
    # the 20 m band, averaged back over 2x2 blocks, matches the file closely
    b05 = _read(_band_file(folder, "B05"))[0].astype(float)
    up = da.sel(band="B05").values.astype(float)
    back = up.reshape(60, 2, 60, 2).mean(axis=(1, 3))
    assert np.corrcoef(back.ravel(), b05.ravel())[0, 1] > 0.95
    assert abs(up.mean() - b05.mean()) < 0.01 * b05.mean()


# =========================================================================== open_stack

def test_stack_times_from_file_names(sample_files):
    files = sorted((sample_files / "taizhou_change").glob("taizhou_*_L7.tif"))
    stack = open_stack(files)
    assert stack.dims == ("time", "band", "y", "x") and stack.shape == (2, 6, 400, 400)
    assert list(stack.time.values) == list(pd.to_datetime(["2000-01-01", "2003-01-01"]).values)
    np.testing.assert_array_equal(stack.isel(time=1).values, _read(files[1]))
    assert stack.rio.crs.to_epsg() == 32651
    assert stack.attrs["sources"] == [str(f) for f in files]
    assert "time" not in stack.attrs


def test_stack_explicit_times(sample_files):
    files = sorted((sample_files / "taizhou_change").glob("taizhou_*_L7.tif"))
    stack = open_stack(files, times=["2000-03-17", "2003-05-28"])
    assert stack.time.dt.strftime("%Y-%m-%d").values.tolist() == ["2000-03-17", "2003-05-28"]
    assert open_stack(files, times=[10, 20]).time.values.tolist() == [10, 20]


def test_stack_without_dates_counts(sample_files):
    files = sorted((sample_files / "slovenia_s2").glob("slovenia_date*.tif"))
    stack = open_stack(files)
    assert stack.time.values.tolist() == [0, 1, 2, 3, 4]
    assert stack.shape == (5, 13, 101, 100)
    np.testing.assert_array_equal(stack.isel(time=3).values, _read(files[3]))


def test_stack_number_of_times_must_match(sample_files):
    files = sorted((sample_files / "taizhou_change").glob("taizhou_*_L7.tif"))
    with pytest.raises(DataError, match="3 times given for 2 scenes"):
        open_stack(files, times=["2000", "2001", "2002"])


def test_stack_reorders_bands_of_later_dates(tif):
    d1 = np.stack([np.full((4, 4), v, "uint16") for v in (2, 3, 4)])
    d2 = np.stack([np.full((4, 4), v, "uint16") for v in (40, 20, 30)])
    a = tif("s_20200101.tif", d1, descriptions=["B02", "B03", "B04"])
    b = tif("s_20200201.tif", d2, descriptions=["B04", "B02", "B03"])
    stack = open_stack([a, b])
    assert stack["band"].values.tolist() == ["B02", "B03", "B04"]
    assert stack.isel(time=1, y=0, x=0).values.tolist() == [20, 30, 40]
    assert stack.isel(time=0, y=0, x=0).values.tolist() == [2, 3, 4]
    assert stack["common_name"].values.tolist() == ["blue", "green", "red"]
    assert stack.time.dt.strftime("%Y-%m-%d").values.tolist() == ["2020-01-01", "2020-02-01"]


def test_stack_with_different_bands_is_a_data_error(tif):
    a = tif("a.tif", np.ones((3, 4, 4), "uint16"), descriptions=["B02", "B03", "B04"])
    b = tif("b.tif", np.ones((3, 4, 4), "uint16"), descriptions=["B02", "B03", "B08"])
    with pytest.raises(DataError, match=r"date 1 has bands \['B02', 'B03', 'B08'\].*"
                                        r"same bands at every date"):
        open_stack([a, b])


def test_stack_of_dataarrays(taizhou):
    d0 = taizhou["image"].isel(time=0, drop=True)
    d1 = taizhou["image"].isel(time=1, drop=True)
    stack = open_stack([d0, d1.sel(band=["B7", "B5", "B4", "B3", "B2", "B1"])])
    assert stack["band"].values.tolist() == ["B1", "B2", "B3", "B4", "B5", "B7"]
    np.testing.assert_array_equal(stack.values, taizhou["image"].values)
    assert stack.time.values.tolist() == [0, 1]


def test_stack_needs_a_scene():
    with pytest.raises(DataError, match="at least one scene"):
        open_stack([])


def test_stack_crops_to_common_extent(tif):
    # same 10 m grid; date 2 starts 2 px right and 1 px lower and is 1 px narrower
    d1 = np.arange(1, 6 * 8 + 1, dtype="uint16").reshape(1, 6, 8)
    d2 = np.arange(101, 101 + 5 * 7, dtype="uint16").reshape(1, 5, 7)
    a = tif("a_20190101.tif", d1)
    b = tif("b_20190601.tif", d2, x0=X0 + 20, y0=Y0 - 10)
    stack = open_stack([a, b])
    # common extent: x from X0+20 to X0+80 (6 px), y from Y0-10 to Y0-60 (5 px)
    assert stack.shape == (2, 1, 5, 6)
    np.testing.assert_array_equal(stack.isel(time=0, band=0).values, d1[0, 1:6, 2:8])
    np.testing.assert_array_equal(stack.isel(time=1, band=0).values, d2[0, :, 0:6])
    np.testing.assert_allclose(stack.x.values, X0 + 25 + 10 * np.arange(6))
    np.testing.assert_allclose(stack.y.values, Y0 - 15 - 10 * np.arange(5))


def test_stack_dates_that_do_not_overlap(tif):
    a = tif("a.tif", np.ones((1, 4, 4), "uint16"))
    b = tif("b.tif", np.ones((1, 4, 4), "uint16"), x0=X0 + 1000)
    with pytest.raises(DataError, match="do not overlap"):
        open_stack([a, b])


def test_stack_resamples_other_resolution_onto_first_grid(tif):
    a = tif("a.tif", np.full((1, 8, 8), 5, "uint16"), res=10)
    b = tif("b.tif", np.full((1, 4, 4), 9, "uint16"), res=20)
    stack = open_stack([a, b])
    assert stack.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(stack.isel(time=1).values, 9)
    assert tuple(stack.rio.transform())[:6] == (10.0, 0.0, X0, 0.0, -10.0, Y0)


def test_stack_abudhabi_date_grids(abudhabi):
    """OSCD abudhabi: the date-2 files are a few pixels smaller (795x782 vs 799x785 at 10 m) on a
    slightly different pixel size over the same ground; the stack lands on the date-1 grid, the
    grid of the change labels."""
    stack = open_stack([abudhabi / "imgs_1", abudhabi / "imgs_2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the label file has no transform
        with rasterio.open(abudhabi / "cm.tif") as cm:
            label_shape = cm.shape
    assert stack.shape == (2, 13) + label_shape == (2, 13, 799, 785)
    assert stack.time.dt.strftime("%Y-%m-%d").values.tolist() == ["2016-01-20", "2018-03-28"]
    dates = (abudhabi / "dates.txt").read_text()
    assert re.search(r"date_1:\s*20160120", dates) and re.search(r"date_2:\s*20180328", dates)
    assert stack["band"].values.tolist() == S2_NAMES
    assert not np.isnan(stack.values).any()
    raw1 = _read(_band_file(abudhabi / "imgs_1", "B02"))[0]
    raw2 = _read(_band_file(abudhabi / "imgs_2", "B02"))[0]
    assert raw2.shape == (795, 782)
    np.testing.assert_array_equal(stack.sel(band="B02").isel(time=0).values, raw1)
    # date 2 is the same ground: nearest-neighbour mapping of its pixels onto the date-1 grid
    rows = np.minimum(((np.arange(799) + 0.5) * 795 / 799).astype(int), 794)
    cols = np.minimum(((np.arange(785) + 0.5) * 782 / 785).astype(int), 781)
    np.testing.assert_array_equal(stack.sel(band="B02").isel(time=1).values, raw2[np.ix_(rows, cols)])
