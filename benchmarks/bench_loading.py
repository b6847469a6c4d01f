"""Does the data path keep up with the encoder? Patches/s delivered from a local GeoTIFF, a local
COG, a local STAC catalog and memory, against the images/s a training step consumes.

    python benchmarks/bench_loading.py [--batches 40] [--device auto] [--quick]

Two ways to feed training windows (64 px, all bands, batch 64):

- **eossl sampler**: what ``eossl.pretrain`` does. The scene is opened and decoded once into memory
  (``open_scene`` / ``eossl.stac.load(...).values``), then ``PatchSampler`` cuts normalised windows
  from the array. "open + decode" is the one-off cost; "patches/s" is the steady stream after it.
- **window reads**: one read per window straight from the file (rasterio windows; for STAC, the
  lazy dask cube sliced per window). This is what streaming a scene too large for memory costs.

Consumption: images/s of one MAE training step (forward, backward, AdamW; bf16 autocast on CUDA,
as the trainer does) on ready-made tensors, for the default MAE encoder and ViT-S/8 at 64 px.

Rates on the CPU are per core: CPU seconds of this process (and of its DataLoader workers), with
torch on one thread. That keeps the comparison fair on a shared machine, where wall-clock rates
swing with the neighbours' load. On CUDA the consumption is wall-clock GPU throughput. "cores to
feed" = consumption / patches per core-second: how many loader cores one training process
(one CPU core, or the GPU) needs; below 1, one core is plenty. Data: OSCD Abu Dhabi (13 Sentinel-2 bands resampled to 10 m, 799 x 785 px; B10
dropped, as L2A has none) when ../shared/data is present, else the bundled Slovenia patch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table  # noqa: E402

import eossl  # noqa: E402
from eossl.data import stac  # noqa: E402
from eossl.data.normalize import band_stats  # noqa: E402
from eossl.data.patches import PatchSampler  # noqa: E402
from eossl.models.registry import build_method, default_encoder  # noqa: E402
from eossl.device import resolve_device  # noqa: E402

SIZE, BATCH = 64, 64
SHARED = Path(os.environ.get("EOSSL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def source_scene(quick: bool):
    """A real 12-band Sentinel-2 scene (band, y, x) with a CRS and a date."""
    city = SHARED / "oscd" / "abudhabi" / "imgs_1"
    if not quick and city.is_dir():
        scene, name = eossl.open_scene(sorted(city.glob("*_B??.tif"))), "OSCD abudhabi"
    else:
        scene = eossl.datasets.load_sample("slovenia_s2").image.isel(time=4)
        scene, name = scene.assign_coords(time=np.datetime64("2015-07-11T10:00:08")), "bundled Slovenia"
    scene = scene.drop_sel(band="B10").astype("uint16")
    return scene, f"{name}, {scene.sizes['band']} x {scene.sizes['y']} x {scene.sizes['x']}"


def write_sources(scene, folder: Path) -> dict:
    """The same pixels as a striped deflate GeoTIFF, a tiled COG and a local STAC catalog."""
    data = scene.values
    profile = dict(height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=data.dtype,
                   crs=scene.rio.crs, transform=scene.rio.transform(), compress="deflate")
    paths = {"GeoTIFF": folder / "scene.tif", "COG": folder / "scene_cog.tif"}
    for kind, path in paths.items():
        extra = {"driver": "GTiff"} if kind == "GeoTIFF" else {"driver": "COG", "blocksize": 256}
        with rasterio.open(path, "w", **profile, **extra) as ds:
            ds.write(data)
            for i, b in enumerate(scene["band"].values, 1):
                ds.set_band_description(i, str(b))
    when = str(scene["time"].values) if "time" in scene.coords else scene.attrs.get("time", "2016-01-01")
    when = [np.datetime64(str(when)[:19])]
    refl = (scene.astype("float32") / 10000).expand_dims(time=when)
    paths["STAC"] = stac.write_local_catalog(refl, folder / "stac", cloud=np.zeros((1, *data.shape[1:]), bool))
    return paths


def open_source(kind: str, path, lazy: bool = False):
    if kind == "STAC":
        items = stac.search((-180, -90, 180, 90), "1900-01-01", "2100-01-01", catalog=path)
        cube = stac.load(items, chunks={"x": 256, "y": 256} if lazy else None)
        return cube.isel(time=0)
    if kind == "memory":
        return path
    return eossl.open_scene(path)


def cpu_seconds(children: bool = False) -> float:
    """CPU time of this process (all its threads) and, optionally, of its live child processes."""
    total = time.process_time()
    if children:
        import psutil
        for child in psutil.Process().children(recursive=True):
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def sampler_rate(kind, path, stats, batches: int) -> tuple[float, float]:
    """(open + decode CPU seconds, steady patches per CPU second) of eossl's in-memory sampler."""
    t = cpu_seconds()
    scene = open_source(kind, path)
    sampler = PatchSampler(scene, SIZE, stats=stats)  # decodes the whole scene here
    opened = cpu_seconds() - t
    rng = np.random.default_rng(0)
    sampler.sample(BATCH, rng)
    t = cpu_seconds()
    for _ in range(batches):
        sampler.sample(BATCH, rng)
    return opened, batches * BATCH / (cpu_seconds() - t)


def window_rate(kind, path, batches: int) -> tuple[float, float]:
    """(open CPU seconds, patches per CPU second) when every window is read from the source on its own."""
    rng = np.random.default_rng(0)
    n = max(1, batches // 4) * BATCH  # slower path: fewer windows for the same timing quality
    t = cpu_seconds()
    if kind == "STAC":
        n = min(n, 2 * BATCH) if batches > 4 else 8  # a dask graph per window: seconds per batch
        cube = open_source(kind, path, lazy=True)
        h, w = cube.sizes["y"], cube.sizes["x"]
        opened = cpu_seconds() - t
        t = cpu_seconds()
        for _ in range(n):
            r, c = rng.integers(0, h - SIZE + 1), rng.integers(0, w - SIZE + 1)
            cube.isel(y=slice(r, r + SIZE), x=slice(c, c + SIZE)).values
        return opened, n / (cpu_seconds() - t)
    with rasterio.open(path) as ds:
        opened = cpu_seconds() - t
        t = cpu_seconds()
        for _ in range(n):
            r, c = rng.integers(0, ds.height - SIZE + 1), rng.integers(0, ds.width - SIZE + 1)
            ds.read(window=((r, r + SIZE), (c, c + SIZE)))
        return opened, n / (cpu_seconds() - t)


def loader_rate(scene, stats, batches: int, workers: int) -> float:
    """Patches per CPU second (main process + workers) out of the trainer's DataLoader path (``_BatchStream`` in worker processes)."""
    from types import SimpleNamespace

    from eossl.train.loop import _BatchStream
    trainer = SimpleNamespace(sampler=PatchSampler(scene, SIZE, stats=stats),
                              model=SimpleNamespace(input_kind="image"),
                              config=SimpleNamespace(batch_size=BATCH))
    loader = torch.utils.data.DataLoader(_BatchStream(trainer, 0), batch_size=None, num_workers=workers,
                                         prefetch_factor=4)
    it = iter(loader)
    next(it)  # workers started
    t = cpu_seconds(children=True)
    for _ in range(batches):
        next(it)
    rate = batches * BATCH / (cpu_seconds(children=True) - t)
    del it
    return rate


def consumption(spec: dict, bands: int, steps: int, device) -> float:
    """Images/s of a full MAE training step on ready tensors (no data loading)."""
    torch.manual_seed(0)
    model = build_method("mae", {**spec, "in_chans": bands, "img_size": SIZE}, {}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(BATCH, bands, SIZE, SIZE, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = model.training_step(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    clock = time.perf_counter if device.type == "cuda" else cpu_seconds
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = clock()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH / (clock() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=40, help="timed batches per source")
    ap.add_argument("--steps", type=int, default=8, help="timed training steps per model")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the loader row")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="bundled data, tiny models, few batches (smoke test)")
    args = ap.parse_args()
    eossl.progress.set_enabled(False)
    if args.quick:
        args.batches, args.steps, args.workers = 4, 1, 1
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # per-core rates (see the module docstring)
    scene, described = source_scene(args.quick)
    # statistics in the units each source delivers: DN from the GeoTIFFs, reflectance from STAC
    dn_stats = band_stats(scene.astype("float32"))
    refl_stats = band_stats(scene.astype("float32") / 10000)

    models = {"default MAE": default_encoder("mae"), "ViT-S/8": {"name": "vit_small", "patch_size": 8}}
    if args.quick:
        models = {"default MAE": {"name": "vit_tiny", "patch_size": 8, "depth": 1},
                  "ViT-S/8": {"name": "vit_tiny", "patch_size": 8, "depth": 2}}
    consumes = {name: consumption(spec, scene.sizes["band"], args.steps, device) for name, spec in models.items()}

    rows = []

    unit = "img/s per core" if device.type == "cpu" else f"img/s on {device.type}"

    def row(source, path_kind, opened, rate):
        r = {"source": source, "path": path_kind, "open + decode (CPU s)": round(opened, 2),
             "patches/s per core": rate}
        for name, c in consumes.items():
            r[f"cores to feed {name} ({c:.0f} {unit})"] = f"{c / rate:.2f}"
        rows.append(r)

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_sources(scene, Path(tmp))
        for kind in ("GeoTIFF", "COG", "STAC"):
            stats = refl_stats if kind == "STAC" else dn_stats
            opened, rate = sampler_rate(kind, paths[kind], stats, args.batches)
            row(f"local {kind}", "eossl sampler (decode once)", opened, rate)
            opened, rate = window_rate(kind, paths[kind], args.batches)
            row(f"local {kind}", "window reads (streaming)", opened, rate)
    memory = (scene.astype("float32") / 10000).load()
    opened, rate = sampler_rate("memory", memory, refl_stats, args.batches)
    row("in memory", "eossl sampler", opened, rate)
    rate = loader_rate(memory, refl_stats, args.batches, args.workers)
    row("in memory", f"trainer DataLoader, {args.workers} workers", 0.0, rate)

    print(f"Data loading vs training consumption, 64 px windows, batch {BATCH}, {described}; "
          f"rates per CPU core (CPU time); device {device.type}; machine: {machine()}\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
