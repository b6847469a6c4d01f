"""Change scores, the change-vector baseline, their evaluation against labels, and k-means maps."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import eossl
from eossl.analysis.change import patch_labels
from eossl.errors import DataError


def _grid(values, crs="EPSG:32633"):
    values = np.asarray(values, dtype="float64")
    rows, cols = values.shape[:2]
    da = xr.DataArray(values, dims=("y", "x", "dim"),
                      coords={"y": 1000.0 - 80 * np.arange(rows), "x": 500.0 + 80 * np.arange(cols)})
    return da.rio.write_crs(crs)


def test_change_is_the_cosine_distance_per_patch():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4, 5))
    b = a.copy()
    b[1, 2] = -a[1, 2]          # opposite: distance 2
    b[0, 0] = 3 * a[0, 0]       # same direction: distance 0
    b[2, 3] = rng.normal(size=5)
    score = eossl.change(_grid(a), _grid(b), standardize=False, metric="cosine")
    assert score.dims == ("y", "x") and score.rio.crs.to_epsg() == 32633
    expected = 1 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    np.testing.assert_allclose(score.values, expected, atol=1e-9)
    assert score.values[1, 2] == pytest.approx(2.0) and score.values[0, 0] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(score["x"].values, _grid(a)["x"].values)


def test_change_standardises_each_date_so_a_shared_shift_is_not_change():
    """Date 2 = date 1 moved as a whole (a new season or stretch) plus one patch that really changed:
    the raw cosine distance is high everywhere, the standardised score singles out that patch."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 6, 8))
    b = a + 4.0 * rng.normal(size=8)                  # the same shift for every patch
    b[2, 3] = rng.normal(size=8) * 3
    raw = eossl.change(_grid(a), _grid(b), standardize=False, metric="cosine").values
    score = eossl.change(_grid(a), _grid(b), metric="cosine")
    others = np.delete(score.values.ravel(), 2 * 6 + 3)
    assert np.median(np.delete(raw.ravel(), 2 * 6 + 3)) > 0.3       # the shift dominates the raw score
    assert score.values[2, 3] > 0.5 and others.max() < 0.2
    assert int(np.nanargmax(score.values)) == 2 * 6 + 3
    assert "standardised" in score.attrs["description"]
    # the standardised score equals the cosine distance of the standardised vectors
    za = (a - a.reshape(-1, 8).mean(0)) / a.reshape(-1, 8).std(0)
    zb = (b - b.reshape(-1, 8).mean(0)) / b.reshape(-1, 8).std(0)
    expected = 1 - (za * zb).sum(-1) / (np.linalg.norm(za, axis=-1) * np.linalg.norm(zb, axis=-1))
    np.testing.assert_allclose(score.values, expected, atol=1e-9)


def test_change_default_is_the_rms_difference_of_the_standardised_vectors():
    """The default metric: |za - zb| / sqrt(dim), the distance change_vector takes between band
    means. A patch that moves from the date's mean to far out along the same direction scores
    high here and zero under the cosine distance."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 6, 8))
    b = a + 0.05 * rng.normal(size=(5, 6, 8))
    b[1, 1] = 6 * a[1, 1]                                 # same direction, much farther out
    score = eossl.change(_grid(a), _grid(b))
    assert score.attrs["metric"] == "euclidean" and "root-mean-square" in score.attrs["description"]
    za = (a - a.reshape(-1, 8).mean(0)) / a.reshape(-1, 8).std(0)
    zb = (b - b.reshape(-1, 8).mean(0)) / b.reshape(-1, 8).std(0)
    np.testing.assert_allclose(score.values, np.sqrt(((za - zb) ** 2).mean(-1)), atol=1e-9)
    assert int(np.nanargmax(score.values)) == 1 * 6 + 1
    raw = eossl.change(_grid(a), _grid(b), standardize=False)
    np.testing.assert_allclose(raw.values, np.linalg.norm(a - b, axis=-1) / np.sqrt(8), atol=1e-9)
    assert eossl.change(_grid(a), _grid(b), standardize=False, metric="cosine").values[1, 1] < 1e-9
    with pytest.raises(eossl.ParameterError, match="metric"):
        eossl.change(_grid(a), _grid(b), metric="manhattan")


def test_change_keeps_nodata_patches_out_of_the_statistics():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 4, 6))
    b = a.copy()
    a[0, 0] = np.nan
    score = eossl.change(_grid(a), _grid(b)).values
    assert np.isnan(score[0, 0]) and np.nanmax(score) < 1e-9
    with pytest.raises(DataError, match="no patch has a valid embedding"):
        eossl.change(_grid(np.full((2, 2, 3), np.nan)), _grid(b[:2, :2, :3]))


def test_change_refuses_embeddings_on_other_grids():
    a = _grid(np.ones((3, 4, 2)))
    with pytest.raises(DataError, match="different grids"):
        eossl.change(a, _grid(np.ones((4, 4, 2))))
    shifted = a.assign_coords(x=a["x"] + 80)
    with pytest.raises(DataError, match="do not cover the same ground"):
        eossl.change(a, shifted)


def test_patch_labels_majority_and_unknown():
    labels = np.zeros((4, 6), "uint8")   # 2x3 patches of 2 px
    labels[0:2, 0:2] = 2                 # changed
    labels[0:2, 2:4] = 1                 # unchanged
    labels[2, 4] = 2                     # one labeled pixel of four: unknown at min_labeled 0.5
    out = patch_labels(xr.DataArray(labels, dims=("y", "x")), 2)
    assert out.tolist() == [[1, 0, -1], [-1, -1, -1]]


def test_change_vector_finds_the_labeled_change_of_the_landsat_pair(taizhou):
    image = taizhou.image
    cva = eossl.change_vector(image.isel(time=0), image.isel(time=1), 8)
    assert cva.shape == (50, 50) and cva.rio.crs == image.rio.crs
    result = eossl.evaluate_change(cva, taizhou.change, 8)
    assert result["auc"] > 0.9 and result["f1"] > 0.8  # a strong baseline on this pair
    assert result["patches"] == int((patch_labels(taizhou.change, 8) >= 0).sum())


def test_change_vector_refuses_images_of_other_ground_and_marks_nodata(taizhou):
    first, second = taizhou.image.isel(time=0), taizhou.image.isel(time=1)
    with pytest.raises(DataError, match="differ in size"):
        eossl.change_vector(first, second.isel(x=slice(0, 300)), 8)
    with pytest.raises(DataError, match="do not cover the same ground"):
        eossl.change_vector(first, second.assign_coords(x=second["x"] + 30 * 400), 8)
    holey = second.astype("float32").copy()
    holey.values[:, 3, 10] = 255.0  # one nodata pixel in patch (0, 1)
    holey.attrs["nodata"] = 255.0
    cva = eossl.change_vector(first, holey, 8)
    assert np.isnan(cva.values[0, 1]) and np.isfinite(cva.values).sum() == 50 * 50 - 1


def test_change_vector_ignores_a_global_stretch(taizhou):
    """A date that is only brighter everywhere has no change once each date is standardised."""
    image = taizhou.image.isel(time=0).astype("float64")
    cva = eossl.change_vector(image, image * 1.5 + 10, 8)
    np.testing.assert_allclose(cva.values, 0, atol=1e-4)


def test_evaluate_change_needs_both_classes(taizhou):
    score = xr.DataArray(np.random.default_rng(0).random((50, 50)), dims=("y", "x"))
    only_unchanged = taizhou.change.where(taizhou.change != 2, 1)
    with pytest.raises(DataError, match="all of one class"):
        eossl.evaluate_change(score, only_unchanged, 8)
    with pytest.raises(DataError, match="patch grid"):
        eossl.evaluate_change(score.isel(y=slice(0, 10)), taizhou.change, 8)


def test_cluster_gives_a_georeferenced_class_map():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 5
    truth = rng.integers(0, 3, size=(6, 7))
    values = centres[truth] + 0.01 * rng.normal(size=(6, 7, 4))
    values[0, 0] = np.nan
    clusters = eossl.cluster(_grid(values), k=3)
    assert clusters.dims == ("y", "x") and clusters.rio.crs.to_epsg() == 32633
    assert clusters.values[0, 0] == -1
    ok = np.ones_like(truth, bool)
    ok[0, 0] = False
    # the clusters are the true groups up to renaming
    pairs = {(t, c) for t, c in zip(truth[ok], clusters.values[ok])}
    assert len(pairs) == 3 and len({c for _, c in pairs}) == 3
    assert len(clusters.attrs["centres"]) == 3


def test_cluster_chips_and_too_few_vectors(chips):
    emb = eossl.band_statistics(chips)
    labels = eossl.cluster(emb, k=4)
    assert labels.dims == ("sample",) and set(np.unique(labels.values)) == {0, 1, 2, 3}
    assert labels["label"].values.tolist() == chips["label"].values.tolist()
    with pytest.raises(DataError, match="cannot make 200 clusters"):
        eossl.cluster(emb, k=200)


def test_patch_size_is_read_from_the_embeddings_and_the_score_map(taizhou):
    image = taizhou.image
    cva = eossl.change_vector(image.isel(time=0), image.isel(time=1), 8)
    assert cva.attrs["patch_size"] == 8
    assert eossl.evaluate_change(cva, taizhou.change) == eossl.evaluate_change(cva, taizhou.change, 8)
    rows, cols = cva.shape
    emb = xr.DataArray(np.zeros((rows, cols, 4)), dims=("y", "x", "dim"), attrs={"patch_size": 8})
    np.testing.assert_array_equal(eossl.change_vector(image.isel(time=0), image.isel(time=1), emb).values,
                                  cva.values)
    score = eossl.change(emb.assign_coords(y=cva.y, x=cva.x), (emb + 1).assign_coords(y=cva.y, x=cva.x),
                         standardize=False)
    assert score.attrs["patch_size"] == 8
    bare = cva.copy()
    bare.attrs = {}
    with pytest.raises(DataError, match="carries no 'patch_size'"):
        eossl.evaluate_change(bare, taizhou.change)
