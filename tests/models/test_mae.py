"""MAE: patch layout, masking, the loss against a hand-written reference, reconstructions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _tiny import TINY_ENCODER
from eossl.models.backbones import Encoder
from eossl.models.mae import MAE, cached_positions, norm_pix_target, sincos_pos_embed, take_tokens

C, S, P = 5, 32, 8  # bands, image size, patch size
L = (S // P) ** 2


def _mae(norm_pix_loss=True, mask_ratio=0.75, in_chans=C, img_size=S):
    torch.manual_seed(0)
    enc = Encoder(**{**TINY_ENCODER, "patch_size": P}, in_chans=in_chans, img_size=img_size)
    return MAE(enc, mask_ratio=mask_ratio, decoder_dim=32, decoder_depth=1, decoder_heads=2,
               norm_pix_loss=norm_pix_loss)


@pytest.fixture(scope="module")
def mae():
    return _mae().eval()


def _reference_patches(imgs: np.ndarray, p: int) -> np.ndarray:
    """(B, C, H, W) -> (B, L, p*p*C) by explicit loops: row-major patches, each flattened as
    (row-in-patch, col-in-patch, band)."""
    B, Cn, H, W = imgs.shape
    out = []
    for b in range(B):
        rows = []
        for i in range(H // p):
            for j in range(W // p):
                block = imgs[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (C, p, p)
                rows.append(block.transpose(1, 2, 0).reshape(-1))
        out.append(rows)
    return np.asarray(out)


def test_patchify_matches_loops_and_unpatchify_inverts_it(mae):
    imgs = torch.randn(2, C, S, 24)  # non-square too
    patches = mae.patchify(imgs)
    assert patches.shape == (2, (S // P) * (24 // P), P * P * C)
    np.testing.assert_array_equal(patches.numpy(), _reference_patches(imgs.numpy(), P))
    back = mae.unpatchify(patches, S // P, 24 // P)
    assert torch.equal(back, imgs)


def test_random_masking_counts_and_restore_order():
    torch.manual_seed(1)
    B, n, D = 4, 64, 3
    x = torch.arange(B * n * D, dtype=torch.float32).reshape(B, n, D)
    kept, mask, ids_restore = MAE.random_masking(x, 0.75)
    assert kept.shape == (B, 16, D) and mask.shape == (B, n) and ids_restore.shape == (B, n)
    assert torch.all(mask.sum(dim=1) == n - 16)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    for b in range(B):
        # ids_restore is a permutation of 0..L-1
        assert sorted(ids_restore[b].tolist()) == list(range(n))
        # the kept tokens are exactly the unmasked ones, no duplicates
        kept_rows = {int(v) for v in kept[b, :, 0]}
        visible_rows = {int(v) for v in x[b, mask[b] == 0, 0]}
        assert kept_rows == visible_rows and len(kept_rows) == 16
    # Append placeholders for the hidden tokens and unshuffle: the original order comes back, with
    # the visible tokens in place and placeholders exactly where mask == 1.
    filler = torch.full((B, n - 16, D), -1.0)
    restored = torch.gather(torch.cat([kept, filler], dim=1), 1, ids_restore.unsqueeze(-1).expand(-1, -1, D))
    visible = mask == 0
    assert torch.equal(restored[visible], x[visible])
    assert torch.all(restored[~visible] == -1.0)


@pytest.mark.parametrize("ratio,n,expected_keep", [(0.5, 10, 5), (0.9, 10, 1), (0.99, 16, 1), (0.25, 16, 12)])
def test_random_masking_keep_count(ratio, n, expected_keep):
    kept, mask, _ = MAE.random_masking(torch.randn(2, n, 4), ratio)
    assert kept.shape[1] == expected_keep
    assert torch.all(mask.sum(dim=1) == n - expected_keep)


def test_random_masking_differs_between_samples():
    torch.manual_seed(0)
    _, mask, _ = MAE.random_masking(torch.randn(8, 64, 2), 0.75)
    assert len({tuple(m.tolist()) for m in mask}) > 1


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_forward_loss_matches_a_reference(norm_pix_loss):
    model = _mae(norm_pix_loss=norm_pix_loss)
    g = torch.Generator().manual_seed(3)
    imgs = torch.randn(3, C, S, S, generator=g) * 2 + 1
    pred = torch.randn(3, L, P * P * C, generator=g)
    mask = (torch.rand(3, L, generator=g) < 0.6).float()
    mask[0, 0] = 1.0  # at least one hidden patch
    loss = model.forward_loss(imgs, pred, mask)

    x, pr, m = imgs.double().numpy(), pred.double().numpy(), mask.numpy()
    errors = []
    for b in range(3):
        for i in range(S // P):
            for j in range(S // P):
                k = i * (S // P) + j
                if m[b, k] == 0:
                    continue
                target = x[b, :, i * P:(i + 1) * P, j * P:(j + 1) * P].transpose(1, 2, 0).reshape(-1)
                if norm_pix_loss:
                    target = (target - target.mean()) / np.sqrt(target.var(ddof=1) + 1e-6)
                errors.append(np.mean((pr[b, k] - target) ** 2))
    expected = np.mean(errors)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_forward_loss_ignores_visible_patches():
    model = _mae(norm_pix_loss=False)
    imgs = torch.randn(1, C, S, S)
    target = model.patchify(imgs)
    mask = torch.zeros(1, L)
    mask[0, :4] = 1
    pred = target.clone()
    pred[0, 4:] += 100.0  # wrong only where visible
    assert model.forward_loss(imgs, pred, mask).item() == pytest.approx(0.0, abs=1e-10)
    pred[0, 0] += 2.0  # wrong by 2 everywhere in one of 4 hidden patches
    assert model.forward_loss(imgs, pred, mask).item() == pytest.approx(4.0 / 4, rel=1e-6)


def test_forward_shapes_and_training_step(mae):
    imgs = torch.randn(2, C, S, S)
    loss, pred, mask = mae(imgs)
    assert pred.shape == (2, L, P * P * C)
    assert mask.shape == (2, L) and torch.all(mask.sum(1) == L - round(L * 0.25))
    assert loss.ndim == 0 and torch.isfinite(loss)
    _, _, mask_half = mae(imgs, mask_ratio=0.5)
    assert torch.all(mask_half.sum(1) == L // 2)
    loss, logs = mae.training_step(imgs)
    assert torch.isfinite(loss) and loss.requires_grad
    assert set(logs) == {"emb_std"} and logs["emb_std"] > 0


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_training_step_loss_is_forward_loss_on_the_same_mask(norm_pix_loss):
    """training_step runs the pixel head on the hidden patches only; the loss and its gradients
    must be those of forward(), which predicts every patch and masks afterwards."""
    model = _mae(norm_pix_loss=norm_pix_loss)
    imgs = torch.randn(4, C, S, S) * 3 + 1
    torch.manual_seed(7)
    full, _, _ = model(imgs)
    full_grads = torch.autograd.grad(full, [model.decoder_pred.weight, model.encoder.model.patch_embed.proj.weight])
    torch.manual_seed(7)  # the same random mask
    fast, _ = model.training_step(imgs)
    fast_grads = torch.autograd.grad(fast, [model.decoder_pred.weight, model.encoder.model.patch_embed.proj.weight])
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)
    for a, b in zip(full_grads, fast_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_positions_are_cached_per_grid_width_and_dtype(mae):
    like = torch.zeros(1, 1, mae.decoder_embed.out_features)
    first = cached_positions(mae, (4, 4), like)
    assert first is cached_positions(mae, (4, 4), like)
    torch.testing.assert_close(first, sincos_pos_embed(like.shape[-1], 4, 4))
    assert cached_positions(mae, (2, 8), like).shape == (16, like.shape[-1])
    assert cached_positions(mae, (4, 4), like.double()).dtype == torch.float64
    assert cached_positions(mae, (4, 4), torch.zeros(1, 16)).shape == (16, 16)


def test_reconstruct_shapes_and_pasting(mae):
    torch.manual_seed(0)
    imgs = torch.randn(3, C, S, S)
    masked, pasted, mask_img = mae.reconstruct(imgs)
    for t in (masked, pasted, mask_img):
        assert t.shape == imgs.shape and torch.isfinite(t).all()
    assert set(mask_img.unique().tolist()) == {0.0, 1.0}
    # the mask is constant within each patch and all bands
    per_patch = mask_img.reshape(3, C, S // P, P, S // P, P)
    assert torch.all(per_patch.amin(dim=(1, 3, 5)) == per_patch.amax(dim=(1, 3, 5)))
    hidden_fraction = mask_img.mean(dim=(1, 2, 3))
    torch.testing.assert_close(hidden_fraction, torch.full((3,), 0.75))
    visible = mask_img == 0
    assert torch.equal(masked[visible], imgs[visible]) and torch.all(masked[~visible] == 0)
    assert torch.equal(pasted[visible], imgs[visible])
    assert not torch.equal(pasted[~visible], imgs[~visible])


def test_reconstruct_maps_norm_pix_predictions_back_to_patch_statistics():
    """With norm_pix_loss the decoder predicts per-patch standardised pixels; reconstruct must
    give the hidden patches the true patch mean back."""
    model = _mae(norm_pix_loss=True).eval()
    torch.manual_seed(0)
    imgs = torch.randn(2, C, S, S) * 3 + 10
    _, pasted, mask_img = model.reconstruct(imgs)
    rec, truth, m = model.patchify(pasted), model.patchify(imgs), model.patchify(mask_img)[..., 0]
    hidden = m == 1
    # each reconstructed patch is pred * std + mean, so its mean is near the true patch mean
    # (the prediction of an untrained decoder is roughly zero-mean within a patch)
    err = (rec[hidden].mean(-1) - truth[hidden].mean(-1)).abs()
    assert err.max() < 2.0 and (rec[hidden].mean(-1) > 5).all()


def test_sincos_pos_embed_values():
    emb = sincos_pos_embed(8, 3, 4)
    assert emb.shape == (12, 8)
    # position (row 2, col 1) -> index 2 * 4 + 1; first half encodes the row, second the column
    omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
    row = np.concatenate([np.sin(2 * omega), np.cos(2 * omega)])
    col = np.concatenate([np.sin(1 * omega), np.cos(1 * omega)])
    np.testing.assert_allclose(emb[9].numpy(), np.concatenate([row, col]), rtol=1e-6)


def test_mae_sets_fixed_sincos_positions(mae):
    vit = mae.encoder.model
    assert not vit.pos_embed.requires_grad
    torch.testing.assert_close(vit.pos_embed[0, 1:], sincos_pos_embed(mae.encoder.dim, S // P, S // P))
    assert torch.all(vit.pos_embed[0, 0] == 0)


def test_mae_config_records_its_settings():
    model = _mae(norm_pix_loss=False, mask_ratio=0.6)
    assert model.config == dict(mask_ratio=0.6, decoder_dim=32, decoder_depth=1, decoder_heads=2,
                                norm_pix_loss=False)


def test_mae_refuses_a_resnet_encoder():
    with pytest.raises(ValueError, match="ViT") as info:
        MAE(Encoder("resnet18", in_chans=C))
    assert "resnet18" in str(info.value) and "vit_tiny" in str(info.value)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_mae_refuses_mask_ratio_outside_0_1(ratio):
    enc = Encoder(**TINY_ENCODER, in_chans=C, img_size=S)
    with pytest.raises(ValueError, match="mask_ratio must be between 0 and 1") as info:
        MAE(enc, mask_ratio=ratio)
    assert str(ratio) in str(info.value)


def test_take_tokens_is_a_per_sample_gather_also_on_a_sliced_tensor():
    x = torch.randn(3, 7, 5)[:, 1:]  # (3, 6, 5), not contiguous in its first two dims
    ids = torch.tensor([[0, 5], [3, 3], [2, 1]])
    expected = torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, 5))
    torch.testing.assert_close(take_tokens(x, ids), expected)


def test_norm_pix_target_gives_each_patch_zero_mean_and_unit_spread():
    patches = torch.randn(2, 4, 50, dtype=torch.float64) * 7 + 3
    out = norm_pix_target(patches)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 4, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(out.std(-1), torch.ones(2, 4, dtype=torch.float64), atol=1e-6, rtol=0)
