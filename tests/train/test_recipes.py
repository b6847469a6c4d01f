"""Recipes: eossl.recipes(), the default recipe for chips, scenes, stacks and any band count, and the
card that records it."""

from __future__ import annotations

import numpy as np
import pytest

import eossl
from eossl.errors import DataError
from eossl.train.recipes import RECIPES, default_recipe_name, resolve_recipe


def test_recipes_lists_every_recipe_with_its_benchmark():
    table = eossl.recipes()
    assert set(table.index) == set(RECIPES)
    assert {"method", "encoder", "img_size", "batch_size", "lr", "readout", "benchmark"} <= set(table.columns)
    assert table["benchmark"].str.len().min() > 0 and table["default"].str.len().min() > 0


def test_budget_picks_the_recipe():
    assert default_recipe_name(None) == "cpu_small"       # a step budget
    assert default_recipe_name(1) == "cpu_small"
    assert default_recipe_name(10) == "cpu_base"


@pytest.mark.parametrize("kind", ["chips", "scene", "stack", "landsat6", "three_bands"])
def test_recipe_resolves_for_every_kind_of_data(kind, chips, slovenia, taizhou, tmp_path):
    data = {"chips": chips, "scene": slovenia.image.isel(time=0), "stack": slovenia.image,
            "landsat6": taizhou.image, "three_bands": chips.isel(band=[1, 2, 3])}[kind]
    r = resolve_recipe([data])
    assert r["method"] == "place_contrast" and r["recipe"] == "cpu_small"
    assert r["img_size"] + r["method_config"]["max_shift"] <= min(data.sizes["y"], data.sizes["x"])
    run = eossl.pretrain(data, steps=2, batch_size=4, out=tmp_path, tensorboard=False)  # no method named
    card = run.model.card
    assert card["recipe"] == "cpu_small" and card["method"] == "place_contrast"
    assert card["encoder"]["in_chans"] == data.sizes["band"] and card["readout"] == "mean"
    assert card["config"]["balance"] == "sources"
    emb = eossl.embed(run.model, data)
    assert np.isfinite(emb.values).all()


def test_small_chips_shrink_the_view_and_tiny_ones_are_refused(chips):
    small = chips.isel(y=slice(0, 24), x=slice(0, 24))
    r = resolve_recipe([small])
    assert r["img_size"] % r["encoder"]["patch_size"] == 0
    assert 8 <= r["img_size"] and r["img_size"] + r["method_config"]["max_shift"] <= 24
    with pytest.raises(DataError, match="6 px"):
        resolve_recipe([chips.isel(y=slice(0, 6), x=slice(0, 6))])


def test_unknown_recipe_and_conflicting_method(chips, tmp_path):
    with pytest.raises(ValueError, match="cpu_small"):
        eossl.pretrain(chips, recipe="no_such", steps=1, out=tmp_path)
    with pytest.raises(ValueError, match="place_contrast"):
        eossl.pretrain(chips, recipe="cpu_small", method="mae", steps=1, out=tmp_path)


def test_explicit_settings_win_over_the_recipe(chips, tmp_path):
    run = eossl.pretrain(chips, steps=1, batch_size=4, lr=5e-4, img_size=16, readout="mean_std",
                         out=tmp_path, tensorboard=False)
    cfg = run.model.card["config"]
    assert (cfg["lr"], cfg["img_size"], cfg["batch_size"], cfg["readout"]) == (5e-4, 16, 4, "mean_std")
    assert run.model.card["embedding_dim"] == 2 * run.model.encoder.dim
    assert eossl.embed(run.model, chips).sizes["dim"] == 2 * run.model.encoder.dim


def test_default_recipe_separates_two_eurosat_classes_better_than_its_random_weights(shared_data, slovenia, tmp_path):
    """On real imagery: pretrained briefly on unlabeled Sentinel-2 (the OSCD cities at two dates and
    the Slovenia stack), the default recipe's embeddings tell two EuroSAT-MS classes apart (kNN,
    5-fold) better than the same encoder with random weights. Forest vs residential: after 200 steps
    0.975 vs 0.70 when this test was written (all ten classes: 0.60 vs 0.45)."""
    from eossl.data.bands import EUROSAT_MS_BANDS
    data = eossl.datasets.oscd_stacks(shared_data / "oscd") + [slovenia.image]
    chips = eossl.open_chips(shared_data / "eurosat_ms", bands=list(EUROSAT_MS_BANDS),
                             classes=CLASSES)
    trained = eossl.pretrain(data, steps=STEPS, out=tmp_path / "trained", tensorboard=False, seed=0).model
    random = eossl.pretrain(data, steps=0, out=tmp_path / "random", tensorboard=False, seed=0).model
    acc = {name: eossl.knn_accuracy(eossl.embed(m, chips))["accuracy"]
           for name, m in (("trained", trained), ("random", random))}
    assert acc["trained"] > acc["random"] + 0.1, acc


CLASSES = ["Forest", "Residential"]
STEPS = 150
