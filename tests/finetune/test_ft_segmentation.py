"""Segmentation: learns a per-pixel target on real data, predicts a georeferenced class map with
tiles that agree with one big window, and refuses labels it cannot use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from _tiny import TINY_ENCODER

import eossl
from eossl.errors import DataError
from eossl.finetune.loop import predict_tiled
from eossl.finetune.segmentation import stack_values


@pytest.fixture(scope="module")
def scene_and_target(taizhou):
    """A real 96x96 Landsat crop and a target read from the scene itself (near-infrared above its
    median): a trivially learnable per-pixel task whose chance level is 50 %."""
    scene = taizhou.image.isel(time=0, y=slice(100, 196), x=slice(100, 196))
    nir = scene.sel(band="B4").values.astype(float)
    target = xr.DataArray(np.where(nir > np.median(nir), 2, 1).astype("uint8"), dims=("y", "x"),
                          coords={"y": scene.y, "x": scene.x}, attrs={"classes": {1: "dark", 2: "bright"}})
    return scene, target.rio.write_crs(scene.rio.crs)


@pytest.fixture(scope="module")
def seg_run(scene_and_target, tmp_path_factory):
    scene, target = scene_and_target
    return eossl.finetune(None, scene, target, task="segmentation", shots=200, steps=120, window=32,
                          decoder="skip", encoder=dict(TINY_ENCODER), lr=3e-3,
                          out=tmp_path_factory.mktemp("seg") / "run")


def test_segmentation_learns_a_trivial_real_target_far_above_chance(seg_run):
    m = seg_run.metrics
    assert list(m.index[:2]) == ["dark", "bright"]
    assert m.loc["overall", "support"] == 96 * 96 - 400  # every labeled pixel not trained on
    assert m.loc["overall", "recall"] > 0.8 and m.loc["macro", "iou"] > 0.6  # chance: 0.5 / ~0.33
    assert seg_run.history["loss"].iloc[-10:].mean() < seg_run.history["loss"].iloc[:10].mean()


def test_class_map_is_georeferenced_like_the_scene(seg_run, scene_and_target):
    scene, _ = scene_and_target
    classmap = eossl.predict(seg_run, scene)
    assert classmap.dims == ("y", "x") and classmap.dtype == np.int16
    np.testing.assert_array_equal(classmap.x.values, scene.x.values)
    np.testing.assert_array_equal(classmap.y.values, scene.y.values)
    assert classmap.rio.crs == scene.rio.crs and classmap.rio.transform() == scene.rio.transform()
    assert set(np.unique(classmap.values)) <= {1, 2} and classmap.attrs["classes"] == {1: "dark", 2: "bright"}
    proba = eossl.predict(seg_run, scene, proba=True)
    assert proba.dims == ("class", "y", "x")
    np.testing.assert_allclose(proba.sum("class"), 1, rtol=1e-5)


def test_one_window_prediction_equals_the_model_on_the_whole_scene(seg_run, scene_and_target):
    scene, _ = scene_and_target
    model = seg_run.model
    arr = stack_values(scene, model.card)[0]  # (C, H, W)
    untiled = torch.softmax(model(torch.from_numpy(arr)[None]), 1)[0].detach().numpy()
    one_tile = predict_tiled(model, arr, window=96, overlap=0, device=torch.device("cpu"))
    np.testing.assert_allclose(one_tile, untiled, atol=1e-5)


def test_overlapping_tiles_agree_with_one_big_window(seg_run, scene_and_target):
    scene, _ = scene_and_target
    whole = eossl.predict(seg_run, scene, window=96).values
    tiled = eossl.predict(seg_run, scene, window=32, overlap=16).values
    assert (whole == tiled).mean() > 0.9


def test_nan_pixels_come_out_as_nodata(seg_run, scene_and_target):
    scene, _ = scene_and_target
    holed = scene.astype("float32").copy()
    holed[:, 10:14, 20:30] = np.nan
    classmap = eossl.predict(seg_run, holed)
    assert (classmap.values[10:14, 20:30] == -1).all() and (classmap.values[20:] != -1).all()


def test_checkpoint_round_trip(seg_run, scene_and_target):
    scene, _ = scene_and_target
    loaded = eossl.load_finetuned(seg_run.checkpoint_path)
    assert loaded.card["task"] == "segmentation" and loaded.card["head"]["decoder"] == "skip"
    assert [c["value"] for c in loaded.card["classes"]] == [1, 2]
    np.testing.assert_array_equal(eossl.predict(loaded, scene).values, eossl.predict(seg_run, scene).values)


def test_land_cover_stack_trains_on_every_date_and_predicts_each(slovenia, tiny_run):
    run = eossl.finetune(tiny_run, slovenia, "lulc", task="segmentation", shots=10, classes=[2, 3, 4, 8],
                         steps=10)
    assert run.metrics.loc["overall", "support"] == 5 * (7601 + 1777 + 358 + 198 - 40)  # 5 dates
    assert run.model.card["finetune"]["ignored"] == [0]  # 'no data' in the labels' class names
    maps = eossl.predict(run, slovenia.image.isel(time=[0, 3]))
    assert maps.dims == ("time", "y", "x") and maps.shape == (2, 101, 100)
    assert maps.rio.crs == slovenia.image.rio.crs


def test_bad_segmentation_labels_are_refused(slovenia, tiny_run):
    image, lulc = slovenia.image.isel(time=0), slovenia.lulc
    with pytest.raises(DataError, match="different grid"):
        eossl.finetune(tiny_run, image, lulc.isel(y=slice(0, 100)), task="segmentation", steps=1)
    shifted = lulc.assign_coords(x=lulc.x + 30.0)
    with pytest.raises(DataError, match="other x coordinates"):
        eossl.finetune(tiny_run, image, shifted, task="segmentation", steps=1)
    with pytest.raises(DataError, match="in EPSG:4326"):
        eossl.finetune(tiny_run, image, lulc.rio.write_crs("EPSG:4326"), task="segmentation", steps=1)
    with pytest.raises(DataError, match=r"'cultivated land' has 11 labeled pixels"):
        eossl.finetune(tiny_run, slovenia, "lulc", task="segmentation", shots=20, steps=1)
    with pytest.raises(DataError, match=r"classes \[5\] have no labeled example"):
        eossl.finetune(tiny_run, slovenia, "lulc", task="segmentation", classes=[2, 5], steps=1)
    with pytest.raises(DataError, match="which variable"):
        eossl.finetune(tiny_run, slovenia.assign(other=slovenia.lulc), task="segmentation", steps=1)


def test_dense_fine_tuning_turns_pixels_and_labels_together(scene_and_target):
    """With the encoder learning, batches get flips / quarter turns; the labels must turn with the
    pixels or the trivial target could not be learned at all."""
    from eossl.finetune.loop import _augment
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = x[:, 0].long()
    gen = torch.Generator().manual_seed(3)
    for _ in range(6):
        xa, ya = _augment(x, y, dense=True, gen=gen)
        assert torch.equal(xa[:, 0].long(), ya)
    scene, target = scene_and_target
    run = eossl.finetune(None, scene, target, task="segmentation", shots=200, steps=60, window=32,
                         decoder="skip", train="all", encoder=dict(TINY_ENCODER), lr=3e-3)
    assert run.metrics.loc["overall", "recall"] > 0.7
