"""Embedding throughput of ``eossl.embed`` and ``eossl.embed_to_zarr`` against a bare forward pass
of the same encoder over the same windows, and the memory each holds as the scene grows.

    python benchmarks/bench_embed.py [--rounds 9] [--device auto]

"bare" feeds already-normalised windows straight to ``encoder.feature_map`` in the same batch
size; the difference is eossl's data pipeline (band and unit checks, normalisation, cutting the
windows, placing the patches, building the georeferenced xarray; for ``embed_to_zarr`` also the
Zarr writes). The two run interleaved in one process (rounds alternate which goes first), and the
overhead is the median over rounds of each round's pair, ``embed / bare - 1``, with quartiles, so
a shared machine that slows down between rounds moves both sides of a ratio alike.

"outside the encoder %" is the time of the eossl call spent outside ``encoder.feature_map``
(timed inside the call), as a share of the bare forward: the pipeline's own cost, which a busy
machine blurs less than the difference of two timings.

"numpy peak" is the most memory numpy held at once during one call beyond what was allocated
before it (tracemalloc, which numpy reports to; torch's own buffers are per batch and not in it):
``embed`` holds the scene, ``embed_to_zarr`` one chunk.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table  # noqa: E402

import eossl  # noqa: E402
from eossl.data.normalize import normalize_array  # noqa: E402
from eossl.data.patches import window_starts  # noqa: E402
from eossl.device import resolve_device  # noqa: E402


@torch.no_grad()
def bare(encoder, tiles: np.ndarray, batch: int, device):
    for start in range(0, len(tiles), batch):
        x = torch.from_numpy(tiles[start:start + batch]).to(device)
        encoder.feature_map(x).float().cpu()


class ForwardClock:
    """Seconds spent in ``encoder.feature_map`` (wrapped on the instance) since the last reset."""

    def __init__(self, encoder):
        self.seconds, inner = 0.0, encoder.feature_map

        def timed(*a, **k):
            t = time.perf_counter()
            out = inner(*a, **k)
            self.seconds += time.perf_counter() - t
            return out
        encoder.feature_map = timed


def paired(ours, reference, rounds: int, clock: ForwardClock):
    """Medians over interleaved rounds: seconds of one call of each, per-round ratios ours /
    reference, and seconds of ``ours`` outside the encoder."""
    ours(), reference()  # warm-up
    t_ours, t_ref, outside, inside = [], [], [], []
    for r in range(rounds):
        for fn, times in ((ours, t_ours), (reference, t_ref))[:: 1 if r % 2 == 0 else -1]:
            clock.seconds = 0.0
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            if fn is ours:
                outside.append(times[-1] - clock.seconds)
                inside.append(clock.seconds)
    print(f"    encoder inside the call / bare, per round: {np.round(np.array(inside) / np.array(t_ref), 3)}",
          file=sys.stderr)
    return (float(np.median(t_ours)), float(np.median(t_ref)), np.array(t_ours) / np.array(t_ref),
            float(np.median(outside)))


def numpy_peak_mib(fn) -> float:
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def tiled(scene: xr.DataArray, times: int) -> xr.DataArray:
    """The bundled 101 x 100 px scene's dates tiled ``times`` x ``times`` (real pixels, repeated)."""
    rows = [xr.concat([scene.isel(time=(i + j) % scene.sizes["time"]) for j in range(times)], "x",
                      coords="minimal", compat="override") for i in range(times)]
    big = xr.concat(rows, "y", coords="minimal", compat="override")
    return big.assign_coords(x=np.arange(big.sizes["x"]) * 10.0 + 5, y=-np.arange(big.sizes["y"]) * 10.0 - 5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="*", default=[5, 10],
                    help="scene sizes as multiples of the bundled 101 x 100 px scene")
    args = ap.parse_args()
    eossl.progress.set_enabled(False)
    device = resolve_device(args.device)

    chips = eossl.datasets.load_sample("eurosat_ms")
    chips = xr.concat([chips] * 4, "sample")  # 480 real chips (each 4x) for a steadier timing
    scene = eossl.datasets.load_sample("slovenia_s2").image.rio.write_crs("EPSG:32633")

    with tempfile.TemporaryDirectory() as out:  # a default-config model, briefly trained
        run = eossl.pretrain(chips.isel(sample=slice(0, 120)), method="mae", steps=2, out=out, device=str(device))
    model, card = run.model, run.model.card
    mean, std = card["normalization"]["mean"], card["normalization"]["std"]
    encoder = model.encoder.to(device).eval()
    win, p = card["encoder"]["img_size"], model.encoder.patch_size

    clock = ForwardClock(encoder)

    def row(name, count, ours, ref, memory=None):
        t_ours, t_ref, ratios, outside = paired(ours, ref, args.rounds, clock)
        q1, q2, q3 = 100 * (np.percentile(ratios, [25, 50, 75]) - 1)
        out = {"input": name, "eossl (img/s)": count / t_ours, "bare forward (img/s)": count / t_ref,
               "overhead %": f"{q2:.1f} ({q1:.1f} to {q3:.1f})", "outside the encoder %": 100 * outside / t_ref}
        if memory is not None:
            out["numpy peak (MiB)"] = memory
        print(f"  {name}: {q2:.1f} %, outside the encoder {100 * outside / t_ref:.1f} %", file=sys.stderr)
        return out

    rows = []
    # Chips: embed() vs the encoder on the same normalised chips.
    tiles = normalize_array(chips.values, mean, std, 1)

    def embed_chips():
        return eossl.embed(model, chips, batch_size=args.batch, device=str(device))
    rows.append(row(f"embed: {chips.sizes['sample']} chips, 13 x 64 x 64", len(tiles), embed_chips,
                    lambda: bare(encoder, tiles, args.batch, device), numpy_peak_mib(embed_chips)))
    with tempfile.TemporaryDirectory() as tmp:
        for times in args.sizes:
            big = tiled(scene, times)
            H, W = (big.sizes["y"] // p) * p, (big.sizes["x"] // p) * p
            arr = normalize_array(big.values[:, :H, :W], mean, std, 0)
            windows = np.stack([arr[:, r:r + win, c:c + win]
                                for r in window_starts(H, win) for c in window_starts(W, win)])
            size = f"scene 13 x {big.sizes['y']} x {big.sizes['x']} ({len(windows)} windows)"

            def embed(big=big):
                return eossl.embed(model, big, batch_size=args.batch, device=str(device))

            def to_zarr(big=big, calls=iter(range(10**6))):  # a new store each call: a finished one is not redone
                return eossl.embed_to_zarr(model, big, f"{tmp}/s{big.sizes['x']}-{next(calls)}.zarr", chunk=512,
                                           batch_size=args.batch, device=str(device))

            def ref(windows=windows):
                return bare(encoder, windows, args.batch, device)
            rows.append(row(f"embed: {size}", len(windows), embed, ref, numpy_peak_mib(embed)))
            rows.append(row(f"embed_to_zarr, 512 px chunks: {size}", len(windows), to_zarr, ref,
                            numpy_peak_mib(to_zarr)))
            del arr, windows
    print(f"Embedding with the default MAE encoder (ViT-tiny/8, 6 blocks); machine: {machine()}; "
          f"{args.rounds} interleaved rounds\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
