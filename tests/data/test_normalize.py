"""band_stats / with_stats / stats_of / normalize_array / normalize_raw, checked against numpy directly."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from eossl.data.normalize import band_stats, fill_mask, normalize_array, normalize_raw, stats_of, with_stats
from eossl.errors import DataError


def _scene(data, names=None, **attrs):
    data = np.asarray(data)
    names = names or [f"b{i}" for i in range(data.shape[0])]
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"band": names}, attrs=attrs)


@pytest.fixture
def noisy():
    rng = np.random.default_rng(1)
    data = rng.normal([[[10.0]], [[-3.0]], [[500.0]]], [[[2.0]], [[0.5]], [[80.0]]], (3, 40, 50))
    data[0, :5, :7] = np.nan
    data[2, 10, 10] = np.nan
    return data


# --------------------------------------------------------------------------- band_stats

def test_band_stats_matches_numpy_ignoring_nan(noisy):
    stats = band_stats(_scene(noisy, ["B02", "B03", "B04"]))
    assert isinstance(stats, xr.Dataset)
    assert stats["band"].values.tolist() == ["B02", "B03", "B04"]
    flat = noisy.reshape(3, -1)
    np.testing.assert_allclose(stats["mean"].values, np.nanmean(flat, axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats["std"].values, np.nanstd(flat, axis=1), rtol=1e-12)
    assert np.isfinite(stats["mean"].values).all()
    # roughly what the data were drawn from
    np.testing.assert_allclose(stats["mean"].values, [10, -3, 500], atol=6)


def test_constant_band_gets_std_one():
    data = np.stack([np.full((5, 5), 7.0), np.arange(25.0).reshape(5, 5)])
    stats = band_stats(_scene(data))
    assert stats["mean"].values.tolist()[0] == 7.0
    assert stats["std"].values.tolist()[0] == 1.0
    assert stats["std"].values[1] == pytest.approx(np.arange(25.0).std())


def test_nodata_attr_is_excluded():
    data = np.array([[[0, 0, 4], [6, 8, 0]]], dtype="uint16")
    stats = band_stats(_scene(data, nodata=0.0))
    assert stats["mean"].item() == pytest.approx(6.0)
    assert stats["std"].item() == pytest.approx(np.std([4, 6, 8]))
    # without the attribute, 0 counts as a value
    assert band_stats(_scene(data))["mean"].item() == pytest.approx(18 / 6)


def test_integer_data_on_the_bundled_chips(chips):
    sub = chips.isel(sample=slice(0, 20))
    stats = band_stats(sub)
    values = sub.values.astype("float64")
    np.testing.assert_allclose(stats["mean"].values, values.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(stats["std"].values, values.std(axis=(0, 2, 3)), rtol=1e-10)
    assert stats["band"].values.tolist() == chips["band"].values.tolist()


def test_stack_layout(slovenia):
    image = slovenia["image"]  # (time, band, y, x)
    stats = band_stats(image)
    np.testing.assert_allclose(stats["mean"].values,
                               image.values.astype("float64").mean(axis=(0, 2, 3)), rtol=1e-10)


def test_list_of_arrays_is_pooled(noisy):
    a = _scene(noisy, ["x", "y", "z"])
    b = _scene(noisy[:, :10, :10] + 1000.0, ["x", "y", "z"])
    stats = band_stats([a, b])
    pooled = np.concatenate([noisy.reshape(3, -1), (noisy[:, :10, :10] + 1000.0).reshape(3, -1)], axis=1)
    np.testing.assert_allclose(stats["mean"].values, np.nanmean(pooled, axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats["std"].values, np.nanstd(pooled, axis=1), rtol=1e-12)


def test_list_with_other_bands_is_a_data_error():
    a = _scene(np.ones((2, 3, 3)), ["B02", "B03"])
    b = _scene(np.ones((2, 3, 3)), ["B03", "B02"])
    with pytest.raises(DataError, match="same bands in the same order"):
        band_stats([a, b])


def test_band_without_valid_pixels_is_a_data_error():
    data = np.ones((3, 4, 4))
    data[1] = np.nan
    with pytest.raises(DataError, match=r"bands \['B03'\] hold no valid pixels"):
        band_stats(_scene(data, ["B02", "B03", "B04"]))


def test_subsampling_large_arrays():
    rng = np.random.default_rng(3)
    data = rng.normal(100.0, 15.0, (2, 300, 300))
    exact = band_stats(_scene(data))
    sub = band_stats(_scene(data), max_pixels=5000, seed=1)
    np.testing.assert_allclose(sub["mean"].values, exact["mean"].values, atol=1.0)  # ~5 sigma
    np.testing.assert_allclose(sub["std"].values, exact["std"].values, rtol=0.05)
    assert not np.allclose(sub["mean"].values, exact["mean"].values, rtol=0, atol=1e-9)
    again = band_stats(_scene(data), max_pixels=5000, seed=1)
    np.testing.assert_array_equal(sub["mean"].values, again["mean"].values)  # reproducible
    # enough pixels allowed: exact
    np.testing.assert_allclose(band_stats(_scene(data), max_pixels=90_000)["mean"].values,
                               data.reshape(2, -1).mean(axis=1), rtol=1e-12)


# --------------------------------------------------------------------------- with_stats / stats_of

def test_with_stats_attaches_band_coordinates(noisy):
    da = with_stats(_scene(noisy, ["B02", "B03", "B04"]))
    flat = noisy.reshape(3, -1)
    np.testing.assert_allclose(da["band_mean"].values, np.nanmean(flat, axis=1))
    np.testing.assert_allclose(da["band_std"].values, np.nanstd(flat, axis=1))
    assert da["band_mean"].dims == ("band",)
    # selecting bands keeps each band's own statistics
    one = da.sel(band=["B04"])
    assert one["band_mean"].item() == pytest.approx(np.nanmean(flat[2]))
    np.testing.assert_array_equal(da.values, noisy)  # data untouched


def test_with_stats_aligns_given_stats_by_band_name():
    da = _scene(np.zeros((2, 2, 2)), ["B03", "B02"])
    stats = xr.Dataset({"mean": ("band", [2.0, 3.0, 4.0]), "std": ("band", [20.0, 30.0, 40.0])},
                       coords={"band": ["B02", "B03", "B04"]})
    out = with_stats(da, stats)
    assert out["band_mean"].values.tolist() == [3.0, 2.0]
    assert out["band_std"].values.tolist() == [30.0, 20.0]


def test_stats_of_returns_carried_statistics():
    da = _scene(np.zeros((2, 2, 2)), ["a", "b"]).assign_coords(
        band_mean=("band", [1.5, 2.5]), band_std=("band", [3.0, 4.0]))
    stats = stats_of(da)  # not recomputed from the zeros
    assert stats["mean"].values.tolist() == [1.5, 2.5]
    assert stats["std"].values.tolist() == [3.0, 4.0]
    assert stats["band"].values.tolist() == ["a", "b"]


def test_stats_of_computes_when_nothing_carried(noisy):
    stats = stats_of(_scene(noisy))
    np.testing.assert_allclose(stats["mean"].values, np.nanmean(noisy.reshape(3, -1), axis=1))


def test_stats_of_with_stats_round_trip(taizhou):
    image = with_stats(taizhou["image"])
    stats = stats_of(image.sel(band=["B4", "B3"]))
    raw = taizhou["image"].sel(band=["B4", "B3"]).values.astype("float64")
    np.testing.assert_allclose(stats["mean"].values, raw.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(stats["std"].values, raw.std(axis=(0, 2, 3)), rtol=1e-10)


# --------------------------------------------------------------------------- normalize_array

def test_normalize_array_band_axis_1():
    x = np.arange(2 * 3 * 2 * 2, dtype="uint16").reshape(2, 3, 2, 2)
    mean, std = [1.0, 2.0, 3.0], [2.0, 4.0, 0.5]
    out = normalize_array(x, mean, std, band_axis=1)
    assert out.dtype == np.float32 and out.shape == x.shape
    m, s = np.array(mean)[None, :, None, None], np.array(std)[None, :, None, None]
    expected = (x.astype("float64") - m) / s
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("band_axis", [0, -1])
def test_normalize_array_other_axes(band_axis):
    x = np.random.default_rng(0).normal(size=(3, 4, 3)).astype("float64")
    out = normalize_array(x, [0.5, 1.0, -1.0], [1.0, 2.0, 4.0], band_axis=band_axis)
    shape = [1, 1, 1]
    shape[band_axis] = 3
    expected = (x - np.reshape([0.5, 1.0, -1.0], shape)) / np.reshape([1.0, 2.0, 4.0], shape)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)  # float32 result


def test_normalize_array_keeps_nan():
    x = np.array([[[1.0, np.nan], [3.0, 5.0]]])
    out = normalize_array(x, [3.0], [2.0], band_axis=0)
    assert np.isnan(out[0, 0, 1])
    np.testing.assert_allclose(out[0][~np.isnan(x[0])], [-1.0, 0.0, 1.0])


def test_normalize_array_returns_a_new_float32_array_and_leaves_the_input():
    x = np.array([[[1, 2], [3, 4]]], dtype="uint16")
    out = normalize_array(x, [2.0], [2.0], band_axis=0)
    assert out.dtype == np.float32 and not np.shares_memory(out, x)
    np.testing.assert_allclose(out[0], [[-0.5, 0.0], [0.5, 1.0]])
    f = x.astype("float32")
    out = normalize_array(f, [2.0], [2.0], band_axis=0)
    out[:] = 7
    assert f[0, 0, 0] == 1  # the input is not written through


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32", "float64"])
def test_normalize_raw_marks_nodata_nan_and_inf_as_nan_in_every_dtype(dtype):
    x = np.array([[[0, 100], [200, 300]], [[400, 0], [600, 700]]], dtype=dtype)  # (band, y, x)
    mean, std = [100.0, 500.0], [100.0, 200.0]
    if np.issubdtype(x.dtype, np.floating):
        x[0, 1, 1], x[1, 1, 0] = np.nan, np.inf
    out = normalize_raw(x, mean, std, band_axis=0, nodata=0)
    assert out.dtype == np.float32
    expected = (x.astype("float64") - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    expected[x == 0] = np.nan
    expected[~np.isfinite(x)] = np.nan
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # without nodata only the non-finite values are invalid
    assert np.isnan(normalize_raw(x, mean, std, 0)).sum() == (0 if np.issubdtype(x.dtype, np.integer) else 2)


def test_normalised_chips_have_zero_mean_unit_std(chips):
    sub = chips.isel(sample=slice(0, 30))
    stats = band_stats(sub)
    out = normalize_array(sub.values, stats["mean"].values, stats["std"].values, band_axis=1)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3), dtype="float64"), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3), dtype="float64"), 1.0, atol=1e-4)


def test_normalize_standardises_each_band(chips):
    import eossl
    out = eossl.normalize(chips)
    assert out.dtype == np.float32 and out.dims == chips.dims
    assert out["label"].values.tolist() == chips["label"].values.tolist()
    values = out.transpose("band", ...).values.reshape(chips.sizes["band"], -1)
    np.testing.assert_allclose(values.mean(axis=1), 0, atol=1e-3)
    np.testing.assert_allclose(values.std(axis=1), 1, atol=1e-3)
    reordered = eossl.normalize(chips.isel(band=[2, 0, 1]), stats=eossl.band_stats(chips))
    np.testing.assert_allclose(reordered.sel(band="B01").values, out.sel(band="B01").values, rtol=1e-6)


def test_nodata_to_nan():
    from eossl.data.normalize import nodata_to_nan
    values = np.array([1.0, 0.0, 5.0])
    np.testing.assert_array_equal(nodata_to_nan(values, 0), [1.0, np.nan, 5.0])
    assert nodata_to_nan(values, None) is values and nodata_to_nan(values, np.nan) is values


def test_fill_mask_finds_zero_margins_nodata_and_nan():
    values = np.ones((3, 4, 5), dtype="uint16")
    values[:, 0, :] = 0                       # a zero margin (the Landsat 8 L1 scene has one, untagged)
    values[0, 1, 1] = 0                       # one band 0 is real data: not a fill pixel
    values[:, 3, 4] = 7                       # the tagged nodata value
    mask = fill_mask(_scene(values, nodata=7))
    expected = np.zeros((4, 5), bool)
    expected[0, :] = True
    expected[3, 4] = True
    np.testing.assert_array_equal(mask, expected)
    floats = values.astype("float32")
    floats[:, 2, 2] = np.nan
    assert fill_mask(_scene(floats))[2, 2] and not fill_mask(_scene(floats))[3, 4]   # no tag: 7 is data
