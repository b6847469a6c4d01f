"""Label a scene by clicking it: a few-shot classifier on the patch embeddings paints a live class
map, and an uncertainty layer says where a new label would help most.

    painter = LabelPainter(scene, emb, classes=["water", "forest", "fields", "built-up"])
    painter                                  # pick a class, click the map; repeat
    painter.add_label(lat, lon, "forest")    # the same from code
    painter.save("labels.geojson")           # points with a "class" property, lon/lat (EPSG:4326)

``emb`` is the ``(y, x, dim)`` embedding map of ``scene`` from :func:`eossl.embed`. Each label is
the patch under the clicked point. With two or more classes labelled, :func:`eossl.label_map` (a
logistic regression on the L2-normalised embeddings) predicts every patch and gives the uncertainty
map (entropy, 0 sure .. 1 uniform); :func:`eossl.next_labels` picks the suggestions. The widget only
draws them: the same results come without it from those two calls.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import xarray as xr

try:
    import ipyleaflet
    import ipywidgets as ipw
    import traitlets as tr
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("eossl_widgets needs ipyleaflet and ipywidgets: pip install 'eossl[maps]'") from None

import eossl
from eossl.errors import DataError
from eossl_widgets.overlay import (LONLAT, _scene_array, array_overlay, base_map, blank_patches, off_scene_patches,
                                   scene_overlay, update_overlay)

SUGGESTION_COLOUR = "#ffffff"


def _message_html(text: str, level: str = "warning") -> str:
    colour = {"warning": "#b35806", "error": "#b2182b", "info": "#1b7837"}[level]
    return f"<div style='color:{colour};padding:2px 0'>{text}</div>" if text else ""


def palette(n: int) -> tuple[str, list[str]]:
    """The matplotlib colour map for ``n`` classes and its first ``n`` colours as hex: markers and
    the class-map overlay (coloured by class index) share them."""
    import matplotlib
    from matplotlib.colors import to_hex
    name = "tab10" if n <= 10 else "tab20"
    cm = matplotlib.colormaps[name]
    return name, [to_hex(cm(i % cm.N)) for i in range(n)]


def scene_image(scene) -> xr.DataArray:
    """(band, y, x) from a scene, a Dataset with ``image`` or a stack (first date), with a CRS."""
    scene = _scene_array(scene)
    if scene.rio.crs is None:
        raise DataError("the scene has no CRS, so it cannot go on a map; write one with "
                        "scene.rio.write_crs('EPSG:32633') (the CRS its x/y coordinates are in)")
    return scene


def check_on_scene(grid: xr.DataArray, scene: xr.DataArray, what: str) -> None:
    """A clear error unless ``grid`` (y, x) has a CRS and lies on ``scene`` (same ground, within one
    scene pixel): embeddings or scores of another scene must not be drawn as if they were these."""
    if grid.rio.crs is None:
        raise DataError(f"the {what} have no CRS; use the output of eossl.embed / eossl.change on a "
                        "scene with a CRS (chips have no place on a map)")
    if "x" not in grid.coords or "y" not in grid.coords:
        raise DataError(f"the {what} have no x/y coordinates, so they cannot be placed on the scene")
    left, bottom, right, top = grid.rio.transform_bounds(scene.rio.crs)
    s_left, s_bottom, s_right, s_top = scene.rio.bounds()
    px = max(abs(r) for r in scene.rio.resolution())
    tol = px + 1e-6 * max(abs(s_left), abs(s_top), 1.0)
    outside = (left < s_left - tol or right > s_right + tol or bottom < s_bottom - tol or top > s_top + tol)
    covered = (min(right, s_right) - max(left, s_left)) * (min(top, s_top) - max(bottom, s_bottom))
    if outside:
        why = ("they do not overlap it at all" if covered <= 0 else
               "they reach beyond its edges")
        raise DataError(f"the {what} are on another grid than the scene: {why} (theirs: "
                        f"{left:.0f}, {bottom:.0f}, {right:.0f}, {top:.0f}; the scene's: {s_left:.0f}, "
                        f"{s_bottom:.0f}, {s_right:.0f}, {s_top:.0f} in {scene.rio.crs}). Compute them "
                        "from this scene (eossl.embed(model, scene))")


class PatchLocator:
    """Map clicks (lat, lon) -> (row, col) of a (y, x) grid with a CRS, and back."""

    def __init__(self, grid: xr.DataArray):
        from pyproj import Transformer
        self.xs, self.ys = grid["x"].values, grid["y"].values
        res_x, res_y = grid.rio.resolution()
        self.dx, self.dy = abs(res_x), abs(res_y)
        self.to_grid = Transformer.from_crs(LONLAT, grid.rio.crs, always_xy=True)
        self.to_lonlat = Transformer.from_crs(grid.rio.crs, LONLAT, always_xy=True)

    def row_col(self, lat: float, lon: float):
        """(row, col) of the patch under the point, or None outside the grid."""
        x, y = self.to_grid.transform(lon, lat)
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        col, row = int(np.argmin(np.abs(self.xs - x))), int(np.argmin(np.abs(self.ys - y)))
        if abs(self.xs[col] - x) > self.dx / 2 + 1e-9 or abs(self.ys[row] - y) > self.dy / 2 + 1e-9:
            return None
        return row, col

    def lat_lon(self, row: int, col: int) -> tuple[float, float]:
        lon, lat = self.to_lonlat.transform(float(self.xs[col]), float(self.ys[row]))
        return lat, lon


class LabelPainter(ipw.VBox):
    """Click-to-label map with a live few-shot class map and an uncertainty layer.

    Args:
        scene: (band, y, x) with a CRS (or a sample Dataset / stack: its first date).
        emb: the scene's ``(y, x, dim)`` embeddings from :func:`eossl.embed`.
        classes: class names, in the order of the picker and the colours.
        n_suggest: how many of the most uncertain patches to mark as "label here next".
        basemap: optional tile basemap name (needs the network; the default uses none).

    State: ``labels`` (list of dicts lat, lon, class, row, col), ``active_class``, ``message``,
    ``suggestions`` (most uncertain patches first), ``fitted`` (a classifier is on the map);
    ``class_map`` / ``uncertainty`` are (y, x) DataArrays on the embedding grid once fitted.
    """

    labels = tr.List()
    active_class = tr.Unicode("")
    classes = tr.List()
    message = tr.Unicode("")
    suggestions = tr.List()
    fitted = tr.Bool(False)

    def __init__(self, scene, emb: xr.DataArray, classes=("class 1", "class 2"), *, n_suggest: int = 5,
                 basemap=None, C: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.n_suggest, self.C = int(n_suggest), float(C)
        self.class_map = self.uncertainty = None
        self.note = ipw.HTML("")
        self.status = ipw.HTML("")
        self.map = None
        self.classes = [str(c) for c in classes]
        try:
            if len(set(self.classes)) < 2:
                raise DataError(f"give at least two distinct class names, got {list(classes)}")
            self.scene = scene_image(scene)
            self._set_embeddings(emb)
            check_on_scene(self.emb, self.scene, "embeddings")
            # patches on the scene's no-data margin get no label, no class and no suggestion
            self._set_embeddings(blank_patches(self.emb, off_scene_patches(self.emb, self.scene)))
        except DataError as err:
            self._fail(str(err))
            return
        self._build(basemap)

    # ------------------------------------------------------------------ set-up

    def _fail(self, text: str) -> None:
        self.message = text
        self.note.value = _message_html(text, "error")
        self.children = [self.note]

    def _set_embeddings(self, emb) -> None:
        if not isinstance(emb, xr.DataArray) or set(emb.dims) != {"y", "x", "dim"}:
            dims = getattr(emb, "dims", type(emb).__name__)
            raise DataError(f"the painter needs the scene's embedding map (y, x, dim) from eossl.embed, got "
                            f"{dims}; chip embeddings (sample, dim) have no place on the map")
        self.emb = emb.transpose("y", "x", "dim")
        values = self.emb.values.reshape(-1, emb.sizes["dim"])                       # (y*x, D)
        self._valid = np.isfinite(values).all(axis=1)                                 # (y*x,)
        if not self._valid.any():
            raise DataError("every patch's embedding is NaN (no valid data under the scene)")
        self.locator = PatchLocator(self.emb)

    def _build(self, basemap) -> None:
        self.map = base_map(self.scene, basemap=basemap)
        self.map.add_class("eossl-painter")               # CSS hooks (the browser test finds them)
        self.status.add_class("eossl-painter-status")
        self.scene_layer = scene_overlay(self.scene, name="scene (true colour)")
        self.map.add(self.scene_layer)
        self.class_layer = self.uncertainty_layer = None
        self.label_layer = ipyleaflet.LayerGroup(name="labels")
        self.suggestion_layer = ipyleaflet.LayerGroup(name="label here next")
        self.map.add(self.label_layer)
        self.map.add(self.suggestion_layer)
        self.map.on_interaction(self._on_map_event)
        self.picker = ipw.ToggleButtons(options=self.classes, description="class",
                                        style={"button_width": "auto"})
        self.picker.observe(lambda change: setattr(self, "active_class", change["new"] or ""), "value")
        self.active_class = self.picker.value or ""
        self.undo_button = ipw.Button(description="Undo", icon="undo", tooltip="remove the last label")
        self.undo_button.on_click(lambda _: self.undo())
        self.clear_button = ipw.Button(description="Clear", icon="trash", tooltip="remove every label")
        self.clear_button.on_click(lambda _: self.clear())
        self.path = ipw.Text(value="labels.geojson", description="file", layout=ipw.Layout(width="320px"))
        self.save_button = ipw.Button(description="Save", icon="save")
        self.save_button.on_click(lambda _: self.save(self.path.value))
        self.load_button = ipw.Button(description="Load", icon="folder-open")
        self.load_button.on_click(lambda _: self.load(self.path.value))
        self.legend = ipw.HTML("")
        self._update_legend()
        self.status.value = "Pick a class and click the map on a place of that class."
        self.children = [self.picker, self.map, ipw.HBox([self.undo_button, self.clear_button]),
                         ipw.HBox([self.path, self.save_button, self.load_button]),
                         self.legend, self.status, self.note]

    def _update_legend(self) -> None:
        _, colours = palette(len(self.classes))
        counts = {c: 0 for c in self.classes}
        for lab in self.labels:
            counts[lab["class"]] = counts.get(lab["class"], 0) + 1
        items = "".join(f"<span style='margin-right:12px'><span style='color:{col}'>&#9632;</span> {c} "
                        f"({counts.get(c, 0)})</span>" for c, col in zip(self.classes, colours))
        self.legend.value = items + ("<span style='margin-left:6px'><span style='color:#555'>&#9675;</span> "
                                     "label here next</span>" if self.fitted else "")

    def _say(self, text: str, level: str = "warning") -> None:
        self.message = text
        self.note.value = _message_html(text, level)

    # ------------------------------------------------------------------ user actions

    def _on_map_event(self, **event) -> None:
        if event.get("type") == "click":
            lat, lon = event["coordinates"]
            self.add_label(lat, lon, self.active_class)

    def add_label(self, lat: float, lon: float, cls: str | None = None, *, refit: bool = True) -> bool:
        """Label the patch under (lat, lon) with ``cls`` (default: the picked class) and refit.
        A point outside the scene, on a patch without data, or an unknown class gives a message
        and changes nothing. Returns whether the label was added."""
        if self.map is None:
            return False
        cls = self.active_class if cls is None else str(cls)
        if cls not in self.classes:
            self._say(f"unknown class {cls!r}; the classes are {self.classes}")
            return False
        where = self.locator.row_col(lat, lon)
        if where is None:
            self._say(f"({lat:.5f}, {lon:.5f}) is outside the scene's patches; click inside the scene")
            return False
        row, col = where
        if not self._valid[row * self.emb.sizes["x"] + col]:
            self._say(f"the patch at row {row}, col {col} has no embedding (nodata); pick another place")
            return False
        self.labels = self.labels + [{"lat": float(lat), "lon": float(lon), "class": cls, "row": row, "col": col}]
        self._add_marker(self.labels[-1])
        self._say("")
        if refit:
            self.refit()
        return True

    def _add_marker(self, lab: dict) -> None:
        _, colours = palette(len(self.classes))
        colour = colours[self.classes.index(lab["class"])]
        marker = ipyleaflet.CircleMarker(location=(lab["lat"], lab["lon"]), radius=6, color="#000000",
                                         weight=1, fill_color=colour, fill_opacity=0.95, name=lab["class"])
        self.label_layer.add(marker)

    def _redraw_markers(self) -> None:
        self.label_layer.clear()
        for lab in self.labels:
            self._add_marker(lab)

    def undo(self) -> None:
        """Remove the last label."""
        if self.labels:
            self.labels = self.labels[:-1]
            self._redraw_markers()
            self.refit()

    def clear(self) -> None:
        """Remove every label (and the class map)."""
        self.labels = []
        self._redraw_markers()
        self.refit()

    # ------------------------------------------------------------------ the classifier

    def refit(self) -> None:
        """Fit the few-shot classifier on the labelled patches and redraw the class map, the
        uncertainty layer and the suggestions (or remove them while fewer than two classes are
        labelled)."""
        classes_used = sorted({lab["class"] for lab in self.labels}, key=self.classes.index)
        self._update_legend()
        if len(classes_used) < 2:
            self._remove_prediction()
            need = "two classes" if not classes_used else f"a second class besides {classes_used[0]!r}"
            self.status.value = f"{len(self.labels)} label(s); label {need} to see a class map."
            return
        # the analysis is the library's (eossl.label_map, eossl.next_labels); the widget draws it
        points = [(lab["row"], lab["col"], self.classes.index(lab["class"])) for lab in self.labels]
        result = eossl.label_map(self.emb, points, class_names=self.classes, C=self.C)
        self.result = result
        self.class_map = result["class"].rename("class").assign_attrs(classes=dict(enumerate(self.classes)))
        self.uncertainty = result["uncertainty"].rename("uncertainty")
        codes = result["class"].values.ravel()
        self._draw_prediction()
        self._suggest(eossl.next_labels(result, self.n_suggest))
        self.fitted = True
        self._update_legend()
        share = {c: float((codes[self._valid] == i).mean()) for i, c in enumerate(self.classes)}
        summary = ", ".join(f"{c} {share[c]:.0%}" for c in self.classes if share[c] > 0)
        self.status.value = (f"{len(self.labels)} labels, {len(classes_used)} classes; class map: {summary}. "
                             "White rings: the most uncertain patches, label one next.")

    def _draw_prediction(self) -> None:
        cmap, _ = palette(len(self.classes))
        if self.class_layer is None:
            self.class_layer = array_overlay(self.class_map, "class map", cmap=cmap, opacity=0.6,
                                             categorical=True)
            self.uncertainty_layer = array_overlay(self.uncertainty, "uncertainty (entropy)", cmap="magma",
                                                   vmin=0.0, vmax=1.0, opacity=0.0)
            # below the markers, above the scene
            for layer in (self.uncertainty_layer, self.class_layer):
                self.map.add(layer, index=len(self.map.layers) - 2)
        else:
            update_overlay(self.class_layer, self.class_map, cmap=cmap, categorical=True)
            update_overlay(self.uncertainty_layer, self.uncertainty, cmap="magma", vmin=0.0, vmax=1.0)

    def _remove_prediction(self) -> None:
        for layer in (self.class_layer, self.uncertainty_layer):
            if layer is not None and layer in self.map.layers:
                self.map.remove(layer)
        self.class_layer = self.uncertainty_layer = None
        self.class_map = self.uncertainty = None
        self.suggestion_layer.clear()
        self.suggestions = []
        self.fitted = False

    def _suggest(self, picks) -> None:
        """Rings on the patches of ``picks`` (eossl.next_labels: most uncertain unlabelled first)."""
        out = []
        self.suggestion_layer.clear()
        for pick in picks.itertuples():
            lat, lon = self.locator.lat_lon(pick.row, pick.col)
            out.append({"row": pick.row, "col": pick.col, "lat": lat, "lon": lon, "uncertainty": pick.uncertainty})
            self.suggestion_layer.add(ipyleaflet.CircleMarker(
                location=(lat, lon), radius=9, color=SUGGESTION_COLOUR, weight=3, fill=False,
                name=f"uncertainty {pick.uncertainty:.2f}"))
        self.suggestions = out

    # ------------------------------------------------------------------ GeoJSON

    def to_geojson(self) -> dict:
        """The labels as a GeoJSON FeatureCollection of points in lon/lat (EPSG:4326, as RFC 7946
        wants) with a ``class`` property."""
        return {"type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {"class": lab["class"]},
                              "geometry": {"type": "Point", "coordinates": [lab["lon"], lab["lat"]]}}
                             for lab in self.labels]}

    def save(self, path) -> Path | None:
        """Write the labels to a GeoJSON file (atomically: a failed write keeps the old file)."""
        from eossl.outputs import atomic_write_bytes
        path = Path(path)
        try:
            atomic_write_bytes(path, json.dumps(self.to_geojson(), indent=1).encode())
        except OSError as err:
            self._say(f"could not save the labels to {path}: {err}", "error")
            return None
        self._say(f"saved {len(self.labels)} labels to {path}", "info")
        return path

    def load(self, source, *, replace: bool = True) -> int:
        """Read labels from a GeoJSON file (or dict) of points with a ``class`` property in lon/lat.
        Points outside the scene, without a class, or not points are skipped and counted in the
        message; unknown classes are added to the picker. Returns how many labels were added."""
        try:
            data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
        except (OSError, ValueError) as err:
            self._say(f"could not read labels from {source}: {err}", "error")
            return 0
        features = data.get("features") if isinstance(data, dict) else None
        if not isinstance(features, list):
            self._say(f"{source} is not a GeoJSON FeatureCollection (no 'features' list)", "error")
            return 0
        crs_name = str(((data.get("crs") or {}).get("properties") or {}).get("name", "EPSG:4326"))
        if not any(tag in crs_name for tag in ("4326", "CRS84")):
            self._say(f"{source} is in {crs_name}; save the points in lon/lat (EPSG:4326)", "error")
            return 0
        if replace:
            self.labels = []
        added, outside, unusable, new_classes = 0, 0, 0, []
        for feature in features:
            geom = (feature or {}).get("geometry") or {}
            props = (feature or {}).get("properties") or {}
            cls = props.get("class", props.get("label"))
            if geom.get("type") != "Point" or cls is None or len(geom.get("coordinates", [])) < 2:
                unusable += 1
                continue
            cls = str(cls)
            if cls not in self.classes:
                self.classes = self.classes + [cls]
                new_classes.append(cls)
                self.picker.options = self.classes
            lon, lat = geom["coordinates"][:2]
            if self.add_label(float(lat), float(lon), cls, refit=False):
                added += 1
            else:
                outside += 1
        if new_classes and len(self.classes) > 2:
            self._redraw_markers()  # the palette may have changed with the class count
        self.refit()
        problems = []
        if outside:
            problems.append(f"{outside} outside the scene or on patches without data")
        if unusable:
            problems.append(f"{unusable} not points with a 'class' property")
        text = f"loaded {added} of {len(features)} labels"
        text += ("; skipped " + " and ".join(problems)) if problems else ""
        text += f"; new classes: {new_classes}" if new_classes else ""
        self._say(text, "warning" if problems else "info")
        return added


__all__ = ["LabelPainter", "PatchLocator", "check_on_scene", "palette", "scene_image"]
