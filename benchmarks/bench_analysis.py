"""Analysis at scale: scene embedding into Zarr, similarity search (FAISS vs exact) and UMAP.

    python benchmarks/bench_analysis.py            # full: a 10240 x 10240 px scene, 10^4..10^6 vectors
    python benchmarks/bench_analysis.py --quick    # seconds: a small scene, small sets (smoke test)

Everything is measured on real data: the Landsat 8 scene in ../shared/data (3 bands, 2041 x 1860 px)
is tiled, with mirror flips so no two tiles line up, into a temporary GeoTIFF of at least 10000 x
10000 px (deleted afterwards, never committed). An encoder of ViT-S width (384-d, ``--depth`` blocks,
``--patch`` px patches in ``--window`` px windows; briefly MAE-trained on the original scene) embeds it with
:func:`eossl.embed_to_zarr`:
- in this process at two scene sizes with the same chunk, to show the peak memory follows the chunk,
  not the scene;
- on a ``dask.distributed`` LocalCluster of worker processes for the big scene (peak memory summed
  over this process and every worker, sampled with psutil).
The big scene's patch embeddings are the vectors of the search and UMAP tables. When more vectors
are asked for than the scene gives (10^6 > 102 400 at 32 px patches), the rest are real vectors plus small Gaussian
noise (half the median nearest-neighbour distance), as the table says.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EOSSL_SHARED_DATA", REPO.parent / "shared" / "data"))
LANDSAT = SHARED / "landsat8_parana" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
BANDS = ["B2", "B3", "B4"]  # blue, green, red (see ../shared/data/README.md)


# --------------------------------------------------------------------------- memory

class PeakRSS:
    """Peak resident memory of this process plus all its children (dask workers), sampled."""

    def __init__(self, every: float = 0.1):
        import psutil
        self.proc, self.every = psutil.Process(), every
        self.peak_total = self.peak_child = 0

    def _sample(self):
        import psutil
        total, child_max = self.proc.memory_info().rss, 0
        for c in self.proc.children(recursive=True):
            try:
                rss = c.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            child_max = max(child_max, rss)
        self.peak_total = max(self.peak_total, total)
        self.peak_child = max(self.peak_child, child_max)

    def _loop(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def __enter__(self):
        self._stop = threading.Event()
        self._sample()
        self.start_total = self.peak_total  # what was resident before the measured call
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def mib(n: float) -> float:
    return n / 2**20


# --------------------------------------------------------------------------- the data

def tiled_scene(size: int, out: Path) -> Path:
    """A size x size GeoTIFF (tiled, uncompressed) of the real Landsat scene, mirrored tile by tile,
    written window by window (never the whole mosaic in memory)."""
    import rasterio
    from rasterio.windows import Window
    with rasterio.open(LANDSAT) as src:
        tile = src.read()                                            # (3, 1860, 2041) uint16
        profile = src.profile
    _, th, tw = tile.shape
    profile.update(width=size, height=size, tiled=True, blockxsize=512, blockysize=512, compress=None,
                   BIGTIFF="IF_SAFER")
    with rasterio.open(out, "w", **profile) as dst:
        dst.descriptions = tuple(BANDS)
        for ty, y0 in enumerate(range(0, size, th)):
            for tx, x0 in enumerate(range(0, size, tw)):
                piece = tile[:, ::(-1) ** ty, ::(-1) ** tx]          # mirror every other tile
                h, w = min(th, size - y0), min(tw, size - x0)
                dst.write(piece[:, :h, :w], window=Window(x0, y0, w, h))
    return out


def train_model(out: Path, steps: int, depth: int, patch: int, window: int):
    import eossl
    scene = eossl.open_scene(LANDSAT, bands=BANDS)
    encoder = {"name": "vit_small", "patch_size": patch, "embed_dim": 384, "num_heads": 6, "depth": depth}
    run = eossl.pretrain(scene, method="mae", steps=steps, batch_size=32, encoder=encoder, img_size=window,
                         out=out, decoder_dim=128, decoder_depth=1, checkpoint_every=max(steps, 1))
    return run.checkpoint_path


# --------------------------------------------------------------------------- (c) scene embedding

def embed_scene(checkpoint, tif: Path, store: Path, chunk: int, workers: int, processes: bool,
                crop: int | None = None) -> dict:
    import eossl
    scene = eossl.open_scene(tif, chunks={"band": -1, "y": chunk, "x": chunk})
    if crop:
        scene = scene.isel(y=slice(0, crop), x=slice(0, crop))
    H, W = scene.sizes["y"], scene.sizes["x"]
    client = cluster = None
    if workers:
        import distributed
        extra = {"env": {"OMP_NUM_THREADS": "1", "EOSSL_PROGRESS": "0"}} if processes else {}
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                           dashboard_address=None, memory_limit=0, **extra)
        client = distributed.Client(cluster)
        client.run(lambda: __import__("eossl") and None)  # worker start-up is not embedding time
    try:
        with PeakRSS() as mem:
            t = time.perf_counter()
            emb = eossl.embed_to_zarr(checkpoint, scene, store, chunk=chunk, client=client)
            seconds = time.perf_counter() - t
    finally:
        if client is not None:
            client.close()
            cluster.close()
    patches = emb.sizes["y"] * emb.sizes["x"]
    where = (f"{workers} dask worker {'processes' if processes else 'threads'} x 1 thread" if workers
             else "this process")
    return {"scene (px)": f"{H} x {W} x 3", "scene as float32 (MiB)": mib(H * W * 3 * 4),
            "chunk (px)": chunk, "where": where, "seconds": seconds,
            "Mpixels/s": H * W / seconds / 1e6, "patches/s": patches / seconds,
            "RSS before (MiB)": mib(mem.start_total), "peak RSS (MiB)": mib(mem.peak_total),
            "peak - before (MiB)": mib(mem.peak_total - mem.start_total),
            "peak RSS, largest worker (MiB)": mib(mem.peak_child) if workers and processes else "-"}


# --------------------------------------------------------------------------- (a) search

def unit(v):
    return (v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)).astype("float32")


def build_sets(real: np.ndarray, sizes, n_queries: int, seed: int = 0):
    """Queries: held-out real vectors. Sets: random real vectors; past the real count, real vectors
    plus Gaussian noise of half the median nearest-neighbour distance (then re-normalised).

    The vectors are centred (minus their mean) before unit length: a briefly trained ViT puts every
    patch near one common direction (raw cosines of 0.999+), where float32 rounding alone reorders
    neighbours; centring is the usual retrieval preprocessing and spreads them out."""
    rng = np.random.default_rng(seed)
    real = real[rng.permutation(len(real))]
    real = unit(real - real.mean(axis=0))
    queries, pool = real[:n_queries], real[n_queries:]
    probe = pool[rng.choice(len(pool), min(500, len(pool)), replace=False)]
    sims = probe @ pool.T                                       # (500, N)
    sims[sims > 0.999999] = -1                                  # not itself
    nn = np.sqrt(np.maximum(0, 2 - 2 * sims.max(axis=1)))
    sigma = 0.5 * float(np.median(nn)) / np.sqrt(real.shape[1])
    sets = {}
    for n in sizes:
        if n <= len(pool):
            sets[n] = (pool[rng.choice(len(pool), n, replace=False)], 0)
        else:
            extra = n - len(pool)
            base = pool[rng.integers(0, len(pool), extra)]
            noisy = unit(base + rng.normal(0, sigma, base.shape).astype("float32"))
            sets[n] = (np.concatenate([pool, noisy]), extra)
    return queries, sets, sigma


def exact_topk(X, q, k):
    sims = X @ q                                                # (N,)
    top = np.argpartition(-sims, k)[:k]
    return top[np.argsort(-sims[top])]


def per_query(fn, queries) -> float:
    t = time.perf_counter()
    for q in queries:
        fn(q)
    return (time.perf_counter() - t) / len(queries) * 1000


def bench_search(queries, sets, k: int = 10, hnsw_max: int = 10**6) -> list[dict]:
    import faiss
    import xarray as xr

    import eossl
    rows = []
    rng_q = np.random.default_rng(3)
    for n, (X, n_noisy) in sets.items():
        note = "real" if not n_noisy else f"{n - n_noisy} real + {n_noisy} real+noise"
        kth = [np.sort(X @ q)[-k] for q in queries]

        def recall(found):
            """Share of the k hits that are true top-k: cosine at least the exact k-th best (minus
            float32 rounding), so exact ties (identical patches) count whichever one is returned."""
            return float(np.mean([np.sum(X[f[f >= 0]] @ q >= kth[i] - 1e-5) / k
                                  for i, (f, q) in enumerate(zip(found, queries))]))

        ms = per_query(lambda q: exact_topk(X, q, k), queries)
        rows.append({"vectors": n, "data": note, "index": "exact (numpy matmul + argpartition)",
                     "build (s)": "-", "ms/query": f"{ms:.3f}", "recall@10": "1 (reference)"})
        emb = xr.DataArray(X, dims=("sample", "dim"))
        few = queries[:3]  # the whole call normalises all N vectors each time: slow at 10^6
        t = time.perf_counter()
        for i in rng_q.choice(n, len(few), replace=False):  # a query that is one of the vectors
            eossl.similar(emb, at=int(i), k=k, backend="exact")
        ms_similar = (time.perf_counter() - t) / len(few) * 1000
        rows.append({"vectors": n, "data": note, "index": "eossl.similar(backend='exact'), whole call",
                     "build (s)": "-", "ms/query": f"{ms_similar:.1f}", "recall@10": "1"})

        nlist = max(1, min(int(np.sqrt(n)), n // 39))  # sqrt(N) lists; faiss wants >= 39 points per list
        t = time.perf_counter()
        quantizer = faiss.IndexFlatIP(X.shape[1])
        ivf = faiss.IndexIVFFlat(quantizer, X.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(1)
        ivf.train(X[rng.choice(n, min(n, 64 * nlist), replace=False)])
        ivf.add(X)
        build = time.perf_counter() - t
        for nprobe in (8, 32):
            ivf.nprobe = nprobe
            found = [ivf.search(q[None], k)[1][0] for q in queries]
            ms = per_query(lambda q: ivf.search(q[None], k), queries)
            rows.append({"vectors": n, "data": note, "index": f"FAISS IVFFlat nlist {nlist}, nprobe {nprobe}",
                         "build (s)": build, "ms/query": f"{ms:.3f}", "recall@10": f"{recall(found):.3f}"})
        ivf = quantizer = None  # free the index before the next size
        if n <= hnsw_max:
            t = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(X.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 40
            hnsw.add(X)
            build = time.perf_counter() - t
            hnsw.hnsw.efSearch = 64
            found = [hnsw.search(q[None], k)[1][0] for q in queries]
            ms = per_query(lambda q: hnsw.search(q[None], k), queries)
            rows.append({"vectors": n, "data": note, "index": "FAISS HNSWFlat M 16, efSearch 64",
                         "build (s)": build, "ms/query": f"{ms:.3f}", "recall@10": f"{recall(found):.3f}"})
            del hnsw
        print(f"  search {n}: done", file=sys.stderr, flush=True)
    return rows


# --------------------------------------------------------------------------- (b) UMAP

def bench_umap(real: np.ndarray, sizes) -> list[dict]:
    import xarray as xr

    import eossl
    rows = []
    rng = np.random.default_rng(2)
    t = time.perf_counter()
    eossl.umap(xr.DataArray(real[rng.choice(len(real), 1000, replace=False)], dims=("sample", "dim")))
    rows.append({"points": "1000 (first call)", "seconds": time.perf_counter() - t,
                 "note": "numba compilation included (paid once per Python process)"})
    for n in sizes:
        X = real[rng.choice(len(real), n, replace=n > len(real))]
        t = time.perf_counter()
        eossl.umap(xr.DataArray(X, dims=("sample", "dim")))
        rows.append({"points": n, "seconds": time.perf_counter() - t,
                     "note": "compiled; eossl.umap = PCA to 50 dims + umap-learn (n_jobs=1)"})
        print(f"  umap {n}: done", file=sys.stderr, flush=True)
    return rows


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, seconds (smoke test)")
    ap.add_argument("--size", type=int, default=10240, help="big scene side in pixels")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--depth", type=int, default=2, help="transformer blocks of the ViT-S-width encoder")
    ap.add_argument("--patch", type=int, default=32, help="encoder patch size (px)")
    ap.add_argument("--window", type=int, default=128, help="encoder window (px): (window/patch)^2 tokens")
    ap.add_argument("--steps", type=int, default=10, help="MAE steps before embedding")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--vectors", default="10000,100000,1000000")
    ap.add_argument("--umap", default="10000,100000")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--hnsw-max", type=int, default=10**5,
                    help="largest set given an HNSW index (its build is slow on 2 cores)")
    ap.add_argument("--parts", default="scene,search,umap",
                    help="tables to print; search and umap use the big scene's embeddings")
    ap.add_argument("--workdir", default=None, help="where the temporary scene and stores go (deleted)")
    args = ap.parse_args()
    if args.quick:
        args.size, args.chunk, args.depth, args.steps, args.workers = 512, 256, 1, 1, 2
        args.patch, args.window = 16, 64
        args.vectors, args.umap, args.queries = "2000,6000", "", 10  # UMAP: numba compiles ~1 min
    if not LANDSAT.is_file():
        sys.exit(f"{LANDSAT} not found: this benchmark needs ../shared/data (set EOSSL_SHARED_DATA)")
    import eossl
    eossl.progress.set_enabled(False)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="eossl_bench_analysis_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        checkpoint = train_model(work / "run", args.steps, args.depth, args.patch, args.window)
        tif = tiled_scene(args.size, work / "LC08_mosaic.tif")
        print(f"  model + {args.size} px mosaic: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)

        scene_rows = []
        small = [args.chunk, 2 * args.chunk]
        embed_scene(checkpoint, tif, work / "warm.zarr", args.chunk, 0, False, args.chunk // 2)  # warm-up
        for crop in small:  # in this process: memory vs scene size at a fixed chunk
            scene_rows.append(embed_scene(checkpoint, tif, work / f"crop{crop}.zarr", args.chunk, 0, False, crop))
            print(f"  scene {crop}: done", file=sys.stderr, flush=True)
        scene_rows.append(embed_scene(checkpoint, tif, work / "big.zarr", args.chunk, args.workers,
                                      processes=not args.quick))
        print("### Scene embedding (eossl.embed_to_zarr)\n")
        print(markdown_table(scene_rows) + "\n", flush=True)

        parts = set(args.parts.split(","))
        if not parts & {"search", "umap"}:
            print(f"Machine: {machine()}")
            return
        import xarray as xr
        emb = xr.open_zarr(work / "big.zarr")["embedding"]
        real = emb.values.reshape(-1, emb.sizes["dim"])  # (patches, D)
        real = real[np.isfinite(real).all(axis=1)]
        sizes = [int(s) for s in args.vectors.split(",")]
        queries, sets, sigma = build_sets(real, sizes, args.queries)
        if "search" in parts:
            print(f"### Similarity search: {args.queries} single queries, top 10, cosine on unit vectors\n")
            print(f"{len(real)} real {real.shape[1]}-d patch embeddings of the mosaic; noise sigma "
                  f"{sigma:.4f} per dimension where noted.\n")
            print(markdown_table(bench_search(queries, sets, hnsw_max=args.hnsw_max)) + "\n", flush=True)
        del sets
        if args.umap and "umap" in parts:
            print("### UMAP (umap-learn, 2 components, cosine)\n")
            print(markdown_table(bench_umap(real, [int(s) for s in args.umap.split(",")])) + "\n")
        print(f"Machine: {machine()}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
