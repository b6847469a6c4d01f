"""eossl.embed: chips, scenes and stacks to embeddings aligned with their data."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from affine import Affine

import eossl
from _tiny import TINY_ENCODER
from eossl.errors import CheckpointError, DataError
from eossl.models.registry import build_method

P = TINY_ENCODER["patch_size"]
D = TINY_ENCODER["embed_dim"]


@pytest.fixture(scope="module")
def model(tiny_run):
    return tiny_run.model


@pytest.fixture(scope="module")
def scene(slovenia, model):
    """One date of the Slovenia stack: (band, y, x), 101 x 100 px with CRS and transform, in the
    model's band order (the file has the canonical Sentinel-2 order, the chips EuroSAT's)."""
    return slovenia["image"].isel(time=0).sel(band=[b["name"] for b in model.card["bands"]])


def _normalise(model, values, band_axis=0):
    norm = model.card["normalization"]
    shape = [1] * values.ndim
    shape[band_axis] = -1
    mean = np.asarray(norm["mean"], dtype="float32").reshape(shape)
    std = np.asarray(norm["std"], dtype="float32").reshape(shape)
    return (values.astype("float32") - mean) / std


@torch.no_grad()
def _feature_map(model, window):
    """(C, H, W) normalised -> (H/p, W/p, D) straight from the encoder."""
    x = torch.from_numpy(np.ascontiguousarray(window))[None]
    return model.encoder.feature_map(x)[0].permute(1, 2, 0).numpy()


@contextlib.contextmanager
def _quiet():
    """Fail on any warning (the unit check must not fire on data in the right units)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)  # affine's `*` in rioxarray
        yield


# ----------------------------------------------------------------------------- chips

def test_chips_give_one_vector_per_chip_keeping_labels(model, chips):
    emb = eossl.embed(model, chips, batch_size=50)
    assert emb.dims == ("sample", "dim") and emb.shape == (120, D)
    np.testing.assert_array_equal(emb["label"].values, chips["label"].values)
    np.testing.assert_array_equal(emb["file"].values, chips["file"].values)
    assert emb.attrs["method"] == "mae" and emb.attrs["bands"] == chips["band"].values.tolist()
    assert np.isfinite(emb.values).all()
    # the pooled encoder output of each chip normalised with the card's statistics
    with torch.no_grad():
        x = torch.from_numpy(_normalise(model, chips.isel(sample=[0, 57, 119]).values, band_axis=1))
        direct = model.encoder(x).numpy()
    np.testing.assert_allclose(emb.values[[0, 57, 119]], direct, rtol=1e-4, atol=1e-5)
    # different chips, different vectors
    assert np.abs(emb.values[0] - emb.values[119]).max() > 1e-3


def test_bands_in_another_order_are_reordered(model, chips):
    few = chips.isel(sample=slice(0, 120, 12))
    shuffled = few.isel(band=[12, 3, 0, 7, 1, 11, 5, 2, 9, 4, 10, 6, 8])
    assert shuffled["band"].values.tolist() != few["band"].values.tolist()
    np.testing.assert_array_equal(eossl.embed(model, shuffled).values, eossl.embed(model, few).values)


def test_missing_bands_are_named(model, chips, taizhou):
    with pytest.raises(CheckpointError, match=r"missing \['B10', 'B8A'\]"):
        eossl.embed(model, chips.drop_sel(band=["B10", "B8A"]))
    with pytest.raises(CheckpointError, match="missing") as info:
        eossl.embed(model, taizhou)  # Landsat 7 bands B1..B7 for a Sentinel-2 model
    assert "'B01'" in str(info.value) and "'B1'" in str(info.value)


def test_reflectance_given_to_a_dn_model_warns_about_units(model, chips):
    few = chips.isel(sample=slice(0, 120, 12))
    with pytest.warns(UserWarning, match="units"):
        eossl.embed(model, few / 10000.0)
    with pytest.warns(UserWarning, match="units"):
        eossl.embed(model, few.astype("float32") + 50000)  # an offset of many std
    with _quiet():
        eossl.embed(model, few / 10000.0, check_values=False)
        eossl.embed(model, few)  # the right units: no warning


def test_no_unit_warning_for_other_scenes_in_the_same_units(model, scene):
    with _quiet():
        eossl.embed(model, scene)


# ----------------------------------------------------------------------------- scenes

def test_scene_gives_a_map_on_the_patch_grid(model, scene):
    emb = eossl.embed(model, scene)
    H, W = scene.sizes["y"], scene.sizes["x"]
    assert emb.dims == ("y", "x", "dim") and emb.shape == (H // P, W // P, D)
    assert np.isfinite(emb.values).all()
    assert emb.rio.crs == scene.rio.crs and emb.rio.crs is not None
    t = scene.rio.transform()
    expected = Affine(t.a * P, t.b, t.c, t.d, t.e * P, t.f)
    assert emb.rio.transform().almost_equals(expected, precision=1e-6)
    # coordinates are patch centres: the mean of the pixel centres under each patch
    xs = scene["x"].values[:(W // P) * P].reshape(-1, P).mean(axis=1)
    ys = scene["y"].values[:(H // P) * P].reshape(-1, P).mean(axis=1)
    np.testing.assert_allclose(emb["x"].values, xs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(emb["y"].values, ys, rtol=0, atol=1e-6)
    assert emb.attrs["patch_size"] == P


def test_scene_of_exactly_one_window_equals_the_encoder_output(model, chips):
    one = chips.isel(sample=5)  # 64 x 64 = the training window, no coordinates
    emb = eossl.embed(model, one)
    assert emb.shape == (64 // P, 64 // P, D)
    direct = _feature_map(model, _normalise(model, one.values))
    np.testing.assert_allclose(emb.values, direct, rtol=1e-4, atol=1e-5)


def test_tiles_are_placed_where_they_came_from(model, scene):
    """101 x 100 px -> 96 x 96 px in 64 px windows at 0 and 32 (the last flush with the edge)."""
    emb = eossl.embed(model, scene).values  # (12, 12, D)
    arr = _normalise(model, scene.values.astype("float32"))[:, :96, :96]
    top_left = _feature_map(model, arr[:, :64, :64])
    top_right = _feature_map(model, arr[:, :64, 32:96])
    bottom_right = _feature_map(model, arr[:, 32:96, 32:96])
    np.testing.assert_allclose(emb[:4, :4], top_left[:4, :4], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb[:4, 8:], top_right[:4, 4:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb[4:, 4:], bottom_right, rtol=1e-4, atol=1e-5)
    # window=32: four 32 px tiles per row, no overlap
    small = eossl.embed(model, scene, window=32).values
    for r in range(3):
        for c in range(3):
            tile = _feature_map(model, arr[:, 32 * r:32 * (r + 1), 32 * c:32 * (c + 1)])
            np.testing.assert_allclose(small[4 * r:4 * (r + 1), 4 * c:4 * (c + 1)], tile, rtol=1e-4, atol=1e-5)


def test_stack_gives_time_y_x_dim(model, slovenia, scene):
    stack = slovenia["image"].isel(time=[0, 3])
    emb = eossl.embed(model, stack)
    assert emb.dims == ("time", "y", "x", "dim") and emb.shape == (2, 12, 12, D)
    np.testing.assert_array_equal(emb["time"].values, stack["time"].values)
    np.testing.assert_allclose(emb.isel(time=0).values, eossl.embed(model, scene).values, rtol=1e-5, atol=1e-6)
    assert not np.allclose(emb.isel(time=0).values, emb.isel(time=1).values)
    assert emb.rio.crs == scene.rio.crs


def test_layers_all_gives_every_stage_with_the_last_block_at_the_end(model, scene):
    """embed(..., layers="all"): the same grid, dim = width x (depth + 2), the last width channels
    equal to the default embedding; recorded in attrs. Unknown values are refused."""
    last, every = eossl.embed(model, scene), eossl.embed(model, scene, layers="all")
    depth = len(model.encoder.model.blocks)
    assert every.dims == last.dims and every.sizes["dim"] == D * (depth + 2)
    np.testing.assert_allclose(every.isel(dim=slice(-D, None)).values, last.values, rtol=1e-4, atol=1e-5)
    assert every.attrs["layers"] == "all" and "layers" not in last.attrs
    assert every.rio.crs == last.rio.crs
    with pytest.raises(eossl.ParameterError, match="layers"):
        eossl.embed(model, scene, layers="middle")


def test_dataset_input_uses_its_image(model, slovenia):
    small = slovenia.isel(time=[1])
    np.testing.assert_array_equal(eossl.embed(model, small).values, eossl.embed(model, small["image"]).values)


def test_nan_pixels_blank_exactly_their_patches(model, scene):
    da = scene.astype("float32").copy()
    hits = [(10, 20), (63, 0), (95, 95), (99, 3)]  # (99, 3) lies in the cropped-off rows
    for y, x in hits:
        da[:, y, x] = np.nan
    da[4, 50, 70] = np.nan  # one band is enough
    emb = eossl.embed(model, da).values
    expected = np.zeros((12, 12), bool)
    for y, x in [(10, 20), (63, 0), (95, 95), (50, 70)]:
        expected[y // P, x // P] = True
    assert (np.isnan(emb).all(axis=-1) == expected).all()
    assert np.isfinite(emb[~expected]).all()


def test_nodata_value_counts_as_missing(model, chips):
    one = chips.isel(sample=0).copy()
    one[:, 0, 0] = 0
    one.attrs["nodata"] = 0
    emb = eossl.embed(model, one).values
    assert np.isnan(emb[0, 0]).all() and np.isfinite(emb.reshape(-1, D)[1:]).all()


def test_all_nan_scene_is_a_data_error(model, scene):
    empty = xr.full_like(scene, np.nan, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(DataError, match="every pixel is NaN"):
            eossl.embed(model, empty)


def test_scene_smaller_than_a_patch_is_a_data_error(model, scene):
    with pytest.raises(DataError, match="smaller than one"):
        eossl.embed(model, scene.isel(y=slice(0, P - 1)))


def test_model_without_card_is_refused(chips):
    bare = build_method("mae", {**TINY_ENCODER, "in_chans": 13, "img_size": 64})
    for m in (bare, bare.encoder):
        with pytest.raises(CheckpointError, match="no card"):
            eossl.embed(m, chips.isel(sample=[0]))


def test_data_without_bands_is_refused(model, chips):
    with pytest.raises(DataError, match="band"):
        eossl.embed(model, chips.values)
    with pytest.raises(DataError, match="band"):
        eossl.embed(model, chips.isel(sample=0, band=0))
    with pytest.raises(DataError, match="cannot embed"):
        eossl.embed(model, chips.isel(sample=0, y=0))  # (band, x)


# ----------------------------------------------------------------------------- units guardrail

from eossl.card import sample_values, units_guard  # noqa: E402
from eossl.data.units import guess_units, normalise_units  # noqa: E402


def _with(model, **card_changes):
    """The same encoder under a card with other fields (units, on_mismatch, ...)."""
    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = model.encoder
            self.card = {**model.card, **card_changes}
    return _Model()


def test_own_runs_record_the_units_of_their_training_data(model, chips):
    assert model.card["units"] == "DN" and model.card["on_mismatch"] == "convert"
    assert guess_units(sample_values(chips)) == "DN"
    assert guess_units(sample_values(chips / 10000.0)) == "reflectance"
    assert guess_units(np.full((3, 10), 7.0)) is None  # neither: no guess
    assert guess_units(np.zeros((3, 10))) is None  # only fill values
    assert guess_units(np.ones((2, 4)), attrs={"units": "DN"}) == "DN"  # declared units win
    assert normalise_units("Surface Reflectance") == "reflectance" and normalise_units("K") is None


def test_reflectance_given_to_a_dn_model_is_converted_with_a_warning(model, chips):
    few = chips.isel(sample=slice(0, 120, 12))
    reference = eossl.embed(model, few)
    with pytest.warns(UserWarning, match=r"expects DN but the data look like reflectance.*converting "
                      r"reflectance to DN \(x \* 10000\)"):
        converted = eossl.embed(model, few.astype("float32") / 10000.0)
    np.testing.assert_allclose(converted.values, reference.values, rtol=1e-3, atol=1e-3)
    with pytest.warns(UserWarning, match="converting"):  # model_input (plots) takes the same path
        np.testing.assert_allclose(eossl.card.model_input(model, few / 10000.0),
                                   eossl.card.model_input(model, few), rtol=1e-3, atol=1e-3)


def test_dn_given_to_a_reflectance_model_is_converted(model, chips):
    few = chips.isel(sample=slice(0, 120, 24))
    norm = model.card["normalization"]
    refl = _with(model, units="reflectance", normalization={
        **norm, "mean": (np.asarray(norm["mean"]) / 1e4).tolist(), "std": (np.asarray(norm["std"]) / 1e4).tolist()})
    with pytest.warns(UserWarning, match=r"expects reflectance but the data look like DN.*x \* 0.0001"):
        got = eossl.embed(refl, few)
    with _quiet():
        want = eossl.embed(refl, few.astype("float32") / 10000.0)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-3, atol=1e-3)


def test_on_mismatch_error_and_warn(model, chips):
    few = chips.isel(sample=[0, 50]) / 10000.0
    strict = _with(model, on_mismatch="error")
    with pytest.raises(CheckpointError, match=r"expects DN but the data look like reflectance.*Convert the data"):
        eossl.embed(strict, few)
    with pytest.raises(CheckpointError, match="different units"):  # per call, too
        eossl.embed(model, few, on_mismatch="error")
    with pytest.warns(UserWarning, match="meaningless"):  # (and the statistics check agrees)
        out = eossl.embed(model, few, on_mismatch="warn")
    assert np.isfinite(out.values).all()
    landsat = _with(model, sensor="landsat7")  # no DN scale known: warn, do not guess a factor
    with pytest.warns(UserWarning, match="knows no DN scale for sensor 'landsat7'"):
        eossl.embed(landsat, few)


def test_declared_units_on_the_data_are_believed(model, chips):
    few = chips.isel(sample=[0, 60]).astype("float32") / 10000.0
    few.attrs["units"] = "DN"  # a wrong declaration: believed, so no conversion ...
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eossl.embed(model, few)
    messages = [str(w.message) for w in caught]
    assert not any("converting" in m for m in messages)
    assert any("do not look like what the model was trained on" in m for m in messages)  # ... but flagged


def test_cards_without_units_skip_the_guard(model, chips):
    old = _with(model)
    del old.card["units"]
    few = chips.isel(sample=[0])
    assert units_guard(few, old.card) is old.card
    assert units_guard(few, model.card) is model.card  # same units: the card itself


def test_unnamed_bands_of_the_right_count_are_taken_in_the_models_order(model, chips):
    """A file without band descriptions (band_1 ... band_13) and as many bands as the model: go
    ahead in the model's order, with a warning; another count stays an error."""
    few = chips.isel(sample=[0, 1])
    unnamed = few.assign_coords(band=[f"band_{i + 1}" for i in range(13)])
    with pytest.warns(UserWarning, match="have no names; using them as the model's bands"):
        out = eossl.embed(model, unnamed)
    np.testing.assert_allclose(out.values, eossl.embed(model, few).values, atol=1e-6)
    fewer = few.isel(band=slice(0, 12)).assign_coords(band=[f"band_{i + 1}" for i in range(12)])
    with pytest.raises(CheckpointError, match=r"no names and their count \(12\) differs"):
        eossl.embed(model, fewer)


def test_sample_values_reads_a_strided_sample(slovenia):
    stack = slovenia["image"]
    values = sample_values(stack, max_pixels=1000)
    assert values.shape[0] == stack.sizes["band"] and 100 <= values.shape[1] <= 4 * 1000
    lazy = stack.chunk({"time": 1})  # lazy: a few dates only (here 3 of 5), same units
    few = sample_values(lazy, 1000)
    assert few.shape[0] == stack.sizes["band"] and few.shape[1] < values.shape[1] * 2
    np.testing.assert_array_equal(few, sample_values(stack.isel(time=[0, 2, 4]), 1000))
    assert guess_units(few) == guess_units(values) == "DN"


def test_declared_units_that_agree_read_no_pixels(model, chips):
    import dask
    import dask.array

    @dask.delayed
    def boom():
        raise AssertionError("pixels were read")

    lazy = xr.DataArray(dask.array.from_delayed(boom(), shape=(13, 64, 64), dtype="float32"),
                        dims=("band", "y", "x"), coords={"band": chips["band"].values}, attrs={"units": "DN"})
    assert units_guard(lazy, model.card) is model.card


def test_readout_on_the_card_decides_the_chip_embedding(tiny_run, chips):
    """``embed`` pools a chip's token grid by the card's readout: the mean of the tokens, or their
    mean and std, computed here directly from the encoder's feature map."""
    import copy

    from eossl.analysis.embed import pool_grid
    from eossl.card import model_input
    model = copy.deepcopy(tiny_run.model)
    few = chips.isel(sample=slice(0, 5))
    with torch.no_grad():
        fm = model.encoder.eval().feature_map(torch.from_numpy(model_input(model, few)))  # (5, D, h, w)
    assert model.card["readout"] == "mean"
    np.testing.assert_allclose(eossl.embed(model, few).values, fm.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    model.card = {**model.card, "readout": "mean_std"}
    both = eossl.embed(model, few).values
    flat = fm.flatten(2)
    want = torch.cat([flat.mean(2), flat.std(2)], 1).numpy()
    assert both.shape == (5, 2 * model.encoder.dim)
    np.testing.assert_allclose(both, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pool_grid(fm, "mean_std").numpy(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="readout"):
        pool_grid(fm, "cls")


# ----------------------------------------------------------------------------- the encoder loop

def test_zero_nan_fills_in_place_and_leaves_clean_arrays_alone():
    from eossl.analysis.embed import zero_nan
    a = np.array([[1.0, np.nan], [np.nan, -2.0]], dtype="float32")
    assert zero_nan(a) is a
    np.testing.assert_array_equal(a, [[1.0, 0.0], [0.0, -2.0]])
    clean = np.ones((2, 2), dtype="float32")
    np.testing.assert_array_equal(zero_nan(clean), 1.0)


def test_on_device_moves_and_evals_only_when_needed(model):
    from eossl.analysis.embed import on_device
    encoder = model.encoder.train()
    assert on_device(encoder, torch.device("cpu")) is encoder and not encoder.training
    param = next(encoder.parameters())
    assert on_device(encoder, torch.device("cpu")) is encoder and next(encoder.parameters()) is param


def test_feature_batches_give_the_encoders_maps_and_pooled_vectors_batch_by_batch(model):
    from eossl.analysis.embed import feature_batches, pool_grid
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, model.encoder.in_chans, 2 * P, 2 * P)).astype("float32")
    cpu = torch.device("cpu")
    got = list(feature_batches(model.encoder, len(x), lambda sl: x[sl], cpu, batch_size=2))
    assert [sl for sl, _ in got] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    maps = np.concatenate([m for _, m in got])  # (5, 2, 2, D)
    assert maps.shape == (5, 2, 2, D)
    np.testing.assert_allclose(maps[3], _feature_map(model, x[3]), rtol=1e-4, atol=1e-5)
    pooled = np.concatenate([v for _, v in feature_batches(model.encoder, len(x), lambda sl: x[sl], cpu,
                                                               batch_size=4, readout="mean_std")])
    with torch.no_grad():
        want = pool_grid(torch.from_numpy(maps).permute(0, 3, 1, 2), "mean_std").numpy()
    np.testing.assert_allclose(pooled, want, rtol=1e-4, atol=1e-5)
