"""eossl.stac, offline: the tests write real imagery (the bundled Slovenia Sentinel-2 stack, the
Landsat 8 scene and eo-learn cloud masks of ../shared/data when present) as per-band COGs with STAC
items in the layout of the public collections, then search and load them back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio

import eossl
from eossl.data import stac
from _tiny import TINY_ENCODER

pytest.importorskip("odc.stac")
pytest.importorskip("pystac")

# The five bundled Slovenia scenes are eo-learn's REFERENCE_SCENES, undated in the sample. Their
# NDVI equals eo-learn's 68-date NDVI series exactly at these timestamps (matched once against
# ../shared/data/eolearn_patch), so these are the real acquisition dates, in file order.
SLOVENIA_DATES = ["2015-08-20T10:07:28", "2015-07-31T10:00:09", "2015-09-09T10:00:17",
                  "2015-08-30T10:05:47", "2015-07-11T10:00:08"]
SLOVENIA_BBOX = (14.5, 45.8, 14.6, 45.9)  # lon/lat around the patch (it sits at 14.55-14.56 E)


@pytest.fixture(scope="module")
def s2_stack(slovenia):
    return slovenia.image.drop_sel(band="B10")  # L2A has no cirrus band


@pytest.fixture(scope="module")
def s2_catalog(s2_stack, tmp_path_factory):
    """The bundled stack as a sentinel-2-l2a collection, clouds from the brightness test."""
    return stac.write_local_catalog(s2_stack, tmp_path_factory.mktemp("s2") / "catalog",
                                    times=SLOVENIA_DATES)


def _reference(stack):
    """The bundled DN as reflectance, in date order: what load must give back."""
    order = np.argsort(np.array(SLOVENIA_DATES, dtype="datetime64[s]"))
    return stack.values[order].astype("float64") / 10000.0, order


def test_search_filters_by_cloud_cover_dates_and_place(s2_catalog):
    everything = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=s2_catalog)
    assert len(everything) == 5
    times = [it.datetime for it in everything]
    assert times == sorted(times)  # oldest first
    cover = {it.datetime.strftime("%m-%d"): it.properties["eo:cloud_cover"] for it in everything}
    assert cover["08-20"] > 90  # the thick-cloud date of the sample
    clear = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", max_cloud=20, catalog=s2_catalog)
    assert [it.datetime.strftime("%m-%d") for it in clear] == ["07-11", "07-31", "08-30", "09-09"]
    august = stac.search(SLOVENIA_BBOX, "2015-08-01", "2015-08-30", catalog=s2_catalog)
    assert [it.datetime.strftime("%m-%d") for it in august] == ["08-20", "08-30"]  # end day included
    assert len(stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=s2_catalog, limit=2)) == 2
    # the folder works as well as the collection.json
    assert len(stac.search(SLOVENIA_BBOX, "2015-07-01", "2015-07-31", catalog=s2_catalog.parent)) == 2


def test_empty_search_says_what_was_searched(s2_catalog):
    with pytest.raises(eossl.DataError, match=r"no sentinel-2-l2a items over bbox \(2.0, 48.0, 3.0, 49.0\)"
                                              r".*2015-07-01.*5 items in the catalog"):
        stac.search((2, 48, 3, 49), "2015-07-01", "2015-07-31", catalog=s2_catalog)
    with pytest.raises(eossl.DataError, match="0 items in the catalog|no landsat-c2-l2 items"):
        stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", collection="landsat-c2-l2", catalog=s2_catalog)
    with pytest.raises(eossl.DataError, match="raise max_cloud"):
        stac.search(SLOVENIA_BBOX, "2015-08-19", "2015-08-21", max_cloud=10, catalog=s2_catalog)


def test_bad_search_input_is_a_clear_error(s2_catalog, tmp_path):
    with pytest.raises(eossl.DataError, match="degrees"):
        stac.search((465000, 5079000, 466000, 5080000), "2015-01-01", "2015-12-31", catalog=s2_catalog)
    with pytest.raises(eossl.DataError, match="before start"):
        stac.search(SLOVENIA_BBOX, "2015-12-31", "2015-01-01", catalog=s2_catalog)
    with pytest.raises(eossl.DataError, match="catalog="):
        stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31")
    with pytest.raises(eossl.DataError, match="no such STAC"):
        stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=tmp_path / "nothing.json")
    with pytest.raises(eossl.DataError, match="not supported"):
        stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", collection="sentinel-1-grd", catalog=s2_catalog)


def test_load_gives_lazy_reflectance_ready_for_eossl(s2_catalog, s2_stack):
    items = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=s2_catalog)
    cube = stac.load(items)
    assert cube.dims == ("time", "band", "y", "x")
    assert hasattr(cube.data, "dask")  # nothing read yet
    assert cube["band"].values.tolist() == s2_stack["band"].values.tolist()
    assert cube["common_name"].sel(band="B8A").item() == "nir08"
    assert cube["wavelength"].sel(band="B04").item() == 665
    assert cube.rio.crs == s2_stack.rio.crs and cube.rio.transform() == s2_stack.rio.transform()
    assert [str(t)[:19] for t in cube["time"].values] == sorted(SLOVENIA_DATES)
    assert cube.attrs["units"] == "reflectance" and cube.attrs["sensor"] == "sentinel2_l2a"
    values = cube.values
    ref, order = _reference(s2_stack)
    valid = np.isfinite(values)
    # DN were written with the +1000 offset of baseline 04.00; load takes it off again
    np.testing.assert_allclose(values[valid], ref[valid], atol=1e-6)
    # the brightness cloud test marked pixels where blue reflectance > 0.2; those are NaN in every band
    cloudy = ref[:, 1] > 0.2  # (T, H, W)
    assert np.array_equal(~valid, np.repeat(cloudy[:, None], values.shape[1], axis=1))
    assert cloudy[2].mean() > 0.9 and cloudy[0].sum() == 0
    np.testing.assert_allclose(cube["cloud_cover"].values, 100 * cloudy.mean(axis=(1, 2)), atol=0.01)


def test_loaded_cube_trains_and_embeds(s2_catalog, tmp_path):
    items = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", max_cloud=20, catalog=s2_catalog)
    cube = stac.load(items, bands=["B02", "B03", "B04", "B08"])
    patches = eossl.random_patches(cube, 32, n=8)
    assert patches.sizes["band"] == 4 and np.isfinite(patches.values).all()
    run = eossl.pretrain(cube, method="mae", steps=2, batch_size=4, img_size=32, encoder=dict(TINY_ENCODER),
                         out=tmp_path / "run", decoder_dim=32, decoder_depth=1)
    assert [b["name"] for b in run.model.card["bands"]] == ["B02", "B03", "B04", "B08"]
    emb = eossl.embed(run.model, cube.isel(time=0))
    assert emb.rio.crs == cube.rio.crs and np.isfinite(emb.values).all()


def test_scene_classification_classes(s2_stack, tmp_path):
    """Only cloud shadow (3), cloud medium/high (8, 9) and cirrus (10) are masked; vegetation,
    bare soil, water and snow are kept; mask_clouds=False keeps everything."""
    classes = np.array([3, 4, 5, 6, 8, 9, 10, 11], dtype="uint8")
    stack = s2_stack.isel(time=[3, 4])
    scl = np.broadcast_to(classes[np.arange(stack.sizes["x"]) % 8], (2, stack.sizes["y"], stack.sizes["x"]))
    path = stac.write_local_catalog(stack, tmp_path / "scl", times=[SLOVENIA_DATES[i] for i in (3, 4)],
                                    cloud=scl.copy())
    items = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=path)
    assert items[0].properties["eo:cloud_cover"] == pytest.approx(100 * 4 / 8, abs=1.0)
    masked = np.isnan(stac.load(items, bands=["red"]).values[:, 0])  # (T, H, W)
    assert np.array_equal(masked, np.isin(scl, stac.S2_SCL_MASKED))
    assert np.isfinite(stac.load(items, bands=["red"], mask_clouds=False).values).all()


def test_processing_baseline_and_asset_key_styles(s2_stack, tmp_path):
    """Old baseline (no +1000 in the DN) with Earth-Search-style keys (red, nir, scl) gives the
    same reflectance as the 04.00 files with Planetary-Computer-style keys (B04, SCL)."""
    stack = s2_stack.isel(time=[4])
    old = stac.write_local_catalog(stack, tmp_path / "old", times=[SLOVENIA_DATES[4]],
                                   processing_baseline="03.01", asset_keys="common")
    new = stac.write_local_catalog(stack, tmp_path / "new", times=[SLOVENIA_DATES[4]])
    item_old = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=old)[0]
    item_new = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=new)[0]
    assert "red" in item_old.assets and "scl" in item_old.assets and "B04" in item_new.assets
    with rasterio.open(item_old.assets["red"].href) as a, rasterio.open(item_new.assets["B04"].href) as b:
        assert (b.read(1).astype(int) - a.read(1).astype(int) == 1000).all()
    assert stac.reflectance_scale(item_old) == (1e-4, 0.0)
    assert stac.reflectance_scale(item_new) == (1e-4, -0.1)
    a = stac.load([item_old], bands=["red", "nir"])
    b = stac.load([item_new], bands=["B04", "B08"])
    assert a["band"].values.tolist() == ["B04", "B08"]
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    np.testing.assert_allclose(b.values[0], stack.sel(band=["B04", "B08"]).values[0] / 1e4, atol=1e-6)
    # a catalog that already removed the offset from its DN says so; then none is taken off
    item_new.properties["earthsearch:boa_offset_applied"] = True
    assert stac.reflectance_scale(item_new) == (1e-4, 0.0)
    # and a caller can override wrong metadata
    c = stac.load([item_new], bands=["B04"], scale_offset=(1e-4, -0.1))
    np.testing.assert_allclose(c.values, b.sel(band=["B04"]).values, atol=1e-6)
    with pytest.raises(eossl.DataError, match="band 'B10' is not among"):
        stac.load([item_new], bands=["B10"])


def test_item_collection_file_and_objects_are_catalogs_too(s2_catalog, tmp_path):
    items = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=s2_catalog)
    path = tmp_path / "items.json"
    items.save_object(dest_href=str(path))
    assert json.loads(path.read_text())["type"] == "FeatureCollection"
    again = stac.search(SLOVENIA_BBOX, "2015-07-20", "2015-12-31", max_cloud=20, catalog=path)
    assert [it.id for it in again] == [it.id for it in items if it.properties["eo:cloud_cover"] <= 20][1:]
    assert len(stac.search(SLOVENIA_BBOX, "2015-07-20", "2015-12-31", catalog=items)) == 4


def test_damaged_asset_names_item_and_asset(s2_catalog, tmp_path):
    copy = tmp_path / "catalog"
    shutil.copytree(s2_catalog.parent, copy)
    items = stac.search(SLOVENIA_BBOX, "2015-09-01", "2015-09-30", catalog=copy)
    href = items[0].assets["B04"].href
    data = open(href, "rb").read()
    with open(href, "wb") as f:
        f.write(data[: len(data) // 2])  # a download cut off half way
    cube = stac.load(items, bands=["B03", "B04"])  # lazy: nothing read yet
    with pytest.raises(eossl.DataError, match=rf"asset 'B04' of item {items[0].id} .*damaged or incomplete"):
        cube.values
    with open(href, "wb") as f:
        f.write(b"<html>403 Forbidden</html>")  # what an unsigned URL hands back
    with pytest.raises(eossl.DataError, match="asset 'B04'.*not recognized"):
        stac.load(items, bands=["B04"]).values
    two = stac.search(SLOVENIA_BBOX, "2015-08-25", "2015-09-30", catalog=copy)
    del two[1].assets["B03"]
    with pytest.raises(eossl.DataError, match=f"item {two[1].id} has no asset 'B03'"):
        stac.load(two, bands=["B03"])


def test_interrupted_write_keeps_the_previous_catalog(s2_stack, tmp_path, monkeypatch):
    path = stac.write_local_catalog(s2_stack.isel(time=[4]), tmp_path / "cat", times=[SLOVENIA_DATES[4]])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    ids = [it.id for it in stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=path)]
    calls = []
    real = stac._write_cog

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) > 20:  # the second item, half way through its bands
            raise OSError("disk full")
        return real(*args, **kw)

    monkeypatch.setattr(stac, "_write_cog", failing)
    with pytest.raises(OSError, match="disk full"):
        stac.write_local_catalog(s2_stack, tmp_path / "cat", times=SLOVENIA_DATES)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no leftovers
    assert [it.id for it in stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=path)] == ids
    assert np.isfinite(stac.load(stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=path)).values).all()


def test_write_needs_dates_and_known_bands(slovenia, s2_stack, tmp_path):
    with pytest.raises(eossl.DataError, match="times="):
        stac.write_local_catalog(s2_stack, tmp_path / "a")  # the sample's time axis is 0..4
    with pytest.raises(eossl.DataError, match=r"B10.*drop_sel"):
        stac.write_local_catalog(slovenia.image, tmp_path / "b", times=SLOVENIA_DATES)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_real_cloud_masks_from_eolearn(shared_data, s2_stack, tmp_path):
    """eo-learn's own cloud masks (CLM) for the same dates: the two dates it calls cloudy get
    100 % cloud cover and drop out of a max_cloud search."""
    folder = shared_data / "eolearn_patch"
    clm = np.load(folder / "CLM.npy")[..., 0].astype(bool)  # (68, H, W)
    stamps = json.loads((folder / "timestamps.json").read_text())
    idx = [stamps.index(t) for t in SLOVENIA_DATES]
    path = stac.write_local_catalog(s2_stack, tmp_path / "clm", times=SLOVENIA_DATES, cloud=clm[idx])
    items = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=path)
    cover = {it.datetime.strftime("%m-%d"): it.properties["eo:cloud_cover"] for it in items}
    assert cover == {"07-11": 0.0, "07-31": 100.0, "08-20": 100.0, "08-30": 0.0, "09-09": 0.0}
    clear = stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", max_cloud=50, catalog=path)
    assert np.isfinite(stac.load(clear).values).all() and len(clear) == 3


def test_landsat_collection2_scaling_and_qa_bits(shared_data, tmp_path):
    """The Landsat 8 scene's DN written as a landsat-c2-l2 item (the file is Collection 1 L1 DN;
    here it only stands in for DN, to check the C2 L2 arithmetic 2.75e-5 * DN - 0.2) with a
    QA_PIXEL layer: cloud, dilated cloud and shadow bits are masked, snow is kept."""
    scene = eossl.open_scene(shared_data / "landsat8_parana" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF",
                             bands=["B2", "B3", "B4"])
    crop = scene.isel(y=slice(800, 928), x=slice(800, 928)).expand_dims(time=[np.datetime64("2020-05-18T13:20")])
    qa = np.full((1, 128, 128), 1 << 6, np.uint16)  # clear
    qa[0, :20, :20] = (1 << 3) | (1 << 1)  # cloud + dilated cloud
    qa[0, 100:, 100:] = (1 << 4) | (1 << 6)  # cloud shadow
    qa[0, 50:60, 50:60] = (1 << 5) | (1 << 6)  # snow: kept
    path = stac.write_local_catalog(crop, tmp_path / "landsat", collection="landsat-c2-l2", cloud=qa, dn=True,
                                    asset_keys="common")
    items = stac.search((-60, -30, -50, -20), "2020-05-01", "2020-05-31", collection="landsat-c2-l2", catalog=path)
    assert items[0].properties["platform"] == "landsat-8" and "qa_pixel" in items[0].assets
    cube = stac.load(items)
    assert cube["band"].values.tolist() == ["B2", "B3", "B4"]  # OLI: B2 is blue
    assert cube["common_name"].values.tolist() == ["blue", "green", "red"]
    assert cube.rio.crs.to_epsg() == 32621
    values = cube.values
    masked = np.zeros((128, 128), bool)
    masked[:20, :20] = masked[100:, 100:] = True
    assert np.array_equal(np.isnan(values[0]), np.broadcast_to(masked, (3, 128, 128)))
    np.testing.assert_allclose(values[0][:, ~masked], crop.values[0][:, ~masked] * 2.75e-5 - 0.2, atol=1e-6)
    assert items[0].properties["eo:cloud_cover"] == pytest.approx(100 * masked.mean(), abs=0.01)
    # Landsat 7 calls blue B1, Landsat 8 calls it B2: one cube cannot hold both under one name
    l7 = items[0].clone()
    l7.id, l7.properties["platform"] = "LE07_stand_in", "landsat-7"
    with pytest.raises(eossl.DataError, match="mix sensors.*landsat7.*landsat8"):
        stac.load([items[0], l7])


def test_stac_is_imported_lazily_and_names_its_extra(monkeypatch, s2_catalog):
    code = ("import sys, eossl; eossl.stac.search; "
            "print([m for m in ('pystac_client', 'odc.stac', 'pystac') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    monkeypatch.setitem(sys.modules, "pystac_client", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'eossl\[stac\]'"):
        stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=stac.EARTH_SEARCH)
    monkeypatch.setitem(sys.modules, "odc.stac", None)
    with pytest.raises(ImportError, match=r"odc-stac: pip install 'eossl\[stac\]'"):
        stac.load(stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=s2_catalog))


def test_reader_pickles_for_cluster_workers():
    """The dask graph of a loaded cube holds eossl's reader driver; cluster workers in other
    processes must be able to unpickle it (by name, before anything built its class)."""
    import pickle
    driver = stac._reader_driver({"/data/B04.tif": ("item-1", "B04")})
    code = "import pickle, sys; d = pickle.loads(sys.stdin.buffer.read()); print(type(d).__name__, d.names)"
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(driver), capture_output=True, check=True)
    assert out.stdout.decode().strip() == "_NamedDriver {'/data/B04.tif': ('item-1', 'B04')}"


def test_items_in_a_lon_lat_crs_load_with_x_y_dims(s2_stack, tmp_path):
    """odc-stac names the axes latitude/longitude in a geographic CRS; eossl keeps y/x (as the
    patch samplers and rioxarray expect). Some archives (e.g. OSCD) are stored in EPSG:4326."""
    geo = s2_stack.isel(time=4).rio.reproject("EPSG:4326").expand_dims(time=[np.datetime64(SLOVENIA_DATES[4])])
    geo.attrs["sensor"] = "sentinel2_l1c"
    path = stac.write_local_catalog(geo, tmp_path / "geo")
    cube = stac.load(stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=path))
    assert cube.dims == ("time", "band", "y", "x") and cube.rio.crs.to_epsg() == 4326
    assert cube.shape == geo.shape
    valid = np.isfinite(cube.values)
    np.testing.assert_allclose(cube.values[valid], geo.values[valid] / 1e4, atol=1e-6)


def test_api_search_sends_place_dates_and_cloud_query(monkeypatch, s2_catalog):
    """The STAC API branch (offline: pystac-client's Client replaced by one that records the
    request and answers with the local items, as a server would)."""
    import types
    local = list(stac.search(SLOVENIA_BBOX, "2015-01-01", "2015-12-31", catalog=s2_catalog))
    seen = {}

    class Search:
        def __init__(self, **kw):
            seen.update(kw)

        def items(self):
            return iter(local)  # a server that ignores the query: eossl filters again

    class Client:
        @staticmethod
        def open(url, modifier=None):
            seen["url"], seen["modifier"] = url, modifier
            return types.SimpleNamespace(search=lambda **kw: Search(**kw))

    monkeypatch.setitem(sys.modules, "pystac_client", types.SimpleNamespace(Client=Client))
    items = stac.search(SLOVENIA_BBOX, "2015-07-15", "2015-09-30", max_cloud=20, catalog=stac.EARTH_SEARCH,
                        limit=10)
    assert seen["url"] == stac.EARTH_SEARCH and seen["collections"] == ["sentinel-2-l2a"]
    assert seen["bbox"] == list(SLOVENIA_BBOX) and seen["max_items"] == 10
    assert seen["datetime"] == ["2015-07-15T00:00:00Z", "2015-09-30T23:59:59.999999Z"]
    assert seen["query"] == {"eo:cloud_cover": {"lte": 20}}
    assert [it.datetime.strftime("%m-%d") for it in items] == ["07-31", "08-30", "09-09"]
    with pytest.raises(eossl.DataError, match=r"in https://earth-search.*raise max_cloud"):
        stac.search(SLOVENIA_BBOX, "2015-08-19", "2015-08-21", max_cloud=20, catalog=stac.EARTH_SEARCH)
