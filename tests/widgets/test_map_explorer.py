"""MapExplorer state without a browser: a click runs a real similarity search and fills the map."""

import pytest

pytest.importorskip("ipyleaflet")

import eossl  # noqa: E402
from eossl_widgets import MapExplorer  # noqa: E402
from eossl_widgets.map_explorer import patch_at, patch_boxes, patch_lonlat  # noqa: E402


@pytest.fixture(scope="module")
def explorer(taizhou, taizhou_emb):
    return MapExplorer(taizhou, taizhou_emb, k=6, clusters=4)


def _lonlat_of_patch(emb, row, col):
    from rasterio.warp import transform
    minx, miny, maxx, maxy = patch_boxes(emb, [(row, col)])[0]
    (lon,), (lat,) = transform(emb.rio.crs, "EPSG:4326", [(minx + maxx) / 2], [(miny + maxy) / 2])
    return lat, lon


def test_layers_for_scene_embeddings_clusters_and_change(explorer):
    names = list(explorer.layers)
    for want in ("true colour (B3, B2, B1)", "false colour (B4, B3, B2)", "embedding PCA-RGB", "clusters (k=4)",
                 "change score", "similarity", "top-k hits", "query patch", "selection"):
        assert want in names
    assert any(n.startswith("true colour, 2003") for n in names)       # the other date of the pair
    assert not any(getattr(layer, "url", "").startswith("http") for layer in explorer.map.layers)  # offline
    slider_layers = {s.layer.name for s in explorer.sliders.children}
    assert {"embedding PCA-RGB", "similarity", "change score"} <= slider_layers
    assert explorer.problem is None and "Click a place" in explorer.status


def test_click_searches_from_that_patch_and_fills_heatmap_outlines_and_gallery(explorer, taizhou_emb):
    emb = taizhou_emb.isel(time=0)
    lat, lon = _lonlat_of_patch(emb, 20, 31)
    empty_url = explorer.layers["similarity"].url
    result = explorer.click(lat, lon)
    assert explorer.last_query == (lat, lon) and explorer.query_patch == (20, 31)
    assert explorer.result is result and len(result.table) == 6
    # the same search straight from the library gives the same hits
    direct = eossl.similar(emb, at=(20, 31), crs="rowcol", k=6)
    assert result.table[["row", "col"]].values.tolist() == direct.table[["row", "col"]].values.tolist()
    assert explorer.layers["similarity"].url != empty_url and explorer.layers["similarity"].visible
    assert len(explorer.hits_layer.data["features"]) == 6
    assert len(explorer.query_layer.data["features"]) == 1
    assert len(explorer.gallery.children) == 6
    first = explorer.gallery.children[0]
    assert bytes(first.children[0].value)[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{result.table['score'].iloc[0]:.3f}" in first.children[1].value
    assert "patch (row 20, col 31)" in explorer.status


def test_click_outside_the_scene_is_a_message_not_an_error(explorer):
    before = explorer.result
    assert explorer.click(0.0, 0.0) is None
    assert "outside the scene" in explorer.status and "eossl-status-error" in explorer.status_html.value
    assert explorer.result is before           # the last good search stays on screen


def test_a_browser_click_event_goes_through_the_same_path(explorer, taizhou_emb):
    lat, lon = _lonlat_of_patch(taizhou_emb.isel(time=0), 5, 7)
    explorer.map._handle_leaflet_event(None, {"event": "interaction", "type": "click", "coordinates": [lat, lon]},
                                       None)
    assert explorer.query_patch == (5, 7)
    explorer.map._handle_leaflet_event(None, {"event": "interaction", "type": "click", "coordinates": [-40.0, 10.0]},
                                       None)
    assert "outside the scene" in explorer.status


def test_select_outlines_patches(explorer):
    explorer.select([(0, 0), (3, 4), (49, 49)])
    assert len(explorer.selection_layer.data["features"]) == 3
    assert "3 patches selected" in explorer.status
    explorer.select([])
    assert explorer.selection_layer.data["features"] == []


def test_patch_at_and_thumbnails_cut_the_right_pixels(explorer, taizhou_emb):
    emb = taizhou_emb.isel(time=0)
    assert patch_at(emb, *_lonlat_of_patch(emb, 12, 40)) == (12, 40)
    lon, lat = patch_lonlat(emb, 12, 40)
    assert patch_at(emb, lat, lon) == (12, 40)
    explorer.click_patch(12, 40)
    assert explorer.query_patch == (12, 40)
    image = explorer.patch_image(12, 40)
    assert image.sizes["y"] == 8 and image.sizes["x"] == 8               # one 8 px patch
    assert float(image.x.min()) > float(emb.x[40]) - 4 * 30 - 1


def test_embeddings_from_another_grid_give_a_message_in_the_widget(taizhou, slovenia, taizhou_emb):
    shifted = taizhou_emb.isel(time=0).assign_coords(x=taizhou_emb.x + 50_000)
    with pytest.warns(UserWarning, match="another grid"):
        other = MapExplorer(taizhou, shifted, clusters=0)
    assert "another grid" in other.status and "eossl-status-error" in other.status_html.value
    assert "similarity" not in other.layers and "true colour (B3, B2, B1)" in other.layers  # the scene still shows
    assert other.click(*other.map.center) is None and "another grid" in other.status
    with pytest.warns(UserWarning, match="EPSG"):
        MapExplorer(slovenia, taizhou_emb.isel(time=0), clusters=0)


def test_chip_embeddings_are_refused_with_a_reason(taizhou, chips, tiny_run):
    chip_emb = eossl.embed(tiny_run.model, chips)                      # (sample, dim): no place on a map
    with pytest.warns(UserWarning, match="chip embeddings"):
        other = MapExplorer(taizhou, chip_emb, clusters=0)
    assert "chip embeddings" in other.status


def test_a_scene_without_crs_is_a_clear_error(taizhou, taizhou_emb):
    scene = taizhou["image"].isel(time=0).drop_vars("spatial_ref")
    scene.attrs.pop("grid_mapping", None)
    assert scene.rio.crs is None
    with pytest.raises(eossl.DataError, match="write_crs"):
        MapExplorer(scene, taizhou_emb.isel(time=0))


def test_a_scene_too_big_for_an_overlay_is_shown_smaller_with_a_notice(taizhou, taizhou_emb):
    small = MapExplorer(taizhou, taizhou_emb, clusters=0, max_pixels=40_000)
    assert "shown at 1/2 resolution" in small.status and small.problem is None
    assert small.layers["true colour (B3, B2, B1)"].notice is not None


def test_a_zero_margin_is_left_out_of_layers_and_searches(taizhou, taizhou_emb):
    import numpy as np
    scene = taizhou["image"].isel(time=0).copy(deep=True)
    scene[:, :, :80] = 0                                    # 10 patch columns of no data, no nodata tag
    explorer = MapExplorer(scene, taizhou_emb.isel(time=0), k=30, clusters=4)
    assert explorer.off_scene.values[:, :10].all() and int(explorer.off_scene.sum()) == 10 * scene.sizes["y"] // 8
    result = explorer.click_patch(20, 30)
    assert (result.table["col"] >= 10).all()               # no hit on the margin
    assert np.isnan(result.heatmap.values[:, :10]).all()   # and no heat painted on it
    assert (explorer.clusters.values[:, :10] < 0).all()    # nor a cluster


def test_an_rgb_only_scene_gets_no_false_colour_layer_and_says_so(taizhou, taizhou_emb):
    scene = taizhou["image"].isel(time=0).isel(band=[2, 1, 0]).drop_vars(
        [c for c in ("wavelength", "common_name") if c in taizhou["image"].coords])
    explorer = MapExplorer(scene, taizhou_emb.isel(time=0), k=4, clusters=0)
    assert not any(name.startswith("false colour") for name in explorer.layers)
    assert "no false-colour layer" in explorer.status
    assert explorer.click_patch(5, 5) is not None
