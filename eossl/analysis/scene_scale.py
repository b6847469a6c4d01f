"""``eossl.embed_to_zarr``: embed a scene larger than memory, chunk by chunk, into a Zarr store.

    emb = eossl.embed_to_zarr(model, "big_scene.tif", "runs/big.zarr", chunk=2048)
    emb = eossl.embed_to_zarr(model, scene, "runs/big.zarr", client=Client(...))   # on a cluster

How the work is cut:

- The encoder sees the scene through **windows** (its training size, e.g. 64 px), exactly as
  :func:`eossl.embed` tiles a small scene: windows every ``window - overlap`` pixels, the last one
  flush with the edge. Every patch takes its embedding from one window, its *owner*; with
  ``overlap`` > 0 the owner is the window in which the patch sits at least ``overlap / 2`` pixels
  away from the edge (fewer seams between windows). With ``overlap=0`` the result is the one
  :func:`eossl.embed` gives, patch for patch.
- The output patch grid is cut into **chunks** of ``chunk`` pixels (the Zarr chunks). A chunk
  reads the pixels of the windows that own its patches (its own pixels plus a margin where a
  window crosses the chunk's edge), so chunk borders change nothing in the result, and memory is
  bounded by the chunk size, not the scene size.
- Each finished chunk is written into its own Zarr region and then ticked off in the store
  (``_eossl/done``): a run that stops (killed, out of time, an error) continues where it stopped
  when called again with the same model, scene and store.
- With ``client=`` (a ``dask.distributed`` Client) the chunks are tasks on the workers: each
  worker loads the model from its checkpoint (once per worker), reads its own pixels and writes
  its own, disjoint, Zarr region.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

from eossl import validate as check
from eossl.analysis.embed import _grid_to_xarray, feature_batches, zero_nan
from eossl.card import card_of, conform, match_bands
from eossl.checkpoint import save_checkpoint
from eossl.data.normalize import nodata_to_nan, normalize_raw
from eossl.data.patches import window_starts
from eossl.device import resolve_device
from eossl.errors import DataError
from eossl.outputs import OUTPUT_MARKER, is_eossl_output
from eossl.progress import progress

FORMAT = "eossl-embeddings-zarr/1"
DONE = "_eossl/done"          # (chunk_row, chunk_col) uint8: 1 once the chunk is written
MODEL_DIR = "eossl_model"     # the checkpoint workers load, written inside the store


# --------------------------------------------------------------------------- the plan

@dataclass
class _Plan:
    """Everything a chunk needs to know about the cut; small and picklable (sent to workers)."""

    p: int                      # patch size (pixels per output cell)
    rows: int                   # output patch grid
    cols: int
    win: tuple                  # window (y, x) in pixels
    starts_y: np.ndarray        # window starts in pixels, shared by every chunk
    starts_x: np.ndarray
    own_y: np.ndarray           # first pixel each window owns (lo_k); the next window's lo ends it
    own_x: np.ndarray
    cy: int                     # chunk in patches
    cx: int
    mean: list
    std: list
    nodata: float | None

    @property
    def shape(self) -> tuple[int, int]:
        """Chunks along y and x."""
        return -(-self.rows // self.cy), -(-self.cols // self.cx)

    def chunk_patches(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Patch rows r0:r1 and columns c0:c1 of chunk (i, j)."""
        return (i * self.cy, min(self.rows, (i + 1) * self.cy),
                j * self.cx, min(self.cols, (j + 1) * self.cx))

    def owners(self, i: int, j: int) -> tuple[range, range]:
        """Window indices along y and x that own the patches of chunk (i, j)."""
        r0, r1, c0, c1 = self.chunk_patches(i, j)
        ky = np.searchsorted(self.own_y, [r0 * self.p, (r1 - 1) * self.p], side="right") - 1
        kx = np.searchsorted(self.own_x, [c0 * self.p, (c1 - 1) * self.p], side="right") - 1
        return range(ky[0], ky[1] + 1), range(kx[0], kx[1] + 1)

    def pixels(self, i: int, j: int) -> tuple[slice, slice]:
        """The scene pixels chunk (i, j) reads: the union of its owner windows."""
        ky, kx = self.owners(i, j)
        return (slice(int(self.starts_y[ky[0]]), int(self.starts_y[ky[-1]]) + self.win[0]),
                slice(int(self.starts_x[kx[0]]), int(self.starts_x[kx[-1]]) + self.win[1]))


def _owned_from(starts: np.ndarray, margin: int) -> np.ndarray:
    """First pixel each window owns: a patch belongs to the last window that starts at least
    ``margin`` px before it (the first window owns from 0). With margin 0 this is what
    :func:`eossl.embed` gets by letting later windows overwrite earlier ones."""
    own = starts + margin
    own[0] = 0
    return own


def _plan(encoder, card, da, chunk, overlap, window, norm: dict | None = None) -> _Plan:
    p = int(encoder.patch_size)
    H, W = da.sizes["y"], da.sizes["x"]
    rows, cols = H // p, W // p
    if rows == 0 or cols == 0:
        raise DataError(f"{da.attrs.get('source', 'the scene')}: is {H}x{W} px, smaller than one "
                        f"{p}x{p} patch of this encoder")
    win = window or card["encoder"].get("img_size", 64)
    win = max(p, (win // p) * p)   # as eossl.embed: a whole number of patches
    win_y, win_x = min(win, rows * p), min(win, cols * p)
    if overlap % p or overlap < 0 or overlap >= win:
        raise DataError(f"overlap={overlap} px: give a multiple of the patch size ({p} px) from 0 "
                        f"up to less than the window ({win} px)")
    if chunk < max(win_y, win_x):
        raise DataError(f"chunk={chunk} px is smaller than the encoder's window ({max(win_y, win_x)} px): "
                        f"a chunk must hold at least one window; use chunk >= {max(win_y, win_x)} "
                        f"(a multiple of {win - overlap} px wastes least)")
    margin = (overlap // 2) // p * p  # context a patch keeps on the near side of its window
    sy = np.asarray(window_starts(rows * p, win_y, win_y - overlap))
    sx = np.asarray(window_starts(cols * p, win_x, win_x - overlap))
    norm = norm or card["normalization"]
    return _Plan(p=p, rows=rows, cols=cols, win=(win_y, win_x), starts_y=sy, starts_x=sx,
                 own_y=_owned_from(sy, margin), own_x=_owned_from(sx, margin),
                 cy=max(1, chunk // p), cx=max(1, chunk // p),
                 mean=list(map(float, norm["mean"])), std=list(map(float, norm["std"])),
                 nodata=da.attrs.get("nodata"))


# --------------------------------------------------------------------------- one chunk

def _embed_chunk(encoder, plan: _Plan, pixels: np.ndarray, i: int, j: int, device, batch_size: int,
                 dim: int) -> np.ndarray:
    """Chunk (i, j) -> its (r1 - r0, c1 - c0, D) block. ``pixels`` (C, h, w) are the raw values
    of ``plan.pixels(i, j)``."""
    p = plan.p
    r0, r1, c0, c1 = plan.chunk_patches(i, j)
    ys, xs = plan.pixels(i, j)
    arr = normalize_raw(pixels, plan.mean, plan.std, 0, plan.nodata)  # (C, h, w), NaN = nodata
    block = np.full((r1 - r0, c1 - c0, dim), np.nan, dtype="float32")  # (h, w, D)
    ky, kx = plan.owners(i, j)
    wy, wx = plan.win
    tiles, places = [], []
    for a in ky:
        for b in kx:
            oy, ox = int(plan.starts_y[a]) - ys.start, int(plan.starts_x[b]) - xs.start
            tile = arr[:, oy:oy + wy, ox:ox + wx]  # (C, wy, wx)
            if np.isfinite(tile).any():  # a window of nodata only owns NaN patches: skip it
                tiles.append(tile)
                places.append((a, b))
    if not tiles:
        return block
    # No per-batch bar: here the bar counts chunks, and chunks may run on workers.
    batches = feature_batches(encoder, len(tiles), lambda sl: zero_nan(np.stack(tiles[sl])),
                              device, batch_size)
    for sl, maps in batches:  # maps (b, wy/p, wx/p, D)
        for (a, b), fm in zip(places[sl], maps):
            # the patches window (a, b) owns, clipped to this chunk, in patch units
            y0 = max(int(plan.own_y[a]) // p, r0)
            y1 = min(int(plan.own_y[a + 1]) // p if a + 1 < len(plan.own_y) else plan.rows, r1)
            x0 = max(int(plan.own_x[b]) // p, c0)
            x1 = min(int(plan.own_x[b + 1]) // p if b + 1 < len(plan.own_x) else plan.cols, c1)
            sy, sx = int(plan.starts_y[a]) // p, int(plan.starts_x[b]) // p
            block[y0 - r0:y1 - r0, x0 - c0:x1 - c0] = fm[y0 - sy:y1 - sy, x0 - sx:x1 - sx]
    # A patch with any invalid pixel gets no embedding (NaN), as in eossl.embed.
    own = arr[:, r0 * p - ys.start:r1 * p - ys.start, c0 * p - xs.start:c1 * p - xs.start]
    valid = np.isfinite(own).all(axis=0).reshape(r1 - r0, p, c1 - c0, p).all(axis=(1, 3))  # (h, w)
    block[~valid] = np.nan
    return block


def _read_pixels(da: xr.DataArray, synchronous: bool = False) -> np.ndarray:
    """(band, y, x) values of a (possibly dask-backed) slice. On a worker the read must not go
    back to the cluster's scheduler (a task waiting on tasks can deadlock one-thread workers)."""
    data = da.transpose("band", "y", "x").data
    if hasattr(data, "compute"):
        data = data.compute(scheduler="synchronous") if synchronous else data.compute()
    return np.asarray(data)


def _zarr():
    try:
        import dask.array  # noqa: F401  (the store's template is a lazy array)
        import zarr
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("eossl.embed_to_zarr needs zarr (3 or newer) and dask: "
                          "pip install 'eossl[distributed]'") from None
    return zarr


def _write_chunk(store: str, plan: _Plan, i: int, j: int, block: np.ndarray) -> None:
    """Write the block, then tick the chunk off (a crash between the two only redoes it)."""
    zarr = _zarr()
    r0, r1, c0, c1 = plan.chunk_patches(i, j)
    zarr.open_array(store, path="embedding", mode="r+")[r0:r1, c0:c1, :] = block
    zarr.open_array(store, path=DONE, mode="r+")[i, j] = 1


_WORKER_MODELS: dict = {}


def _worker_model(checkpoint: str, device: str):
    """The model a worker embeds with, loaded from its checkpoint once per worker process."""
    from eossl.models.load import load_model
    key = (checkpoint, Path(checkpoint).stat().st_mtime_ns, device)
    if key not in _WORKER_MODELS:
        _WORKER_MODELS.clear()
        model = load_model(checkpoint)
        encoder, _ = card_of(model)
        dev = resolve_device(device)
        _WORKER_MODELS[key] = (encoder.to(dev).eval(), dev)
    return _WORKER_MODELS[key]


def _chunk_task(checkpoint: str, store: str, plan: _Plan, region: xr.DataArray, i: int, j: int,
                device: str, batch_size: int) -> tuple[int, int]:
    """One chunk on a dask worker: load the model (cached), read, embed, write its own region."""
    encoder, dev = _worker_model(checkpoint, device)
    block = _embed_chunk(encoder, plan, _read_pixels(region, synchronous=True), i, j, dev, batch_size,
                         int(encoder.dim))
    _write_chunk(store, plan, i, j, block)
    return i, j


# --------------------------------------------------------------------------- the store

def _fingerprint_model(encoder, card) -> str:
    """Weights + card: two models that embed differently never share a store."""
    h = hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode())
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _scene_identity(da: xr.DataArray, probe: np.ndarray) -> dict:
    """Grid, bands and a hash of the central pixels (another date on the same grid differs there)."""
    has_grid = "x" in da.coords and "y" in da.coords
    return {"shape": [int(s) for s in (da.sizes["band"], da.sizes["y"], da.sizes["x"])],
            "bands": [str(b) for b in da["band"].values.tolist()],
            "transform": list(da.rio.transform())[:6] if has_grid else None,
            "crs": da.rio.crs.to_wkt() if has_grid and da.rio.crs is not None else None,
            "pixels": hashlib.sha256(np.ascontiguousarray(probe).tobytes()).hexdigest()[:16]}


def _stored_meta(path: Path) -> dict | None:
    for name in (".zattrs", "zarr.json"):
        f = path / name
        if f.is_file():
            try:
                attrs = json.loads(f.read_text())
            except ValueError:
                return None
            attrs = attrs.get("attributes", attrs)  # zarr v3 keeps attributes one level down
            if "eossl" in attrs:
                return json.loads(attrs["eossl"])
    return None


def _is_zarr(path: Path) -> bool:
    return any((path / n).exists() for n in (".zgroup", ".zarray", "zarr.json", ".zmetadata"))


def _prepare_store(path: Path, meta: dict, overwrite: bool) -> bool:
    """True when ``path`` holds this very job (resume); False when a new store must be made.
    Refuses to touch a store made for another model, scene or cut unless overwrite=True, and
    never deletes a folder that is not a Zarr store."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return False
    if not path.is_dir() or not _is_zarr(path):
        raise DataError(f"{path}: exists and is not a Zarr store; refusing to write into it or delete "
                        "it. Give a new path (e.g. ending in .zarr)")
    old = _stored_meta(path)
    if old == meta:
        return True
    if overwrite and (old is not None or is_eossl_output(path)):
        shutil.rmtree(path)  # eossl's own store, for another job: replaced as asked
        return False
    if old is None:
        why = ("is a Zarr store that eossl.embed_to_zarr did not write" +
               ("" if is_eossl_output(path) else " and holds data that is not eossl's; eossl never deletes "
                "it, even with overwrite=True"))
    else:
        differs = [k for k in ("model", "scene", "chunk", "overlap", "window") if old.get(k) != meta.get(k)]
        named = {"model": "another model (other weights or card)", "scene": "another scene (grid, bands or pixels)",
                 "chunk": f"chunk={old.get('chunk')}", "overlap": f"overlap={old.get('overlap')}",
                 "window": f"window={old.get('window')}"}
        why = "was written for " + ", ".join(named[k] for k in differs or ["model"])
    if old is None and not is_eossl_output(path):
        raise DataError(f"{path}: {why}. Nothing was changed; give another store path")
    raise DataError(f"{path}: {why}. Nothing was changed. To resume it, call again with the same model, "
                    "scene and settings; to replace it, pass overwrite=True; or give another store path")


def _create_store(path: Path, da: xr.DataArray, plan: _Plan, card: dict, dim: int, meta: dict) -> None:
    zarr = _zarr()
    import dask.array as dsa
    empty = dsa.full((plan.rows, plan.cols, dim), np.nan, dtype="float32",
                     chunks=(plan.cy, plan.cx, dim))  # (y, x, D), lazy: only metadata gets written
    template = _grid_to_xarray(da, empty, plan.p, card)
    template.attrs["bands"] = list(template.attrs["bands"])
    ds = template.to_dataset(name="embedding")
    ds.attrs["eossl"] = json.dumps(meta)
    ds["embedding"].attrs[OUTPUT_MARKER] = "embeddings"
    # Zarr format 2: read by every Zarr and GDAL version, consolidated metadata included.
    ds.to_zarr(str(path), mode="w", compute=False, zarr_format=2, consolidated=True)
    group = zarr.open_group(str(path), mode="r+", zarr_format=2)
    group.require_group("_eossl").create_array("done", shape=plan.shape, chunks=(1, 1), dtype="uint8",
                                                fill_value=0, overwrite=True)


def _done(path: Path, plan: _Plan) -> np.ndarray:
    zarr = _zarr()
    try:
        return zarr.open_array(str(path), path=DONE, mode="r")[:].astype(bool)
    except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError):  # killed right after creating it
        zarr.open_group(str(path), mode="r+", zarr_format=2).require_group("_eossl").create_array(
            "done", shape=plan.shape, chunks=(1, 1), dtype="uint8", fill_value=0, overwrite=True)
        return np.zeros(plan.shape, dtype=bool)


def _open_result(path: Path) -> xr.DataArray:
    ds = xr.open_zarr(str(path), decode_coords="all", consolidated=True)
    emb = ds["embedding"]
    emb.attrs["store"] = str(path)
    return emb


# --------------------------------------------------------------------------- the call

def embed_to_zarr(model, scene, store, *, chunk: int = 2048, overlap: int = 0, batch_size: int = 64,
                  device: str = "auto", client=None, window: int | None = None, overwrite: bool = False,
                  check_values: bool = True, on_mismatch: str | None = None,
                  on_chunk: Callable[[int, int], None] | None = None) -> xr.DataArray:
    """Embed a scene of any size into a Zarr store, chunk by chunk (see the module docstring).

    Args:
        model: from :func:`eossl.pretrain` / :func:`eossl.load_model`, or a checkpoint path.
        scene: a ``(band, y, x)`` DataArray, lazy (dask-backed, e.g. ``eossl.open_scene(path,
            chunks=...)``) or in memory, or a path that :func:`eossl.open_scene` opens lazily.
        store: a folder path for the Zarr store (e.g. ``"runs/scene.zarr"``). If it holds an
            unfinished run of the same model and scene, only the missing chunks are embedded.
        chunk: output chunk in pixels (rounded down to whole patches); memory is about
            ``bands x (chunk + window)^2`` floats per worker. Must be at least the window.
        overlap: pixels by which neighbouring windows overlap (a multiple of the patch size); 0
            reproduces :func:`eossl.embed` exactly, more gives each patch more context.
        batch_size: windows per encoder call.
        device: "auto", "cpu", "cuda", ... (on every worker when ``client`` is given).
        client: a ``dask.distributed.Client``; chunks then run as tasks on its workers, which
            need the scene's files and the store on a shared filesystem.
        window: the tile size fed to the encoder (default: its training size), as in eossl.embed.
        overwrite: replace a store written for another model, scene or settings.
        check_values, on_mismatch: the units check and DN <-> reflectance handling of
            :func:`eossl.embed`, done once on a central sample of the scene.
        on_chunk: called with (chunk_row, chunk_col) after each chunk is safely written.

    Returns:
        The lazy ``(y, x, dim)`` embeddings read back from the store (``xr.open_zarr``), with the
        scene's CRS and a transform whose pixels are patches, as :func:`eossl.embed` gives.
    """
    chunk = check.integer("chunk", chunk, minimum=1)
    overlap = check.integer("overlap", overlap, minimum=0)
    batch_size = check.integer("batch_size", batch_size, minimum=1)
    window = None if window is None else check.integer("window", window, minimum=1)
    if client is None:
        resolve_device(device)  # a bad device fails now, not after the store is made
    if isinstance(scene, (str, Path)):
        from eossl.data.scenes import open_scene
        scene = open_scene(scene, chunks={"band": -1, "y": chunk, "x": chunk})
    if isinstance(scene, xr.Dataset):
        scene = scene["image"]
    if not isinstance(scene, xr.DataArray) or set(scene.dims) != {"band", "y", "x"}:
        dims = getattr(scene, "dims", type(scene).__name__)
        raise DataError(f"embed_to_zarr embeds one scene with dims (band, y, x), got {dims}; "
                        "for a stack call it once per date (stack.isel(time=t))")
    checkpoint = None
    if isinstance(model, (str, Path)):
        from eossl.models.load import load_model
        checkpoint = str(model)
        model = load_model(model)
    encoder, card = card_of(model)
    da = match_bands(scene, card).transpose("band", "y", "x")

    # A central sample: checks the units once (not per chunk) and identifies the scene's pixels.
    H, W = da.sizes["y"], da.sizes["x"]
    h, w = min(H, 512), min(W, 512)
    probe = _read_pixels(da.isel(y=slice((H - h) // 2, (H - h) // 2 + h), x=slice((W - w) // 2, (W - w) // 2 + w)))
    norm_card = card
    if check_values:  # as eossl.embed: maybe a card whose statistics also convert the units
        sample = nodata_to_nan(probe.astype("float64"), da.attrs.get("nodata")).reshape(len(probe), -1)
        sample = sample[:, ::max(1, sample.shape[1] // 20_000)]  # as many pixels as eossl.embed checks
        _, norm_card = conform(da, card, on_mismatch=on_mismatch, sample=sample)
    plan = _plan(encoder, card, da, int(chunk), int(overlap), window, norm_card["normalization"])
    dim = int(encoder.dim)
    if "x" not in da.coords or "y" not in da.coords or da.rio.crs is None:
        warnings.warn("the scene has no CRS: its embeddings are written on the patch grid but are not "
                      "georeferenced (open it with eossl.open_scene, or da.rio.write_crs(...) first)",
                      stacklevel=2)

    path = Path(store)
    meta = {"format": FORMAT, "model": _fingerprint_model(encoder, card), "scene": _scene_identity(da, probe),
            "chunk": plan.cy * plan.p, "overlap": int(overlap), "window": list(plan.win),
            "patch_size": plan.p}
    if not _prepare_store(path, meta, overwrite):
        _create_store(path, da, plan, card, dim, meta)
    done = _done(path, plan)
    todo = [(i, j) for i in range(plan.shape[0]) for j in range(plan.shape[1]) if not done[i, j]]
    bar = progress(total=done.size, initial=int(done.sum()), desc="embed chunks", unit="chunk")
    try:
        if client is None:
            dev = resolve_device(device)
            encoder = encoder.to(dev).eval()
            for i, j in todo:
                ys, xs = plan.pixels(i, j)
                block = _embed_chunk(encoder, plan, _read_pixels(da.isel(y=ys, x=xs)), i, j, dev,
                                     batch_size, dim)
                _write_chunk(str(path), plan, i, j, block)
                bar.update(1)
                if on_chunk is not None:
                    on_chunk(i, j)
        else:
            _run_on_cluster(client, model, checkpoint, path, plan, da, todo, device, batch_size, bar, on_chunk)
    finally:
        bar.close()
    return _open_result(path)


def _run_on_cluster(client, model, checkpoint, path, plan, da, todo, device, batch_size, bar, on_chunk):
    try:
        from distributed import as_completed
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("client= needs dask.distributed: pip install 'eossl[distributed]'") from None
    if checkpoint is None:
        # Workers load the model from a checkpoint in the store (shared with them like the store
        # itself) rather than each task unpickling a copy of the weights.
        _, card = card_of(model)
        checkpoint = str(save_checkpoint(path / MODEL_DIR, model, card))
    futures = []
    for i, j in todo:
        ys, xs = plan.pixels(i, j)
        region = da.isel(y=ys, x=xs)  # lazy for a dask-backed scene: the worker reads the pixels
        futures.append(client.submit(_chunk_task, checkpoint, str(path), plan, region, i, j, device,
                                     batch_size, pure=False))
    try:
        for fut in as_completed(futures):
            i, j = fut.result()
            bar.update(1)
            if on_chunk is not None:
                on_chunk(i, j)
    except BaseException:
        client.cancel(futures)
        raise
