"""Every registered method with every backbone family it allows: one training step on real chips
gives a finite loss and a collapse monitor; methods that need a ViT refuse a ResNet clearly
(as timm's own test runs every registered model forward and checks for NaNs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import eossl
from eossl.models.registry import build_method, method_class

ENCODERS = {
    "vit_tiny": {"name": "vit_tiny", "patch_size": 8, "depth": 1},
    "vit_small": {"name": "vit_small", "patch_size": 8, "depth": 1},
    "resnet18": {"name": "resnet18"},
    "resnet50": {"name": "resnet50"},
}
VIT_ONLY = {"mae", "spectral_mae", "masked_timestep"}


@pytest.fixture(scope="module")
def batches(chips, slovenia):
    images = eossl.normalize(chips).values[:4, :, :48, :48]                      # (4, 13, 48, 48)
    stack = eossl.normalize(slovenia.image.sel(band=chips.band.values)).values  # (5, 13, 101, 100)
    series = np.stack([stack[:3, :, :48, :48], stack[1:4, :, 40:88, 40:88]] * 2)  # (4, 3, 13, 48, 48)
    pairs = np.stack([stack[[0, 2], :, :56, :56], stack[[1, 4], :, 40:96, 40:96]] * 2)   # (4, 2, 13, 56, 56)
    return {"image": torch.from_numpy(images), "series": torch.from_numpy(np.ascontiguousarray(series)),
            "pair": torch.from_numpy(np.ascontiguousarray(pairs))}


@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("method", sorted(eossl.methods()))
def test_one_training_step(method, encoder, batches):
    spec = {**ENCODERS[encoder], "in_chans": 13, "img_size": 48}
    if method in VIT_ONLY and encoder.startswith("resnet"):
        with pytest.raises(ValueError, match="ViT"):
            build_method(method, spec)
        return
    torch.manual_seed(0)
    model = build_method(method, spec)
    batch = batches[method_class(method).input_kind]
    if method_class(method).input_kind == "series":
        batch = batch[:, :model.series_length]
    loss, logs = model.training_step(batch)
    loss.backward()
    assert torch.isfinite(loss) and np.isfinite(logs["emb_std"]) and logs["emb_std"] > 0
    grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # the encoder learns from it
    with torch.no_grad():
        features = model.encoder.feature_map(batches["image"][:2])
    assert features.shape[:2] == (2, model.encoder.dim) and torch.isfinite(features).all()
