"""Similarity search over embeddings: ``eossl.similar(emb, at=(x, y), k=20)``.

Query by a location (scene CRS or lon/lat), by a patch, or by several positive and negative examples
(the mean of the positives pushed away from the mean of the negatives, as Earth Index does). Exact
cosine search with numpy for small sets; a FAISS index for large ones, behind the same call.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from eossl.errors import DataError

EXACT_LIMIT = 50_000  # above this many vectors, "auto" uses FAISS when it is installed


@dataclass
class SimilarityResult:
    """What :func:`similar` returns.

    table: one row per hit, best first: ``rank``, ``score`` (cosine similarity) and where it is
        (``row``/``col``, ``x``/``y`` centre and ``minx``..``maxy`` footprint in the grid's CRS for
        maps; ``sample`` and the sample coordinates such as ``label`` for chips).
    heatmap: cosine similarity of every patch to the query, ``(y, x)`` aligned with the scene
        (None for chips).
    query: the query vector (unit length).
    """

    table: pd.DataFrame
    heatmap: xr.DataArray | None
    query: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-12)


def _locate(emb: xr.DataArray, point, crs) -> tuple[int, int]:
    """(x, y) in ``crs`` (default: the grid's) -> (row, col) of the patch holding it."""
    x, y = point
    if crs is not None and emb.rio.crs is not None and str(crs) != str(emb.rio.crs):
        from rasterio.warp import transform
        xs, ys = transform(crs, emb.rio.crs, [x], [y])
        x, y = xs[0], ys[0]
    inverse = ~emb.rio.transform()
    col, row = inverse @ (x, y)  # `@`: `*` on Affine is deprecated in affine 3
    row, col = int(np.floor(row)), int(np.floor(col))
    if not (0 <= row < emb.sizes["y"] and 0 <= col < emb.sizes["x"]):
        left, bottom, right, top = emb.rio.bounds()
        raise DataError(f"location ({point[0]}, {point[1]}) is outside the embedded scene, which covers "
                        f"x {left:.1f}..{right:.1f}, y {bottom:.1f}..{top:.1f} in {emb.rio.crs}")
    return row, col


def _vector_at(emb, vectors, place, crs) -> np.ndarray:
    v = vectors[_flat_index(emb, place, crs)]
    if not np.isfinite(v).all():
        raise DataError(f"the patch at {place} has no embedding (nodata there); pick another place")
    return v


class SearchIndex:
    """Embeddings prepared once for many queries: unit vectors, the nodata mask and, for large sets,
    a FAISS index. :func:`similar` builds one on every call; keep one for an interactive loop::

        index = eossl.SearchIndex(emb)               # seconds for 10^6 vectors, once
        eossl.similar(index, at=(x, y), k=20)        # milliseconds per query after that

    Args:
        emb: ``(y, x, dim)`` from :func:`eossl.embed` on a scene, or ``(sample, dim)`` for chips.
        backend: ``"exact"`` (numpy), ``"faiss"``, or ``"auto"`` (FAISS above 50 000 vectors when installed).
        nprobe: for the FAISS IVF index used above 10^5 vectors, how many of its sqrt(N) lists a query
            visits (more: slower, higher recall; benchmarks/bench_analysis.py measures both).
        center: subtract the mean embedding before unit length (queries too). Encoders, briefly
            trained ones most of all, put every patch near one common direction, so raw cosines all
            read ~0.99 and the heat map is flat; centred, they spread over [-1, 1] and the ranking
            follows what differs between places. ``False`` gives the raw cosine.

    Fitted attributes: ``emb_`` (the embeddings, y/x or sample first), ``unit_`` (N, D) float32 unit
    vectors, centred when ``center`` (0 where there is no embedding), ``mean_`` (D,) the mean that was
    subtracted (zeros without centring), ``valid_`` (N,) bool, ``backend_``, ``index_`` (FAISS or None).
    """

    def __init__(self, emb: xr.DataArray, backend: str = "auto", nprobe: int = 16, center: bool = True):
        if isinstance(emb, SearchIndex):
            raise DataError("already a SearchIndex; pass it to eossl.similar directly")
        if "dim" not in emb.dims:
            raise DataError(f"similar needs embeddings with a 'dim' dimension, got {emb.dims}")
        if backend not in ("auto", "exact", "faiss"):
            raise ValueError(f"backend must be 'auto', 'exact' or 'faiss', got {backend!r}")
        lead = [d for d in emb.dims if d != "dim"]
        if len(lead) not in (1, 2) or (len(lead) == 2 and set(lead) != {"y", "x"}):
            raise DataError(f"similar searches (y, x, dim) maps or (sample, dim) chips; got {emb.dims} "
                            "(for a stack, pick one date with .isel(time=...))")
        self.emb_ = emb.transpose(*(["y", "x"] if len(lead) == 2 else lead), "dim")
        self.is_map = len(lead) == 2
        vectors = self.emb_.values.reshape(-1, self.emb_.sizes["dim"]).astype("float32")  # (N, D)
        self.vectors_ = vectors
        self.valid_ = np.isfinite(vectors).all(axis=1)
        self.center = center
        self.mean_ = np.zeros(vectors.shape[1], dtype="float32")
        if center and self.valid_.any():
            self.mean_ = vectors[self.valid_].mean(axis=0, dtype="float64").astype("float32")
        self.unit_ = np.where(self.valid_[:, None], _unit(np.nan_to_num(vectors) - self.mean_), 0).astype("float32")
        use_faiss = backend == "faiss" or (backend == "auto" and len(self.unit_) > EXACT_LIMIT and _has_faiss())
        self.backend_ = "faiss" if use_faiss else "exact"
        self.index_ = _faiss_index(self.unit_[self.valid_], nprobe) if use_faiss else None
        self.valid_ids_ = np.flatnonzero(self.valid_)

    def __len__(self) -> int:
        return int(self.valid_.sum())

    def __repr__(self) -> str:
        centred = ", centred" if self.center else ""
        return f"SearchIndex({len(self)} vectors of {self.emb_.sizes['dim']} dims, {self.backend_}{centred})"

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D,) unit query -> flat indices (k,) and cosine scores (k,), best first."""
        if self.index_ is not None:
            scores, ids = self.index_.search(np.ascontiguousarray(query[None], dtype="float32"), k)
            keep = ids[0] >= 0
            return self.valid_ids_[ids[0][keep]], scores[0][keep]
        sims = self.unit_ @ query.astype("float32")                        # (N,)
        sims[~self.valid_] = -np.inf
        order = np.argsort(-sims, kind="stable")[:k]
        return order, sims[order]


def similar(emb, at=None, *, k: int = 20, positives=None, negatives=None, crs=None,
            negative_weight: float = 0.5, backend: str = "auto", exclude_query: bool = True,
            center: bool = True) -> SimilarityResult:
    """The ``k`` patches (or chips) most similar to a query.

    Args:
        emb: ``(y, x, dim)`` from :func:`eossl.embed` on a scene, or ``(sample, dim)`` for chips, or a
            :class:`SearchIndex` built from them once (much faster for repeated queries on big sets).
        at: one place: ``(x, y)`` in the grid's CRS (or in ``crs``, e.g. ``"EPSG:4326"`` for lon/lat);
            with ``crs="rowcol"`` a (row, col) patch; for chips a sample index.
        positives, negatives: several places of those kinds; the query is the mean of the positives
            minus ``negative_weight`` times the mean of the negatives (unit vectors).
        k: hits to return; more than there are vectors returns all of them (with a warning).
        backend: ``"exact"`` (numpy), ``"faiss"``, or ``"auto"`` (FAISS above 50 000 vectors when
            installed); ignored when ``emb`` is a SearchIndex (it was chosen there).
        exclude_query: leave the query places themselves out of the hits.
        center: compare embeddings minus their mean (see :class:`SearchIndex`); ``False`` for the
            raw cosine. Ignored when ``emb`` is a SearchIndex (it was chosen there).
    """
    if backend not in ("auto", "exact", "faiss"):
        raise ValueError(f"backend must be 'auto', 'exact' or 'faiss', got {backend!r}")
    if int(k) < 1:
        raise DataError(f"k={k}: ask for at least one hit")
    index = emb if isinstance(emb, SearchIndex) else SearchIndex(emb, backend=backend, center=center)
    emb, vectors = index.emb_, index.vectors_
    places = ([at] if at is not None else []) + list(positives or [])
    if not places:
        raise DataError("give a place to search from: at=(x, y), or positives=[...]")
    pos = _unit(np.stack([_vector_at(emb, vectors, p, crs) - index.mean_ for p in places]).astype("float64"))
    query = pos.mean(axis=0)
    if negatives:
        neg = _unit(np.stack([_vector_at(emb, vectors, p, crs) - index.mean_ for p in negatives]).astype("float64"))
        query = query - negative_weight * neg.mean(axis=0)
    query = _unit(query)

    excluded = set()
    if exclude_query:
        for p in places:
            excluded.add(_flat_index(emb, p, crs))
    n_candidates = len(index) - len(excluded)
    if n_candidates <= 0:
        raise DataError("no other embeddings to search among")
    if k > n_candidates:
        warnings.warn(f"k={k} is more than the {n_candidates} candidates; returning all of them", stacklevel=2)
        k = n_candidates
    order, scores = index.search(query, k + len(excluded))
    hits = [(i, s) for i, s in zip(order, scores) if i not in excluded][:k]
    table = _table(emb, [i for i, _ in hits], [float(s) for _, s in hits])
    heatmap = None
    if index.is_map:
        sims_all = np.where(index.valid_, index.unit_ @ query.astype("float32"), np.nan)  # (N,)
        sims_all = sims_all.reshape(emb.sizes["y"], emb.sizes["x"])                        # (y, x)
        heatmap = xr.DataArray(sims_all, dims=("y", "x"), coords={d: emb[d] for d in ("y", "x") if d in emb.coords},
                               name="similarity")
        if emb.rio.crs is not None:
            heatmap = heatmap.rio.write_crs(emb.rio.crs)
    return SimilarityResult(table, heatmap, query)


def _flat_index(emb, place, crs) -> int:
    """A place -> the index of its vector: a sample index for chips, (row, col) with
    ``crs="rowcol"``, otherwise a point (x, y) in ``crs`` or the grid's CRS."""
    if emb.ndim == 2:
        n = emb.sizes[emb.dims[0]]
        if not 0 <= int(place) < n:
            raise DataError(f"sample {place} is outside the {n} embedded samples")
        return int(place)
    if crs == "rowcol":
        row, col = place
        if not (0 <= row < emb.sizes["y"] and 0 <= col < emb.sizes["x"]):
            raise DataError(f"patch {place} is outside the {emb.sizes['y']}x{emb.sizes['x']} patch grid")
    else:
        row, col = _locate(emb, place, crs)
    return int(row) * emb.sizes["x"] + int(col)


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
        return True
    except ImportError:
        return False


IVF_ABOVE = 100_000  # below this many vectors FAISS searches them all (exact); above, an IVF index


def _faiss_index(unit: np.ndarray, nprobe: int):
    """Inner product on unit vectors = cosine. Flat (exact) up to 10^5 vectors; above, IVF with
    sqrt(N) lists trained on a sample, visiting ``nprobe`` of them per query."""
    try:
        import faiss
    except ImportError:
        raise ImportError("backend='faiss' needs faiss: pip install 'eossl[search]'") from None
    unit = np.ascontiguousarray(unit, dtype="float32")
    dim = unit.shape[1]
    if len(unit) <= IVF_ABOVE:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = int(np.sqrt(len(unit)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(len(unit), min(len(unit), 50 * lists), replace=False)
        index.train(unit[np.sort(sample)])
        index.nprobe = min(nprobe, lists)
    index.add(unit)
    return index


def _table(emb, flat, scores) -> pd.DataFrame:
    rows = {"rank": np.arange(1, len(flat) + 1), "score": scores}
    if emb.ndim == 2:
        lead = emb.dims[0]
        rows[lead] = flat
        for name, coord in emb.coords.items():
            if coord.dims == (lead,):
                rows[name] = coord.values[flat]
        return pd.DataFrame(rows)
    r, c = np.divmod(np.asarray(flat, dtype=int), emb.sizes["x"])
    rows.update(row=r, col=c)
    if "x" in emb.coords and emb.rio.transform() is not None:
        t = emb.rio.transform()
        left, top = t @ (c, r)
        right, bottom = t @ (c + 1, r + 1)
        rows.update(x=(left + right) / 2, y=(top + bottom) / 2, minx=np.minimum(left, right),
                    miny=np.minimum(top, bottom), maxx=np.maximum(left, right), maxy=np.maximum(top, bottom))
    return pd.DataFrame(rows)
