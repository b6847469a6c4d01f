"""The method registry behind eossl.methods() and the trainer."""

from __future__ import annotations

import pytest

import eossl
from _tiny import TINY_ENCODER
from eossl.models.mae import MAE
from eossl.models.registry import build_method, default_encoder, methods


def test_methods_lists_mae_with_a_description():
    available = eossl.methods()
    assert available == methods()
    assert "mae" in available
    assert isinstance(available["mae"], str) and len(available["mae"]) > 20
    assert "mask" in available["mae"].lower()


def test_default_encoder_is_a_copy():
    spec = default_encoder("mae")
    assert spec["name"].startswith("vit")
    spec["name"] = "changed"
    assert default_encoder("mae")["name"] != "changed"


def test_build_method_makes_the_module_with_its_config():
    model = build_method("mae", {**TINY_ENCODER, "in_chans": 4, "img_size": 32}, {"mask_ratio": 0.5})
    assert isinstance(model, MAE)
    assert model.encoder.in_chans == 4 and model.mask_ratio == 0.5
    assert model.encoder.spec["depth"] == TINY_ENCODER["depth"]


@pytest.mark.parametrize("call", [
    lambda: build_method("no_such_method", dict(TINY_ENCODER)),
    lambda: default_encoder("no_such_method"),
    lambda: eossl.pretrain(None, method="no_such_method"),
])
def test_unknown_method_names_the_available_ones(call):
    with pytest.raises(ValueError, match="no_such_method") as info:
        call()
    assert "'mae'" in str(info.value) and "available" in str(info.value)
