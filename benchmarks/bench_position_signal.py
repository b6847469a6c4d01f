"""How much does a pair of tiles say about where the neighbour lies, and how much does relative_position learn?

Two tables, both trained on the west half of real scenes and scored on the east half (no pixel is
shared between training and scoring; chance is 1/8):

1. The signal: centre/neighbour tile pairs cut exactly as the method does (same tile size, gap and
   jitter), a plain MLP on the raw border pixels of the two tiles (the cue that survives a gap: a road,
   a field edge or a shore that leaves one tile and enters the other). If even that cannot tell the
   neighbours apart, an encoder at a short budget will not either.
2. The method: ``eossl.pretrain(method="relative_position")`` on the west half of the Taizhou scene
   with a one-block ViT, scored with ``RelativePosition.accuracy`` on the east half, for patch sizes
   4 and 8, the classifier on the tiles' feature grids or on pooled vectors (``grid=1``), with the
   default 2 px gap and with touching tiles; mean ± std over seeds.

    python benchmarks/bench_position_signal.py            # bundled Taizhou (Landsat 7) + Slovenia (S2)
    python benchmarks/bench_position_signal.py --quick    # small, seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, markdown_table  # noqa: E402

import eossl  # noqa: E402
from eossl.models.backbones import Encoder  # noqa: E402
from eossl.models.position import RelativePosition  # noqa: E402


def scenes() -> dict[str, np.ndarray]:
    """Bundled real scenes, each (C, H, W) standardised per band."""
    taizhou = eossl.datasets.load_sample("taizhou_change").image.isel(time=0).values
    slovenia = eossl.datasets.load_sample("slovenia_s2").image.isel(time=2).values
    out = {}
    for name, img in (("taizhou L7 30 m", taizhou), ("slovenia S2 10 m", slovenia)):
        img = img.astype("float32")
        out[name] = (img - img.mean((1, 2), keepdims=True)) / (img.std((1, 2), keepdims=True) + 1e-6)
    return out


def tile_pairs(img: np.ndarray, n: int, window: int, gap: int, rng: np.random.Generator):
    """n random windows -> centre tiles, neighbour tiles (n, C, t, t) and labels (n,), cut by the method."""
    ys = rng.integers(0, img.shape[1] - window + 1, n)
    xs = rng.integers(0, img.shape[2] - window + 1, n)
    windows = torch.from_numpy(np.stack([img[:, y:y + window, x:x + window] for y, x in zip(ys, xs)]))
    cutter = RelativePosition(Encoder("vit_tiny", in_chans=img.shape[0], img_size=window, patch_size=4,
                                      depth=1, embed_dim=32, num_heads=2), min_gap=gap)
    return cutter.cut_tiles(windows)


def borders(tiles: torch.Tensor) -> np.ndarray:
    """(n, C, t, t) -> (n, C * 4t): the outermost row/column on each side."""
    sides = [tiles[..., 0, :], tiles[..., -1, :], tiles[..., :, 0], tiles[..., :, -1]]
    return torch.cat(sides, dim=-1).flatten(1).numpy()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12000, help="tile pairs per setting (1/6 held out)")
    parser.add_argument("--window", type=int, default=48, help="window side in pixels, as img_size")
    parser.add_argument("--gaps", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--steps", type=int, default=1500, help="pretraining steps per method run")
    parser.add_argument("--seeds", type=int, default=3, help="method runs per setting")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.gaps, args.steps, args.seeds = 900, [0, 2], 20, 1
    torch.manual_seed(0)
    rows = []
    for name, img in scenes().items():
        for gap in args.gaps:
            rng = np.random.default_rng(0)
            half = img.shape[2] // 2  # train on the west half, score on the east half: no shared pixels
            data = {}
            for part, pixels, n in (("train", img[:, :, :half], args.pairs * 5 // 6),
                                    ("test", img[:, :, half:], args.pairs // 6)):
                centre, neighbour, labels = tile_pairs(pixels, n, args.window, gap, rng)
                data[part] = (np.concatenate([borders(centre), borders(neighbour)], axis=1),  # (n, 2 * C * 4t)
                              labels.numpy())
            mlp = MLPClassifier((256,), max_iter=60 if args.quick else 200, random_state=0)
            mlp.fit(*data["train"])
            accuracy = float((mlp.predict(data["test"][0]) == data["test"][1]).mean())
            rows.append({"scene": name, "window": args.window, "tile px": centre.shape[-1], "gap px": gap,
                         "pairs": args.pairs, "MLP on border pixels, held-out half acc %": 100 * accuracy,
                         "chance %": 12.5})
    print(machine())
    print(markdown_table(rows))
    print()
    print(markdown_table(method_rows(args)))


#: (label, patch size, classifier grid, min_gap) for table 2
METHOD_SETTINGS = (("patch 4, tile feature grid", 4, 4, 2), ("patch 4, pooled vectors (grid=1)", 4, 1, 2),
                   ("patch 8, tile feature grid", 8, 4, 2), ("patch 4, tile feature grid", 4, 4, 0),
                   ("patch 4, pooled vectors (grid=1)", 4, 1, 0))


def method_rows(args) -> list[dict]:
    """relative_position itself: pretrain on west Taizhou, accuracy on east Taizhou."""
    import tempfile
    import time

    scene = eossl.datasets.load_sample("taizhou_change").image           # (time, band, 400, 400)
    west, east = scene.isel(x=slice(0, 200)), scene.isel(x=slice(200, None))
    settings = METHOD_SETTINGS[::3] if args.quick else METHOD_SETTINGS
    rows = []
    for label, patch, grid, gap in settings:
        scores, seconds = [], []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                run = eossl.pretrain(west, method="relative_position", steps=args.steps, batch_size=64,
                                     img_size=args.window, seed=seed, min_gap=gap, grid=grid, out=tmp,
                                     encoder=dict(name="vit_tiny", patch_size=patch, depth=1, embed_dim=48,
                                                  num_heads=2), checkpoint_every=10**9, tensorboard=False)
                seconds.append(time.perf_counter() - t)
                scores.append(100 * run.model.accuracy(east, n=3000))
        rows.append({"encoder": f"ViT 1 block, {label}", "tile px": run.model.tile_size(args.window, args.window),
                     "grid": run.model.grid, "gap px": gap, "steps": args.steps, "seeds": args.seeds,
                     "s per run": round(float(np.mean(seconds))),
                     "west -> east acc %": f"{np.mean(scores):.1f} ± {np.std(scores):.1f}", "chance %": 12.5})
    return rows


if __name__ == "__main__":
    main()
