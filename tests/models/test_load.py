"""eossl.load_model: a checkpoint back into the same model, or a clear CheckpointError."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import eossl
from eossl.errors import CheckpointError
from eossl.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return eossl.load_model(tiny_run.checkpoint_path.parent.parent)


def test_load_model_gives_identical_weights_and_embeddings(tiny_run, loaded, chips):
    assert type(loaded) is type(tiny_run.model)
    assert not loaded.training
    ref = tiny_run.model.state_dict()
    got = loaded.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    few = chips.isel(sample=slice(0, 20))
    a = eossl.embed(tiny_run.model, few)
    b = eossl.embed(loaded, few)
    np.testing.assert_array_equal(a.values, b.values)


def test_load_model_attaches_the_card(tiny_run, loaded):
    card = loaded.card
    assert card == json.loads(json.dumps(tiny_run.model.card))
    assert card["method"] == "mae"
    assert [b["name"] for b in card["bands"]] == list(eossl.data.bands.EUROSAT_MS_BANDS)
    assert card["step"] == 6
    assert card["encoder"]["embed_dim"] == loaded.encoder.dim == 48


@pytest.mark.parametrize("where", ["run", "folder", "file"])
def test_load_model_accepts_run_folder_checkpoint_folder_and_file(tiny_run, where):
    file = tiny_run.checkpoint_path
    path = {"run": file.parent.parent, "folder": file.parent, "file": file}[where]
    model = eossl.load_model(str(path))
    assert model.card["step"] == 6


@pytest.mark.parametrize("change", [{"depth": 2}, {"embed_dim": 64}, {"patch_size": 16}])
def test_weights_for_another_architecture_raise_checkpoint_error(tiny_run, tmp_path, change):
    card = {**tiny_run.model.card, "encoder": {**tiny_run.model.card["encoder"], **change}}
    save_checkpoint(tmp_path, tiny_run.model, card)
    with pytest.raises(CheckpointError, match="do not fit") as info:
        eossl.load_model(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_card_that_cannot_be_built_raises_checkpoint_error(tiny_run, tmp_path):
    card = {**tiny_run.model.card, "method": "no_such_method"}
    save_checkpoint(tmp_path, tiny_run.model, card)
    with pytest.raises(CheckpointError, match="cannot build"):
        eossl.load_model(tmp_path)


def test_missing_checkpoint_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no eossl checkpoint"):
        eossl.load_model(tmp_path)
