"""The fine-tuned model (heads per task, freezing modes) and loading it back from its checkpoint."""

from __future__ import annotations

import pytest
import torch
from _tiny import TINY_ENCODER

import eossl
from eossl.errors import CheckpointError
from eossl.finetune.heads import FinetuneModel, build, encoder_blocks, load, set_trainable
from eossl.models.backbones import Encoder


def _encoder(**kw):
    return Encoder(**{**TINY_ENCODER, "depth": 2, "in_chans": 6, "img_size": 32, **kw})


@pytest.mark.parametrize("decoder", ["patch", "skip"])
def test_dense_heads_give_one_logit_per_class_and_pixel(decoder):
    enc = _encoder()
    seg = FinetuneModel(enc, "segmentation", 4, {"decoder": decoder})
    assert seg(torch.randn(2, 6, 40, 24)).shape == (2, 4, 40, 24)
    pair = FinetuneModel(enc, "change", 2, {"decoder": decoder})
    out = pair(torch.randn(3, 2, 6, 32, 32))  # (B, dates, C, H, W)
    assert out.shape == (3, 2, 32, 32) and torch.isfinite(out).all()


def test_change_features_are_siamese_and_symmetric_in_their_difference():
    enc = _encoder().eval()
    model = FinetuneModel(enc, "change", 2)
    x = torch.randn(1, 2, 6, 32, 32)
    feats = model.features(x)  # (B, 3D, h, w)
    D = enc.dim
    with torch.no_grad():
        f1, f2 = enc.feature_map(x[:, 0]), enc.feature_map(x[:, 1])
    torch.testing.assert_close(feats[:, :D], f1)
    torch.testing.assert_close(feats[:, D:2 * D], f2)
    torch.testing.assert_close(feats[:, 2 * D:], (f1 - f2).abs())


def test_classification_head_is_linear_on_pooled_features():
    model = FinetuneModel(_encoder(), "classification", 10)
    assert isinstance(model.head, torch.nn.Linear)
    assert model(torch.randn(5, 6, 32, 32)).shape == (5, 10)


def test_train_modes_freeze_what_they_say():
    model = FinetuneModel(_encoder(), "classification", 3)
    n_enc = sum(1 for _ in model.encoder.parameters())
    assert set_trainable(model, "head") == []
    assert all(p.requires_grad for p in model.head.parameters())
    last = set_trainable(model, "last_blocks", last_blocks=1)
    block_params = {id(p) for p in encoder_blocks(model.encoder)[-1].parameters()}
    assert block_params <= {id(p) for p in last} and 0 < len(last) < n_enc
    assert not any(p.requires_grad for p in encoder_blocks(model.encoder)[0].parameters())
    assert len(set_trainable(model, "all")) == n_enc
    with pytest.raises(ValueError, match="last_blocks must be between"):
        set_trainable(model, "last_blocks", last_blocks=5)
    with pytest.raises(ValueError, match="train must be one of"):
        set_trainable(model, "everything")


def test_resnet_stages_count_as_blocks():
    enc = Encoder("resnet18", in_chans=4)
    assert len(encoder_blocks(enc)) == 4
    model = FinetuneModel(enc, "segmentation", 3)
    params = set_trainable(model, "last_blocks", last_blocks=1)
    assert {id(p) for p in params} == {id(p) for p in enc.model.layer4.parameters()}
    assert model(torch.randn(1, 4, 64, 64)).shape == (1, 3, 64, 64)


def test_build_copies_the_encoder_so_the_pretrained_model_is_untouched():
    enc = _encoder()
    model = build(enc, "classification", 2)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    assert not torch.equal(next(enc.parameters()), next(model.encoder.parameters()))


def test_load_refuses_a_pretraining_checkpoint_with_a_clear_message(tiny_run):
    with pytest.raises(CheckpointError, match="pretraining checkpoint.*eossl.finetune"):
        load(tiny_run.checkpoint_path)


def test_load_refuses_a_damaged_checkpoint(tmp_path, chips):
    run = eossl.finetune(None, chips, task="classification", shots=2, steps=2, encoder=dict(TINY_ENCODER),
                         out=tmp_path / "ft")
    data = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load(tmp_path / "ft")
