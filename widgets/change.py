"""Two dates of one place, the change score on top, and a threshold that says how much changed.

    t1, t2 = stack.isel(time=0), stack.isel(time=1)
    score = eossl.change(eossl.embed(model, t1), eossl.embed(model, t2))   # or eossl.change_vector
    explorer = ChangeExplorer(t1, t2, score)
    explorer                       # drag the swipe bar; move the threshold slider
    explorer.set_threshold(0.4)    # the same from code; explorer.report has the numbers

The patches whose score is at least the threshold are painted red; the report gives their number
and area (hectares and km², from the score grid's pixel size in its CRS: metres for a projected CRS,
the patches' geodesic area for lon/lat). The default threshold is Otsu's split of the scores.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

try:
    import ipyleaflet
    import ipywidgets as ipw
    import traitlets as tr
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("eossl_widgets needs ipyleaflet and ipywidgets: pip install 'eossl[maps]'") from None

from eossl.errors import DataError
from eossl_widgets.overlay import array_overlay, base_map, blank_patches, off_scene_patches, scene_overlay, update_overlay
from eossl_widgets.painter import _message_html, check_on_scene, scene_image

CHANGED_COLOUR = "Reds"


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that best splits ``values`` into two groups (Otsu 1979: maximal between-class
    variance of the histogram)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan
    if v.min() == v.max():
        return float(v.min())
    hist, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)                      # patches at or below each bin
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def patch_areas_m2(grid: xr.DataArray) -> np.ndarray:
    """(y, x) area of every cell of a grid with a CRS, in square metres."""
    from pyproj import CRS
    crs = CRS.from_user_input(grid.rio.crs)
    res_x, res_y = (abs(r) for r in grid.rio.resolution())
    shape = (grid.sizes["y"], grid.sizes["x"])
    if crs.is_projected:
        unit = crs.axis_info[0].unit_conversion_factor or 1.0    # e.g. feet -> metres
        return np.full(shape, res_x * res_y * unit * unit)
    from pyproj import Geod
    geod = Geod(ellps="WGS84")
    lats = grid["y"].values
    rows = []
    for lat in lats:  # every cell of one row has the same area on the ellipsoid
        area, _ = geod.polygon_area_perimeter([0, res_x, res_x, 0], [lat - res_y / 2, lat - res_y / 2,
                                                                    lat + res_y / 2, lat + res_y / 2])
        rows.append(abs(area))
    return np.repeat(np.array(rows)[:, None], shape[1], axis=1)


def _dates(scene_t1, scene_t2):
    """Two (band, y, x) scenes from two scenes, or from one two-date stack / sample Dataset."""
    if scene_t2 is None:
        da = scene_t1["image"] if isinstance(scene_t1, xr.Dataset) and "image" in scene_t1 else scene_t1
        lead = [d for d in getattr(da, "dims", ()) if d not in ("band", "y", "x")]
        if len(lead) != 1 or da.sizes[lead[0]] < 2:
            raise DataError("give two scenes, or one stack (time, band, y, x) with at least two dates")
        return scene_image(da.isel({lead[0]: 0})), scene_image(da.isel({lead[0]: -1}))
    return scene_image(scene_t1), scene_image(scene_t2)


class ChangeExplorer(ipw.VBox):
    """Two dates with a swipe bar (or side by side), the change score and a threshold slider.

    Args:
        scene_t1, scene_t2: the two dates, (band, y, x) with a CRS on the same grid; or one stack
            / sample Dataset as ``scene_t1`` and ``scene_t2=None`` (first and last dates).
        score: (y, x) change score with a CRS on (a patch grid of) these scenes, e.g. from
            :func:`eossl.change` or :func:`eossl.change_vector`.
        threshold: starting threshold (default: Otsu's split of the scores).
        mode: ``"swipe"`` (one map with a swipe bar) or ``"side"`` (two linked maps).
        labels: the two dates' names.

    State: ``threshold``, ``changed_patches``, ``valid_patches``, ``changed_area_m2``,
    ``report`` (the text shown) and ``message`` (what went wrong).
    """

    threshold = tr.Float(math.nan)
    changed_patches = tr.Int(0)
    valid_patches = tr.Int(0)
    changed_area_m2 = tr.Float(0.0)
    report = tr.Unicode("")
    message = tr.Unicode("")

    def __init__(self, scene_t1, scene_t2, score: xr.DataArray, *, threshold: float | None = None,
                 mode: str = "swipe", labels=("date 1", "date 2"), bands=None, basemap=None, **kwargs):
        super().__init__(**kwargs)
        self.note = ipw.HTML("")
        self.maps, self.score = [], None
        try:
            if mode not in ("swipe", "side"):
                raise DataError(f"mode must be 'swipe' or 'side', got {mode!r}")
            t1, t2 = _dates(scene_t1, scene_t2)
            self._check_pair(t1, t2)
            score = self._check_score(score, t1)
            # no change is measured on a no-data margin of either date: those patches stay transparent
            score = blank_patches(score, off_scene_patches(score, t1) | off_scene_patches(score, t2))
            if not np.isfinite(score.values).any():
                raise DataError("every patch of the change score lies on a no-data margin: nothing to show")
        except DataError as err:
            self.message = str(err)
            self.note.value = _message_html(str(err), "error")
            self.children = [self.note]
            return
        self.mode, self.labels = mode, tuple(labels)
        self.t1, self.t2, self.score = t1, t2, score
        self._areas = patch_areas_m2(score)
        finite = score.values[np.isfinite(score.values)]
        self.valid_patches = int(finite.size)
        lo, hi = float(finite.min()), float(finite.max())
        start = otsu_threshold(score.values) if threshold is None else float(threshold)
        self.slider = ipw.FloatSlider(value=min(max(start, lo), hi), min=lo, max=hi, step=(hi - lo) / 200 or 1.0,
                                      description="threshold", readout_format=".3f", continuous_update=False,
                                      layout=ipw.Layout(width="480px"))
        self.slider.observe(self._on_slider, "value")
        self.report_html = ipw.HTML("")
        self.report_html.add_class("eossl-change-report")  # CSS hooks (the browser test finds them)
        self.slider.add_class("eossl-threshold")
        self.score_layer = array_overlay(score, "change score", cmap="magma", opacity=0.0)
        self.changed_layer = None
        self._build_maps(bands, basemap)
        for m in self.maps:
            m.add_class("eossl-change-map")
        self.set_threshold(self.slider.value)
        self.children = [self._map_box, ipw.HBox([self.slider]), self.report_html, self.note]

    # ------------------------------------------------------------------ checks

    @staticmethod
    def _check_pair(t1, t2) -> None:
        if t1.sizes["y"] != t2.sizes["y"] or t1.sizes["x"] != t2.sizes["x"] or t1.rio.crs != t2.rio.crs or \
                not (np.allclose(t1["x"].values, t2["x"].values) and np.allclose(t1["y"].values, t2["y"].values)):
            raise DataError(f"the two dates are not on one grid ({t1.sizes['y']}x{t1.sizes['x']} px in "
                            f"{t1.rio.crs} vs {t2.sizes['y']}x{t2.sizes['x']} px in {t2.rio.crs}); open them "
                            "as one stack (eossl.open_stack aligns them)")

    @staticmethod
    def _check_score(score, scene) -> xr.DataArray:
        if not isinstance(score, xr.DataArray) or set(score.dims) != {"y", "x"}:
            dims = getattr(score, "dims", type(score).__name__)
            raise DataError(f"the change score must be a (y, x) DataArray (eossl.change / change_vector), got {dims}")
        check_on_scene(score, scene, "change scores")
        score = score.transpose("y", "x").astype("float64")
        if not np.isfinite(score.values).any():
            raise DataError("the change score is NaN everywhere: nothing to show")
        return score.rio.write_crs(scene.rio.crs) if score.rio.crs is None else score

    # ------------------------------------------------------------------ maps

    def _build_maps(self, bands, basemap) -> None:
        first = scene_overlay(self.t1, bands=bands, name=f"{self.labels[0]}")
        second = scene_overlay(self.t2, bands=bands, name=f"{self.labels[1]}")
        self.date_layers = (first, second)
        if self.mode == "swipe":
            m = base_map(self.t1, basemap=basemap)
            # the swipe clips an image overlay by clipping its whole pane: each date needs a pane
            # of its own (in leaflet's shared overlay pane the second clip would undo the first)
            # (above basemap tiles at 200, below the score layers in the overlay pane at 400)
            m.panes = {**m.panes, "eossl-date-1": {"zIndex": 250}, "eossl-date-2": {"zIndex": 251}}
            first.pane, second.pane = "eossl-date-1", "eossl-date-2"
            m.add(first)
            m.add(second)
            self.split = ipyleaflet.SplitMapControl(left_layer=first, right_layer=second)
            m.add(self.split)
            m.add(self.score_layer)
            self.maps = [m]
            caption = ipw.HTML(f"<b>{self.labels[0]}</b> left of the swipe bar, <b>{self.labels[1]}</b> right; "
                               "changed patches in red (layer control: the score itself)")
            self._map_box = ipw.VBox([caption, m])
        else:
            self.split = None
            left, right = base_map(self.t1, basemap=basemap), base_map(self.t1, basemap=basemap)
            left.add(first)
            right.add(second)
            right.add(self.score_layer)
            # both maps follow each other's pan and zoom, in the browser (no kernel round trip)
            self._links = [ipw.jslink((left, "center"), (right, "center")),
                           ipw.jslink((left, "zoom"), (right, "zoom"))]
            self.maps = [left, right]
            half = ipw.Layout(width="50%")
            self._map_box = ipw.HBox([ipw.VBox([ipw.HTML(f"<b>{self.labels[0]}</b>"), left], layout=half),
                                      ipw.VBox([ipw.HTML(f"<b>{self.labels[1]}</b>"), right], layout=half)])

    # ------------------------------------------------------------------ the threshold

    def changed_mask(self) -> xr.DataArray:
        """(y, x) booleans: patches whose score is at least the threshold (NaN scores: False)."""
        values = self.score.values
        return xr.DataArray(np.isfinite(values) & (np.nan_to_num(values, nan=-np.inf) >= self.threshold),
                            dims=("y", "x"), coords={"y": self.score["y"], "x": self.score["x"]},
                            name="changed").rio.write_crs(self.score.rio.crs)

    def set_threshold(self, value: float) -> None:
        """Move the threshold (what the slider does): repaint the changed patches and the report.
        A value outside the scores' range is clipped to it, with a message."""
        if self.score is None:
            return
        value = float(value)
        if not math.isfinite(value):
            self._say(f"the threshold must be a number, got {value}")
            return
        lo, hi = self.slider.min, self.slider.max
        self._say("" if lo <= value <= hi else
                  f"threshold {value:g} is outside the scores' range [{lo:.3g}, {hi:.3g}]; it was clipped")
        value = min(max(value, lo), hi)
        self._syncing = True
        try:
            self.slider.value = value
        finally:
            self._syncing = False
        self._apply(value)

    _syncing = False

    def _on_slider(self, change) -> None:
        if not self._syncing:
            self._say("")
            self._apply(change["new"])

    def _say(self, text: str) -> None:
        self.message = text
        self.note.value = _message_html(text)

    def _apply(self, value: float) -> None:
        self.threshold = value
        mask = self.changed_mask()
        self.changed_patches = int(mask.values.sum())
        self.changed_area_m2 = float(self._areas[mask.values].sum())
        painted = self.score.where(mask)     # NaN (transparent) where unchanged
        # Reds from its middle: even the weakest changed patch is clearly red, the strongest dark
        vmax = max(float(self.slider.max), value + 1e-9)
        vmin = value - (vmax - value)
        if self.changed_layer is None:
            self.changed_layer = array_overlay(painted, "changed patches", cmap=CHANGED_COLOUR,
                                               vmin=vmin, vmax=vmax, opacity=0.75)
            self.maps[-1].add(self.changed_layer)
        else:
            update_overlay(self.changed_layer, painted, cmap=CHANGED_COLOUR, vmin=vmin, vmax=vmax)
        ha = self.changed_area_m2 / 1e4
        share = self.changed_patches / max(self.valid_patches, 1)
        self.report = (f"{self.changed_patches:,} of {self.valid_patches:,} patches ({share:.1%}) score at least "
                       f"{value:.3f}: {ha:,.1f} ha ({ha / 100:,.2f} km²) changed")
        self.report_html.value = f"<b>Changed</b>: {self.report}"

__all__ = ["ChangeExplorer", "otsu_threshold", "patch_areas_m2"]
