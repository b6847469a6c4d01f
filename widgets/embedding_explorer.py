"""``EmbeddingExplorer``: a 2-D picture of the embeddings (UMAP or PCA), linked both ways with a map.

Every point is a patch (or a chip). Box- or lasso-selecting points (or tapping one) outlines those
patches on the :class:`MapExplorer`'s map; clicking a patch on the map rings its point in the scatter;
hovering a point shows the patch's thumbnail and its label.

The scatter is a HoloViews ``Points`` element rendered with Bokeh and shown as an ipywidget
(``jupyter_bokeh.BokehModel``), so its selection reaches Python live in JupyterLab without a Bokeh
server. BokehJS is loaded inline (``bokeh.resources.INLINE``), never from a CDN. The selection is a
HoloViews ``Selection1D`` stream (``explorer.selection``): ``explorer.selection.event(index=[...])``
or :meth:`select` does from Python what a box selection does in the browser.
"""

from __future__ import annotations

import html

import numpy as np
import traitlets
import xarray as xr

import eossl
from eossl.errors import DataError
from eossl_widgets.overlay import data_url, thumbnail_png

import ipywidgets as ipw  # noqa: E402

try:
    import holoviews as hv
    from holoviews import streams
    from jupyter_bokeh import BokehModel
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("EmbeddingExplorer needs holoviews, bokeh and jupyter_bokeh: pip install 'eossl[maps]'") from None

TOOLTIP = """
<div style="width:{size}px">
  <img src="@thumb" style="width:{size}px;height:{size}px;image-rendering:pixelated;border:1px solid #777">
  <div style="font-size:11px">@label_name <span style="color:#777">(@where)</span></div>
</div>
"""


_BOKEHJS_SHOWN = False


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def load_bokehjs() -> None:
    """Put BokehJS into the notebook page from the installed bokeh package (inline, no CDN), like
    ``hv.extension("bokeh", inline=True)``. Call it in a cell above the first EmbeddingExplorer:
    the scatter widget can only draw once BokehJS has loaded. A no-op outside a kernel."""
    global _BOKEHJS_SHOWN
    if not _in_kernel():
        return
    from bokeh.resources import INLINE
    try:
        from bokeh.embed.bundle import Bundle
        from bokeh.io.notebook import JS_MIME_TYPE, LOAD_MIME_TYPE, _loading_js, publish_display_data
    except ImportError:  # pragma: no cover - another bokeh version: its own loader
        from bokeh.io import output_notebook
        output_notebook(resources=INLINE, hide_banner=True)
    else:
        # BokehJS itself only. bokeh.io.output_notebook would also bundle every registered extension;
        # once holoviews.plotting.bokeh is imported that includes Panel's, with a relative script
        # URL JupyterLab does not serve, and the failed load leaves BokehJS undefined.
        bundle = Bundle(js_raw=list(INLINE.js_raw), css_raw=list(INLINE.css_raw))
        publish_display_data({JS_MIME_TYPE: _loading_js(bundle, None, 5000, register_mime=True),
                              LOAD_MIME_TYPE: _loading_js(bundle, None, 5000, register_mime=False)})
    _BOKEHJS_SHOWN = True


def class_colours(values) -> list[str]:
    """The tab20 colour of each integer class id, as hex: the same colours as a class-map overlay,
    so a cluster has one colour on the map and in the scatter."""
    import matplotlib
    from matplotlib.colors import to_hex
    cmap = matplotlib.colormaps["tab20"]
    return [to_hex(cmap(int(v) % cmap.N)) if int(v) >= 0 else "#9e9e9e" for v in values]


def patch_labels(labels: xr.DataArray, emb: xr.DataArray) -> np.ndarray:
    """Integer labels on the embedding's patch grid ``(y, x)``: ``labels`` already on that grid, or
    pixel labels of the scene (the most common value under each patch; -1 where none)."""
    if labels.dims != ("y", "x"):
        labels = labels.transpose("y", "x")
    rows, cols = emb.sizes["y"], emb.sizes["x"]
    if labels.shape == (rows, cols):
        return labels.values.astype(int)
    if "x" not in labels.coords or "y" not in labels.coords:
        raise DataError(f"labels of shape {labels.shape} are neither on the {rows}x{cols} patch grid nor "
                        "pixel labels with x/y coordinates")
    inverse = ~emb.rio.transform()
    xs, ys = np.meshgrid(labels["x"].values, labels["y"].values)              # (H, W) pixel centres
    c, r = inverse * (xs.ravel(), ys.ravel())
    r, c = np.floor(r).astype(int), np.floor(c).astype(int)
    values = labels.values.ravel().astype(int)
    keep = (r >= 0) & (r < rows) & (c >= 0) & (c < cols) & (values >= 0)   # negative ids: no label
    if not keep.any():
        return np.full((rows, cols), -1)
    counts = np.zeros((rows * cols, int(values[keep].max()) + 1), dtype=int)  # (patches, classes)
    np.add.at(counts, (r[keep] * cols + c[keep], values[keep]), 1)
    out = np.where(counts.sum(1) > 0, counts.argmax(1), -1)
    return out.reshape(rows, cols)


class EmbeddingExplorer(ipw.VBox):
    """A scatter of the embeddings' 2-D reduction, linked with a :class:`MapExplorer`.

    Args:
        emb: ``(y, x, dim)`` grid embeddings (a ``(time, ...)`` stack uses the map's date) or
            ``(sample, dim)`` chip embeddings; None takes the map explorer's.
        scene: where thumbnails come from: the scene of a grid, or the chips ``(sample, band, y, x)``;
            default the map explorer's scene.
        map_explorer: the :class:`MapExplorer` to link with (optional).
        labels: class ids per patch (on the patch grid, or scene pixel labels, reduced to the most
            common value per patch), with names in ``labels.attrs["classes"]``; default the map's
            cluster map, or the chips' ``label`` coordinate.
        method: ``"umap"`` (eossl.umap; the first call in a kernel compiles for ~45 s) or ``"pca"``.
        max_points: larger sets are subsampled (fixed seed) to keep the browser quick.
        show_map: put a second view of the linked map beside the scatter.
    """

    selected = traitlets.List()                       # indices into self.points (scatter order)
    highlighted = traitlets.Int(None, allow_none=True)
    status = traitlets.Unicode("")

    def __init__(self, emb=None, scene=None, map_explorer=None, labels=None, *, method: str = "umap",
                 max_points: int = 3000, seed: int = 0, thumb_size: int = 64, width: int = 440,
                 height: int = 420, show_map: bool = True):
        super().__init__()
        if method not in ("umap", "pca"):
            raise ValueError(f"method must be 'umap' or 'pca', got {method!r}")
        self.map_explorer = map_explorer
        if emb is None:
            if map_explorer is None:
                raise DataError("give embeddings (emb=eossl.embed(model, scene)) or a map_explorer to take them from")
            emb = map_explorer.emb
        if "time" in emb.dims:
            emb = emb.isel(time=map_explorer.time if map_explorer is not None else 0)
        self.emb = emb
        self.scene = scene if scene is not None else (map_explorer.scene if map_explorer is not None else None)
        self.method = method
        self.thumb_size = thumb_size
        self.status_html = ipw.HTML()
        self.status_html.add_class("eossl-scatter-status")
        self._link_problem = None

        self.points = self._reduce(emb, labels, max_points, seed)           # (sample, component)
        self.selection = streams.Selection1D(index=[])
        self.selection.add_subscriber(self._on_stream)
        self.figure, self.source, self.highlight_source = self._figure(width, height)
        self.source.selected.on_change("indices", self._on_bokeh_selection)
        self.plot = BokehModel(self.figure)
        self.plot.add_class("eossl-scatter")
        # BokehJS must be in the page before the plot's view is made. Loaded in the same cell it
        # arrives a moment too late, so then the plot joins the widget a few seconds later.
        late = _in_kernel() and not _BOKEHJS_SHOWN
        if late:
            load_bokehjs()
        self.observe(self._draw_selection, "selected")
        self.observe(self._draw_status, "status")

        # The scatter's slot has its final width from the start: BokehJS draws the plot a moment
        # after the map, and a map that first takes the whole row and is then squeezed is never told
        # (leaflet keeps its first size, so the scene opens off-centre and cut off)
        slot = ipw.Layout(width=f"{width + 10}px", min_width=f"{width + 10}px", height=f"{height + 10}px")
        self.plot.layout = slot
        body = [ipw.HTML("loading BokehJS ...", layout=slot) if late else self.plot]
        if map_explorer is not None:
            self._link_problem = self._check_link(map_explorer)
            if self._link_problem is None:
                map_explorer.observe(self._on_query_patch, "query_patch")
                if show_map:
                    body.append(map_explorer.map)
        self.children = [self.status_html, ipw.HBox(body, layout=ipw.Layout(width="100%"))]
        if late:
            import threading
            row = self.children[1]
            threading.Timer(3.0, lambda: setattr(row, "children", (self.plot, *row.children[1:]))).start()
        what = "UMAP" if method == "umap" else "PCA"
        if self._link_problem:
            self._say(self._link_problem, "error")
        else:
            self._say(f"{what} of {self.points.sizes['sample']} {self._plural}"
                      + (" (subsampled)" if self.subsampled else "")
                      + ": box-select, lasso or tap points to outline them on the map; hover for a thumbnail",
                      "info")

    # ------------------------------------------------------------------ data
    def _reduce(self, emb, labels, max_points, seed) -> xr.DataArray:
        if "dim" not in emb.dims:
            raise DataError(f"expected embeddings with a 'dim' dimension, got {emb.dims}")
        rng = np.random.default_rng(seed)
        if set(emb.dims) == {"y", "x", "dim"}:
            self._unit = "patch"
            grid = emb.transpose("y", "x", "dim").values                   # (rows, cols, D)
            rows, cols = np.nonzero(np.isfinite(grid).all(-1))
            keep = np.arange(len(rows))
            if len(keep) > max_points:
                keep = np.sort(rng.choice(len(keep), max_points, replace=False))
            rows, cols = rows[keep], cols[keep]
            vectors = grid[rows, cols]                                     # (N, D)
            if labels is None and self.map_explorer is not None and hasattr(self.map_explorer, "clusters"):
                labels = self.map_explorer.clusters
            ids = patch_labels(labels, emb)[rows, cols] if labels is not None else np.full(len(rows), -1)
            names = (labels.attrs.get("classes") or {}) if labels is not None else {}
            coords = {"row": ("sample", rows), "col": ("sample", cols)}
        elif len(emb.dims) == 2:
            self._unit = "chip"
            lead = [d for d in emb.dims if d != "dim"][0]
            vectors = emb.transpose(lead, "dim").values
            index = np.flatnonzero(np.isfinite(vectors).all(-1))
            if len(index) > max_points:
                index = np.sort(rng.choice(index, max_points, replace=False))
            vectors = vectors[index]
            source = labels if labels is not None else (emb.coords["label"] if "label" in emb.coords else None)
            if source is not None:
                values = np.asarray(source.values if hasattr(source, "values") else source)[index]
                classes, ids = np.unique(values, return_inverse=True)
                names = {i: str(c) for i, c in enumerate(classes)}
            else:
                ids, names = np.full(len(index), -1), {}
            coords = {"sample_index": ("sample", index)}
        else:
            raise DataError(f"EmbeddingExplorer shows (y, x, dim) or (sample, dim) embeddings, got {emb.dims}")
        if len(vectors) < 3:
            raise DataError(f"only {len(vectors)} valid embeddings; need at least 3 for a scatter")
        flat = xr.DataArray(vectors, dims=("sample", "dim"), coords=coords)
        # the projection is the library's, so a user gets the same points without the widget
        reduce = eossl.umap if self.method == "umap" else eossl.pca
        xy = reduce(flat, seed=seed).values                              # (N, 2)
        self.subsampled = len(vectors) < (np.isfinite(emb.values).all(-1).sum())
        ids = np.asarray(ids, dtype=int)
        label_names = [names.get(int(i), names.get(str(int(i)), f"class {int(i)}")) if i >= 0 else "no label"
                       for i in ids]
        return xr.DataArray(xy, dims=("sample", "component"),
                            coords={**coords, "label": ("sample", ids), "label_name": ("sample", label_names)},
                            name=self.method)

    def _thumbs(self) -> list[str]:
        """Native-size PNG data URLs (scaled up in the tooltip by CSS), so thousands stay light."""
        if self.scene is None:
            return [""] * self.points.sizes["sample"]
        out = []
        if self._unit == "chip":
            for i in self.points["sample_index"].values:
                chip = self.scene.isel({self.scene.dims[0]: int(i)})
                out.append(data_url(thumbnail_png(chip, size=max(chip.sizes["y"], chip.sizes["x"]))))
            return out
        from eossl_widgets.map_explorer import cut_patch
        from eossl_widgets.overlay import rgb_image
        same = self.map_explorer is not None and self.scene is self.map_explorer.scene
        rgb = self.map_explorer.scene_rgb() if same else rgb_image(self.scene)
        for r, c in zip(self.points["row"].values, self.points["col"].values):
            patch = cut_patch(rgb, self.emb, r, c).values                    # (h, w, 3)
            out.append(data_url(thumbnail_png(patch, size=max(patch.shape[0], patch.shape[1], 1))))
        return out

    def _figure(self, width, height):
        import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh renderer)
        from bokeh.models import ColumnDataSource, GlyphRenderer, HoverTool
        xy = self.points.values
        if self._unit == "patch":
            where = [f"row {r}, col {c}" for r, c in zip(self.points["row"].values, self.points["col"].values)]
        else:
            where = [f"sample {i}" for i in self.points["sample_index"].values]
        table = {"x": xy[:, 0], "y": xy[:, 1], "label_name": self.points["label_name"].values,
                 "where": where, "thumb": self._thumbs(), "colour": class_colours(self.points["label"].values)}
        element = hv.Points(table, kdims=["x", "y"], vdims=["label_name", "where", "thumb", "colour"]).opts(
            color="colour", size=6, line_color=None, tools=["box_select", "lasso_select", "tap", "hover"],
            active_tools=["box_select", "wheel_zoom"], width=width, height=height, xaxis=None, yaxis=None,
            title=f"{'UMAP' if self.method == 'umap' else 'PCA'} of the embeddings", nonselection_alpha=0.25,
            selection_line_color="black", toolbar="right")
        fig = hv.render(element, backend="bokeh")
        renderer = [r for r in fig.renderers if isinstance(r, GlyphRenderer)][0]
        for tool in fig.tools:
            if isinstance(tool, HoverTool):
                tool.tooltips = TOOLTIP.format(size=self.thumb_size)
                tool.renderers = [renderer]
        highlight = ColumnDataSource({"x": [], "y": []})
        fig.scatter("x", "y", source=highlight, size=20, fill_alpha=0.0, line_color="black", line_width=3)
        return fig, renderer.data_source, highlight

    # ------------------------------------------------------------------ linking
    def _check_link(self, map_explorer) -> str | None:
        if map_explorer.problem is not None:
            return f"the map cannot show selections: {map_explorer.problem}"
        if self._unit != "patch":
            return "these are chip embeddings: they have no place on the map (selections show here only)"
        a, b = self.emb, map_explorer.emb
        if a.sizes["y"] != b.sizes["y"] or a.sizes["x"] != b.sizes["x"] or a.rio.crs != b.rio.crs or \
                not (np.allclose(a["x"].values, b["x"].values) and np.allclose(a["y"].values, b["y"].values)):
            return (f"these embeddings ({a.sizes['y']}x{a.sizes['x']} patches, {a.rio.crs}) are on another grid "
                    f"than the map's ({b.sizes['y']}x{b.sizes['x']}, {b.rio.crs}); selections cannot be shown "
                    "on the map: give the embeddings the map explorer was made with")
        return None

    def _on_bokeh_selection(self, attr, old, new):
        self.selection.event(index=list(new))

    def _on_stream(self, index):
        self.selected = [int(i) for i in index]

    def select(self, indices) -> None:
        """Select scatter points by index (into ``self.points``), as a box selection would."""
        self.source.selected.indices = [int(i) for i in indices]

    def select_box(self, x0: float, x1: float, y0: float, y1: float) -> list[int]:
        """Select the points inside a box of the scatter's coordinates; returns their indices."""
        xy = self.points.values
        inside = np.flatnonzero((xy[:, 0] >= min(x0, x1)) & (xy[:, 0] <= max(x0, x1))
                                & (xy[:, 1] >= min(y0, y1)) & (xy[:, 1] <= max(y0, y1)))
        self.select(inside)
        return inside.tolist()

    def _draw_selection(self, change=None):
        n = len(self.selected)
        if self.map_explorer is not None and self._link_problem is None:
            patches = [(int(self.points["row"].values[i]), int(self.points["col"].values[i])) for i in self.selected]
            self.map_explorer.select(patches)
        if n:
            names, counts = np.unique(self.points["label_name"].values[self.selected], return_counts=True)
            top = ", ".join(f"{c} {nm}" for nm, c in sorted(zip(names, counts), key=lambda t: -t[1])[:4])
            where = " (outlined on the map)" if self.map_explorer is not None and self._link_problem is None else ""
            self._say(f"{n} {self._plural} selected{where}: {top}", "ok")

    def _on_query_patch(self, change):
        patch = change["new"]
        if not patch:
            return
        rows, cols = self.points["row"].values, self.points["col"].values
        hit = np.flatnonzero((rows == patch[0]) & (cols == patch[1]))
        if not hit.size:
            self.highlighted = None
            self.highlight_source.data = {"x": [], "y": []}
            self._say(f"map click on patch (row {patch[0]}, col {patch[1]}): not among the points shown "
                      "(subsampled or no embedding)", "info")
            return
        i = int(hit[0])
        self.highlighted = i
        self.highlight_source.data = {"x": [float(self.points.values[i, 0])], "y": [float(self.points.values[i, 1])]}
        self._say(f"map click on patch (row {patch[0]}, col {patch[1]}): ringed in the scatter "
                  f"({self.points['label_name'].values[i]})", "ok")

    # ------------------------------------------------------------------ status
    @property
    def _plural(self) -> str:
        return "patches" if self._unit == "patch" else "chips"

    def _say(self, text: str, kind: str = "info"):
        self._kind = kind
        self.status = text
        self._draw_status()

    def _draw_status(self, change=None):
        from eossl_widgets.map_explorer import STYLE
        kind = getattr(self, "_kind", "info")
        self.status_html.value = (f'<div class="eossl-status-{kind}" style="color:{STYLE[kind]};padding:2px 4px">'
                                  f"{html.escape(self.status)}</div>")
