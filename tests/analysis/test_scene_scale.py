"""eossl.embed_to_zarr: chunked scene embedding into Zarr, equal to eossl.embed, resumable, on a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import rioxarray  # noqa: F401
import torch
import xarray as xr
import zarr

import eossl
from _tiny import REPO
from eossl.analysis.scene_scale import DONE
from eossl.errors import DataError


@pytest.fixture(scope="module")
def model(tiny_run):
    return tiny_run.model


@pytest.fixture(scope="module")
def scene(slovenia):
    """One real Sentinel-2 date, 101 x 100 px (13 bands, CRS), in memory."""
    return slovenia["image"].isel(time=0)


@pytest.fixture(scope="module")
def big_tif(scene, tmp_path_factory):
    """A 202 x 200 px GeoTIFF tiled from the real scene with flips (so no two tiles are equal),
    opened lazily the way a large scene would be."""
    top = np.concatenate([scene.values, scene.values[:, :, ::-1]], axis=2)       # (C, 101, 200)
    values = np.concatenate([top, top[:, ::-1, :]], axis=1)                        # (C, 202, 200)
    t = scene.rio.transform()
    da = xr.DataArray(values, dims=("band", "y", "x"),
                      coords={"band": scene["band"].values,
                              "y": t.f + t.e * (np.arange(202) + 0.5), "x": t.c + t.a * (np.arange(200) + 0.5)})
    da = da.rio.write_crs(scene.rio.crs).rio.write_transform(t)
    path = tmp_path_factory.mktemp("big") / "S2_mosaic.tif"
    da.rio.to_raster(path)
    import rasterio
    with rasterio.open(path, "r+") as f:  # band names, as a real multi-band export carries them
        f.descriptions = tuple(str(b) for b in scene["band"].values)
    return path


def _done(store):
    return zarr.open_array(str(store), path=DONE, mode="r")[:].astype(bool)


# ----------------------------------------------------------------------------- equality with embed

def test_equals_embed_on_a_small_scene(model, scene, tmp_path):
    ref = eossl.embed(model, scene)
    out = eossl.embed_to_zarr(model, scene, tmp_path / "s.zarr", chunk=64)
    assert out.dims == ("y", "x", "dim") and out.shape == ref.shape
    assert _done(tmp_path / "s.zarr").shape == (2, 2)  # 12 x 12 patches in chunks of 8
    np.testing.assert_allclose(out.values, ref.values, atol=1e-5)
    np.testing.assert_array_equal(out.x.values, ref.x.values)
    np.testing.assert_array_equal(out.y.values, ref.y.values)
    assert out.rio.crs == ref.rio.crs and out.rio.transform() == ref.rio.transform()
    assert out.attrs["bands"] == ref.attrs["bands"] and out.attrs["patch_size"] == ref.attrs["patch_size"]


@pytest.mark.parametrize("chunk", [64, 136])
def test_lazy_scene_chunked_equals_embed_in_memory(model, big_tif, chunk, tmp_path):
    lazy = eossl.open_scene(big_tif, chunks={"band": -1, "y": 64, "x": 64})
    assert lazy.chunks is not None  # really dask-backed
    ref = eossl.embed(model, lazy.load())
    out = eossl.embed_to_zarr(model, big_tif, tmp_path / "b.zarr", chunk=chunk)  # a path opens lazily
    assert out.shape == ref.shape == (25, 25, model.encoder.dim)
    np.testing.assert_allclose(out.values, ref.values, atol=1e-5)
    assert np.isfinite(out.values).all()


def test_overlap_gives_each_patch_its_central_window_whatever_the_chunks(model, big_tif, tmp_path):
    scene = eossl.open_scene(big_tif, chunks={"band": -1, "y": 64, "x": 64})
    a = eossl.embed_to_zarr(model, scene, tmp_path / "a.zarr", chunk=64, overlap=32).values
    b = eossl.embed_to_zarr(model, scene, tmp_path / "b.zarr", chunk=128, overlap=32).values
    np.testing.assert_allclose(a, b, atol=1e-5)
    plain = eossl.embed(model, scene.load()).values
    assert a.shape == plain.shape and not np.allclose(a, plain, atol=1e-3)  # other windows, other values
    # Window stride 32 px, margin 16 px: patch row 10 (pixel 80) is owned by the window starting at
    # 64 (lo = 64 + 16 = 80), col 5 (pixel 40) by the window starting at 0 (the next one owns from 48).
    from eossl.card import model_input
    norm = model_input(model, scene.isel(y=slice(64, 128), x=slice(0, 64)).expand_dims("sample").load())
    with torch.no_grad():
        fm = model.encoder.feature_map(torch.from_numpy(norm))[0].permute(1, 2, 0).numpy()  # (8, 8, D)
    np.testing.assert_allclose(a[10, 5], fm[2, 5], atol=1e-5)


# ----------------------------------------------------------------------------- restart

def test_an_interrupted_run_resumes_with_only_the_missing_chunks(model, scene, big_tif, tmp_path):
    store = tmp_path / "r.zarr"
    full = eossl.embed_to_zarr(model, big_tif, tmp_path / "full.zarr", chunk=64).values

    class Stop(Exception):
        pass

    seen = []

    def stop_after_three(i, j):
        seen.append((i, j))
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        eossl.embed_to_zarr(model, big_tif, store, chunk=64, on_chunk=stop_after_three)
    assert _done(store).sum() == 3
    again = []
    out = eossl.embed_to_zarr(model, big_tif, store, chunk=64, on_chunk=lambda i, j: again.append((i, j)))
    assert len(again) == 16 - 3 and not set(again) & set(seen)
    np.testing.assert_allclose(out.values, full, atol=1e-6)
    nothing = []
    eossl.embed_to_zarr(model, big_tif, store, chunk=64, on_chunk=lambda i, j: nothing.append((i, j)))
    assert nothing == []  # finished: a third call does no work


def test_a_killed_process_resumes(tiny_run, big_tif, tmp_path):
    """SIGKILL (no clean-up at all) after the second chunk; the rerun does the other 14."""
    store = tmp_path / "k.zarr"
    script = textwrap.dedent(f"""
        import os, signal, eossl
        n = []
        def kill(i, j):
            n.append(1)
            if len(n) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        eossl.embed_to_zarr({str(tiny_run.checkpoint_path)!r}, {str(big_tif)!r}, {str(store)!r}, chunk=64,
                            on_chunk=kill)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "EOSSL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert _done(store).sum() == 2
    again = []
    out = eossl.embed_to_zarr(tiny_run.checkpoint_path, big_tif, store, chunk=64,
                              on_chunk=lambda i, j: again.append((i, j)))
    assert len(again) == 14
    ref = eossl.embed(eossl.load_model(tiny_run.checkpoint_path), eossl.open_scene(big_tif))
    np.testing.assert_allclose(out.values, ref.values, atol=1e-5)


# ----------------------------------------------------------------------------- dask.distributed

def test_runs_on_a_local_cluster_with_two_workers(model, big_tif, tmp_path):
    """Two one-thread workers (in-process: worker processes spend ~45 s importing torch on these
    shared 2-core machines; the benchmark runs worker processes). Each task reads its own pixels,
    loads the model from the checkpoint written into the store and writes its own region."""
    distributed = pytest.importorskip("distributed")
    ref = eossl.embed(model, eossl.open_scene(big_tif))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        seen = []
        with distributed.get_task_stream(client) as stream:
            out = eossl.embed_to_zarr(model, big_tif, tmp_path / "c.zarr", chunk=64, client=client,
                                      on_chunk=lambda i, j: seen.append((i, j)))
        workers = {t["worker"] for t in stream.data if "_chunk_task" in t["key"]}
    assert len(workers) == 2
    assert sorted(seen) == [(i, j) for i in range(4) for j in range(4)]
    assert (tmp_path / "c.zarr" / "eossl_model" / "checkpoint.safetensors").is_file()
    np.testing.assert_allclose(out.values, ref.values, atol=1e-5)


def test_what_a_worker_process_receives_survives_pickling(model, big_tif):
    """Worker processes get the cut and a lazy slice of the scene; both must pickle and the
    slice must read the same pixels on the other side, without the cluster's scheduler."""
    import pickle

    from eossl.analysis.scene_scale import _plan, _read_pixels
    lazy = eossl.open_scene(big_tif, chunks={"band": -1, "y": 64, "x": 64})
    da = lazy.sel(band=[b["name"] for b in model.card["bands"]])  # the model's band order
    plan = _plan(model.encoder, model.card, da, 64, 0, None)
    ys, xs = plan.pixels(3, 2)
    region = da.isel(y=ys, x=xs)
    back_plan, back_region = pickle.loads(pickle.dumps((plan, region)))
    assert back_plan.pixels(3, 2) == (ys, xs)
    np.testing.assert_array_equal(_read_pixels(back_region, synchronous=True), da.isel(y=ys, x=xs).values)


# ----------------------------------------------------------------------------- store safety and errors

def test_a_store_of_another_model_or_scene_is_refused_and_left_whole(model, tiny_run, scene, tmp_path):
    store = tmp_path / "s.zarr"
    first = eossl.embed_to_zarr(model, scene, store, chunk=64).values
    other = eossl.load_model(tiny_run.checkpoint_path)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    with pytest.raises(DataError, match="another model"):
        eossl.embed_to_zarr(other, scene, store, chunk=64)
    flipped = scene.copy(data=scene.values[:, ::-1, :])  # another picture on the same grid
    with pytest.raises(DataError, match="another scene"):
        eossl.embed_to_zarr(model, flipped, store, chunk=64)
    with pytest.raises(DataError, match="chunk=64"):
        eossl.embed_to_zarr(model, scene, store, chunk=128)
    np.testing.assert_array_equal(xr.open_zarr(store)["embedding"].values, first)  # untouched
    replaced = eossl.embed_to_zarr(model, flipped, store, chunk=64, overwrite=True)
    np.testing.assert_allclose(replaced.values, eossl.embed(model, flipped).values, atol=1e-5)


def test_never_writes_into_or_deletes_a_folder_that_is_not_a_store(model, scene, tmp_path):
    folder = tmp_path / "my_files"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="not a Zarr store"):
            eossl.embed_to_zarr(model, scene, folder, chunk=64, overwrite=overwrite)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_bad_settings_and_inputs_have_clear_errors(model, scene, slovenia, tmp_path):
    with pytest.raises(DataError, match="smaller than the encoder's window"):
        eossl.embed_to_zarr(model, scene, tmp_path / "a.zarr", chunk=32)
    with pytest.raises(DataError, match="overlap=12"):
        eossl.embed_to_zarr(model, scene, tmp_path / "a.zarr", chunk=64, overlap=12)
    with pytest.raises(DataError, match="once per date"):
        eossl.embed_to_zarr(model, slovenia["image"], tmp_path / "a.zarr", chunk=64)
    assert not (tmp_path / "a.zarr").exists()


def test_a_scene_without_crs_works_with_a_warning(model, scene, tmp_path):
    bare = xr.DataArray(scene.values, dims=("band", "y", "x"), coords={"band": scene["band"].values},
                        attrs={"nodata": None})
    with pytest.warns(UserWarning, match="not georeferenced"):
        out = eossl.embed_to_zarr(model, bare, tmp_path / "n.zarr", chunk=64)
    np.testing.assert_allclose(out.values, eossl.embed(model, scene).values, atol=1e-5)
    assert out.rio.crs is None


def test_nodata_patches_are_nan_and_empty_chunks_are_skipped(model, scene, tmp_path):
    holed = scene.copy(data=scene.values.astype("float32"))
    holed.values[:, :64, :64] = np.nan        # the whole first chunk
    holed.values[:, 70:75, 80:83] = np.nan    # a few patches elsewhere
    out = eossl.embed_to_zarr(model, holed, tmp_path / "h.zarr", chunk=64).values
    ref = eossl.embed(model, holed).values
    assert np.isnan(out[:8, :8]).all()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_units_are_handled_as_embed_does(model, scene, tmp_path):
    """Reflectance given to a DN model: the same conversion (and warning) as eossl.embed."""
    if model.card.get("units") != "DN":
        pytest.skip("the tiny model's card records no DN units")
    reflectance = scene.copy(data=scene.values.astype("float32") / 10000)
    with pytest.warns(UserWarning, match="convert"):
        out = eossl.embed_to_zarr(model, reflectance, tmp_path / "u.zarr", chunk=64)
    with pytest.warns(UserWarning, match="convert"):
        ref = eossl.embed(model, reflectance)
    np.testing.assert_allclose(out.values, ref.values, atol=1e-4)
    np.testing.assert_allclose(out.values, eossl.embed(model, scene).values, atol=1e-3)


# ----------------------------------------------------------------------------- georeferencing

def test_the_store_reopens_georeferenced(model, scene, tmp_path):
    store = tmp_path / "g.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)  # affine's `*` in rioxarray
        eossl.embed_to_zarr(model, scene, store, chunk=64)
    for emb in (xr.open_zarr(store, decode_coords="all")["embedding"], eossl.open_embeddings(store)):
        assert emb.rio.crs == scene.rio.crs
        t = emb.rio.transform()
        assert (t.c, t.f) == pytest.approx((scene.rio.transform().c, scene.rio.transform().f))
        assert t.a == pytest.approx(scene.rio.transform().a * 8)
    # a place in the scene's CRS finds its own patch
    hit = eossl.similar(eossl.open_embeddings(store), at=(float(scene.x[50]), float(scene.y[50])), k=3)
    assert len(hit.table) == 3 and hit.heatmap.shape == (12, 12)
