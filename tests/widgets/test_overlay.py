"""eossl_widgets.overlay: arrays land where they belong on a Web-Mercator map, offline."""

import base64
import io
import json

import numpy as np
import pytest
import xarray as xr
from PIL import Image

pytest.importorskip("ipyleaflet")

import eossl  # noqa: E402
from eossl_widgets import overlay as ov  # noqa: E402


def _png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def _grid(values, crs="EPSG:32651", x0=203_000.0, y0=3_605_000.0, res=30.0):
    h, w = values.shape[-2:]
    da = xr.DataArray(values, dims=("y", "x"), coords={"y": y0 - res * (np.arange(h) + 0.5),
                                                        "x": x0 + res * (np.arange(w) + 0.5)})
    return da.rio.write_crs(crs) if crs else da


def test_bounds_match_the_scene_footprint_in_lonlat(taizhou):
    image = taizhou["image"].isel(time=0)
    layer = ov.scene_overlay(taizhou)
    (s, w), (n, e) = layer.bounds
    west, south, east, north = image.rio.transform_bounds("EPSG:4326")
    # within a 30 m pixel (~0.0003 deg) of the UTM rectangle's footprint
    for got, want in ((s, south), (w, west), (n, north), (e, east)):
        assert abs(got - want) < 0.0006
    rgba = _png(layer.url)
    assert rgba.shape[2] == 4 and rgba[..., 3].mean() > 200  # almost all opaque: real pixels, not blank
    assert layer.name.startswith("true colour (B3, B2, B1)")


def test_a_pixel_lands_where_it_belongs():
    """One bright patch at a known UTM place shows up at that place's lon/lat on the Web-Mercator map."""
    from rasterio.warp import transform
    values = np.zeros((50, 50))
    values[10, 35] = 1.0
    da = _grid(values, res=100.0)
    rgba = _png(ov.array_overlay(da, "spot", vmin=0, vmax=1, cmap="gray").url)
    (s, w), (n, e) = ov.array_overlay(da, "spot", vmin=0, vmax=1).bounds
    bright = np.argwhere(rgba[..., 0] > 200).mean(axis=0)            # (row, col) in the PNG
    lon = w + (bright[1] + 0.5) / rgba.shape[1] * (e - w)          # x is linear in lon on Web Mercator
    merc = lambda lat: np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))  # noqa: E731
    lat_m = merc(n) - (bright[0] + 0.5) / rgba.shape[0] * (merc(n) - merc(s))
    lat = np.degrees(2 * np.arctan(np.exp(lat_m)) - np.pi / 2)
    (want_lon,), (want_lat,) = transform("EPSG:32651", "EPSG:4326", [float(da.x[35])], [float(da.y[10])])
    assert abs(lon - want_lon) < 0.0005 and abs(lat - want_lat) < 0.0005   # within half a 100 m pixel


def test_false_colour_uses_nir_red_green(slovenia):
    assert ov.false_colour_bands(slovenia) == ["B08", "B04", "B03"]
    layer = ov.scene_overlay(slovenia, false_colour=True, time=2)
    assert "false colour" in layer.name and layer.url != ov.scene_overlay(slovenia, time=2).url


def test_nan_is_transparent_and_colours_follow_values():
    values = np.linspace(0, 1, 40 * 40).reshape(40, 40)
    values[:20] = np.nan                                  # top half has no data
    rgba = _png(ov.array_overlay(_grid(values), "score").url)
    top, bottom = rgba[: rgba.shape[0] // 3], rgba[-rgba.shape[0] // 3:]
    assert (top[..., 3] == 0).mean() > 0.95
    assert (bottom[..., 3] == 255).mean() > 0.9


def test_class_map_negative_ids_transparent_and_classes_kept():
    classes = np.tile(np.arange(-1, 3), (8, 2)).astype("int16")   # (8, 8) with -1 = no embedding
    rgba = _png(ov.array_overlay(_grid(classes, res=960.0), "clusters").url)
    opaque = rgba[rgba[..., 3] == 255][:, :3]
    colours = {tuple(c) for c in opaque}
    assert len(colours) == 3              # nearest resampling: no blended in-between colours
    assert (rgba[..., 3] == 0).any()


def test_rgb_last_axis_like_pca_rgb(taizhou):
    rgb = xr.DataArray(np.random.default_rng(0).random((10, 10, 3)), dims=("y", "x", "rgb"))
    rgb = rgb.assign_coords(y=3_605_000.0 - 480 * (np.arange(10) + 0.5), x=203_000.0 + 480 * (np.arange(10) + 0.5))
    layer = ov.array_overlay(rgb.rio.write_crs("EPSG:32651"), "pca", opacity=0.5)
    assert layer.opacity == 0.5 and _png(layer.url)[..., 3].max() == 255


def test_no_crs_is_a_clear_error():
    with pytest.raises(eossl.DataError, match="write_crs"):
        ov.array_overlay(_grid(np.zeros((4, 4)), crs=None), "x")


def test_wrong_dims_is_a_clear_error(taizhou):
    with pytest.raises(eossl.DataError, match="scene_overlay"):
        ov.array_overlay(taizhou["image"].isel(time=0), "six bands")


def test_huge_overlay_is_downsampled_with_a_notice_not_blank():
    big = _grid(np.random.default_rng(0).random((600, 600)), res=10.0)
    with pytest.warns(UserWarning, match="1/3 resolution"):
        layer = ov.array_overlay(big, "big", max_pixels=50_000)
    assert "600x600" in layer.notice
    rgba = _png(layer.url)
    assert rgba.shape[0] * rgba.shape[1] < 600 * 600 and rgba[..., 3].mean() > 200


def test_update_overlay_redraws_in_place():
    layer = ov.array_overlay(_grid(np.zeros((8, 8))), "s", vmin=0, vmax=1)
    before = layer.url
    ov.update_overlay(layer, _grid(np.ones((8, 8))), vmin=0, vmax=1)
    assert layer.url != before and layer.name == "s"


def test_footprints_from_a_similarity_table(taizhou):
    import pandas as pd
    table = pd.DataFrame({"rank": [1], "score": [0.9], "minx": [203_000.0], "miny": [3_604_000.0],
                          "maxx": [204_000.0], "maxy": [3_605_000.0]})
    layer = ov.footprints_layer(table, crs="EPSG:32651")
    feature = layer.data["features"][0]
    assert feature["properties"]["rank"] == 1 and feature["properties"]["score"] == 0.9
    ring = np.array(feature["geometry"]["coordinates"][0])
    assert ring.shape == (5, 2) and 119 < ring[:, 0].mean() < 121 and 32 < ring[:, 1].mean() < 33
    json.dumps(layer.data)  # serialisable for the browser
    with pytest.raises(eossl.DataError, match="crs"):
        ov.footprints_layer([(0, 0, 1, 1)])


def test_thumbnail_png_of_a_patch(taizhou):
    patch = taizhou["image"].isel(time=0, y=slice(0, 16), x=slice(0, 16))
    img = Image.open(io.BytesIO(ov.thumbnail_png(patch, size=48)))
    assert img.size == (48, 48)
    img2 = Image.open(io.BytesIO(ov.thumbnail_png(np.random.default_rng(0).random((8, 4)), size=32)))
    assert img2.size == (16, 32)
    with pytest.raises(eossl.DataError):
        ov.thumbnail_png(np.zeros((4, 4, 5)))


def test_base_map_has_no_tiles_and_frames_the_scene(taizhou):
    m = ov.base_map(taizhou)
    assert not any(getattr(layer, "url", "").startswith("http") for layer in m.layers)
    west, south, east, north = taizhou["image"].rio.transform_bounds("EPSG:4326")
    assert south < m.center[0] < north and west < m.center[1] < east and m.zoom >= 10
    assert any(type(c).__name__ == "LayersControl" for c in m.controls)
    assert not any(type(c).__name__ == "DrawControl" for c in m.controls)  # it would catch the clicks


def test_base_map_is_a_leafmap_map_for_the_users_own_layers(taizhou):
    import leafmap.leafmap as leafmap
    m = ov.base_map(taizhou)
    assert isinstance(m, leafmap.Map)
    (s, w), (n, e) = ov.lonlat_bounds(taizhou)
    square = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"name": "mine"},
              "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}}]}
    m.add_geojson(square, layer_name="my field")
    assert "my field" in [layer.name for layer in m.layers]
    assert not any(getattr(layer, "url", "").startswith("http") for layer in m.layers)


def test_base_map_reframes_when_the_browser_reports_its_size(taizhou):
    m = ov.base_map(taizhou)
    zoom = m.zoom
    m.set_trait("pixel_bounds", ((0, 0), (10, 10)))          # not laid out yet: nothing happens
    assert m.zoom == zoom
    m.set_trait("pixel_bounds", ((0, 0), (180, 120)))        # a narrow map: one zoom level is too close
    assert m.zoom < zoom
    (s, w), (n, e) = ov.lonlat_bounds(taizhou)
    assert s < m.center[0] < n and w < m.center[1] < e
    small = m.zoom
    m.set_trait("pixel_bounds", ((0, 0), (2000, 2000)))      # a bigger view changes nothing
    assert m.zoom == small
    m.center = (0.0, 0.0)                                    # the user panned away: a bigger view keeps it
    m.set_trait("pixel_bounds", ((0, 0), (1900, 1900)))
    assert tuple(m.center) == (0.0, 0.0)
    m.set_trait("pixel_bounds", ((0, 0), (60, 60)))          # a smaller view of the same map: framed for it
    assert m.zoom < small and s < m.center[0] < n


def test_opacity_sliders_drive_the_layers():
    layer = ov.array_overlay(_grid(np.zeros((4, 4))), "score", opacity=0.8)
    sliders = ov.opacity_sliders([layer])
    sliders.children[0].value = 0.3
    assert layer.opacity == pytest.approx(0.3)


def _with_zero_margin(taizhou, cols=40):
    """The first Taizhou date with its left ``cols`` pixels zero in every band, as in a Landsat L1 scene."""
    scene = taizhou["image"].isel(time=0).copy(deep=True)
    scene[:, :, :cols] = 0
    return scene


def test_scene_overlay_leaves_a_zero_margin_transparent_and_out_of_the_stretch(taizhou):
    scene = _with_zero_margin(taizhou)
    rgb = ov.rgb_image(scene)
    assert np.isnan(rgb.values[:, :40]).all() and np.isfinite(rgb.values[:, 40:]).all()
    np.testing.assert_allclose(np.nanpercentile(rgb.values[:, 40:], 50), np.nanpercentile(
        ov.rgb_image(taizhou["image"].isel(time=0)).values[:, 40:], 50), atol=0.05)   # same stretch
    url, _, _ = ov.render(rgb)
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))
    assert (png[..., 3] == 0).mean() > 0.05                    # the margin (and the reprojection's edges)


def test_off_scene_patches_and_blank_patches(taizhou, taizhou_emb):
    scene = _with_zero_margin(taizhou, cols=44)              # 5.5 patches of 8 px
    emb = taizhou_emb.isel(time=0)
    off = ov.off_scene_patches(emb, scene)
    assert off.dims == ("y", "x") and off.shape == emb.shape[:2]
    assert off.values[:, :5].all() and not off.values[:, 6:].any()
    assert not off.values[:, 5].any()                         # half of it is data: kept (share=0.5)
    blank = ov.blank_patches(emb, off)
    assert np.isnan(blank.values[:, :5]).all() and np.isfinite(blank.values[:, 6:]).all()
    assert blank.rio.crs == emb.rio.crs and blank.attrs == emb.attrs
    assert not ov.off_scene_patches(emb, taizhou["image"].isel(time=0)).values.any()


def _pixels(url):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def test_update_overlay_reuses_one_warp_per_grid_and_draws_what_render_draws():
    classes = _grid(np.arange(36).reshape(6, 6) % 5)          # categorical: nearest in both paths
    layer = ov.array_overlay(classes, "classes")
    first = layer.url
    ov.update_overlay(layer, classes)
    warp = layer._warp
    np.testing.assert_array_equal(_pixels(layer.url), _pixels(first))   # the same picture either way
    ov.update_overlay(layer, _grid(np.arange(36).reshape(6, 6) % 3))
    assert layer._warp is warp and layer.url != first                    # same grid: the warp is reused
    ov.update_overlay(layer, _grid(np.zeros((8, 8), dtype=int)))
    assert layer._warp is not warp                                       # another grid: a new one


def test_update_overlay_of_a_large_grid_is_downsampled_with_a_notice_and_keeps_nan_transparent():
    values = np.random.default_rng(0).random((400, 400))
    values[:, :100] = np.nan
    layer = ov.array_overlay(_grid(np.zeros((400, 400))), "score")
    with pytest.warns(UserWarning, match="1/2 resolution"):
        ov.update_overlay(layer, _grid(values), cmap="inferno", max_pixels=50_000)
    png = _pixels(layer.url)
    assert png.shape[0] * png.shape[1] < 400 * 400 and "1/2" in layer.notice
    assert (png[..., 3] == 0).mean() > 0.2                   # the NaN quarter (and the map's edges) is clear


def test_palette_png_round_trips_colours_and_transparency():
    index = np.array([[0, 1], [254, 255]], dtype="uint8")
    palette = np.zeros((256, 4), dtype="uint8")
    palette[:255] = [[i, 255 - i, 7, 255] for i in range(255)]
    png = np.asarray(Image.open(io.BytesIO(ov.png_indexed(index, palette))).convert("RGBA"))
    np.testing.assert_array_equal(png[0, 0], [0, 255, 7, 255])
    np.testing.assert_array_equal(png[1, 0], [254, 1, 7, 255])
    assert png[1, 1, 3] == 0
