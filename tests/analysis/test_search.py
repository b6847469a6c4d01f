"""eossl.similar: exact and FAISS search, queries by place, patch, lon/lat, positives and negatives."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from rasterio.warp import transform

import eossl
from eossl.errors import DataError


@pytest.fixture(scope="module")
def grid():
    """A 6 x 8 patch map of 80 m patches in UTM 33N with known vectors."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(6, 8, 16))
    values[4, 5] = values[1, 2] * 2 + 0.01 * rng.normal(size=16)   # nearly the same direction as (1, 2)
    values[0, 7] = np.nan                                           # no embedding there
    da = xr.DataArray(values, dims=("y", "x", "dim"),
                      coords={"y": 5_080_000 - 80 * (np.arange(6) + 0.5), "x": 465_000 + 80 * (np.arange(8) + 0.5)})
    da = da.rio.write_crs("EPSG:32633").rio.write_transform(
        __import__("affine").Affine(80, 0, 465_000, 0, -80, 5_080_000))
    return da


def _cosine_ranking(values, query, center=True):
    """The direct computation: cosine after subtracting the mean of the valid vectors (or raw)."""
    flat = values.reshape(-1, values.shape[-1])
    if center:
        mean = np.nanmean(flat[np.isfinite(flat).all(axis=1)], axis=0)
        flat, query = flat - mean, query - mean
    sims = flat @ query / (np.linalg.norm(flat, axis=1) * np.linalg.norm(query))
    sims[~np.isfinite(sims)] = -np.inf
    return np.argsort(-sims), sims


def test_exact_search_from_a_place_matches_numpy(grid):
    x, y = float(grid.x[2]), float(grid.y[1])
    result = eossl.similar(grid, at=(x, y), k=5)
    order, sims = _cosine_ranking(grid.values, grid.values[1, 2])
    expected = [i for i in order if i != 1 * 8 + 2][:5]
    assert (result.table["row"] * 8 + result.table["col"]).tolist() == expected
    np.testing.assert_allclose(result.table["score"], sims[expected], rtol=1e-5)
    assert result.table.iloc[0][["row", "col"]].tolist() == [4, 5]  # the planted near-duplicate
    top = result.table.iloc[0]
    assert (top["minx"], top["maxy"]) == (465_000 + 5 * 80, 5_080_000 - 4 * 80)
    assert top["x"] == pytest.approx(float(grid.x[5])) and top["y"] == pytest.approx(float(grid.y[4]))


def test_center_false_is_the_raw_cosine(grid):
    result = eossl.similar(grid, at=(1, 2), crs="rowcol", k=5, center=False)
    order, sims = _cosine_ranking(grid.values, grid.values[1, 2], center=False)
    expected = [i for i in order if i != 1 * 8 + 2][:5]
    assert (result.table["row"] * 8 + result.table["col"]).tolist() == expected
    np.testing.assert_allclose(result.table["score"], sims[expected], rtol=1e-5)
    index = eossl.SearchIndex(grid, center=False)
    assert not index.mean_.any() and "centred" not in repr(index)


def test_centring_spreads_embeddings_that_share_one_direction():
    """Like a briefly trained encoder: every vector is one big common direction plus a small part
    that differs between two kinds of place. Raw cosines all read ~1; centred, the two kinds separate
    and the query's own kind ranks first."""
    rng = np.random.default_rng(1)
    common = np.full(32, 10.0)
    kind = np.repeat([0, 1], 20)
    signal = np.where(kind[:, None] == 0, 1.0, -1.0) * rng.normal(size=32)[None] * 0.3
    values = common + signal + 0.1 * rng.normal(size=(40, 32))
    emb = xr.DataArray(values, dims=("sample", "dim"))
    raw = eossl.similar(emb, at=0, k=39, center=False).table["score"]
    centred = eossl.similar(emb, at=0, k=39).table
    assert raw.min() > 0.99                                      # flat: nothing stands out
    assert centred["score"].min() < -0.5 < 0.5 < centred["score"].max()
    assert set(centred["sample"][:19]) == set(range(1, 20))       # its own kind first
    index = eossl.SearchIndex(emb)
    np.testing.assert_allclose(index.mean_, values.mean(axis=0), rtol=1e-5)
    assert "centred" in repr(index)


def test_heatmap_is_aligned_with_the_grid(grid):
    result = eossl.similar(grid, at=(1, 2), crs="rowcol", k=3)
    heat = result.heatmap
    assert heat.dims == ("y", "x") and heat.shape == (6, 8) and heat.rio.crs.to_epsg() == 32633
    assert heat.values[1, 2] == pytest.approx(1.0) and np.isnan(heat.values[0, 7])
    np.testing.assert_array_equal(heat["x"].values, grid["x"].values)


def test_lonlat_query_finds_the_same_patch(grid):
    lon, lat = transform("EPSG:32633", "EPSG:4326", [float(grid.x[2])], [float(grid.y[1])])
    by_lonlat = eossl.similar(grid, at=(lon[0], lat[0]), crs="EPSG:4326", k=4).table
    by_rowcol = eossl.similar(grid, at=(1, 2), crs="rowcol", k=4).table
    assert by_lonlat[["row", "col"]].values.tolist() == by_rowcol[["row", "col"]].values.tolist()


def test_positives_and_negatives(grid):
    pos, neg = [(1, 2), (3, 3)], [(2, 6)]
    result = eossl.similar(grid, positives=pos, negatives=neg, crs="rowcol", k=6, negative_weight=0.5)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    flat = grid.values.reshape(-1, grid.sizes["dim"])
    centred = grid.values - np.nanmean(flat[np.isfinite(flat).all(axis=1)], axis=0)  # what the index compares
    query = unit(np.stack([centred[r, c] for r, c in pos])).mean(0) - 0.5 * unit(centred[2, 6])
    order, _ = _cosine_ranking(centred, query, center=False)
    expected = [i for i in order if i not in (1 * 8 + 2, 3 * 8 + 3)][:6]
    assert (result.table["row"] * 8 + result.table["col"]).tolist() == expected


def test_faiss_gives_the_exact_answer(grid):
    exact = eossl.similar(grid, at=(1, 2), crs="rowcol", k=10, backend="exact").table
    fast = eossl.similar(grid, at=(1, 2), crs="rowcol", k=10, backend="faiss").table
    assert fast[["row", "col"]].values.tolist() == exact[["row", "col"]].values.tolist()
    np.testing.assert_allclose(fast["score"], exact["score"], rtol=1e-4)


def test_chips_search_keeps_labels(chips):
    emb = eossl.band_statistics(chips)
    result = eossl.similar(emb, at=0, k=3)
    assert result.heatmap is None and 0 not in result.table["sample"].tolist()
    assert result.table["label"].tolist() == chips["label"].values[result.table["sample"]].tolist()


def test_bad_queries(grid):
    with pytest.raises(DataError, match="outside the embedded scene"):
        eossl.similar(grid, at=(0.0, 0.0))
    with pytest.raises(DataError, match="outside the 6x8 patch grid"):
        eossl.similar(grid, at=(9, 9), crs="rowcol")
    with pytest.raises(DataError, match="no embedding"):
        eossl.similar(grid, at=(0, 7), crs="rowcol")
    with pytest.raises(DataError, match="give a place"):
        eossl.similar(grid)
    with pytest.raises(DataError, match="at least one hit"):
        eossl.similar(grid, at=(1, 2), crs="rowcol", k=0)
    with pytest.raises(ValueError, match="backend must be"):
        eossl.similar(grid, at=(1, 2), crs="rowcol", backend="annoy")
    with pytest.raises(DataError, match="pick one date"):
        eossl.similar(grid.expand_dims(time=2).transpose("time", "y", "x", "dim"), at=(1, 2), crs="rowcol")
    with pytest.warns(UserWarning, match="more than the 46 candidates"):
        result = eossl.similar(grid, at=(1, 2), crs="rowcol", k=500)
    assert len(result.table) == 46  # 48 patches, one without embedding, the query itself left out


def test_a_search_index_built_once_answers_like_similar(grid):
    index = eossl.SearchIndex(grid, backend="faiss")
    assert len(index) == 47 and index.backend_ == "faiss" and "47 vectors of 16 dims" in repr(index)
    for place in [(1, 2), (3, 3), (5, 0)]:
        direct = eossl.similar(grid, at=place, crs="rowcol", k=7, backend="exact")
        reused = eossl.similar(index, at=place, crs="rowcol", k=7)
        assert reused.table[["row", "col"]].values.tolist() == direct.table[["row", "col"]].values.tolist()
        xr.testing.assert_allclose(reused.heatmap, direct.heatmap)
    with pytest.raises(DataError, match="already a SearchIndex"):
        eossl.SearchIndex(index)


def test_ivf_index_for_large_sets_finds_the_true_neighbours():
    """Above 10^5 vectors FAISS uses an IVF index: 120 000 clustered vectors, recall@10 against exact."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(300, 12))
    values = centres[rng.integers(0, 300, 120_000)] + 0.3 * rng.normal(size=(120_000, 12))
    emb = xr.DataArray(values.astype("float32"), dims=("sample", "dim"))
    index = eossl.SearchIndex(emb, backend="faiss", nprobe=16)
    assert type(index.index_).__name__ == "IndexIVFFlat"
    recalls = []
    for q in range(0, 120_000, 12_000):
        fast = set(eossl.similar(index, at=q, k=10).table["sample"])
        exact = set(eossl.similar(emb, at=q, k=10, backend="exact").table["sample"])
        recalls.append(len(fast & exact) / 10)
    assert np.mean(recalls) >= 0.9, recalls
