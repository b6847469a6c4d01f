"""eossl.card: one owner for the checkpoint card (build, read, validate, prepare data as it says)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import eossl
from eossl.card import (CARD_SCHEMA, Card, band_entries, card_of, conform, finetune_card, model_input, prepare,
                        training_card)
from eossl.errors import CheckpointError
from eossl.models.backbones import Encoder


@pytest.fixture(scope="module")
def chips():
    return eossl.datasets.load_sample("eurosat_ms").isel(sample=slice(0, 12))


@pytest.fixture(scope="module")
def card(chips):
    enc = Encoder(name="vit_tiny", patch_size=8, in_chans=chips.sizes["band"], img_size=64, embed_dim=48,
                  depth=1, num_heads=2)
    return training_card(method="mae", encoder=enc, arrays=[chips], stats=eossl.band_stats(chips),
                         method_config={"mask_ratio": 0.75}, config={"steps": 1})


def test_a_training_card_records_bands_units_statistics_and_schema(card, chips):
    assert isinstance(card, Card) and card["schema"] == CARD_SCHEMA == card.schema
    assert card.band_names == chips["band"].values.tolist() == [b["name"] for b in band_entries(chips)]
    assert card["units"] == "DN" and card.readout == "mean" and card["method_config"] == {"mask_ratio": 0.75}
    assert len(card["normalization"]["mean"]) == chips.sizes["band"]
    assert json.loads(json.dumps(card)) == card               # a card is exactly its JSON
    assert Card.from_dict(json.loads(json.dumps(card))) == card


def test_reading_checks_the_card_and_names_what_is_missing(card):
    broken = {k: v for k, v in card.items() if k != "bands"}
    with pytest.raises(CheckpointError, match=r"run/checkpoint.*'bands'"):
        Card.from_dict(broken, source="run/checkpoint")
    with pytest.raises(CheckpointError, match="normalization"):
        Card({**card, "normalization": {"mean": [0.0]}})
    with pytest.raises(CheckpointError, match="newer than this eossl reads"):
        Card({**card, "schema": CARD_SCHEMA + 1})
    with pytest.raises(CheckpointError, match="readout"):
        Card({**card, "readout": "max"})


def test_an_old_card_reads_as_it_was_stored_with_defaults_as_attributes(card):
    old = {k: card[k] for k in ("method", "encoder", "bands", "normalization")}  # schema 1, few keys
    read = Card.from_dict(old)
    assert dict(read) == old                                    # nothing added to what was stored
    assert read.schema == 1 and read.readout == "mean" and read.units is None and read.method_config == {}
    with pytest.raises(AttributeError, match="no 'colour'"):
        read.colour


def test_replace_copies_and_leaves_the_card_as_it_is(card):
    later = card.replace(step=10)
    assert later["step"] == 10 and "step" not in card and isinstance(later, Card)


def test_a_finetune_card_keeps_the_base_inputs(card):
    enc = Encoder(name="vit_tiny", patch_size=8, in_chans=len(card["bands"]), img_size=64, embed_dim=48,
                  depth=1, num_heads=2)
    ft = finetune_card(card, task="classification", encoder=enc, classes=[{"value": 1, "name": "a"}],
                       head={"kind": "linear"}, base_path=None, settings={"steps": 3})
    assert ft["method"] == "finetune_classification" and ft["task"] == "classification"
    assert ft["bands"] == card["bands"] and ft["normalization"] == card["normalization"]
    assert ft["units"] == card["units"] and ft["base"]["method"] == "mae"


def test_prepare_matches_bands_by_name_and_normalises(card, chips):
    arr = prepare(chips, card, ("sample", "band", "y", "x"))
    reordered = chips.isel(band=slice(None, None, -1))
    np.testing.assert_allclose(prepare(reordered, card, ("sample", "band", "y", "x")), arr)
    mean = np.asarray(card["normalization"]["mean"])[None, :, None, None]
    std = np.asarray(card["normalization"]["std"])[None, :, None, None]
    np.testing.assert_allclose(arr, (chips.values - mean) / std, rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="missing"):
        prepare(chips.isel(band=slice(0, 3)), card)


def test_conform_converts_other_units_inside_the_statistics(card, chips):
    with pytest.warns(UserWarning, match="converting reflectance to DN"):
        da, converted = conform(chips / 10000.0, card)
    assert converted["units"] == "reflectance" and converted is not card
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # data in the card's own units: no warning at all
        prepare(chips, card)
    np.testing.assert_allclose(
        eossl.card.normalized((chips / 10000.0).values, converted, 1), prepare(chips, card), rtol=1e-3, atol=1e-3)


def test_card_of_and_model_input(card, chips):
    class Model:
        encoder = object()
    with pytest.raises(CheckpointError, match="has no card"):
        card_of(Model())
    Model.card = card
    assert card_of(Model())[1] is card
    x = model_input(Model(), chips)
    assert x.dtype == np.float32 and x.shape == chips.shape and np.isfinite(x).all()


def test_device_auto_and_explicit():
    import torch
    from eossl.device import resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(eossl.ParameterError, match="device"):
        resolve_device("tpu")
