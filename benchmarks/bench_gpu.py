"""GPU pretraining throughput and model FLOP utilisation (MFU) for ViT-S/16 MAE at 224 px, 13 bands.

    python benchmarks/bench_gpu.py [--batch 256] [--steps 30] [--compile] [--device cuda]

FLOPs of one training step (forward + backward) are counted by torch.utils.flop_counter on the real
model; MFU = counted FLOPs x steps per second / the accelerator's peak dense bf16 FLOP/s (H100 / H200
SXM: 989 TFLOP/s; override with --peak-tflops). Batches are random normal tensors already on the
device, so the number is the model's consumption rate (bench_pretrain.py measures the data path).
Runs on CPU too (a smoke test; the MFU column is then left empty).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table  # noqa: E402

from eossl.models.registry import build_method  # noqa: E402
from eossl.device import resolve_device  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--bands", type=int, default=13)
    ap.add_argument("--encoder", default="vit_small")
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    spec = {"name": args.encoder, "patch_size": args.patch_size, "in_chans": args.bands,
            "img_size": args.img_size}
    model = build_method("mae", spec, {"decoder_dim": 256, "decoder_depth": 4}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_fn = torch.compile(model.training_step) if args.compile else model.training_step
    x = torch.randn(args.batch, args.bands, args.img_size, args.img_size, device=device)
    bf16 = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = step_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:  # one eager step, counted
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model.training_step(x)
        loss.backward()
    flops = counter.get_total_flops()
    for _ in range(5):  # warm-up (and compilation)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t) / args.steps
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    row = {"model": f"MAE {args.encoder}/{args.patch_size}, {args.img_size} px, {args.bands} bands",
           "batch": args.batch, "compile": args.compile, "device": device.type,
           "images/s": args.batch / seconds, "GFLOP/step": flops / 1e9,
           "MFU %": f"{100 * flops / seconds / (peak * 1e12):.1f}" if peak else "-",
           "peak memory (GiB)": f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device.type == "cuda" else "-"}
    print(f"machine: {machine()}\n")
    print(markdown_table([row]))


if __name__ == "__main__":
    main()
