"""Label a scene with a few clicks: sparse labels on the patch grid -> a class map, and where to label next.

``eossl.label_map(emb, labels)`` fits a logistic regression on the L2-normalised embeddings of the
labelled patches and predicts every patch: ``class`` (y, x) and ``uncertainty`` (y, x), the entropy
of the class probabilities scaled to 0 (sure) .. 1 (uniform), both on the embedding grid with its
CRS. ``eossl.next_labels(result, n)`` lists the most uncertain patches that carry no label yet:
active learning's "label here next". The label painter widget draws exactly these two.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xarray as xr

from eossl.errors import DataError


def _grid_vectors(emb: xr.DataArray):
    """(y, x, dim) -> the grid, its unit vectors (y*x, D) (0 where invalid) and the valid mask (y*x,)."""
    if not isinstance(emb, xr.DataArray) or set(emb.dims) != {"y", "x", "dim"}:
        dims = getattr(emb, "dims", type(emb).__name__)
        raise DataError(f"label_map needs a scene's embedding map (y, x, dim) from eossl.embed, got {dims}; "
                        "chip embeddings (sample, dim) have no place on a map: use eossl.probe")
    grid = emb.transpose("y", "x", "dim")
    values = grid.values.reshape(-1, grid.sizes["dim"]).astype("float64")   # (y*x, D)
    valid = np.isfinite(values).all(axis=1)                                  # (y*x,)
    if not valid.any():
        raise DataError("every patch's embedding is NaN (no valid data under the scene)")
    values = np.where(valid[:, None], values, 0.0)
    unit = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
    return grid, unit, valid


def _label_points(labels, grid: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Flat patch indices and integer classes of the labelled patches, from a (y, x) label grid
    (-1 or NaN: no label) or a sequence of ``(row, col, class)``."""
    rows, cols = grid.sizes["y"], grid.sizes["x"]
    if isinstance(labels, xr.DataArray):
        if set(labels.dims) != {"y", "x"} or (labels.sizes["y"], labels.sizes["x"]) != (rows, cols):
            raise DataError(f"labels must be on the embedding grid ({rows} x {cols} patches, dims y, x), got "
                            f"{dict(labels.sizes)}; eossl.scene_labels puts a label raster on it")
        flat = labels.transpose("y", "x").values.astype("float64").ravel()
        idx = np.flatnonzero(np.isfinite(flat) & (flat >= 0))
        return idx, flat[idx].astype(int)
    points = [tuple(p) for p in labels]
    if any(len(p) != 3 for p in points):
        raise DataError("labels as a list need (row, col, class) triples")
    for r, c, _ in points:
        if not (0 <= int(r) < rows and 0 <= int(c) < cols):
            raise DataError(f"label at row {r}, col {c} lies outside the {rows} x {cols} patch grid")
    idx = np.array([int(r) * cols + int(c) for r, c, _ in points], dtype=int)
    return idx, np.array([int(k) for _, _, k in points], dtype=int)


def label_map(emb: xr.DataArray, labels, *, class_names=None, C: float = 1.0) -> xr.Dataset:
    """A class map and an uncertainty map from a few labelled patches (see the module docstring).

    Args:
        emb: a scene's embeddings ``(y, x, dim)`` from :func:`eossl.embed`.
        labels: a ``(y, x)`` grid of integer classes on the embedding grid (-1 / NaN: no label), or
            ``[(row, col, class), ...]``. At least two classes must be labelled.
        class_names: names of the classes, by class value (a list or a dict); stored in ``attrs``.
        C: inverse regularisation of the logistic regression (smaller: smoother maps).

    Returns a Dataset on the embedding grid (with its CRS): ``class`` (int16, -1 where the patch has
    no embedding) and ``uncertainty`` (0..1, NaN there), with ``attrs["classes"]``.
    """
    from sklearn.linear_model import LogisticRegression
    grid, unit, valid = _grid_vectors(emb)
    idx, y = _label_points(labels, grid)
    if len(np.unique(y)) < 2:
        raise DataError(f"{len(idx)} label(s) of {len(np.unique(y))} class(es): label at least two classes "
                        "to draw a class map")
    if not valid[idx].all():
        raise DataError("a label sits on a patch without an embedding (nodata); move it onto the scene")
    model = LogisticRegression(C=C, max_iter=1000).fit(unit[idx], y)
    proba = model.predict_proba(unit[valid])                                     # (N, K)
    codes = np.full(valid.size, -1, dtype="int16")
    codes[valid] = model.classes_[proba.argmax(axis=1)]
    entropy = np.full(valid.size, np.nan)
    k = proba.shape[1]
    entropy[valid] = -(proba * np.log(np.clip(proba, 1e-12, 1))).sum(axis=1) / math.log(k)
    shape = (grid.sizes["y"], grid.sizes["x"])
    coords = {d: grid[d] for d in ("y", "x") if d in grid.coords}
    names = class_names if isinstance(class_names, dict) else dict(enumerate(class_names or []))
    out = xr.Dataset({"class": (("y", "x"), codes.reshape(shape), {"nodata": -1}),
                      "uncertainty": (("y", "x"), entropy.reshape(shape),
                                      {"description": "entropy of the class probabilities / log(classes)"})},
                     coords=coords)
    out.attrs = {"classes": {int(c): str(names.get(int(c), f"class {int(c)}")) for c in model.classes_},
                 "labelled": idx.tolist(), "classifier": f"LogisticRegression(C={C:g}) on unit embeddings"}
    if "patch_size" in grid.attrs:
        out.attrs["patch_size"] = grid.attrs["patch_size"]
    if grid.rio.crs is not None:
        out = out.rio.write_crs(grid.rio.crs)
        if "x" in coords:
            out = out.rio.write_transform(grid.rio.transform())
    return out


def next_labels(result: xr.Dataset, n: int = 5, exclude=None) -> pd.DataFrame:
    """The ``n`` most uncertain patches of a :func:`label_map` result that carry no label yet, most
    uncertain first: ``row``, ``col``, ``x``, ``y`` (patch centre, the grid's CRS), ``uncertainty``.
    ``exclude``: more flat patch indices to skip (default: the labelled ones the result records)."""
    entropy = result["uncertainty"].transpose("y", "x").values.ravel()
    skip = set(result.attrs.get("labelled", [])) if exclude is None else {int(i) for i in exclude}
    order = np.argsort(-np.nan_to_num(entropy, nan=-1.0), kind="stable")
    picks = [int(i) for i in order if np.isfinite(entropy[i]) and int(i) not in skip][:int(n)]
    cols = result.sizes["x"]
    rows = []
    for i in picks:
        r, c = divmod(i, cols)
        rows.append({"row": r, "col": c,
                     "x": float(result["x"].values[c]) if "x" in result.coords else np.nan,
                     "y": float(result["y"].values[r]) if "y" in result.coords else np.nan,
                     "uncertainty": float(entropy[i])})
    return pd.DataFrame(rows, columns=["row", "col", "x", "y", "uncertainty"])
