"""Matplotlib pictures for notebooks: scenes in true colour, embedding maps, 2-D scatters,
training curves and MAE reconstructions. Each function draws on ``ax`` (or a new one) and returns it.
"""

from __future__ import annotations

# matplotlib.pyplot loads inside each function (~0.8 s): `import eossl` is paid by every worker and CLI call
import numpy as np
import xarray as xr

from eossl.card import match_bands, model_input
from eossl.data.bands import rgb_bands


def stretch(rgb: np.ndarray, percentiles=(2, 98)) -> np.ndarray:
    """Per-channel percentile stretch of (..., 3) values to 0..1 (NaN stays NaN)."""
    flat = rgb.reshape(-1, rgb.shape[-1])
    lo, hi = np.nanpercentile(flat, percentiles, axis=0)
    return np.clip((rgb - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)


def rgb_array(da: xr.DataArray, bands=None, percentiles=(2, 98)) -> np.ndarray:
    """(band, y, x) -> (y, x, 3) true colour (or the named ``bands``), stretched to 0..1."""
    bands = bands or rgb_bands(da)
    rgb = da.sel(band=list(bands)).transpose("y", "x", "band").values.astype("float32")
    return stretch(rgb, percentiles)


def _extent(da):
    if "x" in da.coords and "y" in da.coords and da.sizes.get("x", 0) > 1 and da.sizes.get("y", 0) > 1:
        x, y = da["x"].values, da["y"].values
        dx, dy = (x[1] - x[0]) / 2, (y[1] - y[0]) / 2
        return (x[0] - dx, x[-1] + dx, y[-1] + dy, y[0] - dy)
    return None


def show_scene(da: xr.DataArray, ax=None, bands=None, title: str | None = None):
    """A scene (band, y, x) in true colour, in its own coordinates."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    ax.imshow(rgb_array(da, bands), extent=_extent(da))
    ax.set_title(title or f"{da.attrs.get('sensor', '')} true colour ({', '.join(bands or rgb_bands(da))})")
    ax.set_axis_off()
    return ax


def show_rgb(rgb: xr.DataArray, ax=None, title: str = "embedding PCA (components 1-3 as RGB)"):
    """An (y, x, rgb) picture such as :func:`eossl.pca_rgb` gives, in scene coordinates."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    ax.imshow(np.nan_to_num(rgb.transpose("y", "x", "rgb").values, nan=0.0), extent=_extent(rgb),
              interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    return ax


def scatter_2d(points: xr.DataArray, hue: str = "label", ax=None, title: str = "UMAP of embeddings",
               s: float = 18):
    """A (sample, component) scatter coloured by a sample coordinate (e.g. class label)."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(6, 5))[1]
    xy = points.transpose("sample", "component").values
    if hue in points.coords:
        classes = np.unique(points[hue].values)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            sel = points[hue].values == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=s, color=cmap(i % cmap.N), label=str(c))
        ax.legend(fontsize=7, markerscale=1.2, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=s)
    ax.set_title(title)
    ax.set_xticks([]), ax.set_yticks([])
    return ax


def plot_history(history, ax=None, keys=("loss",)):
    """Training curves from ``run.history`` (a DataFrame or list of dicts)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    df = pd.DataFrame(history)
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    for key in keys:
        if key in df:
            ax.plot(df["step"], df[key], label=key)
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def show_reconstructions(model, data, bands_idx=None, n: int = 4, mask_ratio: float | None = None,
                         seed: int = 0):
    """MAE pictures: the input, what the encoder saw, and the reconstruction, for ``n`` images.

    ``data`` is chips (sample, band, y, x) as a DataArray (normalised here with the model's card,
    true-colour bands found by name) or an already normalised (B, C, H, W) tensor/array, with
    ``bands_idx`` the three band indices to show.
    """
    import matplotlib.pyplot as plt
    import torch
    if isinstance(data, xr.DataArray):
        picks = np.random.default_rng(seed).choice(data.sizes["sample"], min(n, data.sizes["sample"]), replace=False)
        data, bands_idx = _model_rgb_input(model, data.isel(sample=np.sort(picks)))
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(data[:n]), dtype=torch.float32)
    masked, pasted, mask_img = model.reconstruct(x, mask_ratio)
    masked = masked.masked_fill(mask_img.bool(), float("nan"))  # hidden patches show as blank
    idx = list(bands_idx) if bands_idx is not None else [0, 1, 2]
    fig, axes = plt.subplots(3, len(x), figsize=(2.2 * len(x), 6.6), squeeze=False)
    for j in range(len(x)):
        lo, hi = np.percentile(x[j, idx].permute(1, 2, 0).numpy(), (2, 98), axis=(0, 1))
        for i, (img, name) in enumerate(((x, "input"), (masked, "visible to the encoder"),
                                         (pasted, "reconstruction"))):
            rgb = img[j, idx].permute(1, 2, 0).numpy()
            axes[i, j].imshow(np.clip((rgb - lo) / np.where(hi > lo, hi - lo, 1), 0, 1))
            axes[i, j].set_axis_off()
            if j == 0:
                axes[i, j].set_title(name, fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def _model_rgb_input(model, chips: xr.DataArray):
    """Normalised model input for chips, and the indices of its true-colour bands."""
    names = match_bands(chips, model.card)["band"].values.tolist()
    return model_input(model, chips), [names.index(b) for b in rgb_bands(match_bands(chips, model.card))]


def show_pairs(first, second, bands_idx=(0, 1, 2), titles=("view 1", "view 2"), n: int = 6,
               suptitle: str | None = None):
    """Two rows of images (B, C, H, W), e.g. the two augmented views of contrastive learning or the
    same place at two dates; each column shares one stretch so differences are real."""
    import matplotlib.pyplot as plt
    first, second = np.asarray(first)[:n], np.asarray(second)[:n]
    idx = list(bands_idx)
    fig, axes = plt.subplots(2, len(first), figsize=(2.0 * len(first), 4.3), squeeze=False)
    for j in range(len(first)):
        ref = np.concatenate([first[j, idx], second[j, idx]], axis=2).transpose(1, 2, 0)
        lo, hi = np.percentile(ref, (2, 98), axis=(0, 1))
        for i, (images, title) in enumerate(((first, titles[0]), (second, titles[1]))):
            rgb = images[j, idx].transpose(1, 2, 0)
            axes[i, j].imshow(np.clip((rgb - lo) / np.where(hi > lo, hi - lo, 1), 0, 1))
            axes[i, j].set_axis_off()
            if j == 0:
                axes[i, j].set_title(title, fontsize=9, loc="left")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_labels(labels: xr.DataArray, ax=None, classes: dict | None = None, title: str = "labels"):
    """A categorical map (y, x) with one colour per class and a legend (class names from
    ``classes`` or the array's ``classes`` attribute)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    classes = classes or labels.attrs.get("classes") or {}
    values = labels.values
    present = [v for v in np.unique(values[np.isfinite(values)] if values.dtype.kind == "f" else values)
               if v != ""]  # "" is "no label" (eossl.scene_labels): left blank
    cmap = plt.get_cmap("tab10")
    index = np.full(values.shape, np.nan)
    for i, v in enumerate(present):
        index[values == v] = i
    names = {int(k): v for k, v in classes.items()}
    # a class keeps the colour of its place in the class table, so a pixel map and its patch labels
    # (class names, from eossl.scene_labels) match; classes outside the table take their rank
    slots = {**{k: j for j, k in enumerate(names)}, **{str(v): j for j, v in enumerate(names.values())}}
    colors = [cmap(slots.get(int(v) if values.dtype.kind in "iuf" else str(v), i) % 10) for i, v in enumerate(present)]
    ax.imshow(index, cmap=ListedColormap(colors or ["white"]),
              vmin=-0.5, vmax=len(present) - 0.5, extent=_extent(labels), interpolation="nearest")
    ax.legend(handles=[Patch(color=c, label=names.get(int(v), str(v)) if values.dtype.kind in "iuf" else str(v))
                       for c, v in zip(colors, present)],
              fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    ax.set_title(title)
    ax.set_axis_off()
    return ax


def show_chips(chips: xr.DataArray, per_class: int = 1, max_classes: int = 10, bands=None):
    """A gallery of chips in true colour, ``per_class`` per label, titled by class."""
    import matplotlib.pyplot as plt
    bands = bands or rgb_bands(chips)
    labels = chips["label"].values if "label" in chips.coords else np.array(["chip"] * chips.sizes["sample"])
    classes = list(dict.fromkeys(labels))[:max_classes]
    fig, axes = plt.subplots(per_class, len(classes), figsize=(1.6 * len(classes), 1.8 * per_class),
                             squeeze=False)
    for col, c in enumerate(classes):  # one column per class, even when a class has fewer chips
        for row, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            ax = axes[row, col]
            ax.imshow(rgb_array(chips.isel(sample=i), bands))
            ax.set_title(str(labels[i])[:14], fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def show_band_groups(da: xr.DataArray, band_groups, ax=None, title: str = "band groups"):
    """Each band at its wavelength (and native resolution as bar height), coloured by its group:
    what a band-group model treats as one token."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(8, 2.8))[1]
    names = da["band"].values.tolist()
    wl = da["wavelength"].values if "wavelength" in da.coords else np.arange(len(names), dtype=float)
    res = da["resolution"].values if "resolution" in da.coords else np.ones(len(names))
    cmap = plt.get_cmap("tab10")
    for g, group in enumerate(band_groups):
        for i in group:
            ax.bar(np.log10(wl[i]), res[i], width=0.012, color=cmap(g % 10))
            ax.annotate(names[i], (np.log10(wl[i]), res[i]), ha="center", va="bottom", fontsize=7)
    ax.set_xlabel("wavelength (log10 nm)")
    ax.set_ylabel("native resolution (m)")
    ax.set_title(title)
    return ax


def show_tiles(model, window, n: int = 4, bands_idx=(0, 1, 2), seed: int = 0, guess: bool = True):
    """Relative-position pictures: the centre tile and the neighbour the model must place, for
    ``n`` normalised windows (B, C, H, W), titled with the true direction and (``guess``) the
    model's answer, marked right or wrong."""
    import torch
    from eossl.models.position import NEIGHBOUR_OFFSETS
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(window[:n]), dtype=torch.float32)
    centre, neighbour, labels = model.cut_tiles(x)
    guesses = None
    if guess:
        was_training = model.training
        with torch.no_grad():
            guesses = model.eval().classify(centre, neighbour)[0].argmax(dim=1).tolist()
        model.train(was_training)
    names = {(-1, -1): "up-left", (-1, 0): "up", (-1, 1): "up-right", (0, -1): "left", (0, 1): "right",
             (1, -1): "down-left", (1, 0): "down", (1, 1): "down-right"}
    fig = show_pairs(centre.numpy(), neighbour.numpy(), bands_idx, titles=("centre tile", "neighbour tile"),
                     n=n)
    for j, label in enumerate(labels.tolist()):
        ax = fig.axes[len(x) + j]
        ax.set_title(f"neighbour: {names[tuple(NEIGHBOUR_OFFSETS[label])]}", fontsize=9, loc="left")
        if guesses is not None:
            right = guesses[j] == label
            ax.text(0, -0.03, f"guess: {names[tuple(NEIGHBOUR_OFFSETS[guesses[j]])]} ({'right' if right else 'wrong'})",
                    transform=ax.transAxes, va="top", fontsize=9, color="tab:green" if right else "tab:red")
    fig.tight_layout()
    return fig


def show_score(score: xr.DataArray, ax=None, title: str | None = None, cmap: str = "magma", vmin=None, vmax=None,
               label: str | None = None):
    """A ``(y, x)`` score map (similarity heat map, change score) in scene coordinates, with a
    colour bar; NaN (no embedding) stays blank."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(5.5, 5))[1]
    im = ax.imshow(score.transpose("y", "x").values, extent=_extent(score), cmap=cmap, vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label or score.name or "")
    ax.set_title(title or str(score.name or "score"))
    ax.set_axis_off()
    return ax


def show_hits(scene: xr.DataArray, result, ax=None, bands=None, color: str = "yellow", title: str | None = None):
    """A scene ``(band, y, x)`` in true colour with the footprints of a search result's hits
    (``result.table`` from :func:`eossl.similar`, or that table) outlined and numbered by rank."""
    from matplotlib.patches import Rectangle
    table = getattr(result, "table", result)
    ax = show_scene(scene, ax=ax, bands=bands, title=title or f"top {len(table)} most similar patches")
    for _, hit in table.iterrows():
        ax.add_patch(Rectangle((hit["minx"], hit["miny"]), hit["maxx"] - hit["minx"], hit["maxy"] - hit["miny"],
                               fill=False, edgecolor=color, linewidth=1.2))
        ax.annotate(str(int(hit["rank"])), (hit["maxx"], hit["maxy"]), color=color, fontsize=7)
    return ax


def show_hit_tiles(scene: xr.DataArray, result, n: int = 8, context: int = 8, bands=None):
    """Thumbnails of the ``n`` best hits of a search: each hit's footprint (boxed) with ``context``
    pixels around it, titled by rank and score. One stretch for all, so brightness compares."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    table = getattr(result, "table", result).head(n)
    rgb = rgb_array(scene, bands)  # (y, x, 3) stretched once over the scene
    inverse = ~scene.rio.transform()
    fig, axes = plt.subplots(1, len(table), figsize=(1.7 * len(table), 2.0), squeeze=False)
    for ax, (_, hit) in zip(axes[0], table.iterrows()):
        c0, r0 = (int(round(v)) for v in inverse @ (hit["minx"], hit["maxy"]))
        c1, r1 = (int(round(v)) for v in inverse @ (hit["maxx"], hit["miny"]))
        top, left = max(0, r0 - context), max(0, c0 - context)
        ax.imshow(rgb[top:r1 + context, left:c1 + context], interpolation="nearest")
        ax.add_patch(Rectangle((c0 - left - 0.5, r0 - top - 0.5), c1 - c0, r1 - r0, fill=False,
                               edgecolor="yellow", linewidth=1.2))
        ax.set_title(f"#{int(hit['rank'])}  {hit['score']:.2f}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def show_change_curves(scores: dict, labels: xr.DataArray, patch_size: int, **kwargs):
    """ROC and precision-recall curves of change scores ``{name: (y, x) score}`` against pixel
    labels on the patch grid (as :func:`eossl.evaluate_change` counts them), the best F1 marked.
    ``kwargs`` go to :func:`eossl.analysis.change.patch_labels`."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

    from eossl.analysis.change import patch_labels
    truth = patch_labels(labels, patch_size, **kwargs)
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, score in scores.items():
        keep = (truth >= 0) & np.isfinite(score.values)
        y, s = truth[keep], score.values[keep]
        fpr, tpr, _ = roc_curve(y, s)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
        precision, recall, _ = precision_recall_curve(y, s)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        best = int(np.argmax(f1[:-1]))
        line, = pr_ax.plot(recall, precision, label=f"{name} (best F1 {f1[best]:.3f})")
        pr_ax.plot(recall[best], precision[best], "o", color=line.get_color())
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on labeled patches")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall (dot: best F1)")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def show_class_maps(maps, titles=None, classes: dict | None = None, scene: xr.DataArray | None = None,
                    size: float = 3.6):
    """Class maps ``(y, x)`` side by side with one colour per class in all of them (truth next to a
    prediction). ``classes`` ({value: name}, default: the first map's ``classes`` attribute) fixes the
    colours; other values (no data, unknown, -1) are left blank. ``scene`` puts its true colour first."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    maps = list(maps)
    classes = classes or maps[0].attrs.get("classes") or {}
    values = list(classes)
    cmap = plt.get_cmap("tab10")
    n = len(maps) + (scene is not None)
    fig, axes = plt.subplots(1, n, figsize=(size * n + 1.5, size), squeeze=False)
    axes = list(axes[0])
    if scene is not None:
        show_scene(scene, ax=axes.pop(0), title="scene")
    titles = titles or [m.name or "" for m in maps]
    for ax, m, title in zip(axes, maps, titles):
        index = np.full(m.shape, np.nan)
        for i, v in enumerate(values):
            index[m.values == v] = i
        ax.imshow(index, cmap=ListedColormap([cmap(i % 10) for i in range(max(1, len(values)))]),
                  vmin=-0.5, vmax=len(values) - 0.5, extent=_extent(m), interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    axes[-1].legend(handles=[Patch(color=cmap(i % 10), label=str(classes[v])) for i, v in enumerate(values)],
                    fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def _as_tables(tables) -> dict:
    import pandas as pd
    return {"": tables} if isinstance(tables, pd.DataFrame) else dict(tables)


def label_efficiency(tables, metric: str = "balanced_accuracy", ax=None, title: str | None = None):
    """Label-efficiency curves from :func:`eossl.probe` tables: ``metric`` against labels per class,
    the mean over the draws with a band of +- one spread, one line per probe. ``tables``: one table
    or ``{name: table}`` (encoders, feature sets, splits) to compare; a name keeps one colour, the
    probe sets the line style. The dotted line is chance for balanced accuracy (1 / classes)."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    styles = {"kNN": "-", "logistic": "--"}
    cmap = plt.get_cmap("tab10")
    shots, classes = set(), set()
    for i, (name, table) in enumerate(_as_tables(tables).items()):
        for probe, rows in table.groupby("probe", sort=False):
            rows = rows.sort_values("shots")
            mean, spread = rows[metric].to_numpy(), rows[f"{metric}_std"].to_numpy()
            ax.plot(rows["shots"], mean, styles.get(probe, ":"), marker="o", color=cmap(i % 10),
                    label=f"{name} · {probe}" if name else probe)
            ax.fill_between(rows["shots"], mean - spread, mean + spread, color=cmap(i % 10), alpha=0.15)
            shots |= set(rows["shots"].tolist())
            classes |= set(rows["classes"].tolist()) if "classes" in rows else set()
    if metric == "balanced_accuracy" and len(classes) == 1:
        ax.axhline(1 / classes.pop(), color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_xticks(sorted(shots), [str(s) for s in sorted(shots)])
    ax.minorticks_off()
    ax.set_xlabel("labels per class")
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    ax.set_title(title or "label efficiency (mean ± spread over draws)")
    return ax


def class_recall(tables, shots: int | None = None, ax=None, title: str | None = None):
    """Per-class recall from ``eossl.probe(..., per_class=True)`` (one table or ``{name: table}``):
    a group of bars per class, one bar per (name, probe), whiskers = spread over the draws, the mean
    number of test examples beside each class. ``shots``: which row set (default: the smallest)."""
    import matplotlib.pyplot as plt
    tables = _as_tables(tables)
    shots = shots if shots is not None else min(min(t["shots"]) for t in tables.values())
    series = [(name, probe, rows) for name, table in tables.items()
              for probe, rows in table[table["shots"] == shots].groupby("probe", sort=False)]
    classes = list(dict.fromkeys(c for _, _, rows in series for c in rows["class"]))
    ax = ax or plt.subplots(figsize=(7, 0.5 + 0.45 * len(classes) * max(1, len(series) / 2)))[1]
    height = 0.8 / max(1, len(series))
    cmap = plt.get_cmap("tab10")
    for i, (name, probe, rows) in enumerate(series):
        rows = rows.set_index("class").reindex(classes)
        ax.barh(np.arange(len(classes)) + i * height, rows["recall"], height, xerr=rows["recall_std"],
                color=cmap(i % 10), label=f"{name} · {probe}" if name else probe, error_kw={"linewidth": 0.8})
    def support(c):  # mean test examples of class c, per table when the tables differ
        counts = list(dict.fromkeys(f"{n:.0f}" for _, _, rows in series
                                    for n in rows.loc[rows["class"] == c, "test_examples"]))
        return "/".join(counts)
    ax.set_yticks(np.arange(len(classes)) + 0.4 - height / 2, [f"{c}  (n={support(c)})" for c in classes],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("recall")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    ax.set_title(title or f"per-class recall with {shots} label{'s' if shots > 1 else ''} per class")
    return ax


def band_importance(imp: xr.DataArray, ax=None, title: str | None = None):
    """Band importance from :func:`eossl.band_importance`: bars per band in wavelength order,
    labelled with the band name and its wavelength (coloured by band group for attention); a
    ``(class, band)`` result is drawn as a class x band heat map. Per-chip or per-patch results are
    averaged first."""
    import matplotlib.pyplot as plt
    order = np.arange(imp.sizes["band"])
    if "wavelength" in imp.coords and np.isfinite(imp["wavelength"].values).any():
        order = np.argsort(np.nan_to_num(imp["wavelength"].values, nan=np.inf), kind="stable")
    imp = imp.isel(band=order)
    names = [str(b) for b in imp["band"].values]
    if "wavelength" in imp.coords:
        names = [f"{n}\n{w:.0f} nm" if np.isfinite(w) else n for n, w in zip(names, imp["wavelength"].values)]
    units = imp.attrs.get("units", "importance")
    what = f"band importance ({imp.attrs.get('method', '')})"
    if "class" in imp.dims:
        values = imp.transpose("class", "band").values
        ax = ax or plt.subplots(figsize=(1 + 0.55 * len(names), 0.8 + 0.35 * imp.sizes["class"]))[1]
        im = ax.imshow(values, aspect="auto", cmap="viridis")
        plt.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(units, fontsize=7)
        ax.set_yticks(np.arange(imp.sizes["class"]), [str(c) for c in imp["class"].values], fontsize=8)
        ax.set_xticks(np.arange(len(names)), names, fontsize=7)
        ax.set_title(title or f"{what} per class")
        return ax
    imp = imp.mean(dim=[d for d in imp.dims if d != "band"], skipna=True)
    ax = ax or plt.subplots(figsize=(1 + 0.55 * len(names), 3))[1]
    if "group" in imp.coords:
        cmap = plt.get_cmap("tab10")
        colors = [cmap(g % 10) if g >= 0 else "lightgrey" for g in imp["group"].values]
    else:
        colors = "tab:blue"
    ax.bar(np.arange(len(names)), imp.values, color=colors)
    if "group" in imp.coords and "band_groups" in imp.attrs:
        from matplotlib.patches import Patch
        ax.legend(handles=[Patch(color=plt.get_cmap("tab10")(g % 10), label=" ".join(group))
                           for g, group in enumerate(imp.attrs["band_groups"])],
                  fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False, title="group")
    ax.set_xticks(np.arange(len(names)), names, fontsize=7)
    ax.set_ylabel(units if len(units) < 40 else "importance", fontsize=8)
    ax.set_title(title or what)
    return ax
