"""Temporal methods (SeCo, masked date): views, stages, the loss against a reference, data checks,
and short runs on real stacks whose loss must fall."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import eossl
from _tiny import TINY_ENCODER
from eossl.errors import DataError
from eossl.models.backbones import Encoder
from eossl.models.losses import nt_xent
from eossl.models.registry import default_encoder
from eossl.models.temporal import MaskedTimestep, SeasonalContrast, patchify

C, S, P = 5, 32, 8  # bands, image size, patch size
L = (S // P) ** 2
D = TINY_ENCODER["embed_dim"]


def _encoder(name="vit_tiny"):
    torch.manual_seed(0)
    spec = dict(TINY_ENCODER) if name == "vit_tiny" else {"name": name}
    return Encoder(**spec, in_chans=C, img_size=S)


def _series(B=4, T=3, seed=0):
    return torch.randn(B, T, C, S, S, generator=torch.Generator().manual_seed(seed))


def _masked(**config):
    return MaskedTimestep(_encoder(), **config)


# ---------------------------------------------------------------------- registry

def test_both_methods_are_registered_with_their_default_encoders():
    available = eossl.methods()
    assert "season" in available["seco"].lower() and "date" in available["masked_timestep"].lower()
    assert default_encoder("seco")["name"] == "resnet18"
    assert default_encoder("masked_timestep")["name"] == "vit_tiny"
    assert SeasonalContrast.input_kind == MaskedTimestep.input_kind == "series"


# ---------------------------------------------------------------------- augmentations

def test_seco_band_gain_scales_each_band_of_each_image_by_one_factor():
    model = SeasonalContrast(_encoder(), gain_jitter=0.1, noise_std=0.0)
    images = torch.rand(64, C, 8, 8) + 0.5
    ratio = model.augment(images) / images                        # (B, C, H, W)
    per_band = ratio[..., :1, :1]
    torch.testing.assert_close(ratio, per_band.expand_as(ratio))  # one factor per image and band
    assert per_band.std().item() == pytest.approx(0.1, rel=0.2)   # the shared views' gain
    assert per_band.flatten().unique().numel() > 1                # not the same for every band


def test_seco_noise_has_the_asked_spread():
    model = SeasonalContrast(_encoder(), gain_jitter=0.0, noise_std=0.05)
    images = torch.zeros(8, C, 32, 32)
    assert model.augment(images).std().item() == pytest.approx(0.05, rel=0.05)


# ---------------------------------------------------------------------- SeCo

@pytest.mark.parametrize("name", ["vit_tiny", "resnet18"])
def test_seco_views_and_training_step(name):
    model = SeasonalContrast(_encoder(name))
    series = _series(B=4, T=2)
    view_a, view_b = model.views(series)
    assert view_a.shape == view_b.shape == (4, C, S, S)
    # lightly changed dates: close to their own date, far from the other one
    assert (view_a - series[:, 0]).abs().mean() < 0.15 < (view_a - series[:, 1]).abs().mean()
    assert (view_b - series[:, 1]).abs().mean() < 0.15
    loss, logs = model.training_step(series)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    assert set(logs) == {"emb_std"} and logs["emb_std"] > 0


def test_seco_pairs_date_a_with_date_b_of_the_same_window():
    """Without augmentation the loss is nt_xent between the projections of the two dates."""
    model = SeasonalContrast(_encoder(), gain_jitter=0.0, noise_std=0.0, temperature=0.3).eval()
    series = _series(B=5, T=2)
    loss, _ = model.training_step(series)
    with torch.no_grad():
        z_a = model.projector(model.encoder(series[:, 0]))
        z_b = model.projector(model.encoder(series[:, 1]))
    assert loss.item() == pytest.approx(nt_xent(z_a, z_b, 0.3).item(), rel=1e-5)
    shuffled = nt_xent(z_a, z_b[torch.tensor([1, 2, 3, 4, 0])], 0.3).item()
    assert loss.item() != pytest.approx(shuffled, rel=1e-3)


def test_seco_config_records_its_settings():
    model = SeasonalContrast(_encoder(), projection_dim=64, temperature=0.1)
    assert model.config == dict(hidden_dim=512, projection_dim=64, temperature=0.1, gain_jitter=0.1,
                                noise_std=0.05)
    with pytest.warns(FutureWarning, match="proj_dim= is now spelled projection_dim="):
        old = SeasonalContrast(_encoder(), proj_dim=64, temperature=0.1)
    assert old.config == model.config
    assert model.series_length == 2


# ---------------------------------------------------------------------- masked date: stages

def test_visible_dates_are_the_others_in_time_order():
    model = _masked(series_length=4)
    visible = model.visible_dates(torch.tensor([0, 1, 2, 3]))
    assert visible.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


def test_choose_hidden_last_and_random():
    assert set(_masked(predict="last").choose_hidden(200, "cpu").tolist()) == {2}
    torch.manual_seed(0)
    assert set(_masked(predict="random").choose_hidden(200, "cpu").tolist()) == {0, 1, 2}


def test_shapes_through_each_stage():
    model = _masked(series_length=4).eval()
    series = _series(B=3, T=4)
    hidden = torch.tensor([0, 2, 3])
    visible = model.visible_dates(hidden)
    features = model.encode_visible(series, visible)
    assert features.shape == (3, 3, D, S // P, S // P)
    fused = model.fuse(features, visible, hidden)
    assert fused.shape == (3, L, D)
    assert model.decoder_pred(fused).shape == (3, L, P * P * C)
    loss, pred, hidden_out, features_out = model(series, hidden)
    assert loss.ndim == 0 and pred.shape == (3, L, P * P * C)
    assert torch.equal(hidden_out, hidden) and features_out.shape == features.shape


def test_encode_visible_encodes_exactly_the_visible_dates():
    model = _masked().eval()
    series = _series(B=2, T=3)
    hidden = torch.tensor([1, 0])
    visible = model.visible_dates(hidden)
    with torch.no_grad():
        features = model.encode_visible(series, visible)
        for b in range(2):
            for j, date in enumerate(visible[b].tolist()):
                expected = model.encoder.feature_map(series[b, date][None])[0]
                torch.testing.assert_close(features[b, j], expected, rtol=1e-4, atol=1e-5)


def _reference_loss(series: np.ndarray, pred: np.ndarray, hidden, norm_pix: bool) -> float:
    """MSE over the hidden date of each window only, patch by patch with explicit loops."""
    errors = []
    for b, t in enumerate(hidden):
        for i in range(S // P):
            for j in range(S // P):
                target = series[b, t, :, i * P:(i + 1) * P, j * P:(j + 1) * P].transpose(1, 2, 0).reshape(-1)
                if norm_pix:
                    target = (target - target.mean()) / np.sqrt(target.var(ddof=1) + 1e-6)
                errors.append(np.mean((pred[b, i * (S // P) + j] - target) ** 2))
    return float(np.mean(errors))


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_loss_covers_the_hidden_date_only(norm_pix_loss):
    model = _masked(norm_pix_loss=norm_pix_loss).eval()
    dates = torch.arange(3.0).view(1, 3, 1, 1, 1)
    series = _series(B=4, T=3) * (1 + dates) + 3 * dates  # each date its own spread and level
    torch.manual_seed(3)
    with torch.no_grad():
        loss, pred, hidden, _ = model(series)
    x, pr = series.double().numpy(), pred.double().numpy()
    expected = _reference_loss(x, pr, hidden.tolist(), norm_pix_loss)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    if not norm_pix_loss:  # (per-patch normalisation erases the dates' levels and spreads)
        other = ((hidden + 1) % 3).tolist()
        assert abs(loss.item() - _reference_loss(x, pr, other, norm_pix_loss)) > 1.0


def test_the_prediction_never_sees_the_hidden_date():
    model = _masked().eval()
    series = _series(B=3, T=3)
    hidden = torch.tensor([0, 1, 2])
    changed = series.clone()
    changed[torch.arange(3), hidden] += 5 * torch.randn(3, C, S, S)
    with torch.no_grad():
        loss, pred, _, _ = model(series, hidden)
        loss_changed, pred_changed, _, _ = model(changed, hidden)
    torch.testing.assert_close(pred, pred_changed)  # same input to the predictor
    assert loss_changed > loss + 1.0                # but another target


def test_predict_last_always_hides_and_scores_the_last_date():
    model = _masked(predict="last").eval()
    series = _series(B=4, T=3)
    with torch.no_grad():
        loss, pred, hidden, features = model(series)
    assert hidden.tolist() == [2, 2, 2, 2]
    assert features.shape[1] == 2
    target = patchify(series[:, -1], P)
    assert loss.item() == pytest.approx(((pred - target) ** 2).mean().item(), rel=1e-6)


def test_patchify_layout_matches_the_mae():
    from eossl.models.mae import MAE
    images = torch.randn(2, C, S, 24)
    mae = MAE(_encoder(), decoder_dim=16, decoder_depth=1, decoder_heads=2)
    assert torch.equal(patchify(images, P), mae.patchify(images))


def test_masked_training_step():
    loss, logs = _masked().training_step(_series(B=4, T=3))
    assert torch.isfinite(loss) and loss.requires_grad
    assert set(logs) == {"emb_std"} and logs["emb_std"] > 0


def test_masked_config_and_its_errors():
    model = _masked(series_length=4, predict="last", norm_pix_loss=True)
    assert model.config == dict(series_length=4, predict="last", norm_pix_loss=True)
    assert model.series_length == 4 and MaskedTimestep.series_length == 3
    with pytest.raises(ValueError, match="ViT") as info:
        MaskedTimestep(_encoder("resnet18"))
    assert "resnet18" in str(info.value)
    with pytest.raises(ValueError, match="'random' or 'last'"):
        _masked(predict="next")
    with pytest.raises(ValueError, match="at least 2"):
        _masked(series_length=1)
    with pytest.raises(ValueError, match="expected 3 dates per window, got 2"):
        _masked()(_series(B=2, T=2))


# ---------------------------------------------------------------------- data checks

def _assert_helpful(err, n_dates: int, got: str):
    text = str(err.value)
    for part in (f"at least {n_dates} dates", "stack (time, band, y, x)", got, "eossl.open_stack",
                 "load_sample('slovenia_s2')"):
        assert part in text, (part, text)


@pytest.mark.parametrize("cls,n_dates", [(SeasonalContrast, 2), (MaskedTimestep, 3)])
def test_check_data_refuses_a_single_date_scene_and_chips(cls, n_dates, slovenia, chips):
    with pytest.raises(DataError) as err:
        cls.check_data([slovenia.image.isel(time=0)], {})
    _assert_helpful(err, n_dates, "single-date scene")
    with pytest.raises(DataError) as err:
        cls.check_data([chips], None)
    _assert_helpful(err, n_dates, "chips")


def test_check_data_counts_dates_against_series_length(slovenia):
    pair = slovenia.image.isel(time=[0, 1])
    with pytest.raises(DataError) as err:
        MaskedTimestep.check_data([pair], {"series_length": 3})
    _assert_helpful(err, 3, "a stack with 2 date(s)")
    with pytest.raises(DataError) as err:
        MaskedTimestep.check_data([pair], {"series_length": 6})
    _assert_helpful(err, 6, "a stack with 2 date(s)")
    MaskedTimestep.check_data([pair], {"series_length": 2})
    SeasonalContrast.check_data([pair], {})
    MaskedTimestep.check_data([slovenia.image.isel(time=0), slovenia.image], {})  # one stack suffices


def test_pretrain_refuses_data_without_dates(slovenia, tmp_path):
    with pytest.raises(DataError, match="seco needs a stack"):
        eossl.pretrain(slovenia.image.isel(time=0), method="seco", steps=2, batch_size=4, img_size=32,
                       out=tmp_path / "seco")
    with pytest.raises(DataError, match="masked_timestep needs a stack .* at least 3 dates"):
        eossl.pretrain(slovenia.image.isel(time=[0, 1]), method="masked_timestep", steps=2, batch_size=4,
                       img_size=32, encoder=dict(TINY_ENCODER), out=tmp_path / "masked")
    assert not (tmp_path / "seco" / "checkpoint").exists()


# ---------------------------------------------------------------------- short runs on real stacks

RUNS = {
    "seco": dict(method="seco", encoder={"name": "resnet18"}),
    "masked_random": dict(method="masked_timestep", encoder=dict(TINY_ENCODER)),
    "masked_last": dict(method="masked_timestep", encoder=dict(TINY_ENCODER), predict="last"),
}


@pytest.fixture(scope="module")
def runs(slovenia, tmp_path_factory):
    return {key: eossl.pretrain(slovenia, steps=40, batch_size=16, img_size=32,
                                out=tmp_path_factory.mktemp(key), **kwargs)
            for key, kwargs in RUNS.items()}


def _first_last(run):
    losses = run.history["loss"].to_numpy()
    return losses[:5].mean(), losses[-5:].mean()


@pytest.mark.parametrize("key", list(RUNS))
def test_loss_falls_on_the_slovenia_stack(runs, key):
    first, last = _first_last(runs[key])
    assert last < first, (key, first, last)
    assert np.all(runs[key].history["emb_std"] > 0)


def test_seco_learns_beyond_chance_on_slovenia(runs):
    """Falling from a bad start is not enough: a uniform guess over the 2B - 1 other views scores
    log(2B - 1); the trained model must do better."""
    _, last = _first_last(runs["seco"])
    assert last < math.log(2 * 16 - 1)


def test_seco_learns_on_the_taizhou_landsat_pair(taizhou, tmp_path):
    run = eossl.pretrain(taizhou, method="seco", steps=30, batch_size=16, img_size=32,
                         encoder={"name": "resnet18"}, out=tmp_path)
    assert run.model.encoder.in_chans == 6
    first, last = _first_last(run)
    assert last < first and last < math.log(2 * 16 - 1), (first, last)


@pytest.mark.parametrize("key", ["seco", "masked_last"])
def test_load_model_round_trip_gives_identical_embeddings(runs, key, slovenia):
    run = runs[key]
    loaded = eossl.load_model(run.checkpoint_path)
    assert type(loaded) is type(run.model) and loaded.config == run.model.config
    scene = slovenia.image.isel(time=3)
    torch.testing.assert_close(torch.from_numpy(eossl.embed(loaded, scene).values),
                               torch.from_numpy(eossl.embed(run.model, scene).values), rtol=0, atol=0)


def test_predict_hidden_unpatchifies_the_prediction():
    from eossl.models.registry import build_method
    from eossl.models.temporal import patchify
    model = build_method("masked_timestep", {"name": "vit_tiny", "patch_size": 8, "depth": 1, "embed_dim": 48,
                                             "num_heads": 2, "in_chans": 3, "img_size": 16},
                         {"predict": "last"}).eval()
    series = torch.randn(2, 3, 3, 16, 16)
    images, hidden = model.predict_hidden(series)
    assert images.shape == (2, 3, 16, 16) and hidden.tolist() == [2, 2]
    _, pred, _, _ = model.forward(series, hidden)
    torch.testing.assert_close(patchify(images, 8), pred.float())  # exact inverse of the layout
