"""MAE pretraining throughput (images/s) and peak memory, on the bundled real sample; and
eossl's MAE and spectral MAE steps against plain models written from timm's ``PatchEmbed`` and
``Block``.

    python benchmarks/bench_pretrain.py [--steps 30] [--device auto]
    python benchmarks/bench_pretrain.py --vs-reference [--rounds 12] [--methods mae spectral_mae]

``--vs-reference`` times one training step (forward, backward, gradient clipping, AdamW) of each
method file against its reference at the same configuration (64 px, 13 bands, patch 8, width
192, depth 6, 3 heads, decoder 128 x 2, batch 64), on the same batch, interleaved in one process
(blocks of steps alternate, so a shared or throttled machine slows both alike), and prints the
ratio: ``eossl.models.mae.MAE`` against :func:`plain_mae` (facebookresearch/mae's layout), and
``eossl.models.spectral.SpectralMAE`` with SatMAE's four Sentinel-2 band groups against
:func:`plain_spectral_mae` (SatMAE's group-channel layout). Both references compute the same
loss as the method file (tested with shared weights and mask). Only the step is timed: the
trainer's sampling is the same for any method and is timed by the throughput table.

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


def argsort_masking(x, mask_ratio):
    """Random masking as facebookresearch/mae writes it, for both references: x (B, N, D) ->
    kept tokens (B, keep, D), mask (B, N) with 1 = hidden, ids_restore (B, N)."""
    import torch
    B, N, D = x.shape
    keep = int(round(N * (1 - mask_ratio)))
    ids_shuffle = torch.argsort(torch.rand(B, N), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, D))
    mask = torch.ones(B, N)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def plain_mae(in_chans=13, img_size=64, patch=8, dim=192, depth=6, heads=3, dec_dim=128, dec_depth=2,
              dec_heads=4, mask_ratio=0.75):
    """The reference: a MAE as facebookresearch/mae writes it (class token, fixed sin-cos
    positions, random masking by argsort, norm-pix loss on the hidden patches), from timm's
    ``PatchEmbed`` and ``Block``. Written here, by us, as the yardstick for the method file."""
    from functools import partial

    import torch
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import Block
    from torch import nn
    from eossl.models.mae import patchify, sincos_pos_embed

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = PatchEmbed(img_size, patch, in_chans, dim)
            h = img_size // patch
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            zero = torch.zeros(1, dim)
            self.register_buffer("pos_embed", torch.cat([zero, sincos_pos_embed(dim, h, h)])[None])
            vit_norm = partial(nn.LayerNorm, eps=1e-6)  # as timm's VisionTransformer builds its blocks
            self.blocks = nn.ModuleList([Block(dim, heads, 4.0, qkv_bias=True, norm_layer=vit_norm)
                                         for _ in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.decoder_embed = nn.Linear(dim, dec_dim)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
            self.register_buffer("decoder_pos_embed",
                                 torch.cat([torch.zeros(1, dec_dim), sincos_pos_embed(dec_dim, h, h)])[None])
            self.decoder_blocks = nn.ModuleList([Block(dec_dim, dec_heads, 4.0)
                                                 for _ in range(dec_depth)])
            self.decoder_norm = nn.LayerNorm(dec_dim)
            self.decoder_pred = nn.Linear(dec_dim, patch * patch * in_chans)

        def forward(self, imgs):
            x = self.patch_embed(imgs) + self.pos_embed[:, 1:]           # (B, L, D)
            B, L, D = x.shape
            x, mask, ids_restore = argsort_masking(x, mask_ratio)        # (B, keep, D)
            keep = x.shape[1]
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
            x = torch.cat([cls, x], dim=1)
            for blk in self.blocks:
                x = blk(x)
            x = self.decoder_embed(self.norm(x))                        # (B, 1 + keep, E)
            E = x.shape[-1]
            tokens = torch.cat([x[:, 1:], self.mask_token.expand(B, L - keep, -1)], dim=1)
            tokens = torch.gather(tokens, 1, ids_restore[:, :, None].expand(-1, -1, E))
            x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
            for blk in self.decoder_blocks:
                x = blk(x)
            pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]       # (B, L, p*p*C)
            target = patchify(imgs, patch)
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
            loss = ((pred - target) ** 2).mean(-1)
            return (loss * mask).sum() / mask.sum()

    return Plain()


def plain_spectral_mae(band_groups, img_size=64, patch=8, dim=192, depth=6, heads=3, dec_dim=128,
                       dec_depth=2, dec_heads=4, mask_ratio=0.75):
    """The reference for ``spectral_mae``: SatMAE's group-channel MAE (Cong et al. 2022) as its
    code writes it, from timm's ``PatchEmbed`` and ``Block``: one patch embedding per band group,
    fixed sin-cos positions plus a learned code per group, random masking by argsort over all
    (group x patch) tokens, one pixel head per group, norm-pix loss on the hidden tokens. Written
    here, by us, as the yardstick for models/spectral.py."""
    from functools import partial

    import torch
    import torch.nn.functional as F
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import Block
    from torch import nn
    from eossl.models.mae import norm_pix_target, sincos_pos_embed

    groups = [list(g) for g in band_groups]
    G, h = len(groups), img_size // patch

    class PlainGroupChannel(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.ModuleList(PatchEmbed(img_size, patch, len(g), dim) for g in groups)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.register_buffer("pos_embed", sincos_pos_embed(dim, h, h)[None])            # (1, L, D)
            self.channel_embed = nn.Parameter(torch.zeros(1, G, dim))
            vit_norm = partial(nn.LayerNorm, eps=1e-6)
            self.blocks = nn.ModuleList([Block(dim, heads, 4.0, qkv_bias=True, norm_layer=vit_norm)
                                         for _ in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.decoder_embed = nn.Linear(dim, dec_dim)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
            self.register_buffer("decoder_pos_embed", sincos_pos_embed(dec_dim, h, h)[None])  # (1, L, E)
            self.decoder_channel_embed = nn.Parameter(torch.zeros(1, G, dec_dim))
            self.decoder_blocks = nn.ModuleList([Block(dec_dim, dec_heads, 4.0) for _ in range(dec_depth)])
            self.decoder_norm = nn.LayerNorm(dec_dim)
            self.decoder_pred = nn.ModuleList(nn.Linear(dec_dim, len(g) * patch * patch) for g in groups)

        def forward(self, imgs):
            x = torch.stack([embed(imgs[:, g]) for embed, g in zip(self.patch_embed, groups)], dim=1)  # (B, G, L, D)
            x = (x + self.pos_embed[:, None] + self.channel_embed[:, :, None]).flatten(1, 2)   # (B, N, D)
            B, N, D = x.shape
            L = N // G
            x, mask, ids_restore = argsort_masking(x, mask_ratio)        # (B, keep, D)
            keep = x.shape[1]
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
            for blk in self.blocks:
                x = blk(x)
            x = self.decoder_embed(self.norm(x))                                            # (B, 1 + keep, E)
            E = x.shape[-1]
            tokens = torch.cat([x[:, 1:], self.mask_token.expand(B, N - keep, -1)], dim=1)
            tokens = torch.gather(tokens, 1, ids_restore[:, :, None].expand(-1, -1, E))     # (B, N, E)
            tokens = tokens.view(B, G, L, E) + self.decoder_pos_embed[:, None] + self.decoder_channel_embed[:, :, None]
            x = torch.cat([x[:, :1], tokens.flatten(1, 2)], dim=1)
            for blk in self.decoder_blocks:
                x = blk(x)
            x = self.decoder_norm(x)[:, 1:].view(B, G, L, E)
            losses = []
            for g, (group, head) in enumerate(zip(groups, self.decoder_pred)):
                target = F.unfold(imgs[:, group], kernel_size=patch, stride=patch).transpose(1, 2)  # (B, L, c*p*p)
                losses.append(((head(x[:, g]) - norm_pix_target(target)) ** 2).mean(-1))  # (B, L)
            loss = torch.stack(losses, dim=1)                                               # (B, G, L)
            return (loss * mask.view(B, G, L)).sum() / mask.sum()

    return PlainGroupChannel()


# The --vs-reference pairs: eossl's method file against the plain model written above, at one
# configuration (64 px, 13 bands, patch 8, width 192, depth 6, 3 heads, decoder 128 x 2).
SPEC = dict(name="vit_tiny", in_chans=13, img_size=64, patch_size=8, depth=6, embed_dim=192, num_heads=3)
DECODER = dict(decoder_dim=128, decoder_depth=2, decoder_heads=4)
# Sentinel-2 groups of SatMAE in EuroSAT's band order (B01..B12, B8A): what spectral_mae picks
EUROSAT_GROUPS = [[1, 2, 3, 7], [4, 5, 6, 12], [10, 11], [0, 8, 9]]
PAIRS = {
    "mae": ("eossl MAE (models/mae.py)", "plain timm MAE (reference)", {}, lambda: plain_mae()),
    "spectral_mae": ("eossl spectral MAE (models/spectral.py)", "plain SatMAE group MAE (reference)",
                     {"band_groups": EUROSAT_GROUPS}, lambda: plain_spectral_mae(EUROSAT_GROUPS)),
}


def vs_reference(rounds: int, steps_per_round: int = 3, batch: int = 64,
                 methods=tuple(PAIRS)) -> list[dict]:
    """ms per training step, each eossl method vs its plain reference, interleaved; median over rounds."""
    import numpy as np
    import torch
    from eossl.models.registry import build_method
    rows = []
    for method in methods:
        ours_name, ref_name, config, reference = PAIRS[method]
        torch.manual_seed(0)
        ours, plain = build_method(method, SPEC, {**DECODER, **config}), reference()
        imgs = torch.randn(batch, 13, 64, 64)
        steps = {}
        for name, model, fn in ((ours_name, ours, lambda m: m.training_step(imgs)[0]),
                                (ref_name, plain, lambda m: m(imgs))):
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

            def step(model=model, fn=fn, opt=opt):
                loss = fn(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            steps[name] = step
        times = {name: [] for name in steps}
        for name, step in steps.items():  # warm-up
            for _ in range(3):
                step()
        for r in range(rounds):
            for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
                t = time.perf_counter()
                for _ in range(steps_per_round):
                    steps[name]()
                times[name].append((time.perf_counter() - t) / steps_per_round)
        ms = {name: 1000 * float(np.median(t)) for name, t in times.items()}
        for name, v in ms.items():
            # speed from each round's pair (run back to back), so a machine that drifts between
            # rounds moves both sides of a ratio; median and quartiles over the rounds
            ratios = np.array(times[ref_name]) / np.array(times[name])
            q1, q2, q3 = np.percentile(ratios, [25, 50, 75])
            speed = "1.00x" if name == ref_name else f"{q2:.2f}x ({q1:.2f}-{q3:.2f})"
            ahead = "" if name == ref_name else f"{int((ratios > 1).sum())}/{len(ratios)}"
            rows.append({"model": name, "ms / step": v, "images/s": batch * 1000 / v,
                         "speed vs reference": speed, "rounds faster": ahead})
    return rows


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
    ap.add_argument("--vs-reference", action="store_true",
                    help="eossl's MAE and spectral MAE steps vs plain timm-based references")
    ap.add_argument("--methods", nargs="*", default=list(PAIRS), help="methods of the --vs-reference timing")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--ref-batch", type=int, default=64, help="batch of the --vs-reference timing")
    ap.add_argument("--only", help="run one config (used internally)")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), help="config names to run")
    args = ap.parse_args()
    if args.vs_reference:
        print(f"Training step, eossl vs plain timm-based references (64 px, 13 bands, patch 8, width 192, "
              f"depth 6, decoder 128 x 2, batch {args.ref_batch}), interleaved; machine: {machine()}\n")
        print(markdown_table(vs_reference(args.rounds, batch=args.ref_batch, methods=args.methods)))
        return
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
