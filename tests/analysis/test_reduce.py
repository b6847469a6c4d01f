"""pca_rgb and umap: embeddings to pictures, keeping coordinates, CRS and labels."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import xarray as xr

import eossl
from eossl.errors import DataError


@pytest.fixture(scope="module")
def grid(tiny_run, slovenia):
    """An embedding map (y, x, dim) of one Slovenia date, with a few NaN patches."""
    scene = slovenia["image"].isel(time=2).astype("float32").copy()
    scene[:, 3, 3] = np.nan      # patch (0, 0)
    scene[:, 70, 40] = np.nan    # patch (8, 5)
    return eossl.embed(tiny_run.model, scene)


@pytest.fixture(scope="module")
def chip_emb(tiny_run, chips):
    return eossl.embed(tiny_run.model, chips)


@pytest.fixture(scope="module")
def umap_points(chip_emb):
    """The suite's one real UMAP (numba compiles on the first call): 4 chips per class."""
    few = chip_emb.isel(sample=np.concatenate([np.arange(c * 12, c * 12 + 4) for c in range(10)]))
    return few, eossl.umap(few, n_neighbors=5, pca_dims=10)


def test_umap_switches_on_numbas_disk_cache_for_umap_learn(umap_points):
    """umap-learn's jitted functions come without cache=True; after eossl.umap they write to and
    load from numba's on-disk cache, so a fresh kernel does not compile them again."""
    import umap.layouts
    import umap.umap_
    from numba.core.caching import NullCache

    from eossl.analysis.reduce import _umap_learn
    for fn in (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths,
               umap.layouts._nb_optimize_layout_euclidean_single_epoch):
        assert not isinstance(fn._cache, NullCache), fn
    # the parallel twin of the serial epoch shares its source, hence numba's cache file: left alone
    assert isinstance(umap.layouts._nb_optimize_layout_euclidean_single_epoch_parallel._cache, NullCache)
    assert _umap_learn() is sys.modules["umap"]  # a second call changes nothing and still works


def _stretched_pcs(values):
    """Reference: PCA by SVD, each component stretched between its 2nd and 98th percentiles."""
    centred = values - values.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = centred @ vt[:3].T
    lo, hi = np.percentile(pcs, (2, 98), axis=0)
    return np.clip((pcs - lo) / (hi - lo), 0, 1)


def _assert_matches_reference(got, values):
    ref = _stretched_pcs(values.astype("float64"))
    for k in range(3):  # a principal component's sign is arbitrary: s(-pc) = 1 - s(pc)
        err = min(np.abs(got[:, k] - ref[:, k]).max(), np.abs(got[:, k] - (1 - ref[:, k])).max())
        assert err < 1e-4, k


def test_pca_rgb_of_a_grid(grid):
    rgb = eossl.pca_rgb(grid)
    assert rgb.dims == ("y", "x", "rgb") and rgb.shape == (12, 12, 3)
    assert rgb["rgb"].values.tolist() == ["pc1", "pc2", "pc3"]
    np.testing.assert_array_equal(rgb["x"].values, grid["x"].values)
    np.testing.assert_array_equal(rgb["y"].values, grid["y"].values)
    assert rgb.rio.crs == grid.rio.crs and rgb.rio.crs is not None
    nan = np.isnan(rgb.values).all(axis=-1)
    assert nan[0, 0] and nan[8, 5] and nan.sum() == 2
    assert np.isnan(grid.values).all(axis=-1)[nan].all()
    ok = rgb.values[~nan]
    assert ok.min() >= 0 and ok.max() <= 1 and ok.min() == 0 and ok.max() == 1
    values = grid.values.reshape(-1, grid.sizes["dim"])
    finite = np.isfinite(values).all(axis=1)
    _assert_matches_reference(ok.reshape(-1, 3), values[finite])


def test_pca_rgb_of_chips_keeps_labels(chip_emb):
    rgb = eossl.pca_rgb(chip_emb)
    assert rgb.dims == ("sample", "rgb") and rgb.shape == (120, 3)
    np.testing.assert_array_equal(rgb["label"].values, chip_emb["label"].values)
    assert np.isfinite(rgb.values).all() and rgb.values.min() >= 0 and rgb.values.max() <= 1
    _assert_matches_reference(rgb.values, chip_emb.values)


def test_pca_rgb_of_a_stack_uses_one_pca(tiny_run, slovenia):
    emb = eossl.embed(tiny_run.model, slovenia["image"].isel(time=[0, 4]))
    rgb = eossl.pca_rgb(emb)
    assert rgb.dims == ("time", "y", "x", "rgb") and rgb.shape == (2, 12, 12, 3)
    _assert_matches_reference(rgb.values.reshape(-1, 3), emb.values.reshape(-1, emb.sizes["dim"]))


def test_pca_rgb_refuses_bad_input(grid):
    with pytest.raises(DataError, match="'dim'"):
        eossl.pca_rgb(grid.rename(dim="feature"))
    few = grid.isel(y=0, x=slice(1, 3))
    with pytest.raises(DataError, match="only 2 valid"):
        eossl.pca_rgb(few)


def test_umap_of_chips_keeps_labels(umap_points):
    few, points = umap_points
    assert points.dims == ("sample", "component") and points.shape == (40, 2)
    np.testing.assert_array_equal(points["label"].values, few["label"].values)
    assert np.isfinite(points.values).all()
    assert points.values.std(axis=0).min() > 0  # spread out, not collapsed to a point
    assert points.attrs["n_neighbors"] == 5 and points.attrs["metric"] == "cosine"


class _FakeUMAP:
    """Stands in for umap.UMAP (the real one is tested once above): records its arguments and
    returns the first components of its input."""

    calls: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        _FakeUMAP.calls.append(self)

    def fit_transform(self, values):
        self.input = values
        return values[:, :self.kwargs["n_components"]] * 1.0

    def transform(self, values):
        self.placed = getattr(self, "placed", 0) + len(values)
        return values[:, :self.kwargs["n_components"]] * 1.0


@pytest.fixture
def fake_umap(monkeypatch):
    _FakeUMAP.calls = []
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=_FakeUMAP))
    return _FakeUMAP


def test_umap_of_a_grid_keeps_patch_positions(grid, fake_umap):
    points = eossl.umap(grid, n_neighbors=500, pca_dims=None)
    n_valid = 12 * 12 - 2
    assert points.dims == ("sample", "component") and points.shape == (n_valid, 2)
    call = fake_umap.calls[-1]
    assert call.kwargs["n_neighbors"] == n_valid - 1  # capped below the number of points
    assert call.kwargs["random_state"] == 0 and call.kwargs["metric"] == "cosine"
    # each point keeps the y / x of its patch, and its values come from that patch
    for i in (0, 17, n_valid - 1):
        y, x = points["y"].values[i], points["x"].values[i]
        vector = grid.sel(y=y, x=x).values
        np.testing.assert_allclose(points.values[i], vector[:2])
    # the NaN patch (0, 0) is left out
    first_row = points["y"].values == grid["y"].values[0]
    assert grid["x"].values[0] not in points["x"].values[first_row]
    assert first_row.sum() == 11


def test_umap_reduces_wide_embeddings_with_pca_first(chip_emb, fake_umap):
    eossl.umap(chip_emb, pca_dims=10, n_components=3)
    assert fake_umap.calls[-1].input.shape == (120, 10)
    assert fake_umap.calls[-1].kwargs["n_components"] == 3
    eossl.umap(chip_emb, pca_dims=None)
    assert fake_umap.calls[-1].input.shape == (120, chip_emb.sizes["dim"])
    eossl.umap(chip_emb.isel(sample=slice(0, 8)), pca_dims=10)  # fewer points than pca_dims: no PCA
    assert fake_umap.calls[-1].input.shape == (8, chip_emb.sizes["dim"])


def test_umap_drops_nan_samples_and_their_labels(chip_emb, fake_umap):
    emb = chip_emb.isel(sample=slice(0, 30)).copy()
    emb[[3, 20]] = np.nan
    points = eossl.umap(emb, pca_dims=None)
    assert points.shape == (28, 2)
    np.testing.assert_array_equal(points["label"].values, np.delete(emb["label"].values, [3, 20]))
    np.testing.assert_allclose(points.values, np.delete(emb.values, [3, 20], axis=0)[:, :2], rtol=1e-6)


def test_umap_needs_a_dim_dimension(fake_umap):
    with pytest.raises(DataError, match="'dim'"):
        eossl.umap(xr.DataArray(np.zeros((5, 3)), dims=("sample", "feature")))


def test_umap_fits_a_subsample_and_places_the_rest_in_order(grid, fake_umap):
    """More vectors than max_fit: the fit sees max_fit of them, the rest are placed by the fitted
    model in batches, and every point still belongs to its own patch."""
    points = eossl.umap(grid, pca_dims=None, max_fit=50, batch_size=40)
    n_valid = 12 * 12 - 2
    call = fake_umap.calls[-1]
    assert len(call.input) == 50 and call.placed == n_valid - 50
    assert points.attrs["fitted_on"] == 50 and points.attrs["placed"] == n_valid - 50
    assert call.kwargs["init"] == "pca"
    for i in range(0, n_valid, 7):
        vector = grid.sel(y=points["y"].values[i], x=points["x"].values[i]).values
        np.testing.assert_allclose(points.values[i], vector[:2])


def test_spread_subsample_keeps_rare_kinds():
    """1 % of the rows are another kind; a uniform draw of 200 expects 2 of them, the spread one
    gives them a share that grows with the square root of their count."""
    from eossl.analysis.reduce import spread_subsample
    rng = np.random.default_rng(0)
    common = rng.normal(0, 1, (9900, 8))
    rare = rng.normal(12, 1, (100, 8))
    values = np.concatenate([common, rare])
    idx = spread_subsample(values, 200, seed=0, groups=16)
    assert len(idx) == len(set(idx)) == 200 and (np.diff(idx) > 0).all()
    assert (idx >= 9900).sum() >= 4  # a uniform draw: 2 expected
    assert (spread_subsample(values[:50], 200) == np.arange(50)).all()


def test_pca_is_laid_out_like_umap_and_says_what_it_kept():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(6, 7, 16))
    values[:, :, 0] *= 10                       # one direction holds most of the spread
    values[2, 3] = np.nan
    grid = xr.DataArray(values, dims=("y", "x", "dim"), coords={"y": np.arange(6.0), "x": np.arange(7.0)})
    out = eossl.pca(grid)
    assert out.dims == ("sample", "component") and out.shape == (41, 2)
    assert "y" in out.coords and "x" in out.coords
    ratio = out.attrs["explained_variance_ratio"]
    assert ratio[0] > 0.5 and ratio[0] >= ratio[1]
    chips = xr.DataArray(rng.normal(size=(20, 16)), dims=("sample", "dim"), coords={"label": ("sample", np.arange(20) % 2)})
    assert eossl.pca(chips)["label"].values.tolist() == (np.arange(20) % 2).tolist()
