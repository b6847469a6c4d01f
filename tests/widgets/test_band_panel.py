"""BandImportancePanel: bars follow the selected chip, patch or class; bad input gives a message."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("ipywidgets")
from eossl_widgets.bands import BandImportancePanel, wavelength_colour  # noqa: E402

PNG = b"\x89PNG"


def _band_coords(chips):
    return {"band": chips["band"].values, "wavelength": ("band", chips["wavelength"].values)}


@pytest.fixture
def per_sample(chips):
    """The layout of eossl.band_importance(..., per="sample") on chips: (sample, band) + label."""
    rng = np.random.default_rng(0)
    values = rng.random((chips.sizes["sample"], chips.sizes["band"]))
    return xr.DataArray(values, dims=("sample", "band"), name="importance",
                        coords={**_band_coords(chips), "label": ("sample", chips["label"].values)})


def test_chip_selection_updates_bars(per_sample):
    panel = BandImportancePanel(per_sample)
    assert panel.kind == "sample" and panel.selected is None and panel.message == ""
    assert panel.values == pytest.approx(per_sample.mean("sample").values.tolist())
    assert panel.bands[:2] == ["B01", "B02"] and panel.wavelengths[1] == pytest.approx(per_sample["wavelength"][1])
    before = bytes(panel.bars.value)
    assert before.startswith(PNG)
    panel.select(7)
    assert panel.selected == 7 and panel.values == pytest.approx(per_sample.isel(sample=7).values.tolist())
    assert panel.picker.value == 7 and "chip 7" in panel.selection and bytes(panel.bars.value) != before
    label = str(per_sample["label"].values[7])
    assert label in panel.selection
    panel.picker.value = 2          # a person using the dropdown
    assert panel.selected == 2 and panel.values == pytest.approx(per_sample.isel(sample=2).values.tolist())
    panel.select(None)
    assert panel.picker.value == "__overall__" and panel.selected is None


def test_bad_selection_keeps_the_bars_and_says_why(per_sample):
    panel = BandImportancePanel(per_sample)
    panel.select(4)
    panel.select(10_000)
    assert "no chip 10000" in panel.message and "0 to 119" in panel.message
    assert panel.selected == 4 and "no chip" in panel.note.value
    panel.select(5)
    assert panel.message == "" and panel.note.value == ""


def test_per_class(chips):
    classes = np.unique(chips["label"].values)
    imp = xr.DataArray(np.arange(len(classes) * 13, dtype=float).reshape(len(classes), 13),
                       dims=("class", "band"), coords={"class": classes, **_band_coords(chips)})
    panel = BandImportancePanel(imp)
    assert panel.kind == "class"
    panel.select(classes[3])
    assert panel.values == pytest.approx(imp.isel({"class": 3}).values.tolist())
    assert str(classes[3]) in panel.selection
    panel.select("no such class")
    assert "no class 'no such class'" in panel.message


def test_per_class_with_integer_codes_and_names(slovenia):
    lulc = slovenia["lulc"]
    codes = [1, 2, 8]
    imp = xr.DataArray(np.random.default_rng(1).random((3, 13)), dims=("class", "band"),
                       coords={"class": codes, "band": slovenia["image"]["band"].values},
                       attrs={"classes": lulc.attrs["classes"]})
    panel = BandImportancePanel(imp)
    assert ("forest", 2) in panel.picker.options
    panel.select("artificial surface")          # by name
    assert panel.selected == 8 and panel.values == pytest.approx(imp.sel({"class": 8}).values.tolist())
    assert panel.wavelengths == [None] * 13      # no wavelength coordinate: names only, no crash


@pytest.fixture
def per_patch(slovenia):
    """(y, x, band) importance on an 8 px patch grid of the Slovenia scene, with its CRS."""
    scene = slovenia["image"].isel(time=0)
    p = 8
    rows, cols = scene.sizes["y"] // p, scene.sizes["x"] // p
    xs = scene["x"].values[:cols * p].reshape(cols, p).mean(1)
    ys = scene["y"].values[:rows * p].reshape(rows, p).mean(1)
    values = np.random.default_rng(2).random((rows, cols, scene.sizes["band"]))
    values[0, 0] = np.nan                      # a patch without data
    imp = xr.DataArray(values, dims=("y", "x", "band"), coords={"y": ys, "x": xs, **_band_coords(scene)},
                       name="importance")
    return imp.rio.write_crs(scene.rio.crs)


def test_patch_selection_by_row_col_and_map_click(per_patch):
    from pyproj import Transformer
    panel = BandImportancePanel(per_patch)
    assert panel.kind == "grid" and panel.values == pytest.approx(np.nanmean(per_patch.values, (0, 1)).tolist())
    panel.select((3, 5))
    assert panel.selected == (3, 5) and panel.values == pytest.approx(per_patch.isel(y=3, x=5).values.tolist())
    assert (panel.row.value, panel.col.value) == (3, 5) and panel.picker.value == "patch"
    panel.col.value = 6                        # typing a column
    assert panel.selected == (3, 6)
    # a map click at the centre of patch (2, 4), in lon/lat
    to_lonlat = Transformer.from_crs(per_patch.rio.crs, "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(float(per_patch.x[4]), float(per_patch.y[2]))
    assert panel.select_latlon(lat, lon)
    assert panel.selected == (2, 4)
    assert not panel.select_latlon(lat + 1.0, lon)       # ~110 km north: outside
    assert "outside the scene" in panel.message and panel.selected == (2, 4)
    panel.select((0, 0))
    assert "NaN" in panel.message and panel.values[0] is None
    panel.select((99, 0))
    assert "outside the" in panel.message


def test_whole_scene_and_bad_input(chips):
    imp = xr.DataArray(np.linspace(-1, 1, 13), dims="band", coords=_band_coords(chips))
    panel = BandImportancePanel(imp)
    assert panel.kind == "scene" and panel.values[0] == pytest.approx(-1) and panel.selection == "the whole scene"
    for bad, words in [(np.zeros(13), "DataArray"),
                       (xr.DataArray(np.zeros((2, 3)), dims=("a", "b")), "'band' dimension"),
                       (imp.expand_dims(time=2), "expected band with sample"),
                       (imp * np.nan, "all NaN")]:
        broken = BandImportancePanel(bad)
        assert words in broken.message and broken.children == (broken.note,)
        broken.select(1)                           # no crash on later use either
    assert wavelength_colour(None) == "#bdbdbd" and wavelength_colour(1600) == "#636363"


def test_with_eossl_band_importance(tiny_run, chips, slovenia):
    """The panel takes what eossl.band_importance gives, for every ``per``."""
    import eossl
    few = chips.isel(sample=slice(0, 20))
    per_chip = eossl.band_importance(tiny_run.model, few, per="patch")
    panel = BandImportancePanel(per_chip)
    assert panel.kind == "sample" and panel.message == ""
    panel.select(5)
    assert panel.values == pytest.approx(per_chip.isel(sample=5).values.tolist())
    assert panel.bands == [str(b) for b in per_chip["band"].values] and None not in panel.wavelengths
    per_class = eossl.band_importance(tiny_run.model, few, per="class")
    panel = BandImportancePanel(per_class)
    name = str(per_class["class"].values[0])
    panel.select(name)
    assert panel.kind == "class" and panel.values == pytest.approx(per_class.isel({"class": 0}).values.tolist())
    scene = slovenia["image"].isel(time=2)
    per_patch = eossl.band_importance(tiny_run.model, scene, per="patch")
    panel = BandImportancePanel(per_patch)
    assert panel.kind == "grid" and panel.message == ""
    from pyproj import Transformer
    lon, lat = Transformer.from_crs(per_patch.rio.crs, "EPSG:4326", always_xy=True).transform(
        float(per_patch.x[3]), float(per_patch.y[1]))
    assert panel.select_latlon(lat, lon) and panel.selected == (1, 3)
    assert panel.values == pytest.approx(per_patch.transpose("y", "x", "band")[1, 3].values.tolist(), nan_ok=True)
    whole = BandImportancePanel(eossl.band_importance(tiny_run.model, scene, per="scene"))
    assert whole.kind == "scene" and len(whole.values) == 13


def test_follows_clicks_on_the_map_explorer(tiny_run, slovenia):
    import eossl
    from eossl_widgets import MapExplorer
    scene = slovenia["image"].isel(time=2)
    emb = eossl.embed(tiny_run.model, scene)
    explorer = MapExplorer(scene, emb, clusters=0)
    panel = BandImportancePanel(eossl.band_importance(tiny_run.model, scene, per="patch"))
    panel.follow(explorer)
    from eossl_widgets.painter import PatchLocator
    lat, lon = PatchLocator(emb).lat_lon(4, 7)
    explorer.click(lat, lon)                       # what a click on the explorer's map does
    assert explorer.query_patch == (4, 7) and panel.selected == (4, 7)
