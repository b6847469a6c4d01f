"""Which bands does the encoder lean on? Per-band bars for a selected patch, chip or class.

    imp = eossl.band_importance(model, chips, per="sample")    # (sample, band) "importance"
    panel = BandImportancePanel(imp)
    panel                                    # bars + a picker; panel.select(3) shows chip 3

The input is the DataArray :func:`eossl.band_importance` returns: a ``band`` dimension (band names,
with a ``wavelength`` coordinate in nm when known) and at most one way of splitting it up:

- ``sample`` (chips): one set of bars per chip, picked by index (labels shown when there are);
- ``y, x`` (a scene, per patch): picked by ``(row, col)`` or by a place on the map
  (:meth:`BandImportancePanel.select_at` / :meth:`select_latlon`, what a map click calls);
- ``class``: one set per class;
- only ``band``: one set for the whole scene.

With nothing selected the panel shows the mean over all samples / patches / classes. Bars are
coloured by wavelength and drawn to a PNG with matplotlib's Agg canvas (no browser plotting library).
"""

from __future__ import annotations

import io
import math

import numpy as np
import xarray as xr

try:
    import ipywidgets as ipw
    import traitlets as tr
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("eossl_widgets needs ipywidgets: pip install 'eossl[maps]'") from None

from eossl.errors import DataError

OVERALL = "__overall__"


def _message_html(text: str, level: str = "warning") -> str:
    colour = {"warning": "#b35806", "error": "#b2182b", "info": "#4d4d4d"}[level]
    return f"<div style='color:{colour};padding:2px 0'>{text}</div>" if text else ""


def wavelength_colour(nm: float):
    """A colour for a band's centre wavelength: its visible colour, dark red for the near
    infrared, greys for the short-wave infrared and beyond, light grey when unknown."""
    import matplotlib
    if nm is None or not math.isfinite(nm):
        return "#bdbdbd"
    if nm < 380:
        return "#7b3294"
    if nm <= 700:
        return matplotlib.colormaps["turbo"]((nm - 380) / 320 * 0.9 + 0.05)
    if nm <= 1000:
        return "#8c1d1d"
    return "#636363" if nm <= 2500 else "#252525"


def check_importance(importance) -> str:
    """What kind of band-importance array this is ('sample', 'grid', 'class' or 'scene'), or a
    DataError that says what was expected."""
    if not isinstance(importance, xr.DataArray):
        raise DataError(f"band importance must be the xarray.DataArray from eossl.band_importance, got "
                        f"{type(importance).__name__}")
    if "band" not in importance.dims:
        raise DataError(f"band importance needs a 'band' dimension, got dims {importance.dims}; pass "
                        "the result of eossl.band_importance(model, data)")
    rest = sorted(d for d in importance.dims if d != "band")
    kinds = {(): "scene", ("sample",): "sample", ("x", "y"): "grid", ("class",): "class"}
    if tuple(rest) not in kinds:
        raise DataError(f"band importance has dims {importance.dims}; expected band with sample, "
                        "(y, x) or class (or band alone)")
    if not np.isfinite(np.asarray(importance.values, dtype=float)).any():
        raise DataError("band importance holds no finite value (all NaN)")
    return kinds[tuple(rest)]


class BandImportancePanel(ipw.VBox):
    """Per-band bars, with band names and wavelengths, for the selected chip, patch or class.

    State (traitlets): ``kind``, ``selected`` (the key shown, None = the mean over all),
    ``selection`` (its description), ``bands``, ``wavelengths``, ``values`` (the bars) and
    ``message`` (what went wrong, shown in the panel).
    """

    kind = tr.Unicode("")
    selected = tr.Any(None)
    selection = tr.Unicode("")
    bands = tr.List()
    wavelengths = tr.List()
    values = tr.List()
    message = tr.Unicode("")

    def __init__(self, importance: xr.DataArray, title: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.title = title
        self.header = ipw.HTML("")
        self.note = ipw.HTML("")
        self.picker = ipw.Dropdown(description="show", layout=ipw.Layout(width="360px"))
        self.row = ipw.BoundedIntText(description="row", layout=ipw.Layout(width="140px"))
        self.col = ipw.BoundedIntText(description="col", layout=ipw.Layout(width="140px"))
        self.bars = ipw.Image(format="png", layout=ipw.Layout(max_width="100%"))
        self.header.add_class("eossl-bands-header")       # CSS hooks (the browser test finds them)
        self.bars.add_class("eossl-bands-bars")
        self.importance = None
        try:
            self.kind = check_importance(importance)
        except DataError as err:
            self._fail(str(err))
            return
        self.importance = importance
        self.bands = [str(b) for b in importance["band"].values]
        wl = importance["wavelength"].values if "wavelength" in importance.coords else [np.nan] * len(self.bands)
        self.wavelengths = [float(w) if w is not None and np.isfinite(float(w)) else None for w in wl]
        self._build_controls()
        self.select(None)

    # ------------------------------------------------------------------ building

    def _fail(self, text: str) -> None:
        self.message = text
        self.note.value = _message_html(text, "error")
        self.children = [self.note]

    def _build_controls(self) -> None:
        imp = self.importance
        controls = []
        if self.kind == "sample":
            labels = imp["label"].values if "label" in imp.coords else None
            classes = imp.attrs.get("classes") or {}
            opts = [("mean over all chips", OVERALL)]
            for i in range(imp.sizes["sample"]):
                name = ""
                if labels is not None:
                    name = f" · {classes.get(labels[i], labels[i])}"
                opts.append((f"chip {i}{name}", i))
            self.picker.options = opts
            controls = [self.picker]
        elif self.kind == "class":
            self.picker.options = [("mean over all classes", OVERALL)] + [
                (self._class_name(c), c.item() if hasattr(c, "item") else c) for c in imp["class"].values]
            controls = [self.picker]
        elif self.kind == "grid":
            self.picker.options = [("mean over all patches", OVERALL), ("the patch at row / col", "patch")]
            self.row.max, self.col.max = imp.sizes["y"] - 1, imp.sizes["x"] - 1
            self.row.observe(self._on_row_col, "value")
            self.col.observe(self._on_row_col, "value")
            controls = [self.picker, self.row, self.col]
        self.picker.observe(self._on_pick, "value")
        self.children = [self.header, ipw.HBox(controls), self.note, self.bars] if controls else \
            [self.header, self.note, self.bars]

    def _class_name(self, c) -> str:
        classes = self.importance.attrs.get("classes") or {}
        value = c.item() if hasattr(c, "item") else c
        return str(classes.get(value, classes.get(str(value), value)))

    # ------------------------------------------------------------------ events

    def _on_pick(self, change) -> None:
        if self._syncing:
            return
        value = change["new"]
        if value == OVERALL:
            self.select(None)
        elif value == "patch":
            self.select((self.row.value, self.col.value))
        else:
            self.select(value)

    def _on_row_col(self, _change) -> None:
        if not self._syncing:
            self.select((self.row.value, self.col.value))

    _syncing = False

    # ------------------------------------------------------------------ selection

    def select(self, key=None) -> None:
        """Show the bars for ``key``: a chip index (``sample``), a class value or name (``class``),
        a ``(row, col)`` patch (``y, x``); None shows the mean over all of them."""
        if self.importance is None:
            return
        imp = self.importance
        try:
            if key is None or self.kind == "scene":
                values = imp.mean([d for d in imp.dims if d != "band"]) if imp.ndim > 1 else imp
                what = {"sample": "mean over all chips", "class": "mean over all classes",
                        "grid": "mean over all patches", "scene": "the whole scene"}[self.kind]
                key = None
            elif self.kind == "sample":
                if not isinstance(key, (int, np.integer)) or not 0 <= key < imp.sizes["sample"]:
                    raise DataError(f"no chip {key!r}: pick an index from 0 to {imp.sizes['sample'] - 1}")
                values = imp.isel(sample=int(key))
                key = int(key)
                what = next(label for label, v in self.picker.options if v == key)
            elif self.kind == "class":
                key = self._class_key(key)
                values = imp.sel({"class": key})
                what = f"class {self._class_name(np.asarray(key))}"
            else:
                row, col = self._row_col(key)
                values = imp.isel(y=row, x=col)
                key = (row, col)
                what = f"patch row {row}, col {col}"
        except DataError as err:
            self.message = str(err)
            self.note.value = _message_html(str(err))
            return
        vals = np.asarray(values.transpose("band").values, dtype=float)
        self.message = ""
        if not np.isfinite(vals).any():
            self.message = f"{what}: no importance here (NaN; e.g. a patch without data)"
        self.note.value = _message_html(self.message)
        self.values = [float(v) if np.isfinite(v) else None for v in vals]
        self.selected, self.selection = key, what
        self._sync_controls(key)
        title = self.title or f"band importance ({imp.attrs.get('method', imp.name or 'importance')})"
        self.header.value = f"<b>{title}</b>: {what}"
        self.bars.value = self._bars_png(vals, what)

    def _sync_controls(self, key) -> None:
        """Keep the picker showing what is selected, without re-triggering a selection."""
        self._syncing = True
        try:
            if self.kind == "grid":
                self.picker.value = OVERALL if key is None else "patch"
                if key is not None:
                    self.row.value, self.col.value = key
            elif self.kind in ("sample", "class"):
                self.picker.value = OVERALL if key is None else key
        finally:
            self._syncing = False

    def _class_key(self, key):
        values = [c.item() if hasattr(c, "item") else c for c in self.importance["class"].values]
        if key in values:
            return key
        names = [self._class_name(np.asarray(v)) for v in values]
        if str(key) in names:
            return values[names.index(str(key))]
        raise DataError(f"no class {key!r}: choose one of {names}")

    def _row_col(self, key) -> tuple[int, int]:
        imp = self.importance
        if not (isinstance(key, (tuple, list)) and len(key) == 2):
            raise DataError(f"select a patch as (row, col), got {key!r}")
        row, col = int(key[0]), int(key[1])
        if not (0 <= row < imp.sizes["y"] and 0 <= col < imp.sizes["x"]):
            raise DataError(f"patch ({row}, {col}) is outside the {imp.sizes['y']} x {imp.sizes['x']} "
                            "patch grid")
        return row, col

    def select_at(self, x: float, y: float, crs=None) -> bool:
        """Select the patch at ``(x, y)`` in the importance grid's CRS (or in ``crs``): what a map
        click does. A place outside the grid gives a message and keeps the selection."""
        if self.kind != "grid":
            self.message = "this importance is not per patch; pick a chip or class instead"
            self.note.value = _message_html(self.message)
            return False
        imp = self.importance
        if crs is not None:
            if imp.rio.crs is None:
                self.message = "the importance grid has no CRS, so a map click cannot find its patch"
                self.note.value = _message_html(self.message)
                return False
            from pyproj import Transformer
            x, y = Transformer.from_crs(crs, imp.rio.crs, always_xy=True).transform(x, y)
        xs, ys = imp["x"].values, imp["y"].values
        dx = abs(xs[1] - xs[0]) if len(xs) > 1 else abs(imp.rio.resolution()[0])
        dy = abs(ys[1] - ys[0]) if len(ys) > 1 else abs(imp.rio.resolution()[1])
        col, row = int(np.argmin(np.abs(xs - x))), int(np.argmin(np.abs(ys - y)))
        if abs(xs[col] - x) > dx / 2 + 1e-9 or abs(ys[row] - y) > dy / 2 + 1e-9:
            self.message = "that place is outside the scene's patches; click inside the scene"
            self.note.value = _message_html(self.message)
            return False
        self.select((row, col))
        return True

    def select_latlon(self, lat: float, lon: float) -> bool:
        """Select the patch under a map click (latitude, longitude)."""
        return self.select_at(lon, lat, crs="EPSG:4326")

    def follow(self, explorer, trait: str = "last_query") -> None:
        """Select the patch a map widget was last clicked at: ``explorer`` has a ``(lat, lon)``
        trait (a :class:`~eossl_widgets.MapExplorer`'s ``last_query``)."""
        def on_click(change):
            if change["new"] is not None:
                self.select_latlon(*change["new"])
        explorer.observe(on_click, trait)

    # ------------------------------------------------------------------ drawing

    def _bars_png(self, vals: np.ndarray, what: str) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        n = len(vals)
        fig = Figure(figsize=(max(4.0, 0.48 * n + 1.2), 2.8))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        colours = [wavelength_colour(w if w is not None else math.nan) for w in self.wavelengths]
        ax.bar(range(n), np.nan_to_num(vals), color=colours, edgecolor="#333333", linewidth=0.5)
        labels = [f"{b}\n{w:.0f}" if w is not None else b for b, w in zip(self.bands, self.wavelengths)]
        ax.set_xticks(range(n), labels, fontsize=7)
        ax.axhline(0, color="#333333", lw=0.6)
        ax.set_ylabel(self.importance.attrs.get("units", "importance"), fontsize=8)
        ax.set_title(what + ("  (band / centre wavelength, nm)" if any(self.wavelengths) else ""), fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        return buf.getvalue()


__all__ = ["BandImportancePanel", "check_importance", "wavelength_colour"]
