"""Spectral MAE: band groups, grouped tokens, masking, the loss against a reference, training,
and the load_model / embed round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import eossl
from _tiny import TINY_ENCODER
from eossl.data.bands import EUROSAT_MS_BANDS, SENSORS
from eossl.errors import DataError
from eossl.models.backbones import Encoder
from eossl.models.registry import build_method
from eossl.models.spectral import GroupedEncoder, SpectralMAE, default_band_groups, even_band_groups

S2_CANONICAL = [b.name for b in SENSORS["sentinel2_l1c"]]
# EuroSAT order: B01 B02 B03 B04 B05 B06 B07 B08 B09 B10 B11 B12 B8A
EUROSAT_GROUPS = [[1, 2, 3, 7], [4, 5, 6, 12], [10, 11], [0, 8, 9]]
C, S, P = 13, 32, 8  # bands, image size, patch size
L = (S // P) ** 2


def _model(**config):
    torch.manual_seed(0)
    enc = Encoder(**{**TINY_ENCODER, "patch_size": P}, in_chans=C, img_size=S)
    config = {"band_groups": EUROSAT_GROUPS, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2,
              **config}
    return SpectralMAE(enc, **config)


# ---------------------------------------------------------------------- band groups

def test_default_groups_sentinel2_in_eurosat_order_follow_satmae():
    assert default_band_groups(EUROSAT_MS_BANDS) == EUROSAT_GROUPS
    named = [[EUROSAT_MS_BANDS[i] for i in g] for g in EUROSAT_GROUPS]
    assert named == [["B02", "B03", "B04", "B08"], ["B05", "B06", "B07", "B8A"], ["B11", "B12"],
                     ["B01", "B09", "B10"]]


def test_default_groups_sentinel2_in_canonical_order_name_the_same_bands():
    groups = default_band_groups(S2_CANONICAL, sensor="sentinel2_l1c")
    assert groups == [[1, 2, 3, 7], [4, 5, 6, 8], [11, 12], [0, 9, 10]]
    assert [[S2_CANONICAL[i] for i in g] for g in groups] == [
        ["B02", "B03", "B04", "B08"], ["B05", "B06", "B07", "B8A"], ["B11", "B12"], ["B01", "B09", "B10"]]
    l2a = [b.name for b in SENSORS["sentinel2_l2a"]]  # no B10
    assert [[l2a[i] for i in g] for g in default_band_groups(l2a)][-1] == ["B01", "B09"]


def test_default_groups_landsat7_six_bands(taizhou):
    names = ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert default_band_groups(names) == [[0, 1, 2, 3], [4, 5]]  # visible + NIR, SWIR
    assert default_band_groups(names, sensor="landsat7") == [[0, 1, 2, 3], [4, 5]]
    assert default_band_groups(taizhou["band"].values.tolist(), taizhou.image.attrs["sensor"]) == [[0, 1, 2, 3], [4, 5]]


def test_default_groups_landsat8_by_sensor_or_by_its_own_bands():
    oli = [b.name for b in SENSORS["landsat8"]]  # B1..B11
    groups = [[oli[i] for i in g] for g in default_band_groups(oli)]
    assert groups == [["B2", "B3", "B4", "B5"], ["B6", "B7"], ["B1", "B9"], ["B10", "B11"], ["B8"]]
    assert default_band_groups(oli[:7], sensor="landsat8") == [[1, 2, 3, 4], [5, 6], [0]]


def test_default_groups_generic_names_split_evenly_and_unknown_names_go_last():
    assert default_band_groups([f"band_{i + 1}" for i in range(6)]) == [[0, 1, 2], [3, 4, 5]]
    assert default_band_groups(["x"]) == [[0]]
    assert default_band_groups(["red", "nir"]) == [[0], [1]]  # two bands: predict one from the other
    assert even_band_groups(13) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
    assert default_band_groups(["B04", "B08", "ndvi"]) == [[0, 1], [2]]


# ---------------------------------------------------------------------- tokens and masking

def test_grouped_tokens_and_feature_map_shapes():
    model = _model().eval()
    x = torch.randn(2, C, S, 24)  # non-square too
    tokens = model.encoder.group_tokens(x)
    assert tokens.shape == (2, 4, (S // P) * (24 // P), model.encoder.dim)
    fmap = model.encoder.feature_map(x)
    assert fmap.shape == (2, model.encoder.dim, S // P, 24 // P)
    # the feature map is the mean of the G group tokens at each place
    out = model.encoder.transform(tokens.flatten(1, 2))[:, 1:].reshape(2, 4, -1, model.encoder.dim)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), out.mean(dim=1))
    assert isinstance(model.encoder, GroupedEncoder) and isinstance(model.encoder, Encoder)
    assert model.encoder(x).shape == (2, model.encoder.dim)


def test_each_group_embedding_sees_only_its_bands():
    model = _model().eval()
    x = torch.randn(1, C, S, S)
    changed = x.clone()
    changed[:, 10] += 5.0  # B11: only the SWIR group (group 2)
    delta = (model.encoder.group_tokens(changed) - model.encoder.group_tokens(x)).abs().amax(dim=(0, 2, 3))
    assert delta[2] > 0 and torch.all(delta[[0, 1, 3]] == 0)


def test_random_masking_hides_tokens_independently_across_groups():
    model = _model(mask_ratio=0.75)
    torch.manual_seed(0)
    tokens = torch.randn(8, 4, L, 5)
    kept, mask, ids_restore = model.hide(tokens)
    assert kept.shape == (8, 4 * L // 4, 5) and mask.shape == (8, 4, L) and ids_restore.shape == (8, 4 * L)
    assert torch.all(mask.sum(dim=(1, 2)) == 4 * L * 3 // 4)
    # at some places one group is hidden and another is not: cross-band prediction
    hidden_per_place = mask.sum(dim=1)  # (B, L)
    assert ((hidden_per_place > 0) & (hidden_per_place < 4)).any()
    flat = tokens.flatten(1, 2)
    for b in range(8):
        visible = flat[b, mask[b].flatten() == 0]
        assert {tuple(v.tolist()) for v in kept[b]} == {tuple(v.tolist()) for v in visible}


@pytest.mark.parametrize("ratio,hidden", [(0.75, 3), (0.5, 2), (0.1, 1), (0.99, 3)])
def test_withhold_mode_hides_whole_groups(ratio, hidden):
    model = _model(masking="withhold", mask_ratio=ratio)
    torch.manual_seed(0)
    tokens = torch.randn(16, 4, L, 3)
    kept, mask, ids_restore = model.hide(tokens)
    assert kept.shape == (16, (4 - hidden) * L, 3)
    per_group = mask[:, :, 0]  # (B, G)
    assert torch.all(mask == per_group[:, :, None])  # every patch of a group alike
    assert torch.all(per_group.sum(dim=1) == hidden)
    assert len({tuple(m.tolist()) for m in per_group}) > 1  # which groups differs per image
    # unshuffling (kept, placeholders) with ids_restore puts kept tokens back where they came from
    filler = torch.full((16, hidden * L, 3), -1e3)
    restored = torch.gather(torch.cat([kept, filler], dim=1), 1, ids_restore[..., None].expand(-1, -1, 3))
    visible = mask.flatten(1) == 0
    assert torch.equal(restored[visible], tokens.flatten(1, 2)[visible])
    assert torch.all(restored[~visible] == -1e3)


# ---------------------------------------------------------------------- loss

@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_forward_loss_matches_a_reference(norm_pix_loss):
    model = _model(norm_pix_loss=norm_pix_loss)
    g = torch.Generator().manual_seed(3)
    imgs = torch.randn(2, C, S, S, generator=g) * 2 + 1
    preds = [torch.randn(2, L, len(group) * P * P, generator=g) for group in EUROSAT_GROUPS]
    mask = (torch.rand(2, 4, L, generator=g) < 0.6).float()
    loss = model.forward_loss(imgs, preds, mask)

    x = imgs.double().numpy()
    errors = []
    for b in range(2):
        for gi, group in enumerate(EUROSAT_GROUPS):
            for i in range(S // P):
                for j in range(S // P):
                    k = i * (S // P) + j
                    if mask[b, gi, k] == 0:
                        continue
                    # the group's bands of this patch, flattened as (band, row, column)
                    target = x[b, group, i * P:(i + 1) * P, j * P:(j + 1) * P].reshape(-1)
                    if norm_pix_loss:
                        target = (target - target.mean()) / np.sqrt(target.var(ddof=1) + 1e-6)
                    errors.append(np.mean((preds[gi][b, k].double().numpy() - target) ** 2))
    assert loss.item() == pytest.approx(np.mean(errors), rel=1e-5)


def test_forward_and_training_step():
    model = _model()
    imgs = torch.randn(2, C, S, S)
    loss, preds, mask, latent = model(imgs)
    assert [p.shape for p in preds] == [(2, L, len(g) * P * P) for g in EUROSAT_GROUPS]
    assert latent.shape == (2, 1 + 4 * L // 4, model.encoder.dim)
    assert torch.isfinite(loss)
    loss, logs = model.training_step(imgs)
    assert loss.requires_grad and set(logs) == {"emb_std"} and logs["emb_std"] > 0
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad), \
        [n for n, p in model.named_parameters() if p.grad is None]


# ---------------------------------------------------------------------- config and checks

def test_config_and_state_dict_round_trip_through_build_method():
    model = _model(masking="withhold", mask_ratio=0.5)
    assert model.config == dict(band_groups=EUROSAT_GROUPS, masking="withhold", mask_ratio=0.5, decoder_dim=32,
                                decoder_depth=1, decoder_heads=2, norm_pix_loss=True)
    assert model.encoder.spec == {**TINY_ENCODER, "in_chans": C, "img_size": S}  # the plain spec for the card
    rebuilt = build_method("spectral_mae", model.encoder.spec, model.config)
    rebuilt.load_state_dict(model.state_dict())  # strict: the same keys
    assert not any("patch_embed.proj" in k or k.endswith("model.pos_embed") for k in model.state_dict())


def test_default_groups_without_names_split_evenly():
    enc = Encoder(**TINY_ENCODER, in_chans=6, img_size=S)
    assert SpectralMAE(enc).band_groups == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("groups,match", [([], "non-empty"), ([[0], []], "non-empty"),
                                          ([[0, 13]], "0..12"), ([[0, 0]], "distinct"), ([[-1]], "0..12")])
def test_bad_band_groups_raise(groups, match):
    with pytest.raises(ValueError, match=match):
        _model(band_groups=groups)


def test_refuses_resnet_bad_masking_and_withhold_with_one_group():
    with pytest.raises(ValueError, match="ViT") as info:
        SpectralMAE(Encoder("resnet18", in_chans=C))
    assert "vit_tiny" in str(info.value)
    with pytest.raises(ValueError, match="masking must be one of"):
        _model(masking="spatial")
    with pytest.raises(ValueError, match="at least two"):
        _model(masking="withhold", band_groups=[list(range(C))])
    with pytest.raises(ValueError, match="mask_ratio"):
        _model(mask_ratio=1.0)


def test_check_data_refuses_groups_beyond_the_data_and_fills_defaults(chips, tmp_path):
    with pytest.raises(DataError) as info:
        SpectralMAE.check_data([chips], {"band_groups": [[0, 1], [2, 20]]})
    assert "at least 21 bands" in str(info.value) and "has 13" in str(info.value)
    config = {}
    SpectralMAE.check_data([chips], config)
    assert config["band_groups"] == EUROSAT_GROUPS
    with pytest.raises(DataError, match="at least 14 bands"):
        eossl.pretrain(chips, method="spectral_mae", steps=1, encoder=dict(TINY_ENCODER),
                       band_groups=[[0, 13]], out=tmp_path)


def test_registered():
    assert "spectral_mae" in eossl.methods() and "band" in eossl.methods()["spectral_mae"]


# ---------------------------------------------------------------------- training and embedding

@pytest.fixture(scope="module")
def spectral_run(tmp_path_factory, chips):
    out = tmp_path_factory.mktemp("spectral_run")
    return eossl.pretrain(chips, method="spectral_mae", steps=30, batch_size=16, img_size=S,
                          encoder=dict(TINY_ENCODER), out=out, decoder_dim=32, decoder_depth=1,
                          decoder_heads=2)


def test_pretrain_loss_falls_and_card_records_the_groups(spectral_run):
    loss = spectral_run.history["loss"].to_numpy()
    assert np.isfinite(loss).all() and loss[-5:].mean() < loss[:5].mean()
    assert spectral_run.model.card["method_config"]["band_groups"] == EUROSAT_GROUPS
    assert spectral_run.history["emb_std"].iloc[-1] > 0


def test_load_model_and_embed_round_trip(spectral_run, chips):
    loaded = eossl.load_model(spectral_run.checkpoint_path)
    assert isinstance(loaded, SpectralMAE) and isinstance(loaded.encoder, GroupedEncoder)
    ref, got = spectral_run.model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    few = chips.isel(sample=slice(0, 12))
    a, b = eossl.embed(spectral_run.model, few), eossl.embed(loaded, few)
    assert a.dims == ("sample", "dim") and a.shape == (12, TINY_ENCODER["embed_dim"])
    np.testing.assert_array_equal(a.values, b.values)
    every = eossl.embed(loaded, few, layers="all")  # group means at every stage, the last one at the end
    depth = len(loaded.encoder.model.blocks)
    assert every.shape == (12, TINY_ENCODER["embed_dim"] * (depth + 2))
    np.testing.assert_allclose(every.values[:, -TINY_ENCODER["embed_dim"]:], b.values, rtol=1e-4, atol=1e-5)


def test_embed_scene_in_another_band_order(spectral_run, slovenia):
    scene = slovenia.image.isel(time=3)  # canonical S2 order: embed reorders bands by name
    emb = eossl.embed(spectral_run.model, scene)
    assert emb.dims == ("y", "x", "dim")
    assert emb.shape == (scene.sizes["y"] // P, scene.sizes["x"] // P, TINY_ENCODER["embed_dim"])
    assert np.isfinite(emb.values).mean() > 0.5
