"""Arrays on a leaflet map, offline: PNG overlays placed by their real footprint.

An xarray raster with a CRS (a scene, a score map, a class map, an embedding PCA picture) is
reprojected to Web Mercator (the map's own projection, so pixel edges land exactly where they
belong), colour-mapped, and encoded as a PNG *data URL* in an ``ipyleaflet.ImageOverlay``: no tile
server and no network are involved. Patch footprints become a GeoJSON layer in lon/lat. No data
(nodata, NaN, a zero margin: :func:`eossl.data.normalize.fill_mask`) is transparent.

    m = base_map(scene)                       # a leafmap.Map; no basemap tiles unless asked for
    m.add(scene_overlay(scene))               # true colour
    m.add(array_overlay(eossl.cluster(emb), "clusters", opacity=0.6))
"""

from __future__ import annotations

import base64
import io
import math
import warnings

import numpy as np
import xarray as xr

try:
    import ipyleaflet
    import ipywidgets as ipw
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("eossl_widgets needs ipyleaflet and ipywidgets: pip install 'eossl[maps]'") from None

from eossl.errors import DataError

WEB_MERCATOR = "EPSG:3857"
LONLAT = "EPSG:4326"
#: Common names of the classic false-colour composite (vegetation bright red).
FALSE_COLOUR = ("nir", "red", "green")
#: Small rasters (a patch grid of 12x12) are upsampled to this many pixels on the long side before
#: reprojection, so the slight rotation between UTM and Web Mercator does not make ragged edges.
MIN_SIDE = 512


# ----------------------------------------------------------------------------- rendering helpers

def _as_layers(da: xr.DataArray, what: str) -> tuple[xr.DataArray, bool]:
    """A (y, x) or RGB raster -> (channel, y, x) float with NaN for nodata, and whether it is RGB."""
    if not isinstance(da, xr.DataArray):
        raise DataError(f"{what}: expected an xarray.DataArray with y and x dimensions, got {type(da).__name__}")
    if "y" not in da.dims or "x" not in da.dims:
        raise DataError(f"{what}: needs 'y' and 'x' dimensions, got {da.dims}")
    extra = [d for d in da.dims if d not in ("y", "x")]
    if len(extra) > 1 or (extra and da.sizes[extra[0]] != 3):
        raise DataError(f"{what}: a map overlay is a (y, x) array or an RGB array with 3 channels "
                        f"(band/rgb, y, x); got dims {dict(da.sizes)}. Pick one band or date first "
                        "(.sel(band=...), .isel(time=0)), or use scene_overlay for a scene")
    if da.rio.crs is None:
        raise DataError(f"{what}: has no CRS, so it cannot be placed on a map; write one with "
                        "da.rio.write_crs('EPSG:32633') (the CRS its x/y coordinates are in)")
    if da.sizes["y"] < 1 or da.sizes["x"] < 1:
        raise DataError(f"{what}: is empty ({dict(da.sizes)})")
    return (da.transpose(extra[0], "y", "x") if extra else da.expand_dims(channel=1)), bool(extra)


def downsample_step(height: int, width: int, max_pixels: int) -> int:
    """1 when a ``height`` x ``width`` raster fits in ``max_pixels``, else the step (every step-th
    pixel, or step x step blocks) that makes it fit: an overlay is shown at 1/step resolution."""
    n = height * width
    return 1 if n <= max_pixels else int(math.ceil(math.sqrt(n / max_pixels)))


def _downsample(da: xr.DataArray, max_pixels: int, categorical: bool, what: str):
    """Fewer pixels than ``max_pixels`` (a browser holds a data URL of a few MB, not a whole tile).
    Returns the array and a notice (None when nothing was done)."""
    step = downsample_step(da.sizes["y"], da.sizes["x"], max_pixels)
    if step == 1:
        return da, None
    if categorical:  # classes must stay classes: take every step-th pixel, never average them
        small = da.isel(y=slice(step // 2, None, step), x=slice(step // 2, None, step))
    else:
        small = da.coarsen(y=step, x=step, boundary="trim").mean()
    small = small.rio.write_crs(da.rio.crs)
    notice = (f"{what}: {da.sizes['y']}x{da.sizes['x']} px is more than a map overlay holds "
              f"({max_pixels:,} px); shown at 1/{step} resolution ({small.sizes['y']}x{small.sizes['x']} px)")
    return small, notice


def _upsample(da: xr.DataArray, budget: int) -> xr.DataArray:
    """Repeat pixels (nearest) so a tiny grid has ~MIN_SIDE px before reprojection (within ``budget``)."""
    h, w = da.sizes["y"], da.sizes["x"]
    factor = max(1, MIN_SIDE // max(h, w))
    while factor > 1 and h * w * factor * factor > budget:
        factor -= 1
    if factor == 1:
        return da
    t = da.rio.transform()
    values = np.repeat(np.repeat(da.values, factor, axis=-2), factor, axis=-1)  # (C, h*f, w*f)
    xs = t.c + t.a / factor * (np.arange(w * factor) + 0.5)
    ys = t.f + t.e / factor * (np.arange(h * factor) + 0.5)
    out = xr.DataArray(values, dims=da.dims, coords={da.dims[0]: da[da.dims[0]].values, "y": ys, "x": xs})
    return out.rio.write_crs(da.rio.crs)


def _reproject(da: xr.DataArray, categorical: bool) -> xr.DataArray:
    from rasterio.enums import Resampling
    da = da.astype("float32").rio.write_nodata(np.nan)
    return da.rio.reproject(WEB_MERCATOR, resampling=Resampling.nearest if categorical else Resampling.bilinear,
                            nodata=np.nan)


def _lonlat_bounds(da: xr.DataArray):
    """Bounds of a Web-Mercator raster as leaflet wants them: ((south, west), (north, east))."""
    from rasterio.warp import transform
    left, bottom, right, top = da.rio.bounds()
    lons, lats = transform(WEB_MERCATOR, LONLAT, [left, right], [bottom, top])
    return ((lats[0], lons[0]), (lats[1], lons[1]))


def _colour(values: np.ndarray, rgb: bool, categorical: bool, cmap, vmin, vmax) -> np.ndarray:
    """(C, H, W) float with NaN -> (H, W, 4) uint8 RGBA; NaN is transparent."""
    if rgb:
        finite = np.isfinite(values).all(axis=0)                     # (H, W)
        lo = 0.0 if vmin is None else vmin
        hi = 1.0 if vmax is None else vmax
        scaled = np.clip((np.nan_to_num(values) - lo) / max(hi - lo, 1e-12), 0, 1)
        rgba = np.concatenate([np.moveaxis(scaled, 0, -1), finite[..., None].astype("float64")], axis=-1)
        return (rgba * 255).round().astype("uint8")
    index, palette = _colour_indexed(values[0], categorical, cmap, vmin, vmax)
    return palette[index]                                            # (H, W, 4)


#: Palette entries of a colour-mapped overlay: 255 colours and one transparent entry (no data).
LEVELS = 255
TRANSPARENT = 255


def _colour_indexed(v: np.ndarray, categorical: bool, cmap, vmin, vmax) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float with NaN -> palette indices (H, W) uint8 and the palette (256, 4) uint8 RGBA.

    One byte per pixel instead of four: a score map of 10^6 patches encodes to PNG ~4x faster (what a
    click on the map explorer waits for). A continuous map is quantised to 255 levels of its colour
    map, finer than a colour bar shows; index 255 is transparent (NaN, negative class ids)."""
    import matplotlib
    finite = np.isfinite(v)
    palette = np.zeros((256, 4), dtype="uint8")                     # entry 255 stays transparent
    if categorical:
        finite &= np.nan_to_num(v, nan=-1) >= 0  # negative class ids (cluster's -1) = no data
        cm = matplotlib.colormaps[cmap or "tab20"]
        n = min(cm.N, LEVELS)
        palette[:n] = (np.asarray(cm(np.arange(n))) * 255).round().astype("uint8")
        index = (np.nan_to_num(v, nan=0).astype(np.int64) % n).astype("uint8")
    else:
        if finite.any():
            lo, hi = np.nanpercentile(v[finite], (2, 98))
        else:
            lo, hi = 0.0, 1.0
        lo = lo if vmin is None else vmin
        hi = hi if vmax is None else vmax
        cm = matplotlib.colormaps[cmap or "viridis"]
        palette[:LEVELS] = (np.asarray(cm(np.linspace(0, 1, LEVELS))) * 255).round().astype("uint8")
        scaled = np.clip((np.nan_to_num(v) - lo) / max(hi - lo, 1e-12), 0, 1)          # (H, W) in 0..1
        index = np.rint(scaled * (LEVELS - 1)).astype("uint8")
    index[~finite] = TRANSPARENT
    return index, palette


def png_indexed(index: np.ndarray, palette: np.ndarray) -> bytes:
    """(H, W) uint8 palette indices and a (256, 4) RGBA palette -> a palette PNG (alpha in tRNS)."""
    from PIL import Image
    img = Image.fromarray(np.ascontiguousarray(index), mode="P")
    img.putpalette(palette[:, :3].ravel().tolist())
    buf = io.BytesIO()
    # level 1: a few % larger than the default level 6 and several times faster to write
    img.save(buf, format="PNG", transparency=bytes(palette[:, 3].tolist()), compress_level=1)
    return buf.getvalue()


def png_bytes(rgba: np.ndarray) -> bytes:
    """(H, W, 3|4) uint8 -> PNG bytes."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def data_url(png: bytes) -> str:
    """PNG bytes -> a ``data:image/png;base64,...`` URL (what leaflet and bokeh show offline)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _values(da: xr.DataArray, what: str, categorical: bool | None):
    """A raster to draw -> ``(values, rgb, categorical)``: values (channel, y, x) float32 with NaN
    for nodata and the CRS; categorical guessed from the dtype unless given."""
    layers, rgb = _as_layers(da, what)
    if categorical is None:
        categorical = not rgb and (np.issubdtype(da.dtype, np.integer) or da.dtype == bool)
    nodata = da.rio.nodata if da.rio.nodata is not None else da.attrs.get("nodata")
    values = layers.astype("float32", copy=False)  # no copies: this runs on every click's redraw
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        values = values.where(layers != nodata)
    return (values if values.rio.crs is not None else values.rio.write_crs(da.rio.crs)), rgb, categorical


def _png_url(merc: np.ndarray, rgb: bool, categorical: bool, cmap, vmin, vmax) -> str:
    """(C, H, W) values on the map -> the overlay's data URL (RGBA PNG for RGB, palette PNG else)."""
    if rgb:
        png = png_bytes(_colour(merc, rgb, categorical, cmap, vmin, vmax))
    else:
        png = png_indexed(*_colour_indexed(merc[0], categorical, cmap, vmin, vmax))
    return data_url(png)


def render(da: xr.DataArray, *, cmap=None, vmin=None, vmax=None, max_pixels: int = 2_000_000,
           categorical: bool | None = None, what: str = "overlay"):
    """The work behind :func:`array_overlay`: ``(data_url, bounds, notice)`` with bounds
    ``((south, west), (north, east))`` in degrees and notice a string when the array was downsampled."""
    values, rgb, categorical = _values(da, what, categorical)
    values, notice = _downsample(values, max_pixels, categorical, what)
    merc = _reproject(_upsample(values, max_pixels), categorical)
    return _png_url(merc.values, rgb, categorical, cmap, vmin, vmax), _lonlat_bounds(merc), notice


# ----------------------------------------------------------------------------- layers

def array_overlay(da: xr.DataArray, name: str, *, cmap=None, vmin=None, vmax=None, opacity: float = 1.0,
                  max_pixels: int = 2_000_000, categorical: bool | None = None) -> ipyleaflet.ImageOverlay:
    """A raster with a CRS as a leaflet image overlay, placed by its real footprint.

    Args:
        da: ``(y, x)`` values (a score map: colour-mapped with ``cmap``, default viridis stretched
            to the 2-98 percentiles unless ``vmin``/``vmax`` are given; a class map of integers:
            one tab20 colour per class, negative ids such as :func:`eossl.cluster`'s -1 transparent),
            or RGB ``(band|rgb, y, x)`` / ``(y, x, rgb)`` already in 0..1 (e.g. :func:`eossl.pca_rgb`).
            NaN and the raster's nodata value are transparent.
        max_pixels: larger rasters are shown downsampled, with a warning (also kept on the layer as
            ``layer.notice``) instead of an overlay the browser cannot hold.

    Raises :class:`eossl.DataError` for an array without a CRS or with the wrong dimensions.
    """
    url, bounds, notice = render(da, cmap=cmap, vmin=vmin, vmax=vmax, max_pixels=max_pixels,
                                 categorical=categorical, what=name)
    if notice:
        warnings.warn(notice, stacklevel=2)
    layer = ipyleaflet.ImageOverlay(url=url, bounds=bounds, name=name, opacity=opacity)
    layer.notice = notice
    return layer


class Warp:
    """Where each pixel of a Web-Mercator overlay comes from on one source grid, worked out once.

    A layer redrawn on every click (the similarity heat map of 10^6 patches) keeps the same grid, so
    the reprojection, the downsampling and the upsampling are the same each time: they are done once
    on the grid's (row, col) numbers, with nearest neighbour, and every redraw is one take. At 10^6
    patches that turns ~100 ms of warping into ~10 ms. Nearest: each map pixel shows the one patch
    under it (no blending across patch edges); a downsampled grid shows every step-th patch."""

    def __init__(self, da: xr.DataArray, max_pixels: int, what: str = "overlay"):
        h, w = da.sizes["y"], da.sizes["x"]
        rows, cols = np.meshgrid(np.arange(h, dtype="float32"), np.arange(w, dtype="float32"), indexing="ij")
        numbers = xr.DataArray(np.stack([rows, cols]), dims=("channel", "y", "x"),
                               coords={"y": da["y"].values, "x": da["x"].values}).rio.write_crs(da.rio.crs)
        numbers, self.notice = _downsample(numbers, max_pixels, True, what)
        merc = _reproject(_upsample(numbers, max_pixels), True)                    # (2, H, W), NaN off the grid
        self.inside = np.isfinite(merc.values).all(axis=0)                          # (H, W)
        self.rows = np.nan_to_num(merc.values[0]).astype(np.int64)                  # (H, W)
        self.cols = np.nan_to_num(merc.values[1]).astype(np.int64)
        self.bounds = _lonlat_bounds(merc)
        self.key = self.key_of(da, max_pixels)

    @staticmethod
    def key_of(da: xr.DataArray, max_pixels: int):
        return (da.sizes["y"], da.sizes["x"], tuple(da.rio.transform()), str(da.rio.crs), max_pixels)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """(C, h, w) values on the source grid -> (C, H, W) on the map, NaN off the grid."""
        out = values[:, self.rows, self.cols]
        out[:, ~self.inside] = np.nan
        return out


def _render_warped(layer, da: xr.DataArray, *, cmap=None, vmin=None, vmax=None, max_pixels: int = 2_000_000,
                   categorical: bool | None = None):
    """:func:`render` through the layer's cached :class:`Warp` (made on the first redraw of a grid)."""
    values, rgb, categorical = _values(da, layer.name, categorical)
    warp = getattr(layer, "_warp", None)
    if warp is None or warp.key != Warp.key_of(da, max_pixels):
        warp = layer._warp = Warp(da, max_pixels, layer.name)
    merc = warp(values.values)                                                     # (C, H, W)
    return _png_url(merc, rgb, categorical, cmap, vmin, vmax), warp.bounds, warp.notice


def update_overlay(layer: ipyleaflet.ImageOverlay, da: xr.DataArray, **kwargs) -> ipyleaflet.ImageOverlay:
    """Redraw ``layer`` in place with new values (keeps its place in the layer list and its opacity).

    Redraws of one grid reuse its reprojection (:class:`Warp`, nearest neighbour), so a layer
    redrawn on every click costs a take, a colour map and a PNG."""
    url, bounds, notice = _render_warped(layer, da, **kwargs)
    if notice:
        warnings.warn(notice, stacklevel=2)
    layer.bounds = bounds
    layer.url = url
    layer.notice = notice
    return layer


def _scene_array(scene, time=None) -> xr.DataArray:
    """A scene / a Dataset with ``image`` / a stack -> (band, y, x)."""
    if isinstance(scene, xr.Dataset):
        if "image" not in scene:
            raise DataError(f"the Dataset has no 'image' variable (has {list(scene.data_vars)})")
        scene = scene["image"]
    if not isinstance(scene, xr.DataArray) or "band" not in scene.dims:
        raise DataError("expected a scene: a DataArray (band, y, x), or a Dataset with an 'image' variable")
    lead = [d for d in scene.dims if d not in ("band", "y", "x")]
    if len(lead) == 1:
        scene = scene.isel({lead[0]: 0 if time is None else time})
    elif lead:
        raise DataError(f"cannot show a scene with dims {scene.dims}")
    return scene


def false_colour_bands(scene) -> list[str]:
    """Names of the NIR, red and green bands (by common name, then wavelength)."""
    da = _scene_array(scene)
    names = [str(b) for b in da["band"].values]
    if "common_name" in da.coords:
        common = [str(c) for c in da["common_name"].values]
        if all(c in common for c in FALSE_COLOUR):
            return [names[common.index(c)] for c in FALSE_COLOUR]
    if "wavelength" in da.coords:
        wl = np.asarray(da["wavelength"].values, dtype=float)
        if not np.all(np.isnan(wl)):
            return [names[int(np.nanargmin(np.abs(wl - t)))] for t in (842.0, 665.0, 560.0)]
    raise DataError(f"cannot tell which bands are NIR, red and green among {names}; pass bands=[...]")


def rgb_image(scene, bands=None, *, time=None, false_colour: bool = False, percentiles=(2, 98)) -> xr.DataArray:
    """A scene as a stretched ``(y, x, rgb)`` picture in 0..1 with its coordinates and CRS: true
    colour by band name (:func:`eossl.data.bands.rgb_bands`), NIR/red/green with
    ``false_colour=True``, or the named ``bands``; the percentile stretch of
    :func:`eossl.plot.rgb_array`, over the whole scene (so patches cut from it compare)."""
    from eossl.data.bands import rgb_bands
    from eossl.data.normalize import fill_mask, nodata_to_nan
    from eossl.plot import stretch
    da = _scene_array(scene, time)
    if bands is None:
        bands = false_colour_bands(da) if false_colour else rgb_bands(da)
    missing = [b for b in bands if b not in da["band"].values]
    if missing:
        raise DataError(f"bands {missing} are not in the scene (it has {da['band'].values.tolist()})")
    values = nodata_to_nan(da.sel(band=list(bands)).transpose("y", "x", "band").values.astype("float32"),
                           da.attrs.get("nodata"))                           # (y, x, 3)
    # no-data pixels (a zero margin too) are transparent and stay out of the stretch: counted in,
    # a 16 % zero margin pulls the 2 % point to 0 and the picture washes out
    values[fill_mask(da)] = np.nan
    rgb = xr.DataArray(stretch(values, percentiles), dims=("y", "x", "rgb"),
                       coords={"y": da["y"], "x": da["x"], "rgb": [str(b) for b in bands]})
    return rgb.rio.write_crs(da.rio.crs) if da.rio.crs is not None else rgb


def off_scene_patches(grid: xr.DataArray, scene, share: float = 0.5) -> xr.DataArray:
    """(y, x) booleans on ``grid`` (embeddings or scores on a patch grid of ``scene``, same CRS):
    the patches more than ``share`` of whose pixels hold no data (:func:`eossl.data.normalize.fill_mask`).
    Widgets leave them transparent and out of searches, class maps and change areas: an embedding
    of a zero margin is a real vector, but of nothing."""
    from eossl.data.normalize import fill_mask
    scene = _scene_array(scene)
    rows, cols = grid.sizes["y"], grid.sizes["x"]
    fill = fill_mask(scene)                                                        # (Y, X)
    off = np.zeros((rows, cols), dtype=bool)
    if fill.any():
        t = grid.rio.transform()
        col_of = np.floor((scene["x"].values - t.c) / t.a).astype(int)            # (X,) patch column of each pixel
        row_of = np.floor((scene["y"].values - t.f) / t.e).astype(int)            # (Y,)
        keep_r, keep_c = (row_of >= 0) & (row_of < rows), (col_of >= 0) & (col_of < cols)
        cell = row_of[keep_r][:, None] * cols + col_of[keep_c][None, :]         # (Y', X') flat patch index
        pixels = np.bincount(cell.ravel(), minlength=rows * cols)
        empty = np.bincount(cell.ravel(), weights=fill[np.ix_(keep_r, keep_c)].ravel(), minlength=rows * cols)
        off = (empty > share * np.maximum(pixels, 1)).reshape(rows, cols)
    return xr.DataArray(off, dims=("y", "x"), coords={"y": grid["y"], "x": grid["x"]}, name="off_scene")


def blank_patches(grid: xr.DataArray, off: xr.DataArray) -> xr.DataArray:
    """``grid`` (y, x[, dim]) with NaN on the patches where ``off`` (y, x) is True; attributes and
    CRS kept. A grid of another size is returned as it is (its own checks say why it does not fit)."""
    if not bool(off.any()) or grid.sizes.get("y") != off.sizes["y"] or grid.sizes.get("x") != off.sizes["x"]:
        return grid
    out = grid.where(~xr.DataArray(off.values, dims=("y", "x")))
    out.attrs = dict(grid.attrs)
    return out


def scene_overlay(scene, bands=None, name: str | None = None, *, time=None, false_colour: bool = False,
                  percentiles=(2, 98), opacity: float = 1.0, max_pixels: int = 2_000_000) -> ipyleaflet.ImageOverlay:
    """A scene in true colour (or ``false_colour=True``: NIR/red/green, or the named ``bands``), with
    the percentile stretch of :func:`eossl.plot.rgb_array`. ``scene``: (band, y, x), a stack (the
    ``time`` index, default the first date) or a sample Dataset with ``image``."""
    if _scene_array(scene, time).rio.crs is None:
        raise DataError("the scene has no CRS, so it cannot be placed on a map; write one with "
                        "scene.rio.write_crs('EPSG:32633') (the CRS its x/y coordinates are in)")
    rgb = rgb_image(scene, bands, time=time, false_colour=false_colour, percentiles=percentiles)
    if name is None:
        name = ("false colour" if false_colour else "true colour") + f" ({', '.join(rgb['rgb'].values.tolist())})"
    return array_overlay(rgb, name, opacity=opacity, max_pixels=max_pixels)


def _boxes_from(shapes, crs):
    """Footprints -> list of (properties, [(x, y), ...] ring) in ``crs``, and that CRS."""
    import pandas as pd
    if hasattr(shapes, "geometry") and hasattr(shapes, "to_crs"):  # a GeoDataFrame
        if shapes.crs is None:
            raise DataError("the GeoDataFrame has no CRS; set one with gdf.set_crs(...)")
        gdf = shapes.to_crs(LONLAT)
        props = gdf.drop(columns="geometry")
        out = []
        for i, geom in enumerate(gdf.geometry):
            ring = list(geom.exterior.coords) if geom.geom_type == "Polygon" else list(geom.envelope.exterior.coords)
            out.append((props.iloc[i].to_dict(), ring))
        return out, LONLAT
    if isinstance(shapes, pd.DataFrame):
        need = {"minx", "miny", "maxx", "maxy"}
        if not need <= set(shapes.columns):
            raise DataError(f"a footprint table needs columns {sorted(need)} (as eossl.similar's table has); "
                            f"got {list(shapes.columns)}")
        rows = shapes.to_dict("records")
        return [({k: v for k, v in r.items() if k not in need},
                 [(r["minx"], r["miny"]), (r["maxx"], r["miny"]), (r["maxx"], r["maxy"]),
                  (r["minx"], r["maxy"]), (r["minx"], r["miny"])]) for r in rows], crs
    out = []
    for item in shapes:
        if hasattr(item, "exterior"):  # a shapely polygon
            out.append(({}, list(item.exterior.coords)))
        else:
            minx, miny, maxx, maxy = item
            out.append(({}, [(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy), (minx, miny)]))
    return out, crs


def footprints_geojson(shapes, crs=None) -> dict:
    """Patch outlines as a GeoJSON FeatureCollection in lon/lat. ``shapes``: a GeoDataFrame, a table
    with ``minx, miny, maxx, maxy`` columns in ``crs`` (such as ``eossl.similar(...).table``), or a
    list of ``(minx, miny, maxx, maxy)`` boxes / shapely polygons in ``crs``."""
    from rasterio.warp import transform
    boxes, src = _boxes_from(shapes, crs)
    if boxes and src is None:
        raise DataError("footprints need the CRS their coordinates are in: pass crs=emb.rio.crs")
    features = []
    for props, ring in boxes:
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        if str(src) != LONLAT:
            xs, ys = transform(src, LONLAT, xs, ys)
        clean = {k: (v.item() if hasattr(v, "item") else v) for k, v in props.items()
                 if isinstance(v, (int, float, str, bool, np.generic))}
        features.append({"type": "Feature", "properties": clean,
                         "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in zip(xs, ys)]]}})
    return {"type": "FeatureCollection", "features": features}


def footprints_layer(shapes, name: str = "patches", *, crs=None, color: str = "#ff3d00",
                     weight: float = 2, fill_opacity: float = 0.0) -> ipyleaflet.GeoJSON:
    """An ``ipyleaflet.GeoJSON`` layer of patch outlines (see :func:`footprints_geojson` for
    ``shapes``); update it in place with ``layer.data = footprints_geojson(...)``."""
    return ipyleaflet.GeoJSON(data=footprints_geojson(shapes, crs), name=name,
                              style={"color": color, "weight": weight, "fillOpacity": fill_opacity,
                                     "opacity": 1.0})


def thumbnail_png(array, size: int = 64, *, bands=None, percentiles=(2, 98), cmap: str = "viridis") -> bytes:
    """A small PNG of one patch or chip, for galleries and hover tips.

    ``array``: a (band, y, x) DataArray (true colour found by band name, or ``bands``), an
    ``(y, x, 3)`` array in 0..1, or ``(y, x)`` values (colour-mapped). Upscaled with nearest
    neighbour to ``size`` px on the long side so small patches stay crisp. Use :func:`data_url`
    for a URL."""
    from PIL import Image
    from eossl.data.bands import rgb_bands
    from eossl.plot import stretch
    if isinstance(array, xr.DataArray) and "band" in array.dims:
        names = list(bands or rgb_bands(array))
        rgb = stretch(array.sel(band=names).transpose("y", "x", "band").values.astype("float32"), percentiles)
    else:
        rgb = np.asarray(array, dtype="float32")
        if rgb.ndim == 2:
            import matplotlib
            finite = np.isfinite(rgb)
            lo, hi = np.nanpercentile(rgb, percentiles) if finite.any() else (0.0, 1.0)
            rgb = matplotlib.colormaps[cmap](np.clip((np.nan_to_num(rgb) - lo) / max(hi - lo, 1e-12), 0, 1))[..., :3]
        elif rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise DataError(f"thumbnail_png needs (band, y, x), (y, x, 3) or (y, x); got shape {rgb.shape}")
    img = Image.fromarray((np.clip(np.nan_to_num(rgb), 0, 1) * 255).round().astype("uint8"))
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- the map

def _view(bounds, width_px: int = 700, height_px: int = 450):
    """Centre and the largest zoom at which ((south, west), (north, east)) fits the given pixels
    (computed here: ipyleaflet's fit_bounds needs a rendered map and does nothing before display)."""
    (s, w), (n, e) = bounds

    def merc_y(lat):
        return math.log(math.tan(math.pi / 4 + math.radians(max(min(lat, 85), -85)) / 2))
    dlon = max(e - w, 1e-9)
    dy = max(merc_y(n) - merc_y(s), 1e-9)
    zx = math.log2(width_px * 360 / (256 * dlon))
    zy = math.log2(height_px * 2 * math.pi / (256 * dy))
    zoom = max(0, min(18, int(math.floor(min(zx, zy)))))
    centre_lat = math.degrees(2 * math.atan(math.exp((merc_y(n) + merc_y(s)) / 2)) - math.pi / 2)
    return (centre_lat, (w + e) / 2), zoom


def lonlat_bounds(obj):
    """((south, west), (north, east)) of a raster with a CRS, or of given bounds."""
    if isinstance(obj, (xr.DataArray, xr.Dataset)):
        da = obj["image"] if isinstance(obj, xr.Dataset) and "image" in obj else obj
        if da.rio.crs is None:
            raise DataError("the array has no CRS, so it cannot be placed on a map; write one with "
                            "da.rio.write_crs('EPSG:32633')")
        w, s, e, n = da.rio.transform_bounds(LONLAT)
        return ((s, w), (n, e))
    (s, w), (n, e) = obj
    return ((float(s), float(w)), (float(n), float(e)))


def _basemap_layer(basemap):
    if isinstance(basemap, ipyleaflet.TileLayer):
        return basemap
    if isinstance(basemap, str):
        import xyzservices
        try:
            provider = xyzservices.providers.query_name(basemap)
        except ValueError:
            raise DataError(f"unknown basemap {basemap!r}; give an xyzservices name such as "
                            "'OpenStreetMap.Mapnik' or an ipyleaflet.TileLayer") from None
        basemap = provider
    layer = ipyleaflet.basemap_to_tiles(basemap)
    layer.base = True
    return layer


def fit_when_shown(m, bounds) -> None:
    """Frame ``m`` on ``bounds`` once the browser has drawn it at its real size.

    The map is created framed for a 700x450 px box, but it is shown beside a side panel or a
    scatter, narrower than that, and the scene would open cut off. Leaflet reports the drawn size
    in ``pixel_bounds``; the zoom and centre are computed again for it (on the kernel side:
    ipyleaflet's own ``fit_bounds`` needs an event-loop round trip per zoom step). One map shown
    twice (the explorer's map beside the scatter too) is framed for the smaller of its views; a
    view no smaller than one already fitted changes nothing, so the user's own panning stays."""
    bounds = lonlat_bounds(bounds)
    fitted = [None]                                   # (width, height) the view was last framed for

    def refit(change):
        (x0, y0), (x1, y1) = change["new"] or ((0, 0), (0, 0))
        width, height = int(abs(x1 - x0)), int(abs(y1 - y0))
        if width < 50 or height < 50:  # not laid out yet (a hidden tab, a collapsed output)
            return
        if fitted[0] is not None:
            width, height = min(width, fitted[0][0]), min(height, fitted[0][1])
            if (width, height) == fitted[0]:
                return
        fitted[0] = (width, height)
        centre, zoom = _view(bounds, width, height)
        m.center, m.zoom = centre, zoom

    m.observe(refit, "pixel_bounds")


def base_map(scene_or_bounds=None, basemap=None, *, height: str = "450px", **map_kwargs):
    """A ``leafmap.Map`` (its ipyleaflet backend) framed on a scene (or
    ``((south, west), (north, east))``), with a layer control and NO basemap tiles unless
    ``basemap`` is given (an xyzservices name such as ``"OpenStreetMap.Mapnik"`` or a TileLayer;
    those need the network, our overlays do not).

    Being a leafmap map, it takes leafmap's API for a user's own layers (``m.add_geojson``,
    ``m.add_raster``, ``m.add_basemap``, ``m.add_layer_manager``). leafmap's draw control, toolbar
    and search box are off: they would catch the clicks our widgets listen to, and some of their
    tools need the network. The map reframes itself on the scene once it is shown."""
    import leafmap.leafmap as leafmap
    kwargs = dict(scroll_wheel_zoom=True, draw_control=False, toolbar_control=False, search_control=False,
                  measure_control=False, layers_control=False, fullscreen_control=True, scale_control=True)
    if scene_or_bounds is not None:
        centre, zoom = _view(lonlat_bounds(scene_or_bounds))
        kwargs.update(center=centre, zoom=zoom)
    kwargs.update(map_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # from leafmap's own dependencies
        m = leafmap.Map(**kwargs)
    # leafmap puts OpenStreetMap tiles under every map; they need the network, so they go before
    # the map is ever shown (an offline page asks nothing of the network)
    for layer in list(m.layers):
        if isinstance(layer, ipyleaflet.TileLayer):
            m.remove(layer)
    # leafmap rebuilds a (hidden, with the toolbar off) layer manager on every add: dropping it
    # keeps adds cheap; m.add_layer_manager() makes a visible one again
    if hasattr(m, "_layer_manager_widget"):
        del m._layer_manager_widget
    if basemap is not None:
        m.add(_basemap_layer(basemap))
    m.layout = ipw.Layout(height=height, width="100%")
    m.add(ipyleaflet.LayersControl(position="topright"))
    if scene_or_bounds is not None:
        fit_when_shown(m, scene_or_bounds)
    return m


def opacity_sliders(layers, description_width: str = "130px") -> ipw.VBox:
    """One opacity slider per image overlay, linked to the layer (kernel side, so it also works
    when state is changed from Python)."""
    rows = []
    for layer in layers:
        if not hasattr(layer, "opacity") or isinstance(layer, ipyleaflet.TileLayer) and layer.base:
            continue
        slider = ipw.FloatSlider(value=layer.opacity, min=0.0, max=1.0, step=0.05, description=layer.name,
                                 readout_format=".2f", continuous_update=True,
                                 style={"description_width": description_width},
                                 layout=ipw.Layout(width="340px"))
        ipw.link((slider, "value"), (layer, "opacity"))
        slider.layer = layer
        rows.append(slider)
    return ipw.VBox(rows)
