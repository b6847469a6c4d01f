"""Pictures of embeddings: ``pca_rgb`` (false colour of a scene's embedding map), ``pca`` and ``umap``
(2-D scatters; the embedding explorer draws either)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from eossl.errors import DataError


def _flatten(emb: xr.DataArray):
    """(..., dim) -> (N, dim) of the finite rows, their mask, and the leading shape."""
    if "dim" not in emb.dims:
        raise DataError(f"expected embeddings with a 'dim' dimension, got dims {emb.dims}")
    emb = emb.transpose(..., "dim")
    values = emb.values.reshape(-1, emb.sizes["dim"])  # (N, dim)
    ok = np.isfinite(values).all(axis=1)
    if ok.sum() < 3:
        raise DataError(f"only {ok.sum()} valid embedding vectors; need at least 3")
    return values[ok], ok, emb


def pca_rgb(emb: xr.DataArray, percentiles=(2, 98)) -> xr.DataArray:
    """First three principal components of the embeddings, stretched to 0..1 as an RGB picture.

    ``(y, x, dim)`` -> ``(y, x, rgb)`` with the same coordinates and CRS (plot it with
    ``.plot.imshow(rgb="rgb")``); ``(sample, dim)`` -> ``(sample, rgb)``; works with a leading
    ``time`` dimension too, using one PCA for all dates so colours compare across time.
    """
    from sklearn.decomposition import PCA  # here, not at import: `import eossl` stays ~1.5 s lighter
    values, ok, emb = _flatten(emb)
    pcs = PCA(n_components=3, random_state=0).fit_transform(values.astype("float64"))  # (N, 3)
    lo, hi = np.percentile(pcs, percentiles, axis=0)
    pcs = np.clip((pcs - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    full = np.full((ok.size, 3), np.nan, dtype="float32")
    full[ok] = pcs
    lead_dims = [d for d in emb.dims if d != "dim"]
    shape = [emb.sizes[d] for d in lead_dims] + [3]
    coords = {k: v for k, v in emb.coords.items() if "dim" not in v.dims}
    out = xr.DataArray(full.reshape(shape), dims=(*lead_dims, "rgb"), coords=coords, name="pca_rgb",
                       attrs={**emb.attrs, "description": "embedding PCA components 1-3 as RGB"})
    out = out.assign_coords(rgb=["pc1", "pc2", "pc3"])
    if emb.rio.crs is not None:
        out = out.rio.write_crs(emb.rio.crs)
    return out


# Above this many vectors UMAP is fitted on a well-spread subsample of this size and the rest are
# placed with the fitted model (umap-learn's transform): a fit costs super-linear time and memory,
# placing costs a neighbour search and a few epochs per point.
FIT_AT_MOST = 20_000


def spread_subsample(values: np.ndarray, n: int, seed: int = 0, groups: int = 256) -> np.ndarray:
    """Indices of ``n`` rows of ``values`` that cover it: a coarse k-means (``groups`` clusters,
    fitted on a random 20,000) splits the rows, and each cluster gets a share of the draw that
    grows with the square root of its size, so rare kinds of patch (a road, a lake) are in the fit
    and not only the field that covers half the scene. Sorted; all rows when ``n >= len(values)``."""
    from sklearn.cluster import MiniBatchKMeans
    total = len(values)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    groups = min(groups, max(1, n // 8))
    fit_rows = values[rng.choice(total, min(total, 20_000), replace=False)]
    km = MiniBatchKMeans(groups, random_state=seed, n_init=1, batch_size=4096).fit(fit_rows)
    members = np.concatenate([km.predict(values[i:i + 200_000]) for i in range(0, total, 200_000)])  # (N,)
    counts = np.bincount(members, minlength=groups)
    share = np.sqrt(counts) / np.sqrt(counts).sum()
    quota = np.minimum(counts, np.floor(share * n).astype(int))
    while quota.sum() < n:  # hand the rounding remainder to clusters that still have rows
        room = np.flatnonzero(quota < counts)
        quota[rng.choice(room, min(len(room), n - quota.sum()), replace=False)] += 1
    picks = [rng.choice(np.flatnonzero(members == g), q, replace=False) for g, q in enumerate(quota) if q]
    return np.sort(np.concatenate(picks))


# umap-learn's own numba functions are compiled without ``cache=True`` (pynndescent's are cached), so
# every fresh Python process (each notebook kernel, each restart) compiled them before its first
# picture: 22.3 s for 400 points, against 0.8 s once they come from numba's on-disk cache
# (benchmarks/bench_umap.py --cold; docs/benchmarks.md).
_UMAP_MODULES = ("umap.umap_", "umap.layouts", "umap.utils", "umap.distances", "umap.sparse", "umap.spectral")


def _umap_learn():
    """``import umap``, with numba's on-disk cache switched on for umap-learn's jitted functions
    that are not compiled yet (what ``@numba.njit(cache=True)`` does; numba checks the source file's
    timestamp, so a changed umap-learn recompiles). Dispatchers that are already compiled, or
    already cached, are left alone, so calling this twice does nothing more."""
    try:
        import umap as umap_learn
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("eossl.umap needs umap-learn: pip install 'eossl[umap]'") from None
    import importlib

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher
    by_source: dict = {}  # python function -> its dispatchers (one object may sit in several modules)
    for name in _UMAP_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - a umap-learn without that module
            continue
        for fn in vars(module).values():
            if isinstance(fn, CPUDispatcher):
                by_source.setdefault(fn.py_func, {})[id(fn)] = fn
    for dispatchers in by_source.values():
        chosen = list(dispatchers.values())
        if len(chosen) > 1:
            # one source jitted twice (layouts' serial and parallel epoch): numba's cache file is
            # named after the source, not the options, so only the serial one (what a fixed
            # random_state runs) may use it
            chosen = [fn for fn in chosen if not fn.targetoptions.get("parallel")]
            chosen = chosen if len(chosen) == 1 else []
        for fn in chosen:
            if isinstance(fn._cache, NullCache) and not fn.overloads:
                try:
                    fn.enable_caching()
                except RuntimeError:  # no writable cache folder anywhere: compile as before
                    return umap_learn
    return umap_learn


def umap(emb: xr.DataArray, n_components: int = 2, n_neighbors: int = 15, min_dist: float = 0.1,
         metric: str = "cosine", pca_dims: int | None = 50, seed: int = 0,
         max_fit: int | None = FIT_AT_MOST, batch_size: int = 100_000) -> xr.DataArray:
    """UMAP (umap-learn) of embeddings -> ``(sample, component)``, keeping sample coordinates
    (e.g. ``label``). Grid embeddings ``(y, x, dim)`` are flattened to their valid patches, with
    ``y`` / ``x`` kept as coordinates.

    ``pca_dims``: reduce with PCA first when the embedding is wider (faster, and the usual
    practice); None to skip. ``max_fit``: with more valid vectors than this, UMAP is fitted on a
    well-spread subsample of that size (:func:`spread_subsample`) and every other vector is placed
    by the fitted model in batches of ``batch_size``; ``None`` fits on all. The result's attributes
    say which: ``fitted_on`` (how many vectors the fit saw) and ``placed`` (how many were placed).
    """
    umap_learn = _umap_learn()
    values, ok, emb = _flatten(emb)
    n = len(values)
    fit_idx = spread_subsample(values, max_fit, seed) if max_fit and n > max_fit else np.arange(n)
    if pca_dims and values.shape[1] > pca_dims and n > pca_dims:
        from sklearn.decomposition import PCA
        pca = PCA(n_components=pca_dims, random_state=seed).fit(values[fit_idx])
        values = np.concatenate([pca.transform(values[i:i + batch_size]) for i in range(0, n, batch_size)])
    m = len(fit_idx)
    # init="pca": the spectral initialisation is slow, and fails (falling back to random) on the
    # near-duplicate patches a scene is full of
    reducer = umap_learn.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, m - 1),
                              min_dist=min_dist, metric=metric, random_state=seed, init="pca",
                              n_jobs=1)  # what a fixed random_state implies anyway, without a warning
    points = np.empty((n, n_components), dtype="float64")
    points[fit_idx] = reducer.fit_transform(values[fit_idx])  # (m, n_components)
    rest = np.setdiff1d(np.arange(n), fit_idx)
    if len(rest):
        from eossl.progress import progress
        with progress(total=len(rest), desc="umap: place", unit="pt") as bar:
            for i in range(0, len(rest), batch_size):
                part = rest[i:i + batch_size]
                points[part] = reducer.transform(values[part])
                bar.update(len(part))
    return xr.DataArray(points, dims=("sample", "component"), coords=_sample_coords(emb, ok), name="umap",
                        attrs={"n_neighbors": n_neighbors, "min_dist": min_dist, "metric": metric,
                               "fitted_on": int(m), "placed": int(len(rest)),
                               "fit": "all vectors" if not len(rest) else
                                      f"{m} well-spread vectors (eossl.spread_subsample), the rest placed "
                                      "by umap-learn's transform"})


def _sample_coords(emb: xr.DataArray, ok: np.ndarray) -> dict:
    """The coordinates of the valid vectors along a flat ``sample`` dim: a chip set's own sample
    coordinates (``label``, ...), or ``y`` / ``x`` (and ``time``) of a grid's patches."""
    if emb.ndim == 2:
        lead = emb.dims[0]
        return {k: ("sample", v.values[ok]) for k, v in emb.coords.items() if v.dims == (lead,)}
    coords = {}
    stacked = emb.stack(sample=[d for d in emb.dims if d != "dim"]).transpose("sample", "dim")
    index = stacked["sample"].to_index()
    for name in index.names:
        coords[name] = ("sample", index.get_level_values(name).values[ok])
    return coords


def pca(emb: xr.DataArray, n_components: int = 2, seed: int = 0) -> xr.DataArray:
    """PCA of embeddings -> ``(sample, component)``, laid out like :func:`umap` (valid vectors
    only; a grid's ``y`` / ``x`` or a chip set's sample coordinates kept): the fast, linear
    picture. ``attrs["explained_variance_ratio"]`` says how much of the spread each axis holds."""
    values, ok, emb = _flatten(emb)
    k = min(n_components, values.shape[1], len(values))
    from sklearn.decomposition import PCA  # here, not at import: `import eossl` stays ~1.5 s lighter
    model = PCA(n_components=k, random_state=seed).fit(values.astype("float64"))
    points = model.transform(values.astype("float64"))  # (N, k)
    return xr.DataArray(points, dims=("sample", "component"), coords=_sample_coords(emb, ok), name="pca",
                        attrs={"explained_variance_ratio": [float(v) for v in model.explained_variance_ratio_]})

