"""MAE pretraining throughput (images/s) and peak memory, on the bundled real sample.

    python benchmarks/bench_pretrain.py [--steps 30] [--device auto]

Each configuration runs in its own process (peak memory is per process). The first 5 steps are
warm-up and not timed. Throughput counts training windows (images) per second of the full step:
sampling + normalising the batch, forward, backward and optimiser.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table, peak_rss_mib, run_isolated  # noqa: E402

CONFIGS = {
    # name: (encoder spec, img_size, batch size)
    "default: ViT-tiny/8, 6 blocks, 64 px": ({"name": "vit_tiny", "patch_size": 8, "depth": 6}, 64, 64),
    "ViT-small/8, 12 blocks, 64 px": ({"name": "vit_small", "patch_size": 8}, 64, 64),
    "ViT-tiny/16, 12 blocks, 224 px": ({"name": "vit_tiny", "patch_size": 16}, 224, 16),
}


def one(name: str, steps: int, device: str) -> dict:
    import torch
    import eossl
    from eossl.train.loop import PretrainConfig, Trainer
    spec, img, batch = CONFIGS[name]
    chips = eossl.datasets.load_sample("eurosat_ms")
    scene = eossl.datasets.load_sample("slovenia_s2").image
    data = [chips, scene] if img <= 64 else [scene.isel(time=0)]  # 224 px windows need a scene
    if img > 64:  # the bundled scene is 101 px: tile it (real pixels, repeated) to hold 224 px windows
        import xarray as xr
        big = xr.concat([xr.concat([scene.isel(time=t)] * 3, "x") for t in range(3)], "y")
        data = [big.assign_coords(x=range(big.sizes["x"]), y=range(big.sizes["y"]))]
    cfg = PretrainConfig(method="mae", encoder=spec, steps=steps + 5, batch_size=batch, img_size=img,
                         device=device, checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(data, cfg, out)
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        run = trainer.fit()
    timed = run.history.iloc[5:]
    seconds = (batch / timed["images_per_s"]).sum()
    row = {"config": name, "batch": batch, "device": trainer.device.type,
           "images/s": float(len(timed) * batch / seconds),
           "peak memory (MiB)": float(torch.cuda.max_memory_allocated() / 2**20) if trainer.device.type == "cuda"
           else peak_rss_mib(),
           "params (M)": float(sum(p.numel() for p in run.model.encoder.parameters()) / 1e6)}
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", help="run one config (used internally)")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), help="config names to run")
    args = ap.parse_args()
    if args.only:
        print(json.dumps(one(args.only, args.steps, args.device)))
        return
    rows = []
    for name in args.configs:
        t = time.perf_counter()
        rows.append(json.loads(run_isolated(__file__, ["--only", name, "--steps", str(args.steps),
                                                        "--device", args.device])))
        print(f"  {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print(f"MAE pretraining on the bundled sample; machine: {machine()}\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
