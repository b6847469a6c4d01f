"""Encoder: the same feature views for ViTs and ResNets, any band count."""

from __future__ import annotations

import pytest
import torch

from eossl.errors import ParameterError
from eossl.models.backbones import ALIASES, Encoder, available_encoders

from _tiny import TINY_ENCODER


def _tiny_vit(in_chans, img_size=64):
    spec = {k: v for k, v in TINY_ENCODER.items()}
    return Encoder(**spec, in_chans=in_chans, img_size=img_size)


@pytest.mark.parametrize("bands", [13, 6])
def test_vit_feature_map_and_pooled(bands):
    torch.manual_seed(0)
    enc = _tiny_vit(bands).eval()
    x = torch.randn(3, bands, 64, 64)
    with torch.no_grad():
        fm = enc.feature_map(x)
        pooled = enc(x)
    p, D = TINY_ENCODER["patch_size"], TINY_ENCODER["embed_dim"]
    assert enc.patch_size == p and enc.dim == D and enc.is_vit and enc.in_chans == bands
    assert fm.shape == (3, D, 64 // p, 64 // p)
    assert pooled.shape == (3, D)
    assert torch.isfinite(fm).all() and torch.isfinite(pooled).all()
    # pooled is the mean of the patch features, and the patch features are the ViT's tokens
    torch.testing.assert_close(pooled, fm.mean(dim=(2, 3)))
    with torch.no_grad():
        tokens = enc.model.forward_features(x)[:, enc.num_prefix_tokens:]  # (B, L, D)
    torch.testing.assert_close(fm[1, :, 2, 5], tokens[1, 2 * (64 // p) + 5])


def test_vit_tokens_follow_image_layout():
    """A feature at (row, col) must come from the patch at (row, col): change one patch's pixels
    in a model without attention mixing (depth 0) and only that feature moves."""
    torch.manual_seed(0)
    enc = Encoder("vit_tiny", in_chans=4, img_size=32, patch_size=8, depth=0, embed_dim=16,
                  num_heads=2).eval()
    x = torch.randn(1, 4, 32, 32)
    y = x.clone()
    y[:, :, 8:16, 16:24] += 5.0  # the patch at row 1, col 2
    with torch.no_grad():
        diff = (enc.feature_map(x) - enc.feature_map(y)).abs().sum(dim=1)[0]  # (4, 4)
    changed = (diff > 1e-5).nonzero().tolist()
    assert changed == [[1, 2]]


def test_vit_dynamic_input_size():
    torch.manual_seed(0)
    enc = _tiny_vit(13).eval()
    x = torch.randn(2, 13, 40, 48)
    with torch.no_grad():
        fm = enc.feature_map(x)
        pooled = enc(x)
    assert fm.shape == (2, TINY_ENCODER["embed_dim"], 5, 6)
    assert pooled.shape == (2, TINY_ENCODER["embed_dim"])
    assert torch.isfinite(fm).all()


@pytest.mark.parametrize("bands", [13, 6])
def test_resnet18_feature_map_and_pooled(bands):
    torch.manual_seed(0)
    enc = Encoder("resnet18", in_chans=bands).eval()
    assert not enc.is_vit and enc.patch_size == 32 and enc.dim == 512
    assert enc.model.conv1.in_channels == bands
    x = torch.randn(2, bands, 64, 64)
    with torch.no_grad():
        fm = enc.feature_map(x)
        pooled = enc(x)
    assert fm.shape == (2, 512, 2, 2)
    assert pooled.shape == (2, 512)
    assert torch.isfinite(fm).all() and torch.isfinite(pooled).all()
    torch.testing.assert_close(pooled, fm.mean(dim=(2, 3)))


def test_spec_rebuilds_the_same_architecture():
    enc = _tiny_vit(6, img_size=32)
    assert enc.spec == {**TINY_ENCODER, "in_chans": 6, "img_size": 32}
    again = Encoder(**enc.spec)
    assert {k: v.shape for k, v in again.state_dict().items()} == \
           {k: v.shape for k, v in enc.state_dict().items()}


def test_available_encoders_are_the_aliases():
    assert available_encoders() == list(ALIASES)
    assert "vit_tiny" in available_encoders() and "resnet18" in available_encoders()


@pytest.mark.parametrize("name", ["vit_doesnotexist", "doesnotexist"])
def test_unknown_encoder_is_a_value_error_listing_the_known_ones(name):
    with pytest.raises(ValueError, match="vit_tiny") as info:
        Encoder(name, in_chans=3)
    assert name in str(info.value)


def test_feature_map_all_layers_stacks_every_stage_with_the_last_at_the_end():
    torch.manual_seed(0)
    enc = Encoder("vit_tiny", in_chans=4, img_size=16, patch_size=4, depth=2, embed_dim=32, num_heads=2).eval()
    x = torch.randn(3, 4, 16, 16)
    with torch.no_grad():
        last, every = enc.feature_map(x), enc.feature_map(x, layers="all")
    assert every.shape == (3, 32 * (2 + 2), 4, 4)
    torch.testing.assert_close(every[:, -32:], last)            # the final norm's tokens, as "last"
    assert not torch.allclose(every[:, :32], every[:, 32:64])   # the patch embedding, then block 1...
    with pytest.raises(ParameterError, match="layers must be one of"):
        enc.feature_map(x, layers="first")
    cnn = Encoder("resnet18", in_chans=4)
    with pytest.raises(ParameterError, match="not a ViT"):
        cnn.feature_map(torch.randn(1, 4, 32, 32), layers="all")
