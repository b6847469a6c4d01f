"""Change detection from embeddings: ``eossl.change(emb_t1, emb_t2)`` gives a per-patch change score
map; :func:`evaluate_change` scores it against labels; :func:`change_vector` is the raw spectral
baseline every embedding result must be read against.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from eossl.data.normalize import band_stats, nodata_to_nan, normalize_array
from eossl.errors import DataError
from eossl import validate as check


def _same_grid(a: xr.DataArray, b: xr.DataArray) -> None:
    if a.sizes.get("y") != b.sizes.get("y") or a.sizes.get("x") != b.sizes.get("x"):
        raise DataError(f"the two dates' embeddings are on different grids ({a.sizes.get('y')}x{a.sizes.get('x')} "
                        f"vs {b.sizes.get('y')}x{b.sizes.get('x')} patches); embed both dates of one stack "
                        "(eossl.open_stack aligns them) or resample one onto the other first")
    for dim in ("x", "y"):
        if dim in a.coords and dim in b.coords and not np.allclose(a[dim].values, b[dim].values):
            raise DataError(f"the two dates' embeddings have the same size but other {dim} coordinates: "
                            "they do not cover the same ground")


def _standardized(emb: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``(y, x, dim)`` with each dimension centred and scaled over the patches ``ok`` (valid at
    both dates, so both dates' statistics describe the same ground)."""
    mean = emb[ok].mean(axis=0)                                   # (dim,)
    std = emb[ok].std(axis=0)
    return (emb - mean) / np.where(std > 0, std, 1.0)


def change(emb_t1: xr.DataArray, emb_t2: xr.DataArray, standardize: bool = True,
           metric: str = "euclidean") -> xr.DataArray:
    """Per-patch change score between the two dates' embeddings, ``(y, x)`` with the grid's
    coordinates and CRS; NaN where either date has no embedding (nodata). ``emb_t1``/``emb_t2``:
    ``(y, x, dim)`` from :func:`eossl.embed`.

    ``standardize`` (default): first centre and scale every embedding dimension with that date's
    own mean and spread over the patches valid at both dates, as :func:`change_vector` does with
    the bands. Two dates that differ as a whole (another season, stretch or atmosphere) move
    every patch's embedding the same way; without this, that shared shift swamps the local change
    (on the Taizhou pair it took the AUC of random-weight embeddings from 0.98 down to 0.44). The
    price: when most of the scene changed, the change itself becomes part of the date's mean;
    pass ``standardize=False`` for the raw vectors.

    ``metric``: ``"euclidean"`` (default), the root-mean-square difference per dimension,
    ``|e1 - e2| / sqrt(dim)``: the distance :func:`change_vector` takes between band means, here
    between embeddings; ``"cosine"``, ``1 - cos(e1, e2)`` in [0, 2], which ignores how far a
    standardised patch sits from the date's mean, so a patch that went from ordinary to unusual
    in the same direction scores nothing. Measured on the 7 labeled OSCD cities
    (``benchmarks/bench_quality.py``): euclidean lifted the AUC of the default recipe's
    embeddings on every city, and is what lets them beat the raw change vector.
    """
    check.choice("metric", metric, ("euclidean", "cosine"))
    if "dim" not in emb_t1.dims or "dim" not in emb_t2.dims:
        raise DataError("change needs embedding maps (y, x, dim) of two dates")
    _same_grid(emb_t1, emb_t2)
    a = emb_t1.transpose("y", "x", "dim").values.astype("float64")  # (y, x, D)
    b = emb_t2.transpose("y", "x", "dim").values.astype("float64")
    if standardize:
        ok = np.isfinite(a).all(axis=-1) & np.isfinite(b).all(axis=-1)  # (y, x)
        if not ok.any():
            raise DataError("no patch has a valid embedding at both dates (all nodata)")
        a, b = _standardized(a, ok), _standardized(b, ok)
    if metric == "euclidean":
        score = np.sqrt(((a - b) ** 2).mean(axis=-1))
        what = "root-mean-square difference"
    else:
        score = 1.0 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
        what = "cosine distance"
    how = "per-date standardised " if standardize else ""
    out = xr.DataArray(score, dims=("y", "x"), coords={d: emb_t1[d] for d in ("y", "x") if d in emb_t1.coords},
                       name="change_score", attrs={"description": f"{what} between the dates' {how}embeddings",
                                                   "metric": metric})
    if "patch_size" in emb_t1.attrs:  # so evaluate_change needs no patch size
        out.attrs["patch_size"] = emb_t1.attrs["patch_size"]
    if emb_t1.rio.crs is not None:
        out = out.rio.write_crs(emb_t1.rio.crs)
    return out


def _patch_size_of(patch_size, what: str) -> int:
    """A patch size given as a number, or read from embeddings / a score map (``attrs["patch_size"]``)."""
    if isinstance(patch_size, xr.DataArray):
        if "patch_size" not in patch_size.attrs:
            raise DataError(f"{what}: the array given as patch_size carries no 'patch_size' attribute; pass "
                            "the embeddings from eossl.embed (or a number of pixels)")
        patch_size = patch_size.attrs["patch_size"]
    if patch_size is None:
        raise DataError(f"{what} needs the encoder's patch size: pass patch_size=emb (the embeddings from "
                        "eossl.embed carry it) or a number of pixels")
    return check.integer("patch_size", patch_size, minimum=1)


def change_vector(image_t1: xr.DataArray, image_t2: xr.DataArray, patch_size) -> xr.DataArray:
    """The raw spectral baseline (change-vector analysis): per patch, the length of the difference of
    the two dates' per-band means. Each date is standardised with its own per-band statistics first
    (a simple relative radiometric normalisation), so a global brightness or stretch difference
    between the dates is not taken for change. ``(y, x)`` on the same patch grid as
    :func:`eossl.embed` with that patch size; NaN where a patch holds a nodata pixel.

    ``patch_size`` is a number of pixels or the embeddings of one date (``eossl.embed`` records
    the encoder's patch size on them), so the two maps line up."""
    if image_t1.sizes != image_t2.sizes:
        raise DataError(f"the two images differ in size ({dict(image_t1.sizes)} vs {dict(image_t2.sizes)}); "
                        "open both dates with eossl.open_stack, which puts them on one grid")
    for dim in ("x", "y"):
        if dim in image_t1.coords and dim in image_t2.coords and not np.allclose(image_t1[dim], image_t2[dim]):
            raise DataError(f"the two images have the same size but other {dim} coordinates: they do not "
                            "cover the same ground; open both dates with eossl.open_stack")
    p = _patch_size_of(patch_size, "change_vector")
    rows, cols = image_t1.sizes["y"] // p, image_t1.sizes["x"] // p
    if rows == 0 or cols == 0:
        raise DataError(f"images of {image_t1.sizes['y']}x{image_t1.sizes['x']} px hold no {p} px patch")

    def patch_means(image):
        stats = band_stats(image)  # skips nodata
        raw = image.transpose("band", "y", "x").values[:, :rows * p, :cols * p].astype("float32")
        values = normalize_array(nodata_to_nan(raw, image.attrs.get("nodata")), stats["mean"].values,
                                 stats["std"].values, 0)
        # a patch with any nodata pixel gets NaN, as in eossl.embed
        return values.reshape(-1, rows, p, cols, p).mean(axis=(2, 4))  # (C, rows, cols)

    score = np.linalg.norm(patch_means(image_t1) - patch_means(image_t2), axis=0)
    out = xr.DataArray(score, dims=("y", "x"), name="change_vector", attrs={"patch_size": p})
    if "x" in image_t1.coords and "y" in image_t1.coords:
        xs = image_t1["x"].values[:cols * p].reshape(cols, p).mean(axis=1)
        ys = image_t1["y"].values[:rows * p].reshape(rows, p).mean(axis=1)
        out = out.assign_coords(x=xs, y=ys)
        if image_t1.rio.crs is not None:
            out = out.rio.write_crs(image_t1.rio.crs)
    return out


def patch_labels(labels: xr.DataArray, patch_size: int, changed: int = 2, unchanged: int = 1,
                 min_labeled: float = 0.5) -> np.ndarray:
    """Pixel labels ``(y, x)`` -> patch labels on the embedding grid: 1 changed, 0 unchanged,
    -1 unknown. A patch takes the majority of its labeled pixels, and is unknown when fewer than
    ``min_labeled`` of its pixels carry a label (most Landsat-pair pixels are unlabeled)."""
    p = patch_size
    rows, cols = labels.sizes["y"] // p, labels.sizes["x"] // p
    lab = labels.values[:rows * p, :cols * p].reshape(rows, p, cols, p)
    n_changed = (lab == changed).sum(axis=(1, 3))
    n_unchanged = (lab == unchanged).sum(axis=(1, 3))
    out = np.where(n_changed > n_unchanged, 1, 0)
    out[(n_changed + n_unchanged) < min_labeled * p * p] = -1
    return out


def evaluate_change(score: xr.DataArray, labels: xr.DataArray, patch_size=None, **kwargs) -> dict:
    """Score a change map against pixel labels: ROC AUC, and the best F1 over thresholds (with the
    threshold), on the patches that carry a label. The patch size defaults to the score map's
    (``eossl.change`` and ``change_vector`` record it). ``kwargs`` go to :func:`patch_labels`."""
    from sklearn.metrics import precision_recall_curve, roc_auc_score
    p = _patch_size_of(score if patch_size is None else patch_size, "evaluate_change")
    truth = patch_labels(labels, p, **kwargs)
    if truth.shape != score.shape:
        raise DataError(f"labels give a {truth.shape} patch grid but the score map is {score.shape}; "
                        "pass the labels of the same scene and the encoder's patch size")
    keep = (truth >= 0) & np.isfinite(score.values)
    y, s = truth[keep], score.values[keep]
    if len(np.unique(y)) < 2:
        raise DataError("the labeled patches are all of one class; AUC and F1 need both changed and unchanged patches")
    precision, recall, thresholds = precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    return {"auc": float(roc_auc_score(y, s)), "f1": float(f1[best]), "threshold": float(thresholds[best]),
            "patches": int(keep.sum()), "changed": int(y.sum())}
