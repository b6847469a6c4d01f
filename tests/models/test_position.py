"""Relative patch position: tile layout and labels, window checks, learning, the round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import eossl
from _tiny import TINY_ENCODER
from eossl.errors import DataError
from eossl.models.backbones import Encoder
from eossl.models.position import NEIGHBOUR_OFFSETS, RelativePosition
from eossl.models.registry import default_encoder


def _vit_model(img_size=64, **config):
    torch.manual_seed(0)
    return RelativePosition(Encoder(**TINY_ENCODER, in_chans=3, img_size=img_size), **config)


def test_neighbour_offsets_are_the_8_cells_around_the_centre_in_reading_order():
    assert len(set(NEIGHBOUR_OFFSETS)) == 8 and (0, 0) not in NEIGHBOUR_OFFSETS
    assert all(abs(dy) <= 1 and abs(dx) <= 1 for dy, dx in NEIGHBOUR_OFFSETS)
    assert list(NEIGHBOUR_OFFSETS) == sorted(NEIGHBOUR_OFFSETS)  # row by row, left to right


@pytest.mark.parametrize("size", [64, 70])
def test_each_label_pairs_the_centre_with_the_right_neighbour(size):
    """Each grid cell holds its own constant (3 * row + column): a tile's value says which cell
    it was cut from."""
    model = _vit_model()
    cell = size // 3
    window = torch.full((1, 3, size, size), -1.0)
    for r in range(3):
        for c in range(3):
            window[..., r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = 3 * r + c
    labels = torch.arange(8).repeat(6)  # every label, several jitters
    centre, neighbour, got = model.cut_tiles(window.expand(48, -1, -1, -1), labels)
    assert torch.equal(got, labels)
    assert centre.shape == neighbour.shape == (48, 3, 16, 16)
    assert torch.all(centre == 4)  # whole tiles inside the centre cell
    for i, label in enumerate(labels.tolist()):
        dy, dx = NEIGHBOUR_OFFSETS[label]
        assert torch.all(neighbour[i] == 3 * (1 + dy) + (1 + dx)), (label, neighbour[i].unique())


def test_tiles_are_jittered_and_kept_apart():
    """A window whose pixels hold their own coordinates shows where each tile was cut."""
    model = _vit_model(min_gap=2)
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    window = torch.stack([rows, cols, rows]).expand(64, -1, -1, -1)
    torch.manual_seed(0)
    centre, neighbour, labels = model.cut_tiles(window)
    assert len(set(labels.tolist())) == 8
    corner_c = centre[:, :2, 0, 0]       # (B, 2) top-left (row, column)
    corner_n = neighbour[:, :2, 0, 0]
    assert len({tuple(c.tolist()) for c in corner_c}) > 1  # jitter
    t = centre.shape[-1]
    step = torch.tensor(NEIGHBOUR_OFFSETS)[labels]  # (B, 2)
    distance = (corner_n - corner_c) * step           # along each axis the neighbour moves on
    moved = step != 0
    assert torch.all(distance[moved] >= t + 2)        # at least min_gap px between the tiles
    # the tiles are contiguous crops of the window
    assert torch.equal(centre[:, 1, 0], corner_c[:, 1:2] + torch.arange(t))


def test_tile_size_follows_patch_size_and_window():
    vit = _vit_model()
    assert vit.tile_size(64, 64) == 16 and vit.tile_size(32, 32) == 8 and vit.tile_size(48, 64) == 8
    cnn = RelativePosition(Encoder("resnet18", in_chans=3, img_size=48))
    assert cnn.tile_size(48, 48) == 12 and cnn.tile_size(64, 64) == 16


def test_too_small_windows_raise_data_error(chips, tmp_path):
    with pytest.raises(DataError, match="at least 30 px") as info:
        _vit_model(img_size=24)
    assert "img_size=32" in str(info.value)
    with pytest.raises(DataError, match="3x3 grid"):
        _vit_model().cut_tiles(torch.zeros(2, 3, 24, 24))
    with pytest.raises(DataError, match="3x3 grid"):
        eossl.pretrain(chips, method="relative_position", steps=1, encoder="resnet18", img_size=16, out=tmp_path)


def test_training_step_logs_and_gradients():
    model = _vit_model()
    loss, logs = model.training_step(torch.randn(4, 3, 64, 64))
    assert loss.requires_grad and set(logs) == {"accuracy", "emb_std"}
    assert 0 <= logs["accuracy"] <= 1 and logs["emb_std"] > 0
    logits, labels, emb = model(torch.randn(4, 3, 64, 64), torch.tensor([0, 3, 5, 7]))
    assert logits.shape == (4, 8) and labels.tolist() == [0, 3, 5, 7] and emb.shape == (4, model.encoder.dim)
    assert model.config == dict(hidden_dim=512, min_gap=2, grid=4)


def test_learns_relative_positions_where_the_layout_gives_them_away(tmp_path):
    """Chips whose brightness rises down and to the right (plus noise): the neighbour's position
    shows in how its brightness differs from the centre's. Accuracy must leave chance (1/8)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:48, 0:48]
    values = (rows + 0.4 * cols)[None, None] / 30 + rng.normal(0, 0.1, (64, 3, 48, 48))
    sloped = xr.DataArray(values.astype("float32"), dims=("sample", "band", "y", "x"),
                          coords={"band": ["b1", "b2", "b3"]})
    run = eossl.pretrain(sloped, method="relative_position", steps=60, batch_size=32, img_size=48, lr=2e-3,
                         encoder=dict(TINY_ENCODER), out=tmp_path)
    loss, accuracy = run.history["loss"].to_numpy(), run.history["accuracy"].to_numpy()
    assert loss[-10:].mean() < loss[:10].mean() - 0.1
    assert accuracy[-20:].mean() > 0.2


@pytest.fixture(scope="module")
def taizhou_west_run(tmp_path_factory):
    """relative_position with its default 2 px gap, trained on the west half of the bundled Taizhou
    Landsat scene (both dates). A patch-4 ViT keeps a 3x3 feature map per 12 px tile, which the
    classifier sees whole. ~25 s on one CPU thread."""
    scene = eossl.datasets.load_sample("taizhou_change").image        # (time, band, 400, 400)
    west, east = scene.isel(x=slice(0, 200)), scene.isel(x=slice(200, None))
    run = eossl.pretrain(west, method="relative_position", steps=1500, batch_size=64, img_size=48,
                         encoder=dict(TINY_ENCODER, patch_size=4), out=tmp_path_factory.mktemp("rp_real"))
    return run, east


def test_learns_relative_positions_on_real_imagery_and_scores_on_unseen_pixels(taizhou_west_run):
    """The loss falls on real Landsat imagery, and what was learned carries over to the east half
    of the scene, whose pixels training never saw: above the 1/8 chance level on 3000 pairs
    (bench_position_signal.py: 19.2 ± 0.4 % over 3 seeds; chance's 99.9 % bound on 3000 pairs ~14.3 %)."""
    run, east = taizhou_west_run
    loss = run.history["loss"].to_numpy()
    assert np.isfinite(loss).all() and loss[-150:].mean() < loss[:150].mean() - 0.1, loss[::150].round(3)
    assert run.model.tile_size(48, 48) == 12 and run.model.grid == 3  # the whole 3x3 map of a tile
    assert run.model.accuracy(east, n=3000) > 0.15
    assert (run.history["emb_std"] > 0.01).all()


def test_accuracy_is_reproducible_and_leaves_the_model_and_rng_alone(taizhou_west_run):
    run, east = taizhou_west_run
    model = run.model.train()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = model.accuracy(east, n=300, seed=5)
    assert torch.equal(torch.rand(3), expected_next)  # global random state untouched
    assert model.training
    assert a == model.accuracy(east, n=300, seed=5) and 0 <= a <= 1
    dataset = eossl.datasets.load_sample("taizhou_change").isel(x=slice(200, None))
    assert model.accuracy(dataset, n=300, seed=5) == a  # a Dataset is read through its image
    model.eval()


def test_grid_is_never_larger_than_the_tile_feature_map():
    vit = _vit_model(grid=8)                      # 16 px tiles, patch 8: a 2x2 map
    assert vit.grid == 2 and vit.classifier[0].in_features == 2 * vit.encoder.dim * 4
    cnn = RelativePosition(Encoder("resnet18", in_chans=3, img_size=48))  # 12 px tiles: 1x1 map
    assert cnn.grid == 1 and cnn.classifier[0].in_features == 2 * cnn.encoder.dim
    pooled = _vit_model(grid=1)
    logits, _, emb = pooled(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 8) and emb.shape == (2, pooled.encoder.dim)
    with pytest.raises(ValueError, match="grid"):
        _vit_model(grid=0)


@pytest.mark.parametrize("encoder,img_size", [("resnet18", 32), (dict(TINY_ENCODER), 32)])
def test_pretrain_on_chips_and_load_model_round_trip(chips, tmp_path, encoder, img_size):
    run = eossl.pretrain(chips, method="relative_position", steps=3, batch_size=8, img_size=img_size,
                         encoder=encoder, out=tmp_path)
    history = run.history
    assert np.isfinite(history["loss"]).all() and {"accuracy", "emb_std"} <= set(history)
    loaded = eossl.load_model(tmp_path)
    assert isinstance(loaded, RelativePosition) and loaded.config == run.model.config
    ref, got = run.model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    few = chips.isel(sample=slice(0, 6))
    a, b = eossl.embed(run.model, few), eossl.embed(loaded, few)
    assert a.shape == (6, loaded.encoder.dim)
    np.testing.assert_array_equal(a.values, b.values)


def test_registered_with_a_resnet_default():
    assert "relative_position" in eossl.methods()
    assert default_encoder("relative_position")["name"] == "resnet18"
