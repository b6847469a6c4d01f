"""What a click on the map explorer costs in the kernel: the similarity heat map redrawn, at 10^4,
10^5 and 10^6 patches (random 64-d embeddings on a 30 m grid: a heat map of noise, the PNG's worst
case). Columns: the search (``eossl.similar`` with a reused index), the first overlay path
(``render``: reproject + colour + PNG every time, what redraws did before the warp was kept) and
``update_overlay`` (the grid's reprojection worked out once, then a take, a palette and a PNG), at
full resolution and at MapExplorer's default heat-map budget (300,000 px).

The time to the picture on screen (websocket, browser decode) is measured in the browser test
(tests/ui/test_tour_browser.py::test_click_to_heat_map_at_a_million_patches).

    python benchmarks/bench_overlay.py            # 10^4, 10^5, 10^6
    python benchmarks/bench_overlay.py --quick    # 10^4 only
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import xarray as xr

import eossl
from eossl_widgets.overlay import array_overlay, render, update_overlay


def grid_embeddings(n: int, dim: int = 64, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    coords = {"y": 4_000_000 - 30 * (np.arange(n) + 0.5), "x": 500_000 + 30 * (np.arange(n) + 0.5)}
    return xr.DataArray(rng.standard_normal((n, n, dim), dtype="float32"), dims=("y", "x", "dim"),
                        coords=coords).rio.write_crs("EPSG:32633")


def ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench(side: int, rounds: int) -> dict:
    emb = grid_embeddings(side)
    index = eossl.SearchIndex(emb)
    queries = [(side // 3, side // 3), (side // 2, side // 4), (2 * side // 3, side // 2)]
    heat = eossl.similar(index, at=queries[0], crs="rowcol", k=12).heatmap
    row = {"patches": f"{side * side:,}",
           "similar (ms)": ms(lambda: eossl.similar(index, at=queries[1], crs="rowcol", k=12), rounds)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)                 # downsampling notices
        row["render every time (ms)"] = ms(lambda: render(heat, cmap="inferno"), rounds)
        for label, budget in (("full", 2_000_000), ("300k px", 300_000)):
            layer = array_overlay(heat, "similarity", cmap="inferno", max_pixels=budget)
            update_overlay(layer, heat, cmap="inferno", max_pixels=budget)   # the first redraw makes the warp
            row[f"update_overlay, {label} (ms)"] = ms(
                lambda: update_overlay(layer, heat, cmap="inferno", max_pixels=budget), rounds)
            row[f"PNG, {label} (MB)"] = len(layer.url) / 1e6
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^4 patches only")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sides = [100] if args.quick else [100, 316, 1000]
    rows = [bench(side, args.rounds) for side in sides]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(v if isinstance(v, str) else f"{v:.2f}" if "MB" in k else f"{v:.0f}"
                                for k, v in r.items()) + " |")


if __name__ == "__main__":
    main()
