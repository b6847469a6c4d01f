"""Chip classification: probe and fine-tuning learn, predictions keep the chips' coordinates,
bad input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import TINY_ENCODER

import eossl
from eossl.errors import CheckpointError, DataError
from eossl.finetune.classification import finetune_classification, predict_chips


@pytest.fixture(scope="module")
def probe_run(chips, tiny_run, tmp_path_factory):
    return eossl.finetune(tiny_run, chips, task="classification", shots=6, steps=80,
                          out=tmp_path_factory.mktemp("cls") / "run")


def test_linear_probe_beats_chance_on_held_out_chips(probe_run, chips):
    m = probe_run.metrics
    assert list(m.index[:10]) == sorted(set(chips["label"].values.tolist()))
    assert m.loc["overall", "support"] == 60  # 12 chips per class, 6 trained on
    # 10 classes: chance is 10 %. Band statistics alone separate water, forest and crops.
    assert m.loc["macro", "recall"] > 0.25
    assert set(probe_run.split["train"]).isdisjoint(probe_run.split["test"])


def test_probe_leaves_the_encoder_and_the_pretrained_model_alone(probe_run, tiny_run):
    before = tiny_run.model.encoder.state_dict()
    after = probe_run.model.encoder.state_dict()
    for k in before:
        torch.testing.assert_close(before[k], after[k])
    assert probe_run.model.card["finetune"]["train"] == "head"
    assert probe_run.model.card["base"]["method"] == "mae"


@pytest.mark.parametrize("train", ["last_blocks", "all"])
def test_fine_tuning_moves_the_encoder_but_not_the_original(chips, tiny_run, train):
    original = {k: v.clone() for k, v in tiny_run.model.encoder.state_dict().items()}
    run = finetune_classification(tiny_run, chips, shots=3, train=train, steps=5, loss="focal",
                                  class_weight="balanced")
    moved = [k for k, v in run.model.encoder.state_dict().items() if not torch.equal(v, original[k])]
    assert moved
    if train == "last_blocks":
        assert all(k.startswith(("model.blocks.0", "model.norm")) for k in moved)  # TINY has one block
    for k, v in tiny_run.model.encoder.state_dict().items():
        torch.testing.assert_close(v, original[k])
    assert np.isfinite(run.history["loss"]).all() and len(run.history) == 5


def test_predict_chips_keeps_sample_coordinates_and_matches_the_metrics(probe_run, chips):
    test = chips.isel(sample=probe_run.split["test"])
    pred = eossl.predict(probe_run, test)
    assert pred.dims == ("sample",) and (pred["label"].values == test["label"].values).all()
    acc = float((pred.values == test["label"].values).mean())
    assert acc == pytest.approx(probe_run.metrics.loc["overall", "recall"])
    proba = predict_chips(probe_run.model, test, proba=True)
    assert proba.shape == (60, 10)
    np.testing.assert_allclose(proba.sum("class"), 1, rtol=1e-5)


def test_checkpoint_round_trip_predicts_the_same(probe_run, chips):
    loaded = eossl.load_finetuned(probe_run.checkpoint_path.parent)
    card = loaded.card
    assert card["task"] == "classification" and len(card["classes"]) == 10
    assert [b["name"] for b in card["bands"]] == [b["name"] for b in probe_run.model.card["bands"]]
    assert card["normalization"] == probe_run.model.card["normalization"]
    assert "macro" in card["metrics"]
    a = eossl.predict(probe_run, chips.isel(sample=slice(0, 20)), proba=True)
    b = eossl.predict(probe_run.checkpoint_path, chips.isel(sample=slice(0, 20)), proba=True)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    assert (probe_run.checkpoint_path.parents[1] / "metrics.csv").is_file()


def test_an_existing_checkpoint_is_never_replaced(probe_run, chips, tiny_run):
    folder = probe_run.checkpoint_path.parents[1]
    stamp = probe_run.checkpoint_path.stat().st_mtime_ns
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        eossl.finetune(tiny_run, chips, task="classification", shots=1, steps=1, out=folder)
    assert probe_run.checkpoint_path.stat().st_mtime_ns == stamp


def test_classifier_maps_a_scene_with_one_class_per_tile(probe_run, slovenia):
    scene = slovenia.image.isel(time=0)
    classmap = eossl.predict(probe_run, scene, window=32, overlap=16)
    assert classmap.shape == (101, 100) and classmap.rio.crs == scene.rio.crs
    assert set(np.unique(classmap.values)) <= {c["value"] for c in probe_run.model.card["classes"]}


def test_bad_classification_input_is_refused(chips, tiny_run):
    with pytest.raises(DataError, match="leaves none to score"):
        eossl.finetune(tiny_run, chips, task="classification", shots=12, steps=1)
    with pytest.raises(DataError, match="one label per chip"):
        eossl.finetune(tiny_run, chips, labels=["Forest"] * 5, task="classification", steps=1)
    with pytest.raises(DataError, match="trains on chips"):
        eossl.finetune(tiny_run, chips.isel(sample=0), task="classification", steps=1)
    with pytest.raises(DataError, match=r"classes \['Beach'\] have no labeled example"):
        eossl.finetune(tiny_run, chips, task="classification", classes=["Forest", "Beach"], steps=1)
    with pytest.raises(CheckpointError, match="missing"):
        eossl.finetune(tiny_run, chips.isel(band=slice(0, 5)), task="classification", shots=2, steps=1)
    with pytest.raises(ValueError, match="task must be one of"):
        eossl.finetune(tiny_run, chips, task="detection")


def test_random_encoder_baseline_trains_from_the_data_alone(chips):
    run = eossl.finetune(None, chips, task="classification", shots=2, steps=3, encoder=dict(TINY_ENCODER))
    assert run.model.card["base"]["method"] == "random" and run.checkpoint_path is None


def test_reflectance_given_to_a_dn_model_is_converted_with_a_warning(probe_run, chips):
    assert probe_run.model.card["units"] == "DN"
    dn = chips.isel(sample=slice(0, 10))
    reflectance = (dn.astype("float32") / 10000).assign_attrs(dn.attrs)
    with pytest.warns(UserWarning, match="converting"):
        converted = eossl.predict(probe_run, reflectance, proba=True)
    np.testing.assert_allclose(converted.values, eossl.predict(probe_run, dn, proba=True).values, atol=1e-4)
