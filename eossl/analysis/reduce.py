"""Pictures of embeddings: ``pca_rgb`` (false colour of a scene's embedding map) and ``umap``."""

from __future__ import annotations

import numpy as np
import xarray as xr
from sklearn.decomposition import PCA

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


def umap(emb: xr.DataArray, n_components: int = 2, n_neighbors: int = 15, min_dist: float = 0.1,
         metric: str = "cosine", pca_dims: int | None = 50, seed: int = 0) -> xr.DataArray:
    """UMAP (umap-learn) of embeddings -> ``(sample, component)``, keeping sample coordinates
    (e.g. ``label``). Grid embeddings ``(y, x, dim)`` are flattened to their valid patches, with
    ``y`` / ``x`` kept as coordinates.

    ``pca_dims``: reduce with PCA first when the embedding is wider (faster, and the usual
    practice); None to skip.
    """
    try:
        import umap as umap_learn
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("eossl.umap needs umap-learn: pip install 'eossl[umap]'") from None
    values, ok, emb = _flatten(emb)
    n = len(values)
    if pca_dims and values.shape[1] > pca_dims and n > pca_dims:
        values = PCA(n_components=pca_dims, random_state=seed).fit_transform(values)
    reducer = umap_learn.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, n - 1),
                              min_dist=min_dist, metric=metric, random_state=seed,
                              n_jobs=1)  # what a fixed random_state implies anyway, without a warning
    points = reducer.fit_transform(values)  # (N, n_components)
    coords = {}
    if emb.ndim == 2:
        lead = emb.dims[0]
        coords = {k: ("sample", v.values[ok]) for k, v in emb.coords.items() if v.dims == (lead,)}
    else:
        stacked = emb.stack(sample=[d for d in emb.dims if d != "dim"]).transpose("sample", "dim")
        for name in stacked["sample"].to_index().names:
            coords[name] = ("sample", stacked["sample"].to_index().get_level_values(name).values[ok])
    return xr.DataArray(points, dims=("sample", "component"), coords=coords, name="umap",
                        attrs={"n_neighbors": n_neighbors, "min_dist": min_dist, "metric": metric})
