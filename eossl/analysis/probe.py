"""How good are embeddings? kNN accuracy, and the no-learning baseline every result must beat.

Per-band image statistics reach 78-90 % kNN accuracy on EuroSAT variants (Corley et al. 2023):
an SSL result means something only next to :func:`band_statistics` features.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from eossl.errors import DataError, ParameterError
from eossl import validate as check


def band_statistics(chips: xr.DataArray) -> xr.DataArray:
    """Raw per-band mean and standard deviation of each chip: ``(sample, dim)`` with 2C features."""
    if "sample" not in chips.dims or "band" not in chips.dims:
        raise DataError(f"band_statistics needs chips (sample, band, y, x), got dims {chips.dims}")
    values = chips.transpose("sample", "band", "y", "x").values.astype("float64")
    feats = np.concatenate([np.nanmean(values, axis=(2, 3)), np.nanstd(values, axis=(2, 3))], axis=1)
    names = [f"{b}_mean" for b in chips["band"].values] + [f"{b}_std" for b in chips["band"].values]
    coords = {k: v for k, v in chips.coords.items() if v.dims == ("sample",)}
    return xr.DataArray(feats, dims=("sample", "dim"), coords={**coords, "feature": ("dim", names)},
                        name="band_statistics")


def _labels_of(emb: xr.DataArray, labels) -> np.ndarray:
    if labels is None:
        if "label" not in emb.coords:
            raise DataError("no labels: pass labels=... or use embeddings with a 'label' coordinate")
        labels = emb["label"].values
    labels = np.asarray(labels)
    if len(labels) != emb.sizes[emb.dims[0]]:
        raise DataError(f"{len(labels)} labels for {emb.sizes[emb.dims[0]]} embeddings")
    return labels


def knn_accuracy(emb: xr.DataArray, labels=None, k: int = 5, folds: int = 5, metric: str = "cosine",
                 seed: int = 0, standardize: bool | None = None) -> dict:
    """Stratified k-fold accuracy of a k-nearest-neighbour classifier on the embeddings.

    Returns ``{"accuracy": mean, "std": spread over folds, "k": k, "folds": folds}``.
    ``standardize`` (default: on for Euclidean metrics) rescales each feature to unit variance
    inside each fold, so raw band statistics with different units are compared fairly.
    """
    y = _labels_of(emb, labels)
    X = emb.transpose(emb.dims[0], "dim").values.astype("float64")
    if not np.isfinite(X).all():
        raise DataError("embeddings contain NaN; drop those samples first")
    k = check.integer("k", k, minimum=1)
    folds = check.integer("folds", folds, minimum=2)
    counts = pd.Series(y).value_counts()
    if len(counts) < 2:  # every prediction would be right: an accuracy of 1.0 that means nothing
        raise DataError(f"the labels hold a single class ({counts.index[0]!r}); kNN accuracy needs "
                        "at least two classes")
    folds = int(min(folds, counts.min()))
    if folds < 2:
        raise DataError(f"class {counts.idxmin()!r} has a single example; kNN accuracy needs at "
                        "least 2 per class")
    standardize = metric != "cosine" if standardize is None else standardize
    scores = []
    from sklearn.model_selection import StratifiedKFold  # sklearn loads on first use, not with eossl
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        Xtr, Xte = X[train], X[test]
        if standardize:
            scaler = StandardScaler().fit(Xtr)
            Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
        clf = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric=metric).fit(Xtr, y[train])
        scores.append(float((clf.predict(Xte) == y[test]).mean()))
    return {"accuracy": float(np.mean(scores)), "std": float(np.std(scores)), "k": k, "folds": folds}


def _missing(labels: np.ndarray) -> np.ndarray:
    """True where a label means "no label": None, NaN or the empty string."""
    if labels.dtype.kind == "f":
        return np.isnan(labels)
    if labels.dtype.kind in "US":
        return labels == ""
    if labels.dtype.kind == "O":
        return np.array([v is None or v == "" or (isinstance(v, float) and np.isnan(v)) for v in labels])
    return np.zeros(labels.shape, dtype=bool)


def _probe_samples(emb: xr.DataArray, labels, block):
    """Flatten chips ``(sample, dim)`` or a grid ``(y, x, dim)`` to X ``(n, D)``, labels ``(n,)``
    and block ids ``(n,)`` (None without ``block``); unlabeled samples and nodata patches dropped."""
    if "dim" not in emb.dims:
        raise DataError(f"probe needs embeddings with a 'dim' dimension (from eossl.embed), got dims {emb.dims}")
    if emb.ndim == 3 and "y" in emb.dims and "x" in emb.dims:
        grid = emb.transpose("y", "x", "dim")
        rows, cols = grid.sizes["y"], grid.sizes["x"]
        if labels is None:
            if "label" not in grid.coords:
                raise DataError("no labels: pass labels=... (patch labels (y, x), e.g. from "
                                "eossl.scene_labels(raster, emb)) or give embeddings with a 'label' coordinate")
            labels = grid["label"]
        if isinstance(labels, xr.DataArray) and {"y", "x"} <= set(labels.dims):
            for d in ("y", "x"):
                if (d in labels.coords and d in grid.coords and labels.sizes[d] == grid.sizes[d]
                        and not np.allclose(labels[d].values, grid[d].values)):
                    raise DataError(f"the labels' {d} coordinates differ from the embeddings': they are on "
                                    "another grid; make them with eossl.scene_labels(raster, emb)")
            labels = labels.transpose("y", "x")
        labels = np.asarray(labels)
        if labels.shape != (rows, cols):
            raise DataError(f"labels of shape {labels.shape} do not match the embedding grid of {rows}x{cols} "
                            "patches; turn a label raster into patch labels with eossl.scene_labels(raster, emb)")
        X = grid.values.reshape(rows * cols, -1).astype("float64")  # (y*x, D)
        y = labels.reshape(-1)
        if block is None:
            groups = None
        elif np.ndim(block) == 0:
            b = int(block)
            if b < 1:
                raise DataError(f"block={block}: give the block side in patches (1 or more)")
            r, c = np.divmod(np.arange(rows * cols), cols)
            groups = (r // b) * (-(-cols // b)) + c // b  # block index, row-major
        else:
            groups = np.asarray(block).reshape(-1)
        # embed marks patches with nodata pixels NaN: they carry no embedding, so no sample
        keep = np.isfinite(X).all(axis=1)
    elif emb.ndim == 2:
        y = _labels_of(emb, labels)
        X = emb.transpose(emb.dims[0], "dim").values.astype("float64")
        if not np.isfinite(X).all():
            raise DataError("embeddings contain NaN; drop those samples first")
        if block is None:
            groups = None
        elif np.ndim(block) == 0:
            if "x" not in emb.coords or "y" not in emb.coords:
                raise DataError("a blocked split of chips needs x and y coordinates on the sample dimension "
                                "(chip centres), or block=an array with one block id per chip")
            size = float(block)
            if size <= 0:
                raise DataError(f"block={block}: give the block side in the chips' coordinate units")
            bx = np.floor(emb["x"].values.astype("float64") / size).astype("int64")
            by = np.floor(emb["y"].values.astype("float64") / size).astype("int64")
            groups = np.unique(np.stack([bx, by], axis=1), axis=0, return_inverse=True)[1].reshape(-1)
        else:
            groups = np.asarray(block).reshape(-1)
        keep = np.ones(len(y), dtype=bool)
    else:
        raise DataError(f"probe needs chip embeddings (sample, dim) or an embedding grid (y, x, dim), got {emb.dims}")
    if groups is not None and len(groups) != len(y):
        raise DataError(f"block has {len(groups)} ids for {len(y)} embeddings; give one block id per sample")
    keep &= ~_missing(y)
    if keep.sum() == 0:
        raise DataError("no sample has both an embedding and a label")
    return X[keep], y[keep], (None if groups is None else groups[keep])


class _Splitter:
    """Draws (train, test) index sets: ``shots`` per class for training, the rest (random split)
    or every sample of the held-out blocks (blocked split) for testing."""

    def __init__(self, y, groups, shots, rng, test_blocks: float):
        self.y, self.groups, self.shots, self.rng, self.test_blocks = y, groups, shots, rng, test_blocks
        self.blocks = None if groups is None else np.unique(groups)

    def _block_halves(self):
        n_test = int(np.clip(round(self.test_blocks * len(self.blocks)), 1, len(self.blocks) - 1))
        test_blocks = self.rng.choice(self.blocks, n_test, replace=False)
        return np.isin(self.groups, test_blocks)  # (n,) True in a test block

    def _fits(self, in_test, c):
        of_class = self.y == c
        return (of_class & ~in_test).sum() >= self.shots and (of_class & in_test).any()

    def feasible(self, classes, tries: int = 200) -> dict:
        """Per class, in how many of ``tries`` random block splits it has ``shots`` training and at
        least one test example (random split: 1 or 0 by its count alone)."""
        counts = {c: int((self.y == c).sum()) for c in classes}
        if self.groups is None:
            return {c: int(counts[c] > self.shots) for c in classes}
        if len(self.blocks) < 2:
            raise DataError("all labeled samples fall in one block; a blocked split needs at least two "
                            "blocks: use a smaller block")
        fits = dict.fromkeys(classes, 0)
        for _ in range(tries):
            in_test = self._block_halves()
            for c in classes:
                fits[c] += self._fits(in_test, c)
        return fits

    def draw(self, classes, tries: int = 1000):
        pool = np.isin(self.y, classes)
        if self.groups is None:
            in_test = np.ones(len(self.y), dtype=bool)
        else:
            for _ in range(tries):
                in_test = self._block_halves()
                if all(self._fits(in_test, c) for c in classes):
                    break
            else:
                raise DataError(f"no split of the blocks gives every class {self.shots} training and one "
                                f"test example together in {tries} tries; use smaller blocks or fewer shots")
        train = np.concatenate([self.rng.choice(np.flatnonzero(pool & ~in_test & (self.y == c)) if
                                                self.groups is not None else np.flatnonzero(self.y == c),
                                                self.shots, replace=False) for c in classes])
        test = np.setdiff1d(np.flatnonzero(pool & in_test), train)
        return train, test


def probe(emb: xr.DataArray, labels=None, shots=(1, 5, 10), repeats: int = 10, k: int = 5,
          seed: int = 0, metric: str = "cosine", *, split: str = "random", block=None,
          test_blocks: float = 0.5, small_classes: str = "error", per_class: bool = False) -> pd.DataFrame:
    """Few-label probes: for each number of labels per class, draw that many training examples of
    every class at random (``repeats`` times), fit a kNN and a logistic-regression probe on them,
    and score the held-out examples.

    Args:
        emb: chip embeddings ``(sample, dim)`` or an embedding grid ``(y, x, dim)`` of a scene.
        labels: one per chip (default: the ``label`` coordinate), or for a grid patch labels
            ``(y, x)`` such as :func:`scene_labels` makes from a land-cover raster. ``None``, NaN and
            ``""`` mean "no label": those samples are left out, as are grid patches without an
            embedding (nodata); NaN in chip embeddings is a :class:`DataError`, as are labels that do
            not match the embeddings in number or grid.
        shots: labels per class in each training draw.
        split: ``"random"``: train draws from all samples, every other sample is tested.
            ``"blocked"``: samples are grouped into spatial blocks and each draw holds out a random
            ``test_blocks`` share of the blocks: training examples come only from the other blocks
            and only the held-out blocks are tested, so neighbouring patches (which share context
            and look alike) never sit on both sides. Blocks that touch still share a border, so
            larger blocks leak less.
        block: for ``split="blocked"``: on a grid, the block side in patches; for chips, the block
            side in the units of their ``x``/``y`` sample coordinates (chip centres); or an array with
            one block id per sample (any grouping: fields, tiles, dates).
        small_classes: what to do with a class that cannot give ``shots`` training examples and keep
            one to test (a class with a single example never can; in a blocked split also a class
            found in a single block): ``"error"`` (default) raises a :class:`DataError` naming it,
            ``"drop"`` leaves it out of that shot count's draws with a warning (the ``classes``
            column says how many classes each row covers).
        per_class: return per-class recall instead of the summary: one row per (probe, shots, class)
            with ``recall``, ``recall_std`` over the draws and ``test_examples`` (mean count). The
            summary's balanced accuracy is the mean of these recalls in each draw.

    Returns one row per (probe, shots) with mean and spread over the draws of accuracy and
    balanced accuracy (the mean per-class recall, which rare classes weigh on as much as common
    ones), the split, the number of classes and the mean number of test examples.
    kNN uses ``min(k, shots)`` neighbours. Features are standardised on each draw's training part.
    """
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, recall_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    if split not in ("random", "blocked"):
        raise DataError(f"split must be 'random' or 'blocked', got {split!r}")
    if small_classes not in ("error", "drop"):
        raise DataError(f"small_classes must be 'error' or 'drop', got {small_classes!r}")
    if split == "blocked" and block is None:
        raise DataError("split='blocked' needs block=...: the block side (patches on a grid, coordinate "
                        "units for chips) or one block id per sample")
    repeats = check.integer("repeats", repeats, minimum=1)
    k = check.integer("k", k, minimum=1)
    shots = [shots] if isinstance(shots, (int, np.integer)) else list(shots)
    if not shots:
        raise ParameterError("shots is empty: give one or more label counts per class, e.g. shots=[1, 5, 10]")
    shots = [check.integer("shots", n, minimum=1) for n in shots]
    X, y, groups = _probe_samples(emb, labels, block if split == "blocked" else None)
    all_classes = np.unique(y)
    if len(all_classes) < 2:
        raise DataError(f"the labels hold {len(all_classes)} class(es) {all_classes.tolist()}; a probe "
                        "needs at least two classes")
    rng = np.random.default_rng(seed)
    rows, class_rows = [], []
    for n in shots:
        n = int(n)
        if n < 1:
            raise DataError(f"shots must be 1 or more labels per class, got {n}")
        splitter = _Splitter(y, groups, n, rng, test_blocks)
        fits = splitter.feasible(all_classes)
        small = [c for c in all_classes if fits[c] == 0]
        if small:
            def why(c):
                count = int((y == c).sum())
                if count <= n:
                    return f"{str(c)!r} ({count} example{'s' if count > 1 else ''})"
                return f"{str(c)!r} ({count} examples in {len(np.unique(groups[y == c]))} block(s))"
            detail = ", ".join(why(c) for c in small)
            if small_classes == "error":
                raise DataError(f"{n} labels per class leaves no test example of class {detail}; use fewer "
                                "shots" + (" or smaller blocks" if groups is not None else "")
                                + ", or small_classes='drop' to leave such classes out")
            warnings.warn(f"{n} shots: leaving out class {detail}: too few examples to train and test",
                          stacklevel=2)
        classes = np.array([c for c in all_classes if fits[c] > 0])
        if len(classes) < 2:
            raise DataError(f"with {n} labels per class fewer than two classes can be probed; use fewer shots")
        scores = {"kNN": [], "logistic": []}
        recalls = {"kNN": [], "logistic": []}
        supports = []
        for _ in range(repeats):
            train, test = splitter.draw(classes)
            scaler = StandardScaler().fit(X[train])
            Xtr, Xte = scaler.transform(X[train]), scaler.transform(X[test])
            knn = KNeighborsClassifier(n_neighbors=min(k, n), metric=metric).fit(Xtr, y[train])
            logreg = LogisticRegression(max_iter=2000, C=1.0).fit(Xtr, y[train])
            supports.append([(y[test] == c).sum() for c in classes])
            for name, model in (("kNN", knn), ("logistic", logreg)):
                pred = model.predict(Xte)
                scores[name].append(((pred == y[test]).mean(), balanced_accuracy_score(y[test], pred)))
                recalls[name].append(recall_score(y[test], pred, labels=classes, average=None, zero_division=0))
        common = {"repeats": repeats, "split": split, "classes": len(classes),
                  "test_examples": float(np.sum(supports, axis=1).mean())}
        for name, values in scores.items():
            values = np.array(values)
            rows.append({"probe": name, "shots": n, "accuracy": values[:, 0].mean(),
                         "accuracy_std": values[:, 0].std(), "balanced_accuracy": values[:, 1].mean(),
                         "balanced_accuracy_std": values[:, 1].std(), **common})
            per = np.array(recalls[name])  # (repeats, classes)
            for j, c in enumerate(classes):
                class_rows.append({"probe": name, "shots": n, "class": c, "recall": per[:, j].mean(),
                                   "recall_std": per[:, j].std(),
                                   "test_examples": float(np.mean([s[j] for s in supports])),
                                   "repeats": repeats, "split": split})
    return pd.DataFrame(class_rows if per_class else rows)


def scene_labels(raster: xr.DataArray, emb: xr.DataArray, min_fraction: float = 0.5,
                 ignore="auto") -> xr.DataArray:
    """A label raster on a scene's pixel grid -> one label per patch of its embedding grid.

    Each patch takes the majority class of its pixels (majority vote), named by the raster's
    ``classes`` attribute (``{value: name}``, as on the Slovenia sample's ``lulc``) or by the value.
    A patch where no class covers ``min_fraction`` of the pixels (mixed, or mostly no data) gets
    ``""`` (no label; :func:`probe` leaves it out). ``ignore``: values that are not a class;
    ``"auto"`` is the raster's ``nodata``/``_FillValue`` and classes named "no data".
    Returns ``(y, x)`` strings on the embedding grid with its coordinates and CRS, and a ``purity``
    coordinate (the majority class's share of each patch).

    ``emb`` is a grid from :func:`eossl.embed` (its ``patch_size`` attribute gives the patch).
    """
    if "patch_size" not in emb.attrs or not {"y", "x"} <= set(emb.dims):
        raise DataError("scene_labels needs the embedding grid (y, x, dim) that eossl.embed made from the "
                        "scene (it carries the patch size)")
    if isinstance(raster, xr.Dataset):
        raise DataError("give the label variable, e.g. sample['lulc'], not the whole Dataset")
    if raster.ndim != 2 or not {"y", "x"} <= set(raster.dims):
        raise DataError(f"scene_labels needs a label raster (y, x), got dims {raster.dims}")
    p = int(emb.attrs["patch_size"])
    rows, cols = emb.sizes["y"], emb.sizes["x"]
    lab = raster.transpose("y", "x")
    if (lab.sizes["y"] // p, lab.sizes["x"] // p) != (rows, cols):
        raise DataError(f"the label raster ({lab.sizes['y']}x{lab.sizes['x']} px) makes a "
                        f"{lab.sizes['y'] // p}x{lab.sizes['x'] // p} grid of {p} px patches, but the embeddings "
                        f"are {rows}x{cols}: give the labels of the scene that was embedded")
    for d, n in (("x", cols), ("y", rows)):
        if d in lab.coords and d in emb.coords:
            centres = lab[d].values[:n * p].reshape(n, p).mean(axis=1)
            step = abs(float(lab[d].values[1] - lab[d].values[0])) if lab.sizes[d] > 1 else 1.0
            if not np.allclose(centres, emb[d].values, atol=0.5 * step):
                raise DataError(f"the label raster's {d} coordinates are not those of the embedded scene")
    classes = {int(k) if str(k).lstrip("-").isdigit() else k: v for k, v in lab.attrs.get("classes", {}).items()}
    if ignore == "auto":
        ignore = [lab.attrs[a] for a in ("nodata", "_FillValue") if lab.attrs.get(a) is not None]
        ignore += [k for k, v in classes.items() if str(v).lower().replace("_", " ") in ("no data", "nodata")]
    values = lab.values[:rows * p, :cols * p].reshape(rows, p, cols, p)  # (rows, p, cols, p)
    present = [v for v in np.unique(values) if v not in list(ignore or []) and
               not (isinstance(v, float) and np.isnan(v))]
    if not present:
        raise DataError("the label raster holds no class (only ignored / no-data values)")
    counts = np.stack([(values == v).sum(axis=(1, 3)) for v in present])  # (classes, rows, cols)
    best = counts.argmax(axis=0)
    purity = counts.max(axis=0) / (p * p)
    names = np.array([str(classes.get(v.item() if hasattr(v, "item") else v, v)) for v in present])
    out = np.where(purity >= min_fraction, names[best], "")
    result = xr.DataArray(out, dims=("y", "x"), coords={d: emb[d] for d in ("y", "x") if d in emb.coords},
                          name="label", attrs={"min_fraction": min_fraction, "patch_size": p,
                                               "classes": dict(lab.attrs.get("classes", {}))})
    result = result.assign_coords(purity=(("y", "x"), purity))
    if emb.rio.crs is not None:
        result = result.rio.write_crs(emb.rio.crs)
    return result
