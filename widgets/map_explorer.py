"""``MapExplorer``: a scene and its embeddings on one map; click a place to find patches like it.

Layers: the scene in true and false colour (each date of a two-date stack), the embedding PCA-RGB,
a k-means cluster map, the change score between two dates, the similarity heat map of the last
click, and outlines of the top-k hits, of the query patch and of a selection (e.g. from
:class:`EmbeddingExplorer`). Opacity sliders beside the map; a gallery of the hits below it.

State lives in traitlets so other widgets and tests can drive it without a browser:
``last_query`` (lat, lon), ``query_patch`` (row, col), ``selected`` [(row, col), ...], ``status``,
``result`` (the :class:`eossl.SimilarityResult`). ``explorer.click(lat, lon)`` is what a click does.
"""

from __future__ import annotations

import html
import warnings

import numpy as np
import traitlets
import xarray as xr

import eossl
from eossl.errors import DataError
from eossl_widgets.overlay import (_scene_array, array_overlay, base_map, blank_patches, data_url,
                                   downsample_step, footprints_geojson, footprints_layer, off_scene_patches, opacity_sliders,
                                   rgb_image, scene_overlay, thumbnail_png, update_overlay)

import ipyleaflet  # noqa: E402  (overlay raised a clear error already when these are missing)
import ipywidgets as ipw  # noqa: E402

STYLE = {"ok": "#1b5e20", "info": "#37474f", "error": "#b71c1c"}


def patch_boxes(emb: xr.DataArray, patches) -> list[tuple[float, float, float, float]]:
    """(row, col) patches of an embedding grid -> (minx, miny, maxx, maxy) boxes in its CRS."""
    t = emb.rio.transform()
    boxes = []
    for row, col in patches:
        x0, y0 = t * (col, row)
        x1, y1 = t * (col + 1, row + 1)
        boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    return boxes


def patch_lonlat(emb: xr.DataArray, row: int, col: int) -> tuple[float, float]:
    """(lon, lat) of the centre of patch (row, col)."""
    from rasterio.warp import transform
    minx, miny, maxx, maxy = patch_boxes(emb, [(row, col)])[0]
    (lon,), (lat,) = transform(emb.rio.crs, "EPSG:4326", [(minx + maxx) / 2], [(miny + maxy) / 2])
    return float(lon), float(lat)


def patch_at(emb: xr.DataArray, lat: float, lon: float) -> tuple[int, int]:
    """The (row, col) of the patch under a lon/lat point, or a DataError when it is off the grid."""
    from rasterio.warp import transform
    (x,), (y,) = transform("EPSG:4326", emb.rio.crs, [lon], [lat])
    col, row = ~emb.rio.transform() * (x, y)
    row, col = int(np.floor(row)), int(np.floor(col))
    if not (0 <= row < emb.sizes["y"] and 0 <= col < emb.sizes["x"]):
        raise DataError(f"({lat:.5f}, {lon:.5f}) is outside the scene; click inside the scene's picture")
    return row, col


def cut_patch(da: xr.DataArray, emb: xr.DataArray, row: int, col: int) -> xr.DataArray:
    """The pixels of ``da`` (with x/y coordinates) under patch (row, col) of the embedding grid."""
    minx, miny, maxx, maxy = patch_boxes(emb, [(row, col)])[0]
    xs, ys = da["x"].values, da["y"].values
    return da.isel(x=np.flatnonzero((xs > minx) & (xs < maxx)), y=np.flatnonzero((ys > miny) & (ys < maxy)))


def grid_problem(scene: xr.DataArray, emb: xr.DataArray) -> str | None:
    """Why these embeddings cannot be shown on this scene (None when they can)."""
    if not isinstance(emb, xr.DataArray) or "dim" not in emb.dims:
        return "the embeddings are not an eossl embedding array (expected dims (y, x, dim) from eossl.embed)"
    if set(emb.dims) - {"time"} != {"y", "x", "dim"}:
        return (f"the embeddings have dims {emb.dims}: chip embeddings (sample, dim) have no place on a map; "
                "embed this scene with eossl.embed(model, scene) to get (y, x, dim)")
    if emb.rio.crs is None:
        return "the embeddings have no CRS; embed the scene itself (eossl.embed keeps its CRS)"
    if scene.rio.crs is not None and emb.rio.crs != scene.rio.crs:
        return (f"the embeddings are in {emb.rio.crs} but the scene is in {scene.rio.crs}: they come from "
                "another grid; embed this scene with eossl.embed(model, scene)")
    sl, sb, sr, st = scene.rio.bounds()
    el, eb, er, et = emb.rio.bounds()
    tol = max(abs(emb.rio.resolution()[0]), abs(emb.rio.resolution()[1]))  # one patch
    if el < sl - tol or er > sr + tol or eb < sb - tol or et > st + tol or (er - el) < (sr - sl) / 2 - tol:
        return (f"the embeddings cover x {el:.0f}..{er:.0f}, y {eb:.0f}..{et:.0f} but the scene covers "
                f"x {sl:.0f}..{sr:.0f}, y {sb:.0f}..{st:.0f} ({scene.rio.crs}): they come from another grid; "
                "embed this scene with eossl.embed(model, scene)")
    return None


class MapExplorer(ipw.VBox):
    """A map of ``scene`` with its embeddings ``emb`` (see the module docstring).

    Args:
        scene: (band, y, x), a stack (time, band, y, x) or a sample Dataset with ``image``.
        emb: ``(y, x, dim)`` from :func:`eossl.embed` on that scene, or ``(time, y, x, dim)`` for a
            stack (the change layer then compares the first and last dates). None: embed the scene
            with ``model``.
        emb2: embeddings of a second date on the same grid, for the change layer.
        time: which date of a stack to search and colour (index, default the first).
        k: hits per click; clusters: k of the k-means cluster map (0 for none).
        basemap: optional tiles (need the network); the default map has none.
        max_pixels: scene layers larger than this are shown downsampled, with a notice in the status line.
        heatmap_pixels: the similarity heat map, redrawn on every click, is drawn with at most this
            many pixels (every patch up to ~550 x 550 patches; 1/2 of them at 10^6, said in the status
            line): what keeps a click at 10^6 patches near 200 ms on screen instead of 400 ms.
    """

    last_query = traitlets.Tuple(allow_none=True, default_value=None)
    query_patch = traitlets.Tuple(allow_none=True, default_value=None)
    selected = traitlets.List()
    status = traitlets.Unicode("")
    result = traitlets.Any(None)
    k = traitlets.Int(8)

    def __init__(self, scene, emb=None, model=None, *, emb2=None, time: int | None = None, k: int = 8,
                 clusters: int = 8, basemap=None, height: str = "460px", thumb_size: int = 72,
                 max_pixels: int = 2_000_000, heatmap_pixels: int = 300_000):
        super().__init__()
        self.k = k
        self.thumb_size = thumb_size
        self.heatmap_pixels = int(heatmap_pixels)
        self._rgb = None
        self.scene_data = scene["image"] if isinstance(scene, xr.Dataset) and "image" in scene else scene
        self.time = 0 if time is None else time
        self.scene = _scene_array(scene, self.time)
        if emb is None:
            if model is None:
                raise DataError("give the scene's embeddings (emb=eossl.embed(model, scene)) or a model to embed it with")
            emb = eossl.embed(model, self.scene_data)
        self.emb_all = emb
        self.emb = emb.isel(time=self.time) if isinstance(emb, xr.DataArray) and "time" in emb.dims else emb
        if emb2 is None and isinstance(emb, xr.DataArray) and "time" in emb.dims and emb.sizes["time"] > 1:
            emb2 = emb.isel(time=-1 if self.time == 0 else 0)
        self.problem = grid_problem(self.scene, self.emb)
        if self.problem is None:
            # patches on the scene's no-data margin: NaN, so no layer paints them and no search finds them
            self.off_scene = off_scene_patches(self.emb, self.scene)
            self.emb = blank_patches(self.emb, self.off_scene)
            emb2 = blank_patches(emb2, self.off_scene) if emb2 is not None else None
        self.emb2 = emb2
        self.map = base_map(self.scene, basemap, height=height)
        self.map.add_class("eossl-map")
        self.layers: dict[str, ipyleaflet.Layer] = {}
        self._notices: list[str] = []

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # downsampling notices go to the status line
            self._add(scene_overlay(self.scene, max_pixels=max_pixels))
            try:
                self._add(scene_overlay(self.scene, false_colour=True, max_pixels=max_pixels), visible=False)
            except DataError:  # no NIR band known (an RGB-only scene): no false-colour layer, said so
                self._notices.append("no false-colour layer: no near-infrared band among "
                                     f"{[str(b) for b in self.scene['band'].values]}")
        lead = [d for d in self.scene_data.dims if d not in ("band", "y", "x")]
        if lead and self.scene_data.sizes[lead[0]] > 1:
            other = self.scene_data.sizes[lead[0]] - 1 if self.time == 0 else 0
            when = str(self.scene_data[lead[0]].values[other])[:10]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self._add(scene_overlay(self.scene_data, time=other, name=f"true colour, {when}",
                                        max_pixels=max_pixels), visible=False)
        if self.problem is None:
            self._add(array_overlay(eossl.pca_rgb(self.emb), "embedding PCA-RGB", opacity=0.8), visible=False)
            if clusters:
                self.clusters = eossl.cluster(self.emb, k=clusters)
                self._add(array_overlay(self.clusters, f"clusters (k={clusters})", opacity=0.6), visible=False)
            if emb2 is not None:
                try:
                    self.change = eossl.change(self.emb, emb2)
                    self._add(array_overlay(self.change, "change score", cmap="magma", opacity=0.7), visible=False)
                except DataError as err:
                    self._notices.append(f"change map left out: {err}")
            empty = xr.full_like(self.emb.isel(dim=0, drop=True), np.nan, dtype="float32")
            self._add(array_overlay(empty, "similarity", cmap="inferno", opacity=0.75))
        crs = self.emb.rio.crs if self.problem is None else None
        self.hits_layer = footprints_layer([], "top-k hits", crs=crs, color="#00e5ff")
        self.query_layer = footprints_layer([], "query patch", crs=crs, color="#ffea00", weight=3)
        self.selection_layer = footprints_layer([], "selection", crs=crs, color="#ff3d00")
        for layer in (self.hits_layer, self.query_layer, self.selection_layer):
            self.map.add(layer)
            self.layers[layer.name] = layer

        self.sliders = opacity_sliders([l for l in self.layers.values() if isinstance(l, ipyleaflet.ImageOverlay)])
        self.status_html = ipw.HTML(layout=ipw.Layout(width="100%"))
        self.status_html.add_class("eossl-status")
        self.gallery = ipw.GridBox(layout=ipw.Layout(grid_template_columns=f"repeat(auto-fill, {thumb_size + 16}px)",
                                                     grid_gap="6px", width="100%"))
        self.gallery.add_class("eossl-gallery")
        side = ipw.VBox([ipw.HTML("<b>Layer opacity</b> (tick layers on and off in the map's layer control)"),
                         self.sliders], layout=ipw.Layout(width="360px", min_width="360px"))
        self.map.layout.width = "auto"
        self.map.layout.flex = "1 1 auto"
        self.children = [self.status_html, ipw.HBox([self.map, side], layout=ipw.Layout(width="100%")),
                         self.gallery]
        self.map.on_interaction(self._on_map_event)
        self.observe(self._draw_status, "status")
        self.observe(self._draw_selection, "selected")
        if self.problem:
            warnings.warn(self.problem, stacklevel=2)
            self._say(self.problem, "error")
        else:
            notes = " ".join(self._notices)
            self._say("Click a place on the map to find the patches most like it" + (f". {notes}" if notes else ""),
                      "info")

    # ------------------------------------------------------------------ building
    def _add(self, layer, visible: bool = True):
        if getattr(layer, "notice", None) and layer.notice.split(":")[-1] not in " ".join(self._notices):
            self._notices.append(layer.notice)
        layer.visible = visible
        self.map.add(layer)
        self.layers[layer.name] = layer
        return layer

    def _say(self, text: str, kind: str = "info"):
        self._kind = kind
        self.status = text
        self._draw_status()

    def _draw_status(self, change=None):
        colour = STYLE.get(getattr(self, "_kind", "info"), STYLE["info"])
        kind = getattr(self, "_kind", "info")
        self.status_html.value = (f'<div class="eossl-status-{kind}" style="color:{colour};padding:2px 4px">'
                                  f"{html.escape(self.status)}</div>")

    # ------------------------------------------------------------------ interaction
    def _on_map_event(self, **event):
        if event.get("type") != "click":
            return
        lat, lon = event.get("coordinates", (None, None))
        try:
            self.click(lat, lon)
        except Exception as err:  # a browser click must never end in a traceback: say what happened
            self._say(f"could not search from ({lat}, {lon}): {type(err).__name__}: {err}", "error")

    def click(self, lat: float, lon: float):
        """What a click on the map does: search from the patch under (lat, lon), show the heat map,
        outline the top-k hits and fill the gallery. Returns the SimilarityResult, or None (with a
        message in ``status``) when the click is outside the scene or the embeddings do not fit."""
        self.last_query = (float(lat), float(lon))
        if self.problem is not None:
            self._say(f"no search: {self.problem}", "error")
            return None
        try:
            row, col = patch_at(self.emb, lat, lon)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # k > candidates: we say how many we got
                if getattr(self, "_index", None) is None:  # built on the first click, reused after
                    self._index = eossl.SearchIndex(self.emb)
                result = eossl.similar(self._index, at=(row, col), crs="rowcol", k=self.k)
        except DataError as err:
            self._say(str(err), "error")
            return None
        self.result = result
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            update_overlay(self.layers["similarity"], result.heatmap, cmap="inferno", max_pixels=self.heatmap_pixels)
        self.layers["similarity"].visible = True
        crs = self.emb.rio.crs
        self.hits_layer.data = footprints_geojson(result.table[["rank", "score", "row", "col", "minx", "miny",
                                                                "maxx", "maxy"]], crs=crs)
        self.query_layer.data = footprints_geojson(patch_boxes(self.emb, [(row, col)]), crs=crs)
        self._fill_gallery(result.table)
        self.query_patch = (row, col)
        scores = result.table["score"]
        step = downsample_step(self.emb.sizes["y"], self.emb.sizes["x"], self.heatmap_pixels)
        coarse = f"; heat map at 1/{step} resolution" if step > 1 else ""
        self._say(f"patch (row {row}, col {col}) at {lat:.5f}, {lon:.5f}: the {len(scores)} most similar patches "
                  f"have cosine similarity {scores.max():.3f} to {scores.min():.3f} (outlined in cyan, below)"
                  f"{coarse}", "ok")
        return result

    def click_patch(self, row: int, col: int):
        """Click the centre of patch (row, col) of the embedding grid (see :meth:`click`)."""
        return self.click(*patch_lonlat(self.emb, row, col)[::-1])

    def patch_image(self, row: int, col: int) -> xr.DataArray:
        """The scene's pixels under patch (row, col) of the embedding grid: (band, y, x)."""
        return cut_patch(self.scene, self.emb, row, col)

    def scene_rgb(self) -> xr.DataArray:
        """The scene in true colour, (y, x, rgb) stretched over the whole scene (computed once)."""
        if self._rgb is None:
            self._rgb = rgb_image(self.scene)
        return self._rgb

    def thumbnail(self, row: int, col: int, size: int | None = None) -> bytes:
        """PNG of patch (row, col) in true colour, stretched like the whole scene (so they compare)."""
        return thumbnail_png(cut_patch(self.scene_rgb(), self.emb, row, col).values, size=size or self.thumb_size)

    def _fill_gallery(self, table):
        items = []
        for hit in table.itertuples():
            image = ipw.Image(value=self.thumbnail(hit.row, hit.col), format="png",
                              layout=ipw.Layout(width=f"{self.thumb_size}px", height=f"{self.thumb_size}px"))
            image.add_class("eossl-thumb")
            caption = ipw.HTML(f'<div style="font-size:11px;line-height:1.1">#{hit.rank} '
                               f"<b>{hit.score:.3f}</b><br>r{hit.row} c{hit.col}</div>")
            items.append(ipw.VBox([image, caption], layout=ipw.Layout(align_items="center")))
        self.gallery.children = items

    def select(self, patches) -> None:
        """Outline patches [(row, col), ...] on the map (what a selection in the scatter does)."""
        self.selected = [(int(r), int(c)) for r, c in patches]

    def _draw_selection(self, change=None):
        if self.problem is not None:
            return
        self.selection_layer.data = footprints_geojson(patch_boxes(self.emb, self.selected), crs=self.emb.rio.crs)
        if self.selected:
            self._say(f"{len(self.selected)} patches selected in the scatter (outlined in red)", "ok")

    def data_url_of(self, row: int, col: int) -> str:
        """The thumbnail of patch (row, col) as a data URL (for hover tips)."""
        return data_url(self.thumbnail(row, col))
