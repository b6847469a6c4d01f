"""Sentinel-2 L2A and Landsat Collection 2 L2 time series from STAC: ``eossl.stac.search`` / ``load``.

    items = eossl.stac.search(bbox, "2023-05-01", "2023-09-30", collection="sentinel-2-l2a",
                              max_cloud=30, catalog=eossl.stac.EARTH_SEARCH)
    cube = eossl.stac.load(items, bands=["B02", "B03", "B04", "B08"], resolution=10)  # lazy

``search`` asks a STAC API (pystac-client) or filters a local static catalog / item collection
(a mirror, or one written by :func:`write_local_catalog`) by place, dates, collection and
scene-level cloud cover (``eo:cloud_cover``). ``load`` reads the items with odc-stac into a lazy,
dask-backed ``(time, band, y, x)`` DataArray shaped like :func:`eossl.open_stack`'s: CRS, eossl
band names with wavelengths, values turned from DN into reflectance, and cloudy pixels (the S2
scene classification, the Landsat QA_PIXEL bits) set to NaN, which the patch samplers skip.

pystac-client and odc-stac are optional (``pip install 'eossl[stac]'``); they are imported only
when a function here is called.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from eossl.data import bands as bandtab
from eossl.errors import DataError

#: Public STAC APIs that serve both collections (online use only; nothing here is contacted
#: unless you pass one of them as ``catalog``). Planetary Computer asset URLs must be signed:
#: ``pip install planetary-computer`` and pass ``modifier=planetary_computer.sign_inplace``.
EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"

SENTINEL2_L2A = "sentinel-2-l2a"
LANDSAT_C2_L2 = "landsat-c2-l2"
COLLECTIONS = (SENTINEL2_L2A, LANDSAT_C2_L2)

#: Sentinel-2 scene classification (SCL) classes set to NaN: cloud shadow, cloud medium and
#: high probability, thin cirrus. (0 "no data" pixels have DN 0 and are NaN anyway.)
S2_SCL_MASKED = (3, 8, 9, 10)
#: Landsat Collection 2 QA_PIXEL bits set to NaN: fill, dilated cloud, cirrus, cloud, cloud shadow.
LANDSAT_QA_MASKED_BITS = (0, 1, 2, 3, 4)

# DN -> reflectance. Sentinel-2 L2A: DN / 10000, and from processing baseline 04.00 (25 Jan
# 2022, also the reprocessed collection) the DN carry +1000: (DN - 1000) / 10000. Landsat C2 L2
# surface reflectance: 0.0000275 * DN - 0.2 (USGS).
S2_SCALE, S2_BASELINE4_OFFSET = 1e-4, -0.1
LANDSAT_SCALE, LANDSAT_OFFSET = 2.75e-5, -0.2
DN_NODATA = 0  # both collections store "no data" as DN 0

_MASK_ASSETS = {SENTINEL2_L2A: ("scl",), LANDSAT_C2_L2: ("qa_pixel", "qa")}
_DEFAULT_RESOLUTION = {SENTINEL2_L2A: 10.0, LANDSAT_C2_L2: 30.0}
_DEFAULT_MAX_CLOUD = 100.0


def _require(module: str, pip_name: str, what: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs {pip_name}: pip install 'eossl[stac]'") from None


# --------------------------------------------------------------------------- search

def search(bbox, start, end, *, collection: str = SENTINEL2_L2A, max_cloud: float = _DEFAULT_MAX_CLOUD,
           catalog=None, limit: int | None = None, modifier=None):
    """STAC items of ``collection`` over ``bbox`` between ``start`` and ``end``, at most
    ``max_cloud`` % cloudy, oldest first, as a ``pystac.ItemCollection``.

    Args:
        bbox: (west, south, east, north) in degrees (EPSG:4326, as STAC requires).
        start, end: dates or datetimes (strings like "2023-05-01" or datetime objects);
            a bare ``end`` date includes that whole day.
        collection: "sentinel-2-l2a" or "landsat-c2-l2" (the ids both public APIs use).
        max_cloud: scene-level cloud cover limit in percent (``eo:cloud_cover``); items that do
            not state their cloud cover are kept only when ``max_cloud`` is 100.
        catalog: a STAC API URL (e.g. :data:`EARTH_SEARCH`, :data:`PLANETARY_COMPUTER`), a local
            static catalog / collection (``catalog.json``, ``collection.json`` or their folder),
            an item collection GeoJSON file, or a ``pystac.ItemCollection`` / list of items.
        limit: return at most this many items (the oldest).
        modifier: passed to ``pystac_client.Client.open`` (e.g. Planetary Computer URL signing).
    """
    if collection not in COLLECTIONS:
        raise DataError(f"collection {collection!r} is not supported; use one of {list(COLLECTIONS)}")
    if catalog is None:
        raise DataError("search needs catalog=: a STAC API URL (eossl.stac.EARTH_SEARCH, "
                        "eossl.stac.PLANETARY_COMPUTER) or a local catalog.json / item collection file")
    bbox = _check_bbox(bbox)
    t0, t1 = _time_range(start, end)
    pystac = _require("pystac", "pystac", "eossl.stac.search")
    what = (f"{collection} items over bbox {tuple(bbox)} from {t0:%Y-%m-%d %H:%M} to {t1:%Y-%m-%d %H:%M} "
            f"with eo:cloud_cover <= {max_cloud:g} %")
    if isinstance(catalog, (str, os.PathLike)) and re.match(r"https?://", str(catalog)):
        client_mod = _require("pystac_client", "pystac-client", "eossl.stac.search")
        client = client_mod.Client.open(str(catalog), modifier=modifier)
        query = {"eo:cloud_cover": {"lte": max_cloud}} if max_cloud < 100 else None
        found = client.search(collections=[collection], bbox=bbox,
                              datetime=[t0.isoformat() + "Z", t1.isoformat() + "Z"],
                              query=query, max_items=limit)
        items, where, seen = list(found.items()), str(catalog), None
    else:
        items, where = _local_items(catalog, pystac)
        seen = len(items)
    kept, cloudy = [], 0
    for item in items:
        if not _item_matches(item, bbox, t0, t1, collection):
            continue
        cc = item.properties.get("eo:cloud_cover")
        if max_cloud < 100 and (cc is None or cc > max_cloud):
            cloudy += 1
            continue
        kept.append(item)
    kept.sort(key=lambda it: (_item_time(it), it.id))
    if limit is not None:
        kept = kept[:limit]
    if not kept:
        detail = f" ({seen} items in the catalog, {cloudy} of those in place and time too cloudy)" \
            if seen is not None else ""
        raise DataError(f"no {what} in {where}{detail}. Widen the dates or the bbox (west, south, "
                        "east, north in degrees), raise max_cloud, or check the collection name")
    return pystac.ItemCollection(kept)


def _check_bbox(bbox) -> list[float]:
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DataError(f"bbox {bbox!r} must be (west, south, east, north) in degrees") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise DataError(f"bbox {bbox!r} is not (west, south, east, north) in degrees (EPSG:4326); "
                        "STAC searches take longitude/latitude, not projected metres")
    return [west, south, east, north]


def _parse_time(value, end: bool) -> dt.datetime:
    if isinstance(value, dt.datetime):
        t = value
    elif isinstance(value, dt.date):
        t = dt.datetime.combine(value, dt.time.max if end else dt.time.min)
    else:
        text = str(value)
        try:
            t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise DataError(f"{value!r} is not a date (use 'YYYY-MM-DD' or a datetime)") from None
        if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):  # a bare end date means the whole day
            t = dt.datetime.combine(t.date(), dt.time.max)
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


def _time_range(start, end) -> tuple[dt.datetime, dt.datetime]:
    t0, t1 = _parse_time(start, end=False), _parse_time(end, end=True)
    if t1 < t0:
        raise DataError(f"end {end!r} is before start {start!r}")
    return t0, t1


def _item_time(item) -> dt.datetime:
    t = item.datetime or _parse_time(item.properties.get("start_datetime"), end=False)
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def _item_matches(item, bbox, t0, t1, collection) -> bool:
    if item.collection_id is not None and item.collection_id != collection:
        return False
    if item.bbox is not None:
        b = item.bbox
        w, s, e, n = (b[0], b[1], b[3], b[4]) if len(b) == 6 else b  # 6 numbers: 3D bbox
        if w > bbox[2] or e < bbox[0] or s > bbox[3] or n < bbox[1]:
            return False
    return t0 <= _item_time(item) <= t1


def _local_items(catalog, pystac) -> tuple[list, str]:
    """Items of a local catalog / collection / item collection (hrefs made absolute)."""
    if isinstance(catalog, pystac.ItemCollection):
        return [it.clone() for it in catalog.items], "the given item collection"
    if isinstance(catalog, (list, tuple)):
        return [it.clone() for it in catalog], "the given items"
    path = Path(catalog)
    if path.is_dir():
        found = [path / n for n in ("catalog.json", "collection.json", "items.json") if (path / n).exists()]
        if not found:
            raise DataError(f"{path}: folder holds no catalog.json, collection.json or items.json")
        path = found[0]
    if not path.exists():
        raise DataError(f"{path}: no such STAC catalog or item collection file")
    try:
        kind = json.loads(path.read_text()).get("type")
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a STAC JSON file ({err})") from None
    try:
        if kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_file(str(path)).items)
        elif kind in ("Catalog", "Collection"):
            items = list(pystac.read_file(str(path)).get_items(recursive=True))
        else:
            raise DataError(f"{path}: a STAC file of type {kind!r}; expected a Catalog, a Collection "
                            "or an item collection (FeatureCollection)")
    except pystac.STACError as err:
        raise DataError(f"{path}: not a readable STAC catalog ({err})") from None
    for item in items:
        item.make_asset_hrefs_absolute()
    return items, str(path)


# --------------------------------------------------------------------------- bands and scaling

def _sensor_of(item, collection: str) -> str:
    if collection == SENTINEL2_L2A:
        return "sentinel2_l2a"
    platform = str(item.properties.get("platform", "")).lower()
    m = re.search(r"(\d)$", platform)
    if not m or f"landsat{m[1]}" not in bandtab.SENSORS:
        raise DataError(f"item {item.id}: platform {platform!r} is not a Landsat 5, 7, 8 or 9")
    return f"landsat{m[1]}"


def _collection_of(items) -> str:
    ids = {it.collection_id for it in items} - {None}
    if len(ids) > 1:
        raise DataError(f"items come from several collections {sorted(ids)}; load one at a time")
    if ids and next(iter(ids)) in COLLECTIONS:
        return next(iter(ids))
    platforms = {str(it.properties.get("platform", "")).lower() for it in items}
    if all(p.startswith("sentinel-2") for p in platforms):
        return SENTINEL2_L2A
    if all(p.startswith("landsat") for p in platforms):
        return LANDSAT_C2_L2
    raise DataError(f"cannot tell which collection items of {sorted(ids) or sorted(platforms)} "
                    f"belong to; eossl.stac.load reads {list(COLLECTIONS)}")


def _band_of_key(key: str, asset, table) -> str | None:
    """The eossl band name an asset holds: by its key (B04, SR_B4, red, nir08) or its eo:bands."""
    names = {b.name: b.name for b in table}
    common = {b.common_name: b.name for b in table if b.common_name}
    if "nir" in common and "nir08" not in common:  # TM/ETM+ 'nir' is what C2 catalogs call nir08
        common["nir08"] = common["nir"]
    up = re.sub(r"^SR_", "", key.upper())
    if up in names:
        return up
    if re.fullmatch(r"B\d", up) and f"B0{up[1]}" in names:  # B4 -> B04 (Sentinel-2)
        return f"B0{up[1]}"
    if key.lower() in common:
        return common[key.lower()]
    for band in asset.extra_fields.get("eo:bands", []) or []:
        if band.get("common_name") in common:
            return common[band["common_name"]]
        if str(band.get("name", "")).upper() in names:
            return str(band["name"]).upper()
    return None


def _asset_table(item, table) -> dict[str, str]:
    """eossl band name -> asset key for the reflectance assets of one item."""
    out = {}
    for key, asset in item.assets.items():
        roles = asset.roles or []
        if "thumbnail" in roles or "overview" in roles or "metadata" in roles:
            continue
        name = _band_of_key(key, asset, table)
        if name and name not in out:
            out[name] = key
    return out


def _resolve_bands(bands, table, available) -> list[str]:
    if bands is None:
        return [b.name for b in table if b.name in available]
    by_common = {b.common_name: b.name for b in table if b.common_name}
    out = []
    for b in [bands] if isinstance(bands, str) else bands:
        name = b if b in {t.name for t in table} else by_common.get(str(b).lower())
        if name is None:
            hits = [n for n, key in available.items() if key == b]
            name = hits[0] if hits else None
        if name is None or name not in available:
            raise DataError(f"band {b!r} is not among the items' reflectance assets "
                            f"{sorted(available, key=lambda n: [t.name for t in table].index(n))} "
                            "(give eossl names like B04, common names like 'red', or asset keys)")
        out.append(name)
    return out


def reflectance_scale(item, collection: str | None = None) -> tuple[float, float]:
    """``(scale, offset)`` with reflectance = DN * scale + offset for one item.

    Sentinel-2 L2A: 1e-4, and an offset of -0.1 (-1000 DN) when the item's
    ``s2:processing_baseline`` is 04.00 or later, unless the catalog says it already removed it
    (``earthsearch:boa_offset_applied``). Landsat C2 L2: 2.75e-5 and -0.2.
    """
    collection = collection or _collection_of([item])
    if collection == LANDSAT_C2_L2:
        return LANDSAT_SCALE, LANDSAT_OFFSET
    props = item.properties
    if props.get("earthsearch:boa_offset_applied") is True:
        return S2_SCALE, 0.0
    baseline = props.get("s2:processing_baseline") or props.get("sentinel:processing_baseline")
    try:
        new = baseline is not None and float(baseline) >= 4.0
    except ValueError:
        raise DataError(f"item {item.id}: s2:processing_baseline {baseline!r} is not a number") from None
    return S2_SCALE, S2_BASELINE4_OFFSET if new else 0.0


# --------------------------------------------------------------------------- load

def _reader_driver(names: dict):
    """An odc-loader rasterio driver whose read errors name the item and asset (not only GDAL's
    message deep inside a dask traceback)."""
    if "_NamedDriver" not in globals():
        _build_driver_classes()
    return globals()["_NamedDriver"](names)


def _build_driver_classes():
    """The driver classes subclass odc-loader's, an optional dependency, so they are made on
    first use; module ``__getattr__`` below makes them importable by name, so a dask graph
    holding the driver pickles to cluster workers."""
    from odc.loader import RioDriver, RioReader

    class _NamedReader(RioReader):
        def __init__(self, src, ctx, names):
            super().__init__(src, ctx)
            self._names = names

        def read(self, cfg, dst_geobox, *, dst=None, selection=None):
            try:
                return super().read(cfg, dst_geobox, dst=dst, selection=selection)
            except Exception as err:  # rasterio errors of several kinds; all mean "cannot read"
                item_id, key = self._names.get(self._src.uri, ("?", "?"))
                raise DataError(f"asset {key!r} of item {item_id} ({self._src.uri}) could not be read "
                                f"({str(err).rstrip('.')}). The file is damaged or incomplete: fetch or "
                                "write it again, or leave that item out") from err

    class _NamedDriver(RioDriver):
        def __init__(self, names: dict):
            super().__init__()
            self.names = names

        def open(self, src, ctx):
            return _NamedReader(src, ctx, self.names)

    for cls in (_NamedReader, _NamedDriver):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
        globals()[cls.__name__] = cls


def __getattr__(name):
    if name in ("_NamedReader", "_NamedDriver"):
        _build_driver_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(items, bands=None, *, resolution: float | None = None, bbox=None, crs=None,
         mask_clouds: bool = True, chunks: dict | None = None, groupby: str = "solar_day",
         resampling: str = "bilinear", scale_offset=None):
    """Read STAC items into a lazy ``xr.DataArray (time, band, y, x)`` of reflectance.

    Args:
        items: what :func:`search` returned (or any iterable of ``pystac.Item``).
        bands: eossl band names ("B04"), common names ("red") or asset keys; default: every
            reflectance band the items have, in the sensor's order.
        resolution: pixel size in the output CRS units (default: the items' own grid, that of
            their finest band; with another ``crs``, 10 m for Sentinel-2 and 30 m for Landsat).
        bbox: (west, south, east, north) in degrees to crop to; default: everything the items cover.
        crs: output CRS (default: the items' own, e.g. their UTM zone).
        mask_clouds: set pixels flagged by the scene classification (Sentinel-2 SCL classes
            :data:`S2_SCL_MASKED`) or QA_PIXEL bits (Landsat, :data:`LANDSAT_QA_MASKED_BITS`) to NaN.
        chunks: dask chunks for x/y, e.g. ``{"x": 2048, "y": 2048}`` (default 1024 px); nothing is
            read until the values are used.
        groupby: items of one pass are mosaicked into one date ("solar_day"), or kept apart ("id").
        resampling: for reflectance bands brought onto the output grid (masks use nearest).
        scale_offset: override :func:`reflectance_scale`: a ``(scale, offset)`` pair or a function
            ``item -> (scale, offset)``, for catalogs whose metadata is wrong.

    Returns a float32 DataArray named ``reflectance`` with a CRS, ``band`` coordinates (names,
    common names, wavelengths, resolutions), a datetime ``time`` coordinate and a per-date
    ``cloud_cover`` coordinate (percent, from the items). Pixels with DN 0 (no data) and masked
    clouds are NaN.
    """
    odc_stac = _require("odc.stac", "odc-stac", "eossl.stac.load")
    import xarray as xr

    items = list(getattr(items, "items", items))
    if not items:
        raise DataError("no STAC items to load (search found nothing?)")
    collection = _collection_of(items)
    sensors = {_sensor_of(it, collection) for it in items}
    tables = {tuple(b.name for b in bandtab.sensor_bands(s)) for s in sensors}
    if len(tables) > 1:
        raise DataError(f"the items mix sensors {sorted(sensors)} whose bands differ (e.g. Landsat 7 "
                        "B1 is blue, Landsat 8 B1 is coastal); search and load them separately")
    sensor = sorted(sensors)[-1]
    table = bandtab.sensor_bands(sensor)
    available = _asset_table(items[0], table)
    names = _resolve_bands(bands, table, available)
    keys = [available[n] for n in names]
    mask_key = None
    if mask_clouds:
        lower = {k.lower(): k for k in items[0].assets}
        mask_key = next((lower[k] for k in _MASK_ASSETS[collection] if k in lower), None)
        if mask_key is None:
            raise DataError(f"item {items[0].id} has no cloud mask asset ({'/'.join(_MASK_ASSETS[collection])}); "
                            "pass mask_clouds=False to load without per-pixel masks")
    uri_names = {}
    for item in items:
        for k in keys + ([mask_key] if mask_key else []):
            if k not in item.assets:
                raise DataError(f"item {item.id} has no asset {k!r} (it has {sorted(item.assets)})")
            uri_names[item.assets[k].get_absolute_href() or item.assets[k].href] = (item.id, k)

    def scaling(item):
        if scale_offset is None:
            return reflectance_scale(item, collection)
        return tuple(scale_offset(item)) if callable(scale_offset) else tuple(scale_offset)

    # Items are grouped into dates by solar day AND scaling, so a mosaic never mixes DN
    # conventions (e.g. a reprocessed tile beside an old one on the same day).
    group_keys: dict[int, tuple] = {}

    def group(item, parsed, idx):
        day = parsed.solar_date.date() if groupby == "solar_day" else idx
        key = (day, *scaling(item))
        group_keys[idx] = key
        return key

    odc_kw = {}
    if bbox is not None:
        odc_kw["bbox"] = _check_bbox(bbox)
    if crs is not None:
        odc_kw["crs"] = crs
    if resolution is not None:
        odc_kw["resolution"] = resolution
    elif crs is not None:  # a new CRS needs a pixel size; the collection's native one
        odc_kw["resolution"] = _DEFAULT_RESOLUTION[collection]
    ds = odc_stac.load(items, bands=keys + ([mask_key] if mask_key else []), groupby=group,
                       chunks=chunks or {"x": 1024, "y": 1024},
                       resampling={**{k: resampling for k in keys}, **({mask_key: "nearest"} if mask_key else {})},
                       driver=_reader_driver(uri_names), **odc_kw)
    ds = ds.rename({k: v for k, v in (("latitude", "y"), ("longitude", "x")) if k in ds.dims})  # lon/lat CRS
    ordered = sorted(set(group_keys.values()))  # odc-stac orders the dates by group key
    if len(ordered) != ds.sizes["time"]:
        raise DataError("internal: date groups and loaded dates disagree")  # pragma: no cover
    scale = xr.DataArray(np.array([k[1] for k in ordered], "float32"), dims="time")
    offset = xr.DataArray(np.array([k[2] for k in ordered], "float32"), dims="time")
    dn = xr.concat([ds[k] for k in keys], dim="band")  # (band, time, y, x)
    dn = dn.transpose("time", "band", "y", "x")
    refl = (dn.astype("float32") * scale + offset).where(dn != DN_NODATA)
    if mask_key:
        refl = refl.where(~_cloudy(ds[mask_key], collection))
    cover = []
    for key in ordered:
        members = [items[i].properties.get("eo:cloud_cover") for i, k in group_keys.items() if k == key]
        known = [float(c) for c in members if c is not None]
        cover.append(np.mean(known) if known else np.nan)
    refl = refl.assign_coords(bandtab.band_coords(bandtab.lookup(sensor, names)))
    refl = refl.assign_coords(cloud_cover=("time", np.array(cover, "float64"), {"units": "%"}))
    refl = refl.drop_vars([c for c in refl.coords if c not in
                           ("time", "band", "y", "x", "spatial_ref", "common_name", "wavelength",
                            "resolution", "cloud_cover")])
    refl = refl.rio.write_crs(ds.odc.crs.to_wkt() if ds.odc.crs.epsg is None else f"EPSG:{ds.odc.crs.epsg}")
    refl = refl.rio.write_nodata(np.nan, encoded=False)
    refl.attrs = {"sensor": sensor, "source": f"STAC {collection}, {len(items)} items",
                  "nodata": None, "units": "reflectance", "collection": collection,
                  "items": [it.id for it in items]}
    return refl.rename("reflectance")


def _cloudy(mask, collection):
    """True where the per-pixel mask flags cloud, cloud shadow or cirrus."""
    if collection == SENTINEL2_L2A:
        return mask.isin(list(S2_SCL_MASKED))
    bits = sum(1 << b for b in LANDSAT_QA_MASKED_BITS)
    return (mask.astype("uint32") & bits) != 0


# --------------------------------------------------------------------------- local catalogs

def write_local_catalog(data, folder, *, collection: str = SENTINEL2_L2A, times=None, cloud=None,
                        dn: bool = False, platform: str | None = None, asset_keys: str = "band",
                        processing_baseline: str = "04.00", cloud_threshold: float = 0.2):
    """Write a ``(time, band, y, x)`` stack as a self-contained static STAC collection of
    per-band Cloud-Optimised GeoTIFFs, in the layout of a real ``collection`` (DN encoding,
    asset keys, cloud mask asset, ``eo:cloud_cover``, projection metadata). Returns the path of
    ``collection.json``, which :func:`search` accepts as ``catalog``.

    For offline tests and tutorials (the bundled sample becomes a searchable catalog), and for a
    local mirror of your own imagery.

    Args:
        data: ``(time, band, y, x)`` DataArray with a CRS and eossl band names. Values are
            reflectance (float); integer Sentinel-2 data is read as DN / 10000 (the L1C
            convention of the bundled sample). With ``dn=True`` values are written unchanged as
            the collection's DN.
        folder: where the catalog goes. Written to a temporary folder and moved into place at the
            end: an interrupted write leaves an earlier catalog there whole.
        times: one date per time step (default: the ``time`` coordinate when it holds dates).
        cloud: per-pixel cloud mask ``(time, y, x)``: booleans become SCL class 9 / QA_PIXEL bit 3;
            integers are written as the mask itself (SCL classes / QA_PIXEL words). Default: a simple
            brightness test, blue reflectance > ``cloud_threshold`` (not Sen2Cor or CFMask).
        platform: e.g. "sentinel-2a", "landsat-8" (default per collection).
        asset_keys: "band" (B04, SCL / SR_B4-style ``B4``, QA_PIXEL; as Planetary Computer names
            Sentinel-2 assets) or "common" (red, nir08, scl / qa_pixel; as Earth Search does).
        processing_baseline: Sentinel-2 ``s2:processing_baseline``; from "04.00" the DN carry the
            +1000 offset that :func:`load` removes.
    """
    pystac = _require("pystac", "pystac", "eossl.stac.write_local_catalog")
    from pystac.extensions.eo import Band as EOBand
    from pystac.extensions.eo import EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterBand, RasterExtension
    from rasterio.warp import transform_bounds

    if collection not in COLLECTIONS:
        raise DataError(f"collection {collection!r} is not supported; use one of {list(COLLECTIONS)}")
    if set(data.dims) != {"time", "band", "y", "x"}:
        raise DataError(f"write_local_catalog needs (time, band, y, x), got {data.dims}")
    if data.rio.crs is None:
        raise DataError("the stack has no CRS; STAC items need one (da.rio.write_crs(...))")
    data = data.transpose("time", "band", "y", "x")
    times = _catalog_times(data, times)
    sensor = "sentinel2_l2a" if collection == SENTINEL2_L2A else None
    if collection == LANDSAT_C2_L2:
        sensor = data.attrs.get("sensor") if str(data.attrs.get("sensor", "")).startswith("landsat") else None
        platform = platform or (f"landsat-{sensor[-1]}" if sensor else "landsat-8")
        sensor = sensor or f"landsat{platform[-1]}"
    platform = platform or "sentinel-2a"
    table = {b.name: b for b in bandtab.sensor_bands(sensor)}
    names = data["band"].values.tolist()
    unknown = [n for n in names if n not in table]
    if unknown:
        raise DataError(f"bands {unknown} are not {sensor} bands ({list(table)}); drop them first: "
                        f"data.drop_sel(band={unknown})")

    values = np.asarray(data.values)
    if dn:
        encoded = values
        refl = values.astype("float64") * (S2_SCALE if sensor.startswith("sentinel") else LANDSAT_SCALE) \
            + (0.0 if sensor.startswith("sentinel") else LANDSAT_OFFSET)
        if sensor.startswith("sentinel") and float(processing_baseline) >= 4:
            refl = refl + S2_BASELINE4_OFFSET
    else:
        if np.issubdtype(values.dtype, np.integer):
            if not str(data.attrs.get("sensor", "")).startswith("sentinel2"):
                raise DataError("integer values that are not Sentinel-2 DN: give reflectance (float), "
                                "or dn=True when the values already are this collection's DN")
            refl = values.astype("float64") / 10000.0
        else:
            refl = values.astype("float64")
        if collection == SENTINEL2_L2A:
            off = S2_BASELINE4_OFFSET if float(processing_baseline) >= 4 else 0.0
            encoded = np.round((refl - off) / S2_SCALE)
        else:
            encoded = np.round((refl - LANDSAT_OFFSET) / LANDSAT_SCALE)
        invalid = ~np.isfinite(encoded)
        encoded = np.clip(np.nan_to_num(encoded, nan=DN_NODATA), 1, 65535).astype("uint16")
        encoded[invalid] = DN_NODATA
    nodata = np.any(encoded == DN_NODATA, axis=1)  # (T, H, W)
    mask = _cloud_mask_layer(cloud, refl, names, table, collection, nodata, cloud_threshold)
    if mask.shape != nodata.shape:
        raise DataError(f"cloud mask has shape {mask.shape}, the stack needs (time, y, x) = {nodata.shape}")

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        transform = data.rio.transform()
        crs = data.rio.crs
        bounds = transform_bounds(crs, "EPSG:4326", *data.rio.bounds())
        geometry = {"type": "Polygon", "coordinates": [[[bounds[0], bounds[1]], [bounds[2], bounds[1]],
                                                        [bounds[2], bounds[3]], [bounds[0], bounds[3]],
                                                        [bounds[0], bounds[1]]]]}
        items = []
        for t, when in enumerate(times):
            item_id = _item_id(collection, platform, when, t)
            cover = 100.0 * float(_cloudy_np(mask[t], collection)[~nodata[t]].mean()) if (~nodata[t]).any() else 100.0
            props = {"platform": platform, "eo:cloud_cover": round(cover, 2)}
            if collection == SENTINEL2_L2A:
                props["s2:processing_baseline"] = processing_baseline
            item = pystac.Item(item_id, geometry, list(bounds), when, props, collection=collection)
            proj = ProjectionExtension.ext(item, add_if_missing=True)
            proj.epsg = crs.to_epsg()
            proj.shape = list(nodata.shape[1:])
            proj.transform = list(transform)[:6]
            EOExtension.ext(item, add_if_missing=True).cloud_cover = props["eo:cloud_cover"]
            RasterExtension.add_to(item)
            layers = [(n, encoded[t, i]) for i, n in enumerate(names)] + [(None, mask[t])]
            for name, layer in layers:
                key = _asset_key(name, table, collection, asset_keys)
                href = tmp / item_id / f"{key}.tif"
                _write_cog(href, layer, transform, crs, nodata=DN_NODATA if name else None)
                asset = pystac.Asset(f"./{key}.tif", media_type=pystac.MediaType.COG,
                                     roles=["data"] if name else ["data", "cloud-mask"])
                item.add_asset(key, asset)
                if name:
                    b = table[name]
                    EOExtension.ext(asset).bands = [EOBand.create(name=name, common_name=b.common_name,
                                                                  center_wavelength=b.wavelength_nm / 1000)]
                RasterExtension.ext(asset).bands = [RasterBand.create(
                    nodata=DN_NODATA if name else None, data_type=str(layer.dtype),
                    spatial_resolution=abs(transform.a))]
            items.append(item)
        t_all = sorted(times)
        coll = pystac.Collection(collection, f"local {collection} items written by eossl.stac.write_local_catalog",
                                 pystac.Extent(pystac.SpatialExtent([list(bounds)]),
                                               pystac.TemporalExtent([[t_all[0], t_all[-1]]])))
        coll.add_items(items)
        coll.normalize_hrefs(str(tmp))  # assets sit beside their item: "./B04.tif"
        coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, dest_href=str(tmp))
        _swap_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / "collection.json"


def _catalog_times(data, times) -> list[dt.datetime]:
    import pandas as pd
    if times is None:
        if not np.issubdtype(data["time"].dtype, np.datetime64):
            raise DataError("the stack's time coordinate holds no dates; pass times=[...] (one per date)")
        times = data["time"].values
    if len(times) != data.sizes["time"]:
        raise DataError(f"{len(times)} times given for {data.sizes['time']} dates")
    return [pd.Timestamp(t).to_pydatetime().replace(tzinfo=dt.timezone.utc) for t in times]


def _item_id(collection, platform, when, t) -> str:
    stem = "S2" if collection == SENTINEL2_L2A else "LC" if platform[-1] in "89" else "LE"
    return f"{stem}_{platform.replace('-', '')}_{when:%Y%m%dT%H%M%S}_{t}"


def _asset_key(name, table, collection, style) -> str:
    if name is None:
        return ("SCL" if collection == SENTINEL2_L2A else "QA_PIXEL") if style == "band" else \
            ("scl" if collection == SENTINEL2_L2A else "qa_pixel")
    if style == "common":
        common = table[name].common_name
        return "nir08" if common == "nir" and collection == LANDSAT_C2_L2 else common
    return name


def _cloudy_np(layer, collection) -> np.ndarray:
    if collection == SENTINEL2_L2A:
        return np.isin(layer, S2_SCL_MASKED)
    return (layer.astype("uint32") & sum(1 << b for b in LANDSAT_QA_MASKED_BITS[1:])) != 0


def _cloud_mask_layer(cloud, refl, names, table, collection, nodata, threshold) -> np.ndarray:
    if cloud is None:
        blue = next((i for i, n in enumerate(names) if table[n].common_name == "blue"), None)
        if blue is None:
            raise DataError("no blue band to find clouds with; pass cloud=(time, y, x) mask")
        with np.errstate(invalid="ignore"):
            cloud = refl[:, blue] > threshold
    cloud = np.asarray(getattr(cloud, "values", cloud))
    if cloud.dtype != bool:
        return cloud.astype("uint16" if collection == LANDSAT_C2_L2 else "uint8")
    if collection == SENTINEL2_L2A:
        layer = np.where(cloud, 9, 4).astype("uint8")  # 9 cloud high probability, 4 vegetation
        layer[nodata] = 0
    else:
        layer = np.where(cloud, (1 << 3) | (1 << 1), 1 << 6).astype("uint16")  # cloud+dilated / clear
        layer[nodata] = 1  # fill
    return layer


def _write_cog(path: Path, layer: np.ndarray, transform, crs, nodata) -> None:
    import rasterio
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="COG", height=layer.shape[0], width=layer.shape[1], count=1, dtype=layer.dtype,
                   transform=transform, crs=crs, nodata=nodata, compress="deflate", blocksize=256)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(layer, 1)


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Replace ``folder`` by ``tmp`` so that some complete catalog is always there."""
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(folder)


__all__ = ["search", "load", "write_local_catalog", "reflectance_scale", "EARTH_SEARCH",
           "PLANETARY_COMPUTER", "SENTINEL2_L2A", "LANDSAT_C2_L2", "S2_SCL_MASKED",
           "LANDSAT_QA_MASKED_BITS"]
