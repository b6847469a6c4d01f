"""Shared pieces: label draws, class resolution, grid checks, losses, metrics and tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from eossl.errors import DataError
from eossl.finetune.loop import (check_grid, class_weights, draw, loss_fn, metrics_table, random_model,
                                 resolve_classes, tile_size, window_starts)


def test_draw_takes_shots_per_class_and_holds_out_the_rest():
    index = np.array([0] * 10 + [1] * 5 + [-1] * 7)
    train, test = draw(index, 3, [0, 1], ["a", "b"], np.random.default_rng(0), 0.25, "pixel")
    assert len(train) == 6 and np.bincount(index[train]).tolist() == [3, 3]
    assert set(train).isdisjoint(test) and len(test) == 9 and (index[test] >= 0).all()
    train, test = draw(index, None, [0, 1], ["a", "b"], np.random.default_rng(0), 0.2, "pixel")
    assert np.bincount(index[train]).tolist() == [8, 4]


def test_a_budget_larger_than_the_labels_is_an_error_naming_the_class():
    index = np.array([0] * 10 + [1] * 5)
    with pytest.raises(DataError, match=r"class 'b' has 5 labeled pixels.*at most shots=4"):
        draw(index, 5, [0, 1], ["a", "b"], np.random.default_rng(0), 0.25, "pixel")
    with pytest.raises(DataError, match="at least 1"):
        draw(index, 0, [0, 1], ["a", "b"], np.random.default_rng(0), 0.25, "pixel")


def test_classes_skip_nodata_by_name_and_missing_classes_are_errors():
    values = np.array([[0, 1, 2], [2, 8, 0]])
    names = {0: "no data", 1: "cultivated land", 2: "forest", 8: "artificial surface"}
    classes, labels, ignored = resolve_classes(values, names)
    assert classes == [1, 2, 8] and labels == ["cultivated land", "forest", "artificial surface"]
    assert ignored == [0]
    assert resolve_classes(values, names, classes=[8, 2])[0] == [8, 2]
    with pytest.raises(DataError, match=r"classes \[5\] have no labeled example"):
        resolve_classes(values, names, classes=[2, 5])
    with pytest.raises(DataError, match="at least two classes"):
        resolve_classes(np.array([0, 2, 2]), names)


def _raster(h=4, w=5, crs="EPSG:32633", x0=500.0):
    da = xr.DataArray(np.zeros((h, w)), dims=("y", "x"),
                      coords={"y": 1000.0 - 10 * np.arange(h), "x": x0 + 10 * np.arange(w)})
    return da.rio.write_crs(crs)


def test_labels_on_another_grid_are_refused():
    image = _raster().expand_dims(band=["B1"])
    check_grid(image, _raster())  # same grid: fine
    with pytest.raises(DataError, match="different grid.*reproject_match"):
        check_grid(image, _raster(h=3))
    with pytest.raises(DataError, match="other x coordinates"):
        check_grid(image, _raster(x0=530.0))
    with pytest.raises(DataError, match="EPSG:4326"):
        check_grid(image, _raster(crs="EPSG:4326"))


def test_focal_loss_with_gamma_zero_is_cross_entropy_and_down_weights_easy_items():
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.5], [1.0, 0.0]])
    target = torch.tensor([0, 1, -1])
    ce = loss_fn(logits, target, None, "ce")
    from eossl.finetune.loop import F
    focal0 = F.cross_entropy(logits[:2], target[:2])
    torch.testing.assert_close(ce, focal0)
    focal = loss_fn(logits, target, None, "focal")
    assert focal < ce  # the easy first item hardly counts
    with pytest.raises(ValueError, match="'ce' or 'focal'"):
        loss_fn(logits, target, None, "hinge")


def test_balanced_class_weights_are_inverse_frequency():
    w = class_weights(np.array([0, 0, 0, 1, -1]), 2, "balanced")
    torch.testing.assert_close(w, torch.tensor([4 / 6, 4 / 2]))
    assert class_weights(np.array([0, 1]), 2, None) is None
    with pytest.raises(ValueError):
        class_weights(np.array([0, 1]), 3, [1.0, 2.0])


def test_metrics_table_matches_scikit_learn():
    from sklearn.metrics import jaccard_score, precision_recall_fscore_support
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    table = metrics_table(y, p, ["a", "b", "c"])
    pr, rc, f1, sup = precision_recall_fscore_support(y, p, labels=[0, 1, 2], zero_division=0)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "precision"], pr)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "recall"], rc)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "f1"], f1)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "iou"], jaccard_score(y, p, average=None))
    assert table.loc["overall", "recall"] == pytest.approx((y == p).mean())
    assert table.loc["macro", "f1"] == pytest.approx(f1.mean())


def test_tiles_cover_the_scene_and_fit_the_patch_grid():
    for length, window, stride in [(101, 64, 48), (64, 64, 48), (70, 32, 16)]:
        starts = window_starts(length, window, stride)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s:s + window] = True
        assert covered.all() and starts[-1] + window == length
    assert tile_size(101, 64, 8) == 64 and tile_size(50, 64, 8) == 48
    with pytest.raises(DataError, match="smaller than one 8 px patch"):
        tile_size(5, 64, 8)


def test_random_model_is_normalised_with_the_data_statistics(taizhou):
    base = random_model(taizhou.image, {"name": "vit_tiny", "patch_size": 8, "depth": 1, "embed_dim": 48,
                                        "num_heads": 2})
    assert [b["name"] for b in base.card["bands"]] == taizhou.band.values.tolist()
    mean = taizhou.image.values.astype("float64").mean(axis=(0, 2, 3))
    np.testing.assert_allclose(base.card["normalization"]["mean"], mean, rtol=1e-6)
    assert base.card["method"] == "random" and base.encoder.in_chans == 6
