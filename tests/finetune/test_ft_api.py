"""The public entry points: eossl.finetune / eossl.predict / eossl.load_finetuned."""

from __future__ import annotations

import pytest

import eossl
from eossl.errors import CheckpointError, DataError


def test_public_names():
    for name in ("finetune", "predict", "load_finetuned", "FinetuneRun"):
        assert name in eossl.__all__ and hasattr(eossl, name)
    from eossl.finetune import load
    assert load is eossl.load_finetuned


def test_predict_needs_a_fine_tuned_model(tiny_run, chips):
    with pytest.raises(DataError, match="needs a fine-tuned model"):
        eossl.predict(tiny_run, chips)
    with pytest.raises(CheckpointError, match="pretraining checkpoint"):
        eossl.predict(tiny_run.checkpoint_path, chips)


def test_finetune_needs_an_encoder_with_a_card(chips):
    with pytest.raises(CheckpointError, match="encoder with its card"):
        eossl.finetune(object(), chips)


def test_finetune_accepts_a_checkpoint_path(tiny_run, chips):
    run = eossl.finetune(tiny_run.checkpoint_path, chips, task="classification", shots=1, steps=2)
    assert run.model.card["base"]["method"] == "mae" and run.model.card["base"]["checkpoint"]
    assert run.predict(chips.isel(sample=[0])).dims == ("sample",)
