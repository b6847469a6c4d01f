"""LabelPainter: map clicks become labels, a few-shot class map and uncertainty follow, labels
round-trip through GeoJSON, and bad input gives messages in the widget."""

from __future__ import annotations

import json

import numpy as np
import pytest

import eossl

pytest.importorskip("ipyleaflet")
from eossl_widgets.painter import LabelPainter  # noqa: E402

CLASSES = {2: "forest", 3: "grassland"}  # the Slovenia land-cover codes in this scene


@pytest.fixture(scope="module")
def scene_emb(slovenia, tiny_run):
    scene = slovenia["image"].isel(time=2)        # a summer date
    return scene, eossl.embed(tiny_run.model, scene)


@pytest.fixture(scope="module")
def truth(slovenia, scene_emb):
    """The majority land-cover code of every patch, on the embedding grid."""
    _, emb = scene_emb
    p = emb.attrs["patch_size"]
    rows, cols = emb.sizes["y"], emb.sizes["x"]
    lab = slovenia["lulc"].values[:rows * p, :cols * p].reshape(rows, p, cols, p).transpose(0, 2, 1, 3)
    lab = lab.reshape(rows, cols, -1)
    return np.apply_along_axis(lambda v: np.bincount(v, minlength=16).argmax(), -1, lab)


def click(painter, lat, lon):
    """What ipyleaflet receives from the browser when a person clicks the map."""
    painter.map._handle_leaflet_event(None, {"event": "interaction", "type": "click",
                                             "coordinates": [lat, lon]}, [])


def label_some(painter, truth, per_class=3, seed=0):
    rng = np.random.default_rng(seed)
    for code, name in CLASSES.items():
        painter.picker.value = name                       # the class picker
        rows, cols = np.nonzero(truth == code)
        for i in rng.choice(len(rows), per_class, replace=False):
            click(painter, *painter.locator.lat_lon(rows[i], cols[i]))


def test_clicks_make_a_class_map_that_matches_the_land_cover(scene_emb, truth):
    scene, emb = scene_emb
    painter = LabelPainter(scene, emb, classes=list(CLASSES.values()), n_suggest=4)
    assert painter.message == "" and painter.class_layer is None and not painter.fitted
    painter.picker.value = "forest"
    rows, cols = np.nonzero(truth == 2)
    click(painter, *painter.locator.lat_lon(rows[0], cols[0]))
    assert len(painter.labels) == 1 and painter.labels[0]["class"] == "forest"
    assert painter.class_layer is None and "second class" in painter.status.value
    label_some(painter, truth)
    assert len(painter.labels) == 7 and len(painter.label_layer.layers) == 7
    assert painter.fitted and painter.class_layer in painter.map.layers
    assert painter.uncertainty_layer in painter.map.layers and painter.class_layer.url.startswith("data:image/png")
    # the few-shot map agrees with the land-cover map far beyond chance (balanced accuracy)
    codes = np.array(list(CLASSES))
    predicted = np.where(painter.class_map.values >= 0, codes[np.maximum(painter.class_map.values, 0)], -1)
    known = np.isin(truth, codes)
    recalls = [(predicted[known & (truth == c)] == c).mean() for c in codes]
    assert np.mean(recalls) > 0.75, recalls
    # suggestions: the most uncertain unlabelled patches, most uncertain first, drawn as rings
    s = painter.suggestions
    assert len(s) == 4 and len(painter.suggestion_layer.layers) == 4
    assert [x["uncertainty"] for x in s] == sorted([x["uncertainty"] for x in s], reverse=True)
    labelled = {(lab["row"], lab["col"]) for lab in painter.labels}
    assert not labelled & {(x["row"], x["col"]) for x in s}
    assert s[0]["uncertainty"] == pytest.approx(float(np.nanmax(
        np.where(np.isin(np.arange(truth.size).reshape(truth.shape),
                         [r * truth.shape[1] + c for r, c in labelled]), np.nan, painter.uncertainty.values))))
    # undo removes the last label and refits; clear removes the map
    painter.undo()
    assert len(painter.labels) == 6 and len(painter.label_layer.layers) == 6 and painter.fitted
    painter.clear()
    assert painter.labels == [] and not painter.fitted and painter.class_layer is None
    assert len(painter.suggestion_layer.layers) == 0


def test_labels_round_trip_through_geojson(scene_emb, truth, tmp_path):
    scene, emb = scene_emb
    painter = LabelPainter(scene, emb, classes=list(CLASSES.values()))
    label_some(painter, truth, per_class=2)
    path = painter.save(tmp_path / "labels.geojson")
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 4
    first = data["features"][0]
    assert first["geometry"]["type"] == "Point" and first["properties"]["class"] == "forest"
    lon, lat = first["geometry"]["coordinates"]
    assert 14 < lon < 15.5 and 45 < lat < 47                     # lon/lat order (EPSG:4326)
    other = LabelPainter(scene, emb, classes=list(CLASSES.values()))
    assert other.load(path) == 4 and "loaded 4 of 4" in other.message
    assert [(a["row"], a["col"], a["class"]) for a in other.labels] == \
        [(a["row"], a["col"], a["class"]) for a in painter.labels]
    np.testing.assert_array_equal(other.class_map.values, painter.class_map.values)
    # and through geopandas, which reads it as EPSG:4326 points
    gpd = pytest.importorskip("geopandas")
    gdf = gpd.read_file(path)
    assert gdf.crs.to_epsg() == 4326 and list(gdf["class"]) == [lab["class"] for lab in painter.labels]


def test_loading_labels_outside_the_scene_or_broken_files(scene_emb, truth, tmp_path):
    scene, emb = scene_emb
    painter = LabelPainter(scene, emb, classes=list(CLASSES.values()))
    lat, lon = painter.locator.lat_lon(3, 3)
    features = [{"type": "Feature", "properties": {"class": "forest"},
                 "geometry": {"type": "Point", "coordinates": [lon, lat]}},
                {"type": "Feature", "properties": {"class": "water"},      # a class the painter lacks
                 "geometry": {"type": "Point", "coordinates": [*painter.locator.lat_lon(5, 5)[::-1]]}},
                {"type": "Feature", "properties": {"class": "forest"},     # Paris: far outside
                 "geometry": {"type": "Point", "coordinates": [2.35, 48.85]}},
                {"type": "Feature", "properties": {},
                 "geometry": {"type": "Point", "coordinates": [lon, lat]}}]
    added = painter.load({"type": "FeatureCollection", "features": features})
    assert added == 2 and painter.classes == ["forest", "grassland", "water"]
    assert "1 outside the scene" in painter.message and "1 not points with a 'class'" in painter.message
    assert "water" in painter.picker.options and painter.fitted
    bad = tmp_path / "broken.geojson"
    bad.write_text("{not json")
    assert painter.load(bad) == 0 and "could not read" in painter.message and len(painter.labels) == 2
    assert painter.load({"type": "Feature"}) == 0 and "not a GeoJSON FeatureCollection" in painter.message
    utm = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
           "features": features[:1]}
    assert painter.load(utm) == 0 and "lon/lat" in painter.message and len(painter.labels) == 2
    assert painter.save(bad / "x.geojson") is None               # a file where a folder should be
    assert "could not save" in painter.message


def test_bad_input_gives_messages_not_tracebacks(scene_emb, chips, tiny_run):
    scene, emb = scene_emb
    painter = LabelPainter(scene, emb, classes=list(CLASSES.values()))
    click(painter, 48.85, 2.35)                                  # a click far outside the scene
    assert painter.labels == [] and "outside the scene" in painter.message
    lat, lon = painter.locator.lat_lon(0, 0)
    assert not painter.add_label(lat, lon, "water") and "unknown class 'water'" in painter.message
    shifted = emb.assign_coords(x=emb.x + 50_000)                 # embeddings of another place
    other = LabelPainter(scene, shifted, classes=["a", "b"])
    assert "another grid" in other.message and other.map is None and other.children == (other.note,)
    assert not other.add_label(lat, lon, "a")
    chip_emb = eossl.embed(tiny_run.model, chips.isel(sample=slice(0, 4)))
    assert "(y, x, dim)" in LabelPainter(scene, chip_emb, classes=["a", "b"]).message
    no_crs = scene.drop_vars("spatial_ref")
    assert no_crs.rio.crs is None
    assert "scene has no CRS" in LabelPainter(no_crs, emb, classes=["a", "b"]).message
    assert "two distinct class" in LabelPainter(scene, emb, classes=["a"]).message
    holes = emb.copy()
    holes[0, 0] = np.nan                                         # a patch without data
    painter = LabelPainter(scene, holes, classes=["a", "b"])
    assert not painter.add_label(lat, lon, "a") and "no embedding" in painter.message
