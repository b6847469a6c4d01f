"""How much does a pair of tiles say about where the neighbour lies? (relative_position's ceiling)

relative_position (eossl/models/position.py) stays near the 1/8 chance level on real imagery at CPU
budgets. This script asks whether that is the method or the data: it cuts centre/neighbour tile pairs
exactly as the method does (same tile size, gap and jitter) from the west half of real scenes, fits a plain MLP on
the raw border pixels of the two tiles (the cue that survives a gap: a road, a field edge or a shore
that leaves one tile and enters the other) and scores it on pairs from the east half (so no pixel is
shared between training and scoring). If even that cannot tell the neighbours apart, an encoder at
a short budget will not either.

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
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.gaps = 900, [0, 2]
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


if __name__ == "__main__":
    main()
