"""Multispectral views: every op keeps shape, dtype and band count, never mixes bands, and draws
its own parameters per sample."""

from __future__ import annotations

import pytest
import torch

from eossl.models.views import (MultispectralViews, ViewConfig, band_dropout, band_gain_offset,
                                gaussian_blur, gaussian_noise, random_flip_rotate, random_resized_crop)

B, C, S = 6, 13, 32


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# Each op at a strength where it acts on every sample, as fn(x, generator).
OPS = {
    "crop": lambda x, g: random_resized_crop(x, (0.2, 0.6), generator=g),
    "flip_rotate": lambda x, g: random_flip_rotate(x, generator=g),
    "gain_offset": lambda x, g: band_gain_offset(x, 0.3, 0.3, generator=g),
    "band_dropout": lambda x, g: band_dropout(x, prob=1.0, max_fraction=0.5, generator=g),
    "noise": lambda x, g: gaussian_noise(x, 0.1, prob=1.0, generator=g),
    "blur": lambda x, g: gaussian_blur(x, (0.5, 2.0), prob=1.0, generator=g),
}
# Ops with nothing additive: a band that is zero everywhere stays zero.
ZERO_PRESERVING = ["crop", "flip_rotate", "band_dropout", "blur"]


@pytest.fixture
def batch():
    return torch.randn(B, C, S, S, generator=_gen(42))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_op_keeps_shape_dtype_and_finite_values(op, dtype, batch):
    x = batch.to(dtype)
    out = OPS[op](x, _gen())
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert not torch.equal(out, x)


@pytest.mark.parametrize("op", OPS)
def test_each_op_draws_its_parameters_per_sample(op):
    """The same image repeated B times comes out as B different images."""
    one = torch.randn(1, C, S, S, generator=_gen(1)).expand(B, -1, -1, -1).contiguous()
    out = OPS[op](one, _gen(3))
    assert len({out[i].numpy().tobytes() for i in range(B)}) > 1


@pytest.mark.parametrize("op", OPS)
def test_no_op_mixes_bands(op, batch):
    """Changing band 3 of the input, with the same random draws, changes band 3 of the output only."""
    changed = batch.clone()
    changed[:, 3] = torch.randn(B, S, S, generator=_gen(7)) * 5
    a, b = OPS[op](batch, _gen(5)), OPS[op](changed, _gen(5))
    others = [c for c in range(C) if c != 3]
    assert torch.equal(a[:, others], b[:, others])


@pytest.mark.parametrize("op", ZERO_PRESERVING)
def test_a_single_nonzero_band_stays_alone(op):
    x = torch.zeros(B, C, S, S)
    x[:, 3] = torch.rand(B, S, S, generator=_gen(2)) + 1.0
    out = OPS[op](x, _gen(4))
    others = [c for c in range(C) if c != 3]
    assert torch.all(out[:, others] == 0)


def test_flip_rotate_moves_pixels_exactly_and_covers_the_eight_symmetries():
    """Each sample is one of the 8 symmetries of the square applied to the input, the same one on
    every band, and with enough samples all 8 appear."""
    n = 64
    x = torch.randn(1, C, S, S, generator=_gen(0)).expand(n, -1, -1, -1).contiguous()
    out = random_flip_rotate(x, generator=_gen(1))
    symmetries = [torch.rot90(t, k, dims=(-2, -1)) for t in (x[0], x[0].flip(-1)) for k in range(4)]
    seen = set()
    for i in range(n):
        matches = [j for j, s in enumerate(symmetries) if torch.equal(out[i], s)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_flip_rotate_keeps_non_square_shapes():
    x = torch.randn(16, C, 16, 24, generator=_gen(0))
    out = random_flip_rotate(x, generator=_gen(1))
    assert out.shape == x.shape
    for i in range(16):  # a permutation of the pixels of each band
        assert torch.equal(out[i].flatten(1).sort(dim=1).values, x[i].flatten(1).sort(dim=1).values)


def test_gain_offset_is_affine_per_sample_and_band(batch):
    out = band_gain_offset(batch, 0.3, 0.3, generator=_gen())
    # Fit out = gain * x + offset for every (sample, band) plane: an exact fit, with gains that
    # differ across bands and samples.
    x, y = batch.double().flatten(2), out.double().flatten(2)          # (B, C, S*S)
    xc, yc = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    gain = (xc * yc).sum(-1) / (xc * xc).sum(-1)                       # (B, C)
    offset = y.mean(-1) - gain * x.mean(-1)
    torch.testing.assert_close(y, gain[..., None] * x + offset[..., None], rtol=0, atol=1e-5)
    assert gain.std(dim=1).min() > 0.05 and gain.std(dim=0).min() > 0.05
    assert offset.std(dim=1).min() > 0.05


def test_band_dropout_zeroes_some_bands_never_all():
    x = torch.randn(500, C, 4, 4, generator=_gen(0)) + 3.0  # no pixel is 0 by chance
    out = band_dropout(x, prob=1.0, max_fraction=1.0, generator=_gen(1))
    dropped = (out == 0).all(dim=(2, 3))                       # (N, C)
    kept = (out == x).all(dim=(2, 3))
    assert torch.all(dropped ^ kept)                           # each band either whole or gone
    counts = dropped.sum(dim=1)
    assert counts.min() == 1 and counts.max() == C - 1         # even max_fraction=1 keeps one band
    assert dropped.any(dim=0).all()                            # every band gets dropped sometimes


def test_band_dropout_probability_and_fraction():
    x = torch.randn(2000, 10, 2, 2, generator=_gen(0)) + 3.0
    out = band_dropout(x, prob=0.25, max_fraction=0.3, generator=_gen(1))
    counts = (out == 0).all(dim=(2, 3)).sum(dim=1)
    assert abs((counts > 0).float().mean().item() - 0.25) < 0.04
    assert counts.max() == 3
    assert torch.equal(band_dropout(x[:, :1], prob=1.0, generator=_gen(1)), x[:, :1])  # one band: kept


def test_crop_keeps_size_and_full_crop_is_identity(batch):
    out = random_resized_crop(batch, (0.1, 0.3), generator=_gen())
    assert out.shape == batch.shape
    whole = random_resized_crop(batch, (1.0, 1.0), (1.0, 1.0), generator=_gen())
    torch.testing.assert_close(whole, batch, rtol=0, atol=1e-5)
    wide = torch.randn(2, 3, 20, 36, generator=_gen(1))
    assert random_resized_crop(wide, (0.3, 0.5), generator=_gen()).shape == wide.shape


def test_crop_zooms_into_a_box_of_the_image():
    """A horizontal ramp stays a monotone ramp after cropping, but over a narrower range."""
    ramp = torch.linspace(-1, 1, S).expand(B, 1, S, S).contiguous()
    out = random_resized_crop(ramp, (0.2, 0.3), (1.0, 1.0), generator=_gen())
    rows = out[:, 0]                                             # (B, S, S)
    assert torch.all(rows.diff(dim=-1) > 0)
    assert torch.all(rows.amax(dim=(1, 2)) - rows.amin(dim=(1, 2)) < 1.2)
    assert torch.all(rows.amin(dim=(1, 2)) >= -1) and torch.all(rows.amax(dim=(1, 2)) <= 1)


def test_blur_preserves_constant_bands_and_smooths_noise():
    flat = torch.full((2, C, S, S), 2.5)
    torch.testing.assert_close(gaussian_blur(flat, (1.0, 2.0), prob=1.0, generator=_gen()), flat)
    noisy = torch.randn(B, C, S, S, generator=_gen(1))
    assert gaussian_blur(noisy, (1.0, 2.0), prob=1.0, generator=_gen()).std() < 0.6 * noisy.std()
    assert torch.equal(gaussian_blur(noisy, (1.0, 2.0), prob=0.0, generator=_gen()), noisy)


def test_noise_has_the_requested_spread(batch):
    out = gaussian_noise(batch, 0.1, prob=1.0, generator=_gen())
    assert (out - batch).std().item() == pytest.approx(0.1, rel=0.05)


def test_views_are_two_different_augmentations_of_the_batch(batch):
    views = MultispectralViews(generator=_gen())
    v1, v2 = views(batch)
    for v in (v1, v2):
        assert v.shape == batch.shape and v.dtype == batch.dtype and torch.isfinite(v).all()
    assert not torch.equal(v1, v2)
    assert not torch.equal(v1, batch)


def test_views_are_reproducible_with_a_generator(batch):
    a = MultispectralViews(generator=_gen(9))(batch)
    b = MultispectralViews(generator=_gen(9))(batch)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_views_with_every_op_off_return_the_batch(batch):
    views = MultispectralViews(crop_scale=(1.0, 1.0), flip_rotate=False, blur_prob=0.0, gain_std=0.0,
                               offset_std=0.0, band_dropout_prob=0.0, noise_prob=0.0)
    v1, v2 = views(batch)
    assert torch.equal(v1, batch) and torch.equal(v2, batch)


def test_view_config_round_trips_through_json_lists():
    config = ViewConfig(crop_scale=[0.5, 1.0], blur_sigma=[0.2, 1.0])
    assert config.crop_scale == (0.5, 1.0) and config.blur_sigma == (0.2, 1.0)
    assert ViewConfig(**config.to_dict()) == config
    with pytest.raises(ValueError, match="crop_scale"):
        ViewConfig(crop_scale=(0.0, 1.0))
