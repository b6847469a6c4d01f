"""EmbeddingExplorer state without a browser: selections reach the map, map clicks reach the scatter."""

import numpy as np
import pytest

pytest.importorskip("holoviews")
pytest.importorskip("jupyter_bokeh")

import eossl  # noqa: E402
from eossl_widgets import EmbeddingExplorer, MapExplorer  # noqa: E402
from eossl_widgets.embedding_explorer import patch_labels  # noqa: E402
from eossl_widgets.map_explorer import patch_boxes  # noqa: E402


@pytest.fixture(scope="module")
def linked(taizhou, taizhou_emb):
    emb = taizhou_emb                                                    # (time, 50, 50, dim)
    explorer = MapExplorer(taizhou, emb, clusters=5)
    return explorer, EmbeddingExplorer(map_explorer=explorer, method="pca", max_points=1000)


def test_points_are_patches_with_labels_thumbnails_and_inline_bokeh(linked):
    explorer, scatter = linked
    assert scatter.points.sizes["sample"] == 1000 and scatter.subsampled        # 2500 patches subsampled
    rows, cols = scatter.points["row"].values, scatter.points["col"].values
    assert np.array_equal(scatter.points["label"].values, explorer.clusters.values[rows, cols])
    thumbs = scatter.source.data["thumb"]
    assert len(thumbs) == 1000 and all(t.startswith("data:image/png;base64,") for t in thumbs[:10])
    assert "@thumb" in [t for t in scatter.figure.tools if type(t).__name__ == "HoverTool"][0].tooltips
    assert "http" not in str(scatter.plot.render_bundle)                       # no CDN, no remote images
    assert "PCA of 1000 patches (subsampled)" in scatter.status


def test_a_selection_event_outlines_those_patches_on_the_map(linked):
    explorer, scatter = linked
    scatter.selection.event(index=[0, 5, 9])                                    # the HoloViews stream
    assert scatter.selected == [0, 5, 9]
    want = [(int(scatter.points["row"][i]), int(scatter.points["col"][i])) for i in (0, 5, 9)]
    assert explorer.selected == want and len(explorer.selection_layer.data["features"]) == 3
    ring = np.array(explorer.selection_layer.data["features"][1]["geometry"]["coordinates"][0])
    from rasterio.warp import transform
    minx, miny, maxx, maxy = patch_boxes(explorer.emb, [want[1]])[0]
    (lon,), (lat,) = transform(explorer.emb.rio.crs, "EPSG:4326", [(minx + maxx) / 2], [(miny + maxy) / 2])
    assert abs(ring[:4, 0].mean() - lon) < 1e-4 and abs(ring[:4, 1].mean() - lat) < 1e-4
    assert "3 patches selected" in scatter.status


def test_a_box_selection_in_bokeh_reaches_the_stream_and_the_map(linked):
    explorer, scatter = linked
    xy = scatter.points.values
    x0, x1 = np.percentile(xy[:, 0], [0, 30])
    inside = scatter.select_box(x0, x1, xy[:, 1].min(), xy[:, 1].max())
    assert scatter.source.selected.indices == inside                           # what the browser shows
    assert scatter.selection.index == inside and len(inside) > 100
    assert len(explorer.selection_layer.data["features"]) == len(inside)


def test_a_map_click_rings_the_patch_in_the_scatter(linked):
    explorer, scatter = linked
    i = 17
    row, col = int(scatter.points["row"][i]), int(scatter.points["col"][i])
    explorer.query_patch = (row, col)          # what a map click sets
    assert scatter.highlighted == i
    assert scatter.highlight_source.data["x"] == [pytest.approx(float(scatter.points.values[i, 0]))]
    assert f"row {row}, col {col}" in scatter.status
    missing = sorted(set(range(2500)) - set((scatter.points["row"] * 50 + scatter.points["col"]).values.tolist()))[0]
    explorer.query_patch = divmod(missing, 50)
    assert scatter.highlighted is None and "not among the points shown" in scatter.status


def test_embeddings_from_another_grid_are_a_message(linked):
    explorer, _ = linked
    other = EmbeddingExplorer(explorer.emb.isel(y=slice(0, 20)), map_explorer=explorer, method="pca")
    assert "another grid" in other.status and "eossl-status-error" in other.status_html.value
    before = list(explorer.selected)
    other.select([0, 1])
    assert explorer.selected == before                                           # the map is left alone


def test_pixel_labels_become_the_majority_per_patch(linked, taizhou):
    explorer, _ = linked
    labels = taizhou["change"]                                                   # (400, 400) pixel labels
    per_patch = patch_labels(labels, explorer.emb)
    assert per_patch.shape == (50, 50)
    block = labels.values[8 * 10:8 * 11, 8 * 20:8 * 21]
    assert per_patch[10, 20] == np.bincount(block.ravel()).argmax()


def test_chips_with_umap(chips, tiny_run):
    emb = eossl.embed(tiny_run.model, chips)                                     # (120, dim)
    scatter = EmbeddingExplorer(emb, scene=chips, method="umap")
    assert scatter.points.sizes["sample"] == 120 and scatter.points.name == "umap"
    assert set(scatter.points["label_name"].values) == set(map(str, np.unique(chips["label"].values)))
    scatter.select([1, 2])
    assert "2 chips selected" in scatter.status
    with pytest.raises(ValueError, match="umap' or 'pca"):
        EmbeddingExplorer(emb, method="tsne")
