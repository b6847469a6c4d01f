"""Place contrast: pairs of looks at one place, shifted crops, the loss, and training from any data."""

from __future__ import annotations

import numpy as np
import torch

import eossl
from eossl.data.patches import PatchSampler
import torch.nn.functional as F

from eossl.models.place import PlaceContrast, dense_nt_xent, shifted_crops, to_window_frame
from eossl.models.registry import build_method


def test_shifted_crops_are_turned_windows_of_the_input():
    torch.manual_seed(0)
    windows = torch.randn(6, 3, 12, 12)
    views = shifted_crops(windows, 8)
    assert views.shape == (6, 3, 8, 8)
    for i in range(6):  # each view is one of the 8 flips/turns of some 8x8 window of its own input
        found = False
        for r in range(5):
            for c in range(5):
                crop = windows[i, :, r:r + 8, c:c + 8]
                for flipped in (crop, crop.flip(-1)):
                    for k in range(4):
                        found |= torch.equal(torch.rot90(flipped, k, dims=(1, 2)), views[i])
        assert found


def test_to_window_frame_puts_each_token_back_over_its_crop():
    """A patch-mean 'encoder' on the turned/flipped views, put back in the window frame, equals
    the patch means of the un-turned crop at the returned offset, for every sample."""
    torch.manual_seed(1)
    windows = torch.randn(16, 3, 40, 40)
    views, (offsets, flip, turns) = shifted_crops(windows, 32, return_geometry=True)
    assert set(turns.tolist()) == {0, 1, 2, 3} and flip.any() and not flip.all()
    back = to_window_frame(F.avg_pool2d(views, 4), flip, turns)               # (B, C, 8, 8)
    for b in range(16):
        r, c = offsets[b].tolist()
        crop = windows[b:b + 1, :, r:r + 32, c:c + 32]
        torch.testing.assert_close(back[b], F.avg_pool2d(crop, 4)[0], atol=1e-6, rtol=0)


def test_dense_nt_xent_pairs_the_tokens_over_the_same_ground():
    """Grids whose tokens are a code of the ground under them: the loss is near 0 when each token
    of look 1 is matched with look 2's token over the same ground (offsets a whole number of
    patches apart), and high when the offsets say the grids lie elsewhere."""
    torch.manual_seed(2)
    ground = F.normalize(torch.randn(4, 16, 10, 10), dim=1)      # (B, P, 10x10 tokens of the window)
    o1 = torch.tensor([[0, 8], [4, 4], [8, 0], [0, 0]])           # px offsets of the crops, patch 4
    o2 = torch.tensor([[8, 0], [4, 0], [0, 8], [8, 8]])
    cut = lambda o: torch.stack([ground[b, :, o[b, 0] // 4:o[b, 0] // 4 + 8, o[b, 1] // 4:o[b, 1] // 4 + 8]
                                 for b in range(4)])              # (B, P, 8, 8) token grid of each crop
    g1, g2 = cut(o1), cut(o2)
    right = dense_nt_xent(g1, g2, o1, o2, patch=4, max_shift=8, temperature=0.05)
    wrong = dense_nt_xent(g1, g2, o2, o1, patch=4, max_shift=8, temperature=0.05)
    assert right < 0.05 and wrong > 1.0


def test_dense_weight_adds_the_token_term_and_trains(slovenia, tmp_path):
    run = eossl.pretrain(slovenia, method="place_contrast", steps=6, batch_size=8, img_size=24, dense_weight=1.0,
                         encoder={"name": "vit_tiny", "patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2},
                         out=tmp_path, tensorboard=False)
    h = run.history
    assert run.model.config["dense_weight"] == 1.0 and {"place_loss", "dense_loss"} <= set(h.columns)
    np.testing.assert_allclose(h["loss"], h["place_loss"] + h["dense_loss"], rtol=1e-5)
    assert eossl.load_model(run.checkpoint_path).config["dense_weight"] == 1.0


def test_sampler_pairs_take_another_date_of_a_stack_and_the_same_chip(slovenia, chips):
    rng = np.random.default_rng(0)
    stack = PatchSampler(slovenia.image, 40, augment=False)
    pairs = stack.sample_pairs(8, rng)
    assert pairs.shape == (8, 2, 13, 40, 40)
    images = stack.pickers[0].images  # (5, 13, 101, 100) normalised
    for first, second in pairs:  # both looks are the same window on two different dates
        where = [(t, r, c) for t in range(5) for r in range(62) for c in range(61)
                 if np.array_equal(images[t, :, r:r + 40, c:c + 40], first)]
        assert len(where) == 1
        _, r, c = where[0]
        dates = [t for t in range(5) if np.array_equal(images[t, :, r:r + 40, c:c + 40], second)]
        assert dates and dates[0] != where[0][0]
    same = PatchSampler(chips, 40, augment=False).sample_pairs(4, rng)  # chips: no other date
    np.testing.assert_array_equal(same[:, 0], same[:, 1])


def test_window_size_and_config_round_trip():
    spec = {"name": "vit_tiny", "patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2,
            "in_chans": 13, "img_size": 24}
    model = build_method("place_contrast", spec, {"max_shift": 6})
    assert model.crop == 24 and PlaceContrast.window_size(24, model.config) == 30
    again = build_method("place_contrast", spec, model.config)
    assert again.config == model.config


def test_trains_on_a_stack_and_learns_the_pairs(slovenia, tmp_path):
    """A few steps on the Slovenia stack: the contrastive loss falls, and below its chance level
    log(2B - 1) (the two looks of a place are told apart from the other places of the batch)."""
    run = eossl.pretrain(slovenia, method="place_contrast", steps=30, batch_size=16, img_size=24,
                         encoder={"name": "vit_tiny", "patch_size": 4, "depth": 1, "embed_dim": 48, "num_heads": 2},
                         out=tmp_path, tensorboard=False)
    assert run.model.card["method"] == "place_contrast" and run.model.config["crop"] == 24
    loss = run.history["loss"]
    assert loss.iloc[-5:].mean() < min(loss.iloc[:5].mean(), np.log(2 * 16 - 1))
    emb = eossl.embed(run.model, slovenia.image.isel(time=0))
    assert emb.dims == ("y", "x", "dim") and np.isfinite(emb.values).all()


def test_in_methods():
    assert "place_contrast" in eossl.methods() and "date" in eossl.methods()["place_contrast"]
