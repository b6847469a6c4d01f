"""SimCLR, MoCo v3 and BYOL: losses against hand-written references, momentum networks, the
method contract with ViT and ResNet encoders, training on real chips, checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import eossl
from _tiny import TINY_ENCODER
from eossl.models.contrastive import (BYOL, MoCoV3, SimCLR, byol_loss, cosine_momentum, ema_update, mlp,
                                      momentum_copy)
from eossl.models.losses import info_nce, nt_xent
from eossl.models.registry import build_method

NAMES = ["simclr", "mocov3", "byol"]
CLASSES = {"simclr": SimCLR, "mocov3": MoCoV3, "byol": BYOL}
# method -> [(momentum copy, the online module it follows)]
MOMENTUM_PAIRS = {
    "simclr": [],
    "mocov3": [("momentum_encoder", "encoder"), ("momentum_projector", "projector")],
    "byol": [("target_encoder", "encoder"), ("target_projector", "projector")],
}
ENCODERS = {
    "vit": {**TINY_ENCODER, "in_chans": 13, "img_size": 32},
    "resnet": {"name": "resnet18", "in_chans": 13, "img_size": 32},
}


# ---------------------------------------------------------------------------- losses


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _logsumexp(values):
    values = np.asarray(values)
    top = values.max()
    return top + math.log(np.exp(values - top).sum())


def test_nt_xent_matches_a_loop_over_the_2b_views():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    t = 0.3
    views = torch.cat([z1, z2]).double().numpy()  # row i and row i + B are the same image
    n = len(views)
    losses = []
    for i in range(n):
        pair = (i + n // 2) % n
        others = [_cosine(views[i], views[j]) / t for j in range(n) if j != i]
        losses.append(-_cosine(views[i], views[pair]) / t + _logsumexp(others))
    assert nt_xent(z1, z2, t).item() == pytest.approx(np.mean(losses), rel=1e-5)


def test_info_nce_matches_a_loop_over_the_queries():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    t = 0.2
    qn, kn = q.double().numpy(), k.double().numpy()
    losses = []
    for i in range(len(qn)):
        logits = [_cosine(qn[i], kn[j]) / t for j in range(len(kn))]
        losses.append(-logits[i] + _logsumexp(logits))
    assert info_nce(q, k, t).item() == pytest.approx(np.mean(losses), rel=1e-5)


def test_byol_loss_is_two_minus_two_cosine():
    g = torch.Generator().manual_seed(2)
    p, z = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    expected = np.mean([2 - 2 * _cosine(a, b) for a, b in zip(p.double().numpy(), z.double().numpy())])
    assert byol_loss(p, z).item() == pytest.approx(expected, rel=1e-5)
    assert byol_loss(z * 3, z).item() == pytest.approx(0.0, abs=1e-6)   # same direction: 0
    assert byol_loss(-z, z).item() == pytest.approx(4.0, rel=1e-6)      # opposite: 4


def test_byol_loss_sends_no_gradient_to_the_target():
    p = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 3, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_mocov3_loss_is_the_symmetric_info_nce_scaled_by_two_temperatures():
    torch.manual_seed(0)
    model = build_method("mocov3", ENCODERS["vit"], {"temperature": 0.5}).train()
    imgs = torch.randn(4, 13, 32, 32)
    torch.manual_seed(1)
    loss, _ = model.training_step(imgs)
    # Recompute from the same views: 2T * (ctr(q1, k2) + ctr(q2, k1)).
    torch.manual_seed(1)
    v1, v2 = model.views(imgs)
    with torch.no_grad():
        q1 = model.predictor(model.projector(model.encoder(v1)))
        q2 = model.predictor(model.projector(model.encoder(v2)))
        k1 = model.momentum_projector(model.momentum_encoder(v1))
        k2 = model.momentum_projector(model.momentum_encoder(v2))
    expected = 2 * 0.5 * (info_nce(q1, k2, 0.5) + info_nce(q2, k1, 0.5))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


# ---------------------------------------------------------------------------- building blocks


def test_mlp_layouts():
    simclr_head = mlp(16, 32, 8, num_layers=2)
    assert [type(m) for m in simclr_head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert simclr_head[-1].bias is not None and simclr_head[0].bias is None
    moco_head = mlp(16, 32, 8, num_layers=3, last_batchnorm=True)
    hidden_block = [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert [type(m) for m in moco_head] == hidden_block * 2 + [nn.Linear, nn.BatchNorm1d]
    assert not moco_head[-1].affine
    assert moco_head(torch.randn(4, 16)).shape == (4, 8)


def test_cosine_momentum_rises_from_base_to_one():
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    values = [cosine_momentum(s, 100, 0.9) for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_ema_update_formula():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for new, old, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * o.detach())


def test_momentum_copy_is_frozen_and_independent():
    online = nn.Linear(3, 2)
    twin = momentum_copy(online)
    assert all(not p.requires_grad for p in twin.parameters())
    assert all(p.requires_grad for p in online.parameters())
    with torch.no_grad():
        online.weight.add_(1.0)
    assert not torch.equal(twin.weight, online.weight)


# ---------------------------------------------------------------------------- the method contract


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", NAMES)
def test_training_step_with_vit_and_resnet(name, encoder):
    torch.manual_seed(0)
    model = build_method(name, ENCODERS[encoder]).train()
    assert isinstance(model, CLASSES[name]) and model.input_kind == "image"
    assert model.encoder.is_vit == (encoder == "vit")
    loss, logs = model.training_step(torch.randn(4, 13, 32, 32))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    assert set(logs) == {"emb_std"} and isinstance(logs["emb_std"], float) and logs["emb_std"] > 0
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
    for copy_name, _ in MOMENTUM_PAIRS[name]:
        assert all(p.grad is None for p in getattr(model, copy_name).parameters())


@pytest.mark.parametrize("name", NAMES)
def test_config_is_json_and_rebuilds_the_same_architecture(name):
    model = build_method(name, ENCODERS["vit"], {"views": {"crop_scale": (0.5, 1.0)}})
    config = json.loads(json.dumps(model.config))
    assert config["views"]["crop_scale"] == [0.5, 1.0]
    rebuilt = build_method(name, ENCODERS["vit"], config)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.views.config.crop_scale == (0.5, 1.0)


@pytest.mark.parametrize("name", ["mocov3", "byol"])
def test_momentum_networks_are_saved_frozen_and_follow_the_online_ones(name):
    torch.manual_seed(0)
    model = build_method(name, ENCODERS["vit"], {"base_momentum": 0.9}).train()
    keys = model.state_dict().keys()
    for copy_name, online_name in MOMENTUM_PAIRS[name]:
        frozen = getattr(model, copy_name)
        assert any(k.startswith(copy_name + ".") for k in keys)  # in checkpoints
        assert all(not p.requires_grad for p in frozen.parameters())
        for a, b in zip(frozen.parameters(), getattr(model, online_name).parameters()):
            assert torch.equal(a, b)  # starts as a copy
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert not trainable & {id(p) for c, _ in MOMENTUM_PAIRS[name] for p in getattr(model, c).parameters()}

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss, _ = model.training_step(torch.randn(8, 13, 32, 32))
    loss.backward()
    optimizer.step()
    before = {c: [p.clone() for p in getattr(model, c).parameters()] for c, _ in MOMENTUM_PAIRS[name]}
    model.after_optimizer_step(3, 10)
    m = cosine_momentum(3, 10, 0.9)
    for copy_name, online_name in MOMENTUM_PAIRS[name]:
        pairs = zip(getattr(model, copy_name).parameters(), before[copy_name],
                    getattr(model, online_name).parameters())
        changed = False
        for new, old, online in pairs:
            torch.testing.assert_close(new, m * old + (1 - m) * online.detach())
            changed |= not torch.equal(new, old)
            assert not new.requires_grad
        assert changed, copy_name


def test_simclr_has_no_momentum_network():
    model = build_method("simclr", ENCODERS["vit"])
    assert not hasattr(model, "after_optimizer_step")
    assert set(dict(model.named_children())) == {"encoder", "projector"}
    assert model.projector[-1].out_features == 128 and model.temperature == 0.2


def test_registry_lists_the_three_with_their_default_encoders():
    available = eossl.methods()
    for name in NAMES:
        assert name in available and len(available[name]) > 20
    assert eossl.models.registry.default_encoder("mocov3")["name"] == "vit_tiny"
    assert eossl.models.registry.default_encoder("simclr")["name"] == "resnet18"


# ---------------------------------------------------------------------------- training on real chips


@pytest.fixture(scope="module", params=NAMES)
def trained(request, chips, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    run = eossl.pretrain(chips, method=request.param, steps=30, batch_size=32, img_size=32,
                         encoder=dict(TINY_ENCODER), out=out)
    return request.param, run, out


def test_loss_falls_on_real_chips(trained):
    name, run, _ = trained
    loss = run.history["loss"].to_numpy()
    assert len(loss) == 30 and np.isfinite(loss).all()
    assert loss[-5:].mean() < loss[:5].mean(), (name, loss.round(3).tolist())
    assert (run.history["emb_std"] > 0.01).all()


def test_load_model_gives_back_the_same_embeddings(trained, chips):
    name, run, out = trained
    loaded = eossl.load_model(out)
    assert isinstance(loaded, CLASSES[name]) and not loaded.training
    ref, got = run.model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    few = chips.isel(sample=slice(0, 24))
    np.testing.assert_array_equal(eossl.embed(loaded, few).values, eossl.embed(run.model, few).values)
