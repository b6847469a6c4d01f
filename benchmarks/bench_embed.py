"""Embedding throughput of ``eossl.embed`` against a bare forward pass of the same encoder.

    python benchmarks/bench_embed.py [--repeat 4] [--device auto]

"bare" feeds already-normalised tensors straight to ``encoder.feature_map`` in the same batch
size; the difference is eossl's data pipeline (band check, unit check, normalisation, tiling,
assembling the xarray result). Overhead % = (embed time - bare time) / bare time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table, peak_rss_mib  # noqa: E402

import eossl  # noqa: E402
from eossl.data.normalize import normalize_array  # noqa: E402
from eossl.device import resolve_device  # noqa: E402


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@torch.no_grad()
def bare(encoder, tiles: np.ndarray, batch: int, device):
    for start in range(0, len(tiles), batch):
        x = torch.from_numpy(tiles[start:start + batch]).to(device)
        encoder.feature_map(x).float().cpu()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    eossl.progress.set_enabled(False)
    device = resolve_device(args.device)

    chips = eossl.datasets.load_sample("eurosat_ms")
    chips = xr.concat([chips] * 4, "sample")  # 480 real chips (each 4x) for a steadier timing
    scene = eossl.datasets.load_sample("slovenia_s2").image
    big = xr.concat([xr.concat([scene.isel(time=t)] * 5, "x") for t in range(5)], "y")  # 505 x 500 px
    big = big.assign_coords(x=np.arange(big.sizes["x"]) * 10.0, y=-np.arange(big.sizes["y"]) * 10.0)

    with tempfile.TemporaryDirectory() as out:  # a default-config model, briefly trained
        run = eossl.pretrain(chips.isel(sample=slice(0, 120)), method="mae", steps=2, out=out, device=str(device))
    model, card = run.model, run.model.card
    mean, std = card["normalization"]["mean"], card["normalization"]["std"]
    encoder = model.encoder.to(device).eval()

    rows = []
    # Chips: embed() vs the encoder on the same normalised chips.
    tiles = normalize_array(chips.values, mean, std, 1)
    t_embed = best_of(lambda: eossl.embed(model, chips, batch_size=args.batch, device=str(device)), args.repeat)
    t_bare = best_of(lambda: bare(encoder, tiles, args.batch, device), args.repeat)
    rows.append({"input": f"{chips.sizes['sample']} chips, 13 x 64 x 64", "embed (img/s)": len(tiles) / t_embed,
                 "bare forward (img/s)": len(tiles) / t_bare, "overhead %": 100 * (t_embed - t_bare) / t_bare})
    # Scene: embed() tiles it into 64 px windows; bare gets the same windows ready-made.
    win = card["encoder"]["img_size"]
    p = model.encoder.patch_size
    H, W = (big.sizes["y"] // p) * p, (big.sizes["x"] // p) * p
    from eossl.data.patches import window_starts
    arr = normalize_array(big.values[:, :H, :W], mean, std, 0)
    windows = np.stack([arr[:, r:r + win, c:c + win] for r in window_starts(H, win) for c in window_starts(W, win)])
    t_embed = best_of(lambda: eossl.embed(model, big, batch_size=args.batch, device=str(device)), args.repeat)
    t_bare = best_of(lambda: bare(encoder, windows, args.batch, device), args.repeat)
    mpix = big.sizes["y"] * big.sizes["x"] / 1e6
    rows.append({"input": f"scene 13 x {big.sizes['y']} x {big.sizes['x']} ({len(windows)} windows)",
                 "embed (img/s)": len(windows) / t_embed, "bare forward (img/s)": len(windows) / t_bare,
                 "overhead %": 100 * (t_embed - t_bare) / t_bare})
    print(f"Embedding with the default MAE encoder (ViT-tiny/8, 6 blocks); machine: {machine()}; "
          f"scene: {mpix / t_embed:.2f} Mpx/s; peak RSS {peak_rss_mib():.0f} MiB\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
