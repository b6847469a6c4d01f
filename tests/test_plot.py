"""Matplotlib helpers on the bundled sample (Agg backend): each draws what it says."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import eossl  # noqa: E402
from eossl import plot  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def scene(slovenia):
    return slovenia["image"].isel(time=1)


def _ref_stretch(values, lo_p=2, hi_p=98):
    lo, hi = np.nanpercentile(values.reshape(-1, 3), (lo_p, hi_p), axis=0)
    return np.clip((values - lo) / (hi - lo), 0, 1)


def test_stretch_is_a_per_channel_percentile_stretch():
    rng = np.random.default_rng(0)
    rgb = rng.normal(size=(20, 30, 3)) * [1, 10, 100] + [0, 5, -50]
    rgb[2, 3, 1] = np.nan
    out = plot.stretch(rgb)
    assert out.shape == rgb.shape and np.isnan(out[2, 3, 1]) and np.isnan(out).sum() == 1
    np.testing.assert_allclose(out, _ref_stretch(rgb))
    assert np.nanmin(out) == 0 and np.nanmax(out) == 1
    flat = plot.stretch(np.ones((4, 4, 3)))  # constant channels must not divide by zero
    assert np.isfinite(flat).all()


def test_rgb_array_picks_red_green_blue(scene):
    rgb = plot.rgb_array(scene)
    expected = _ref_stretch(scene.sel(band=["B04", "B03", "B02"]).transpose("y", "x", "band")
                            .values.astype("float64"))
    assert rgb.shape == (101, 100, 3)
    np.testing.assert_allclose(rgb, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plot.rgb_array(scene, bands=["B08", "B04", "B03"])[..., 0],
                               _ref_stretch(scene.sel(band=["B08", "B04", "B03"])
                                            .transpose("y", "x", "band").values.astype("float64"))[..., 0],
                               rtol=1e-5, atol=1e-6)


def test_show_scene_draws_in_scene_coordinates(scene):
    ax = plot.show_scene(scene)
    assert len(ax.images) == 1
    img = ax.images[0]
    assert img.get_array().shape == (101, 100, 3)
    x, y = scene["x"].values, scene["y"].values
    left, right, bottom, top = img.get_extent()
    dx = x[1] - x[0]
    assert left == pytest.approx(x[0] - dx / 2) and right == pytest.approx(x[-1] + dx / 2)
    assert top > bottom and top == pytest.approx(y[0] - (y[1] - y[0]) / 2)
    assert "B04" in ax.get_title()
    fig, own = plt.subplots()
    assert plot.show_scene(scene, ax=own, title="mine") is own and own.get_title() == "mine"


def test_show_scene_without_coordinates(chips):
    ax = plot.show_scene(chips.isel(sample=0))
    assert len(ax.images) == 1 and list(ax.images[0].get_extent()) == [-0.5, 63.5, 63.5, -0.5]


@pytest.fixture(scope="module")
def grid_rgb(tiny_run, scene):
    return eossl.pca_rgb(eossl.embed(tiny_run.model, scene))


def test_show_rgb_draws_the_pca_picture(grid_rgb):
    ax = plot.show_rgb(grid_rgb)
    assert len(ax.images) == 1
    np.testing.assert_allclose(ax.images[0].get_array(), grid_rgb.values)
    left, right, _, _ = ax.images[0].get_extent()
    step = grid_rgb["x"].values[1] - grid_rgb["x"].values[0]
    assert left == pytest.approx(grid_rgb["x"].values[0] - step / 2)


def test_scatter_2d_one_collection_per_class(tiny_run, chips):
    emb = eossl.embed(tiny_run.model, chips)
    points = eossl.pca_rgb(emb).isel(rgb=[0, 1]).rename(rgb="component")
    ax = plot.scatter_2d(points)
    classes = np.unique(chips["label"].values)
    assert len(ax.collections) == len(classes) == 10
    assert [t.get_text() for t in ax.get_legend().get_texts()] == classes.tolist()
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert offsets.shape == (120, 2)
    forest = ax.collections[classes.tolist().index("Forest")].get_offsets()
    np.testing.assert_allclose(forest, points.values[chips["label"].values == "Forest"])
    plain = plot.scatter_2d(points.drop_vars(["label", "file"]))
    assert len(plain.collections) == 1 and plain.get_legend() is None


def test_plot_history_draws_the_asked_columns(tiny_run):
    ax = plot.plot_history(tiny_run.history, keys=("loss", "lr", "not_a_column"))
    assert [line.get_label() for line in ax.lines] == ["loss", "lr"]
    x, y = ax.lines[0].get_data()
    np.testing.assert_array_equal(x, tiny_run.history["step"])
    np.testing.assert_allclose(y, tiny_run.history["loss"])
    rows = tiny_run.history.to_dict("records")  # a list of dicts works too
    assert len(plot.plot_history(rows).lines) == 1


def test_show_reconstructions_from_chips(tiny_run, chips):
    fig = plot.show_reconstructions(tiny_run.model, chips, n=3)
    assert len(fig.axes) == 9 and all(len(ax.images) == 1 for ax in fig.axes)
    assert [fig.axes[i].get_title(loc="left") for i in (0, 3, 6)] == \
           ["input", "visible to the encoder", "reconstruction"]
    for ax in fig.axes:
        arr = np.asarray(ax.images[0].get_array())
        assert arr.shape == (64, 64, 3)
    # a quarter of the patches is visible to the encoder: the rest is blank
    visible = np.asarray(fig.axes[3].images[0].get_array())
    assert 0.15 < np.isfinite(visible).all(axis=-1).mean() < 0.35


def test_show_reconstructions_from_a_normalised_tensor(tiny_run):
    batch = torch.randn(5, 13, 64, 64)
    fig = plot.show_reconstructions(tiny_run.model, batch, bands_idx=[3, 2, 1], n=2, mask_ratio=0.5)
    assert len(fig.axes) == 6 and all(len(ax.images) == 1 for ax in fig.axes)
    visible = np.asarray(fig.axes[2].images[0].get_array())
    assert np.isfinite(visible).all(axis=-1).mean() == pytest.approx(0.5)


def test_show_labels_names_the_classes_present(slovenia):
    lulc = slovenia["lulc"]
    ax = plot.show_labels(lulc)
    assert len(ax.images) == 1
    present = np.unique(lulc.values)
    names = [lulc.attrs["classes"][int(v)] for v in present]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == names
    index = np.asarray(ax.images[0].get_array())
    assert index.shape == lulc.shape
    np.testing.assert_array_equal(np.asarray(present)[index.astype(int)], lulc.values)


def test_show_chips_one_column_per_class(chips):
    fig = plot.show_chips(chips, per_class=2)
    axes = np.array(fig.axes).reshape(2, 10)
    classes = list(dict.fromkeys(chips["label"].values))
    assert [ax.get_title() for ax in axes[0]] == [c[:14] for c in classes]
    assert all(len(ax.images) == 1 for ax in axes.ravel())
    # a class with fewer chips than per_class leaves its own cell empty, not its neighbour's
    few = chips.isel(sample=[0, 1, 12, 24, 25])  # 2 AnnualCrop, 1 Forest, 2 HerbaceousVegetation
    axes = np.array(plot.show_chips(few, per_class=2).axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["AnnualCrop", "Forest", "HerbaceousVege"]
    assert [ax.get_title() for ax in axes[1]] == ["AnnualCrop", "", "HerbaceousVege"]
    assert len(axes[1, 1].images) == 0


def test_show_band_groups_colours_each_group(chips):
    from eossl.models.spectral import default_band_groups
    groups = default_band_groups(chips["band"].values.tolist())
    ax = plot.show_band_groups(chips, groups)
    assert len(ax.patches) == sum(len(g) for g in groups) == 13
    assert len({tuple(p.get_facecolor()) for p in ax.patches}) == len(groups)


def test_show_pairs_and_show_tiles(chips):
    from eossl.models.registry import build_method
    x = eossl.normalize(chips).values[:3]
    fig = plot.show_pairs(x, x[::-1], n=3)
    assert len(fig.axes) == 6 and all(len(ax.images) == 1 for ax in fig.axes)
    model = build_method("relative_position", {"name": "vit_tiny", "patch_size": 8, "depth": 1, "embed_dim": 48,
                                               "num_heads": 2, "in_chans": 13, "img_size": 48})
    fig = plot.show_tiles(model, x, n=3)
    titles = [ax.get_title(loc="left") for ax in fig.axes[3:]]
    guesses = [[t.get_text() for t in ax.texts] for ax in fig.axes[3:]]
    assert all(t.startswith("neighbour: ") for t in titles) and all(len(g) == 1 for g in guesses), guesses
    # the marks say whether the guess is the true direction
    for truth, (guess,) in zip(titles, guesses):
        right = truth.removeprefix("neighbour: ") == guess.removeprefix("guess: ").split(" (")[0]
        assert guess.endswith("(right)" if right else "(wrong)"), (truth, guess)
    assert model.training  # drawing the guesses put the model back in training mode
    fig = plot.show_tiles(model, x, n=3, guess=False)
    assert all(not ax.texts for ax in fig.axes[3:])


# ----------------------------------------------------------------- probes and band importance

def _probe_tables():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, (12, 4)) for c in range(3)])
    import xarray as xr
    emb = xr.DataArray(X, dims=("sample", "dim"), coords={"label": ("sample", np.repeat(list("abc"), 12))})
    return emb, {"model": eossl.probe(emb, shots=[1, 5], repeats=2),
                 "other": eossl.probe(emb * -1 + rng.normal(0, 3, X.shape), shots=[1, 5], repeats=2)}


def test_label_efficiency_one_line_and_band_per_probe_and_table():
    _, tables = _probe_tables()
    ax = plot.label_efficiency(tables)
    lines = [ln for ln in ax.get_lines() if ln.get_label() != "chance"]
    assert sorted(ln.get_label() for ln in lines) == ["model · kNN", "model · logistic", "other · kNN",
                                                      "other · logistic"]
    knn = next(ln for ln in lines if ln.get_label() == "model · kNN")
    row = tables["model"][tables["model"]["probe"] == "kNN"]
    np.testing.assert_allclose(knn.get_ydata(), row["balanced_accuracy"])
    assert len(ax.collections) == 4  # a spread band per line
    assert any(ln.get_label() == "chance" and ln.get_ydata()[0] == pytest.approx(1 / 3) for ln in ax.get_lines())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "5"]
    assert len(plot.label_efficiency(tables["model"], metric="accuracy").get_lines()) == 2


def test_class_recall_bars_per_class_and_series():
    emb, _ = _probe_tables()
    per = eossl.probe(emb, shots=[1, 5], repeats=2, per_class=True)
    ax = plot.class_recall({"random": per, "again": per}, shots=5)
    assert len(ax.patches) == 3 * 4  # 3 classes x (2 tables x 2 probes)
    widths = [p.get_width() for p in ax.patches[:3]]
    np.testing.assert_allclose(widths, per[(per["shots"] == 5) & (per["probe"] == "kNN")]["recall"])
    assert ax.get_yticklabels()[0].get_text().startswith("a  (n=7)")


def test_band_importance_bars_in_wavelength_order(chips, tiny_run):
    imp = eossl.band_importance(tiny_run.model, chips.isel(sample=[0, 60]))
    ax = plot.band_importance(imp)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "B01\n443 nm" and labels[8] == "B8A\n865 nm" and labels[-1] == "B12\n2190 nm"
    heights = [p.get_height() for p in ax.patches]
    assert heights[8] == pytest.approx(imp.sel(band="B8A").item())
    per_class = eossl.band_importance(tiny_run.model, chips.isel(sample=[0, 1, 60]), per="class")
    ax = plot.band_importance(per_class)
    assert ax.images[0].get_array().shape == (2, 13)


def test_show_score_hits_and_tiles_on_a_search(scene):
    """Search helpers: a heat map in scene coordinates, footprints as boxes, one thumbnail per hit."""
    import xarray as xr
    from affine import Affine
    # a real (y, x, dim) map without an encoder: the band means of each 8 px patch
    t = scene.rio.transform()
    rows, cols = scene.sizes["y"] // 8, scene.sizes["x"] // 8
    values = scene.values[:, :rows * 8, :cols * 8].reshape(-1, rows, 8, cols, 8).mean(axis=(2, 4))  # (C, rows, cols)
    grid = Affine(t.a * 8, 0, t.c, 0, t.e * 8, t.f)
    emb = xr.DataArray(np.moveaxis(values, 0, -1), dims=("y", "x", "dim"),
                       coords={"x": grid.c + grid.a * (np.arange(cols) + 0.5),
                               "y": grid.f + grid.e * (np.arange(rows) + 0.5)})
    emb = emb.rio.write_crs(scene.rio.crs).rio.write_transform(grid)
    result = eossl.similar(emb, at=(3, 4), crs="rowcol", k=5)
    ax = plot.show_score(result.heatmap, title="similarity")
    assert ax.images[0].get_array().shape == (rows, cols)
    left, right, bottom, top = ax.images[0].get_extent()
    scene_left, _, _, scene_top = plot.show_scene(scene).images[0].get_extent()
    assert (left, top) == pytest.approx((scene_left, scene_top)) and right - left == pytest.approx(cols * grid.a)
    ax = plot.show_hits(scene, result)
    boxes = [p for p in ax.patches]
    assert len(boxes) == 5 and boxes[0].get_xy() == pytest.approx((result.table["minx"][0], result.table["miny"][0]))
    fig = plot.show_hit_tiles(scene, result, n=4, context=0)
    shown = [a for a in fig.axes if a.images]
    assert len(shown) == 4 and shown[0].images[0].get_array().shape[:2] == (8, 8)  # the footprint
    assert shown[0].get_title().startswith("#1")


def test_show_change_curves_one_curve_per_score(taizhou):
    image = taizhou.image
    cva = eossl.change_vector(image.isel(time=0), image.isel(time=1), 8)
    noise = cva.copy(data=np.random.default_rng(0).random(cva.shape))
    fig = plot.show_change_curves({"CVA": cva, "noise": noise}, taizhou.change, 8)
    roc_ax, pr_ax = fig.axes
    assert len(roc_ax.lines) == 3  # two curves and the chance diagonal
    legend = [t.get_text() for t in roc_ax.get_legend().get_texts()]
    auc = eossl.evaluate_change(cva, taizhou.change, 8)["auc"]
    assert legend[0] == f"CVA (AUC {auc:.3f})" and legend[1].startswith("noise (AUC 0.")


def test_show_labels_takes_patch_class_names_and_leaves_no_label_blank():
    import xarray as xr
    labels = xr.DataArray(np.array([["forest", "", ""], ["grassland", "forest", "grassland"]]), dims=("y", "x"))
    ax = plot.show_labels(labels)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["forest", "grassland"]
    index = ax.images[0].get_array()
    assert index.mask[0, 1] if np.ma.isMaskedArray(index) else np.isnan(index[0, 1])


def test_show_labels_pixel_map_and_patch_labels_share_colours(slovenia, tiny_run):
    grid = eossl.embed(tiny_run.model, slovenia["image"].isel(time=3))
    patch = eossl.scene_labels(slovenia["lulc"], grid)
    colours = [{t.get_label(): t.get_facecolor() for t in plot.show_labels(da).get_legend().legend_handles}
               for da in (slovenia["lulc"], patch)]
    shared = set(colours[0]) & set(colours[1])
    assert "forest" in shared and all(colours[0][c] == colours[1][c] for c in shared)
