"""Unsupervised maps: k-means on embeddings, back on the scene's grid."""

from __future__ import annotations

import numpy as np
import xarray as xr

from eossl.errors import DataError


def cluster(emb: xr.DataArray, k: int = 8, seed: int = 0) -> xr.DataArray:
    """k-means clusters of embeddings: ``(y, x, dim)`` -> a ``(y, x)`` class map with the grid's
    coordinates and CRS (a land-cover map without labels); ``(sample, dim)`` -> ``(sample,)``.
    Vectors are L2-normalised first (cosine geometry, as the encoders are trained); patches without
    an embedding (NaN) get -1. The fitted centres are in ``attrs["centres"]``."""
    if "dim" not in emb.dims:
        raise DataError(f"cluster needs embeddings with a 'dim' dimension, got {emb.dims}")
    lead = [d for d in emb.dims if d != "dim"]
    values = emb.transpose(*lead, "dim").values.reshape(-1, emb.sizes["dim"]).astype("float64")
    ok = np.isfinite(values).all(axis=1)
    if ok.sum() < k:
        raise DataError(f"{ok.sum()} valid embeddings cannot make {k} clusters; lower k")
    unit = values[ok] / (np.linalg.norm(values[ok], axis=1, keepdims=True) + 1e-12)
    from sklearn.cluster import KMeans  # here, not at import: `import eossl` stays ~1.5 s lighter
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(unit)
    labels = np.full(ok.size, -1, dtype="int16")
    labels[ok] = model.labels_
    coords = {name: c for name, c in emb.coords.items() if "dim" not in c.dims}
    out = xr.DataArray(labels.reshape([emb.sizes[d] for d in lead]), dims=lead, coords=coords,
                       name="cluster", attrs={"k": k, "centres": model.cluster_centers_.tolist(),
                                              "classes": {i: f"cluster {i}" for i in range(k)}})
    if emb.rio.crs is not None:
        out = out.rio.write_crs(emb.rio.crs)
    return out
