"""grid_patches / random_patches (windows with positions) and PatchSampler (training batches)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr

from eossl.data.normalize import band_stats, with_stats
from eossl.data.patches import PatchSampler, grid_patches, random_patches
from eossl.data.scenes import open_scene
from eossl.errors import DataError

X0, Y0, RES = 500_000.0, 5_000_000.0, 10.0  # where the `tif` fixture puts its rasters


def _coded(h, w, bands=3):
    """value = 10000 * band + 100 * row + col: every window says where it came from."""
    b, r, c = np.meshgrid(np.arange(bands), np.arange(h), np.arange(w), indexing="ij")
    return (10000 * b + 100 * r + c).astype("float32")


@pytest.fixture
def scene(tif):
    return open_scene(tif("scene.tif", _coded(20, 24)))


def _stats(names, mean, std):
    return xr.Dataset({"mean": ("band", np.asarray(mean, float)), "std": ("band", np.asarray(std, float))},
                      coords={"band": list(names)})


# =========================================================================== grid_patches

def test_grid_positions_values_and_centres(scene):
    p = grid_patches(scene, 8)
    assert p.dims == ("sample", "band", "y", "x") and p.shape == (6, 3, 8, 8)
    assert p["row"].values.tolist() == [0, 0, 0, 8, 8, 8]
    assert p["col"].values.tolist() == [0, 8, 16, 0, 8, 16]
    assert p["source_index"].values.tolist() == [0] * 6
    data = _coded(20, 24)
    for i, (r, c) in enumerate(zip(p["row"].values, p["col"].values)):
        np.testing.assert_array_equal(p.isel(sample=i).values, data[:, r:r + 8, c:c + 8])
    # window centre in the scene CRS: the corner shared by the four middle pixels
    np.testing.assert_allclose(p["x_center"].values, X0 + RES * (p["col"].values + 4))
    np.testing.assert_allclose(p["y_center"].values, Y0 - RES * (p["row"].values + 4))
    assert p.attrs["crs"] == "EPSG:32633"
    assert p.attrs["patch_size"] == 8
    assert p.attrs["sensor"] == "generic"
    assert p["band"].values.tolist() == ["band_1", "band_2", "band_3"]


def test_grid_odd_size_and_stride(scene):
    p = grid_patches(scene, 5, stride=6)
    assert sorted(set(p["row"].values.tolist())) == [0, 6, 12]
    assert sorted(set(p["col"].values.tolist())) == [0, 6, 12, 18]
    assert p.sizes["sample"] == 12
    np.testing.assert_allclose(p["x_center"].values, X0 + RES * (p["col"].values + 2.5))
    np.testing.assert_allclose(p["y_center"].values, Y0 - RES * (p["row"].values + 2.5))
    # the centre pixel of an odd window sits exactly on x_center / y_center
    r, c = int(p["row"].values[5]), int(p["col"].values[5])
    assert scene.x.values[c + 2] == p["x_center"].values[5]
    assert scene.y.values[r + 2] == p["y_center"].values[5]


def test_grid_centres_match_rasterio_transform(slovenia, sample_files):
    image = slovenia["image"]
    p = grid_patches(image, 32)
    assert p.sizes["sample"] == 5 * 9  # 3x3 windows per date, 5 dates
    assert p["time"].values.tolist() == sorted([0, 1, 2, 3, 4] * 9)
    assert p["source_index"].values.tolist() == p["time"].values.tolist()
    with rasterio.open(sample_files / "slovenia_s2" / "slovenia_date1.tif") as ds:
        transform = ds.transform
    for i in (0, 4, 8):
        r, c = int(p["row"].values[i]), int(p["col"].values[i])
        x = transform.c + transform.a * (c + 16) + transform.b * (r + 16)
        y = transform.f + transform.d * (c + 16) + transform.e * (r + 16)
        assert p["x_center"].values[i] == pytest.approx(x, abs=1e-6)
        assert p["y_center"].values[i] == pytest.approx(y, abs=1e-6)
    np.testing.assert_array_equal(p.isel(sample=13).values,
                                  image.isel(time=1).values[:, 32:64, 32:64])
    assert p.attrs["crs"] == "EPSG:32633"


def test_grid_skips_windows_with_nan(tif):
    data = _coded(16, 16)
    data[1, 3, 3] = np.nan          # in window (0, 0)
    data[:, 12:, 12:] = np.nan      # fills a quarter of window (8, 8)
    da = open_scene(tif("holes.tif", data))
    p = grid_patches(da, 8)
    assert list(zip(p["row"].values, p["col"].values)) == [(0, 8), (8, 0)]
    assert np.isfinite(p.values).all()
    # one NaN pixel in 64 is allowed at max_invalid=2 %, a quarter of the window is not
    p = grid_patches(da, 8, max_invalid=0.02)
    assert list(zip(p["row"].values, p["col"].values)) == [(0, 0), (0, 8), (8, 0)]
    assert int(np.isnan(p.values).sum()) == 1
    assert grid_patches(da, 8, max_invalid=0.25).sizes["sample"] == 4


def test_grid_treats_nodata_attr_as_invalid(tif):
    data = np.ones((1, 8, 16), dtype="uint16")
    data[0, 2, 12] = 0
    da = open_scene(tif("nd.tif", data, nodata=0), masked=False)
    assert da.dtype == np.uint16
    p = grid_patches(da, 8)
    assert p["col"].values.tolist() == [0]


def test_grid_on_chips_keeps_labels(chips):
    sub = chips.isel(sample=[0, 12, 119])
    p = grid_patches(sub, 32)
    assert p.shape == (12, 13, 32, 32)
    assert p["label"].values.tolist() == ["AnnualCrop"] * 4 + ["Forest"] * 4 + ["SeaLake"] * 4
    assert p["source_index"].values.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert "x_center" not in p.coords  # chips have no common map
    np.testing.assert_array_equal(p.isel(sample=7).values, sub.isel(sample=1).values[:, 32:, 32:])
    assert p["wavelength"].values.tolist() == chips["wavelength"].values.tolist()


def test_grid_carries_band_statistics(scene):
    p = grid_patches(with_stats(scene), 8)
    np.testing.assert_allclose(p["band_mean"].values, _coded(20, 24).reshape(3, -1).mean(axis=1))


def test_grid_on_all_nan_scene_is_an_error(tif):
    da = open_scene(tif("void.tif", np.full((2, 8, 8), np.nan, "float32")))
    with pytest.raises(DataError, match="every pixel is NaN or nodata"):
        grid_patches(da, 4)


@pytest.mark.parametrize("fn", [lambda da: grid_patches(da, 16), lambda da: random_patches(da, 16, 3),
                                lambda da: PatchSampler(da, 16)])
def test_scene_smaller_than_a_patch(tif, fn):
    da = open_scene(tif("tiny.tif", _coded(10, 12)))
    with pytest.raises(DataError, match=r"tiny\.tif: is 10x12 px, smaller than one 16x16 patch"):
        fn(da)


def test_array_without_band_dimension():
    with pytest.raises(DataError, match="has no 'band' dimension"):
        grid_patches(xr.DataArray(np.zeros((8, 8)), dims=("y", "x")), 4)


# =========================================================================== random_patches

def test_random_windows_are_valid_and_reproducible(tif):
    data = _coded(20, 24)
    data[:, :, :12] = np.nan  # left half empty
    da = open_scene(tif("half.tif", data))
    p = random_patches(da, 8, n=40, seed=3)
    assert p.shape == (40, 3, 8, 8)
    assert np.isfinite(p.values).all()
    cols, rows = p["col"].values, p["row"].values
    assert cols.min() >= 12 and cols.max() <= 16 and rows.min() >= 0 and rows.max() <= 12
    assert len(set(zip(rows, cols))) > 5  # really random positions
    for i in range(40):
        np.testing.assert_array_equal(p.isel(sample=i).values,
                                      data[:, rows[i]:rows[i] + 8, cols[i]:cols[i] + 8])
    np.testing.assert_allclose(p["x_center"].values, X0 + RES * (cols + 4))
    np.testing.assert_allclose(p["y_center"].values, Y0 - RES * (rows + 4))
    again = random_patches(da, 8, n=40, seed=3)
    assert again["row"].values.tolist() == rows.tolist() and again["col"].values.tolist() == cols.tolist()
    other = random_patches(da, 8, n=40, seed=4)
    assert list(zip(other["row"].values, other["col"].values)) != list(zip(rows, cols))


def test_random_over_dates_of_a_stack(slovenia):
    p = random_patches(slovenia["image"], 16, n=60, seed=0)
    assert p.shape == (60, 13, 16, 16)
    assert set(p["time"].values.tolist()) == {0, 1, 2, 3, 4}
    i = 17
    t, r, c = int(p["source_index"].values[i]), int(p["row"].values[i]), int(p["col"].values[i])
    np.testing.assert_array_equal(p.isel(sample=i).values,
                                  slovenia["image"].isel(time=t).values[:, r:r + 16, c:c + 16])


def test_random_over_chips_keeps_labels(chips):
    p = random_patches(chips, 16, n=30, seed=1)
    idx = p["source_index"].values
    assert p["label"].values.tolist() == chips["label"].values[idx].tolist()
    assert len(set(idx.tolist())) > 10


def test_random_on_all_nan_scene(tif):
    da = open_scene(tif("void.tif", np.full((2, 12, 12), np.nan, "float32")))
    with pytest.raises(DataError, match=r"void\.tif: every pixel is NaN or nodata"):
        random_patches(da, 4, n=2)


def test_random_when_no_window_is_clean_enough(tif):
    data = _coded(24, 24)
    data[0, ::4, ::4] = np.nan  # 4 NaN pixels in every 8x8 window
    da = open_scene(tif("dotted.tif", data))
    with pytest.raises(DataError, match=r"dotted\.tif: no 8x8 window with at most 0% nodata/NaN pixels"):
        random_patches(da, 8, n=5)
    p = random_patches(da, 8, n=5, max_invalid=0.1)  # 4/64 = 6 % invalid is allowed
    assert p.sizes["sample"] == 5
    assert (np.isnan(p.values).sum(axis=(1, 2, 3)) == 4).all()


# =========================================================================== PatchSampler

def test_sampler_batch_shape_and_normalisation(chips):
    sampler = PatchSampler(chips, 32)
    rng = np.random.default_rng(0)
    batch = sampler.sample(16, rng)
    assert batch.shape == (16, 13, 32, 32) and batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    many = np.concatenate([sampler.sample(32, rng) for _ in range(25)])
    mean = many.mean(axis=(0, 2, 3), dtype="float64")
    std = many.std(axis=(0, 2, 3), dtype="float64")
    np.testing.assert_allclose(mean, 0.0, atol=0.2)
    np.testing.assert_allclose(std, 1.0, atol=0.15)
    # the statistics are the chips' own
    raw = chips.values.astype("float64")
    np.testing.assert_allclose(sampler.stats["mean"].values, raw.mean(axis=(0, 2, 3)), rtol=1e-9)
    assert sampler.bands == chips["band"].values.tolist()


def test_sampler_windows_are_normalised_windows_of_the_data(tif):
    da = open_scene(tif("coded.tif", _coded(30, 30, bands=2)))
    stats = _stats(["band_1", "band_2"], [10.0, 10000.0], [2.0, 4.0])
    sampler = PatchSampler(da, 6, stats=stats, augment=False)
    batch = sampler.sample(20, np.random.default_rng(5))
    for w in batch:
        raw0 = w[0] * 2.0 + 10.0          # 100 * row + col
        raw1 = w[1] * 4.0 + 10000.0       # 10000 + 100 * row + col
        np.testing.assert_allclose(raw1 - raw0, 10000.0, atol=1e-2)
        r0, c0 = divmod(int(round(raw0[0, 0])), 100)
        expected = 100 * (r0 + np.arange(6))[:, None] + (c0 + np.arange(6))[None, :]
        np.testing.assert_allclose(raw0, expected, atol=1e-2)
        assert 0 <= r0 <= 24 and 0 <= c0 <= 24


def test_sampler_augmentation_only_flips_and_turns(tif):
    da = open_scene(tif("coded.tif", _coded(12, 12, bands=1)))
    sampler = PatchSampler(da, 12, stats=_stats(["band_1"], [0.0], [1.0]))  # one window: all of it
    seen = set()
    for seed in range(12):
        w = sampler.sample(1, np.random.default_rng(seed))[0, 0]
        np.testing.assert_array_equal(np.sort(w.ravel()), np.sort(_coded(12, 12, 1).ravel()))
        seen.add(w.tobytes())
    assert len(seen) > 1


def test_sampler_mixes_sources_by_pixel_count(tif):
    a = open_scene(tif("a.tif", np.full((1, 40, 40), -1.0, "float32")))
    b = open_scene(tif("b.tif", np.full((1, 40, 40), 1.0, "float32")))
    stack = xr.concat([b, b], dim="time")  # two dates: twice the windows of `a`
    sampler = PatchSampler([a, stack], 8, stats=_stats(["band_1"], [0.0], [1.0]))
    np.testing.assert_allclose(sampler.weights, [1 / 3, 2 / 3])
    rng = np.random.default_rng(0)
    windows = np.concatenate([sampler.sample(50, rng) for _ in range(12)])[:, 0]
    assert set(np.unique(windows).tolist()) == {-1.0, 1.0}
    from_b = (windows.mean(axis=(1, 2)) > 0).mean()
    assert 0.6 < from_b < 0.73  # 600 draws around 2/3


def test_sampler_pools_statistics_of_several_sources(tif):
    rng = np.random.default_rng(2)
    a_data = rng.normal(0, 1, (2, 16, 16)).astype("float32")
    b_data = rng.normal(50, 5, (2, 24, 24)).astype("float32")
    a, b = open_scene(tif("a.tif", a_data)), open_scene(tif("b.tif", b_data))
    sampler = PatchSampler([a, b], 8)
    pooled = np.concatenate([a_data.reshape(2, -1), b_data.reshape(2, -1)], axis=1).astype("float64")
    np.testing.assert_allclose(sampler.stats["mean"].values, pooled.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(sampler.stats["std"].values, pooled.std(axis=1), rtol=1e-6)


def test_sampler_uses_statistics_carried_by_the_data(taizhou):
    image = with_stats(taizhou["image"], _stats(["B1", "B2", "B3", "B4", "B5", "B7"], [100] * 6, [10] * 6))
    sampler = PatchSampler(image, 16, augment=False)
    assert sampler.stats["mean"].values.tolist() == [100.0] * 6
    batch = sampler.sample(4, np.random.default_rng(0))
    raw = batch * 10 + 100
    assert raw.min() >= -1e-3 and raw.max() <= 255 + 1e-3  # uint8 data back from the normalised batch


def test_sampler_aligns_statistics_by_band_name(taizhou):
    image = taizhou["image"]
    stats = band_stats(image)
    ordered = PatchSampler(image, 16, stats=stats).sample(8, np.random.default_rng(1))
    reversed_ = PatchSampler(image, 16, stats=stats.isel(band=slice(None, None, -1)))
    np.testing.assert_allclose(reversed_.sample(8, np.random.default_rng(1)), ordered, rtol=1e-6)
    # statistics of more bands than the data: the data's bands are picked
    sub = image.sel(band=["B4", "B3"])
    sampler = PatchSampler(sub, 16, stats=stats)
    assert sampler.stats["band"].values.tolist() == ["B4", "B3"]
    assert sampler.stats["mean"].values.tolist() == stats["mean"].sel(band=["B4", "B3"]).values.tolist()


def test_sampler_statistics_missing_a_band(taizhou):
    stats = _stats(["B1", "B2"], [0, 0], [1, 1])
    with pytest.raises(DataError, match=r"no entry for bands \['B3', 'B4', 'B5', 'B7'\]"):
        PatchSampler(taizhou["image"], 16, stats=stats)


def test_sampler_nan_becomes_zero(tif):
    data = np.full((2, 16, 16), 5.0, "float32")
    data[:, :10, :10] = np.nan
    da = open_scene(tif("holes.tif", data))
    stats = _stats(["band_1", "band_2"], [3.0, 3.0], [2.0, 2.0])
    sampler = PatchSampler(da, 16, stats=stats, max_invalid=1.0, augment=False)
    batch = sampler.sample(3, np.random.default_rng(0))
    assert not np.isnan(batch).any()
    np.testing.assert_array_equal(batch[:, :, :10, :10], 0.0)   # the band mean
    np.testing.assert_array_equal(batch[:, :, 10:, :], 1.0)     # (5 - 3) / 2
    np.testing.assert_array_equal(batch[:, :, :, 10:], 1.0)


def test_sampler_skips_nan_windows_by_default(tif):
    data = np.full((1, 16, 32), 2.0, "float32")
    data[0, :, :16] = np.nan
    sampler = PatchSampler(open_scene(tif("half.tif", data)), 8)
    batch = sampler.sample(64, np.random.default_rng(0))
    assert (batch == 0.0).all()  # only the valid half, which is constant: (2 - 2) / 1


def test_sampler_all_nan(tif):
    da = open_scene(tif("void.tif", np.full((1, 12, 12), np.nan, "float32")))
    with pytest.raises(DataError, match=r"void\.tif: every pixel is NaN or nodata"):
        PatchSampler(da, 4, stats=_stats(["band_1"], [0.0], [1.0]))
    with pytest.raises(DataError, match=r"bands \['band_1'\] hold no valid pixels"):
        PatchSampler(da, 4)


def test_sampler_sources_with_different_bands(chips, taizhou):
    with pytest.raises(DataError, match="sources have different bands"):
        PatchSampler([chips, taizhou["image"]], 16)


def test_sampler_needs_data():
    with pytest.raises(DataError, match="no data given"):
        PatchSampler([], 16)


def test_align_bands_reorders_by_name_and_refuses_other_sets(chips, slovenia):
    from eossl.data.patches import align_bands
    stack = slovenia["image"]  # canonical Sentinel-2 order; the chips keep EuroSAT's B8A-last order
    assert stack["band"].values.tolist() != chips["band"].values.tolist()
    aligned = align_bands([chips, stack])
    assert aligned[0] is chips
    assert aligned[1]["band"].values.tolist() == chips["band"].values.tolist()
    np.testing.assert_array_equal(aligned[1].sel(band="B8A").values, stack.sel(band="B8A").values)
    with pytest.raises(DataError, match="different bands"):
        align_bands([chips, stack.isel(band=slice(0, 12))])


# ----------------------------------------------------------------------------- the one tiler

@pytest.mark.parametrize("length,window,stride", [(96, 64, 64), (128, 64, 64), (200, 64, 48), (64, 64, 64),
                                                  (40, 64, 64), (130, 32, 8)])
def test_window_starts_cover_the_length_with_the_last_window_flush(length, window, stride):
    from eossl.data.patches import window_starts
    starts = window_starts(length, window, stride)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if length <= window:
        assert starts == [0]
        return
    assert starts[-1] + window == length                       # flush with the end, no padding
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))  # no gap: every pixel is covered
    assert window_starts(length, window) == window_starts(length, window, window)  # default: no overlap


def test_tile_size_is_a_whole_number_of_patches_within_the_scene():
    from eossl.data.patches import tile_size
    assert tile_size(100, 64, 8) == 64 and tile_size(50, 64, 8) == 48
    with pytest.raises(DataError, match="smaller than one 8 px patch"):
        tile_size(5, 64, 8)
