"""Change detection: does an encoder's embedding see change better than the raw spectral
change vector? AUC and best F1 per labeled change pair, for three scores on the same patch grid:

- CVA: ``eossl.change_vector`` (per-date standardised band means per patch, length of the difference);
- random weights: ``eossl.change`` on embeddings from the encoder before any training;
- MAE: ``eossl.change`` on embeddings from the same encoder after a short MAE pretraining on the
  pair itself (both dates, no labels), and the same without per-date standardisation.

    python benchmarks/bench_change.py [--steps 200] [--quick] [--no-shared]

Data: the bundled Taizhou pair (Landsat 7, 2000/2003); with ../shared/data also the Nanjing pair
(Landsat 5, 2000/2002) and the 7 labeled OSCD cities (Sentinel-2 L1C, 13 bands at 10 m; label
2 = change). Landsat pairs use 8 px (240 m) patches and 64 px windows; OSCD uses 4 px (40 m)
patches and 32 px windows, because its changes (new buildings, roads) are small: at 8 px only
13-279 patches per city are mostly changed. A patch is labeled by the majority of its labeled
pixels (``eossl.analysis.change.patch_labels``). Fixed seeds; nothing is tuned on the labels.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table  # noqa: E402

import eossl  # noqa: E402
from eossl.analysis.change import patch_labels  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OSCD_LABELED = ("abudhabi", "aguasclaras", "bercy", "bordeaux", "nantes", "rennes", "mumbai")


def _bmp_labels(folder: Path, like) -> "xr.DataArray":  # noqa: F821
    """change.bmp / unchanged.bmp (255 = labeled) -> 0 unknown, 1 unchanged, 2 changed."""
    from PIL import Image
    changed = np.array(Image.open(folder / "change.bmp").convert("L")) == 255
    unchanged = np.array(Image.open(folder / "unchanged.bmp").convert("L")) == 255
    labels = np.zeros(changed.shape, "uint8")
    labels[unchanged], labels[changed] = 1, 2
    return like.isel(time=0, band=0, drop=True).copy(data=labels)


def datasets(use_shared: bool, quick: bool):
    """(name, stack (time, band, y, x), pixel labels (y, x), patch size, window) per change pair."""
    taizhou = eossl.datasets.load_sample("taizhou_change")
    yield "Taizhou (bundled), Landsat 7", taizhou.image, taizhou.change, 8, 64
    if not use_shared or quick:
        return
    folder = SHARED / "landsat_cd" / "Nanjing"
    if folder.is_dir():
        stack = eossl.open_stack(sorted(folder.glob("*.hdr")), times=["2000", "2002"])
        yield "Nanjing, Landsat 5", stack, _bmp_labels(folder, stack), 8, 64
    for city in OSCD_LABELED:
        folder = SHARED / "oscd" / city
        if not (folder / "cm.tif").is_file():
            continue
        stack = eossl.open_stack([folder / "imgs_1", folder / "imgs_2"])
        labels = eossl.open_scene(folder / "cm.tif").isel(band=0, drop=True)
        # cm.tif has no geotransform: it is on the date-1 10 m grid, which open_stack keeps
        # (cropped to the common extent when date 2 is a few pixels smaller, as in abudhabi).
        labels = labels.isel(y=slice(0, stack.sizes["y"]), x=slice(0, stack.sizes["x"])).values
        yield f"OSCD {city}, Sentinel-2", stack, stack.isel(time=0, band=0, drop=True).copy(data=labels), 4, 32


def scores(stack, labels, patch: int, window: int, steps: int, encoder: dict, tmp: Path) -> dict:
    row = {}
    first, second = stack.isel(time=0), stack.isel(time=1)
    truth = patch_labels(labels, patch)
    row["patches (changed)"] = f"{int((truth >= 0).sum())} ({int((truth == 1).sum())})"

    def put(name, score):
        result = eossl.evaluate_change(score, labels, patch)
        row[f"{name} AUC"] = f"{result['auc']:.3f}"
        row[f"{name} F1"] = f"{result['f1']:.3f}"

    put("CVA", eossl.change_vector(first, second, patch))
    spec = {**encoder, "patch_size": patch}
    runs = {}
    for name, n in (("random", 0), ("MAE", steps)):
        t = time.perf_counter()
        runs[name] = eossl.pretrain(stack, method="mae", steps=n, batch_size=32, img_size=window, encoder=spec,
                                    out=tmp / f"{name}_{patch}_{id(stack)}", seed=0, checkpoint_every=10**9)
        if n:
            row["pretrain s"] = round(time.perf_counter() - t)
        emb = eossl.embed(runs[name].model, stack)  # (time, y, x, dim)
        put(name, eossl.change(emb.isel(time=0), emb.isel(time=1)))
        if n:
            put("MAE raw cos", eossl.change(emb.isel(time=0), emb.isel(time=1), standardize=False))
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="MAE pretraining steps per pair (batch 32)")
    ap.add_argument("--depth", type=int, default=4, help="ViT-tiny blocks")
    ap.add_argument("--quick", action="store_true", help="smoke test: Taizhou only, 2 steps, a 1-block encoder")
    ap.add_argument("--no-shared", action="store_true", help="use only the bundled sample")
    args = ap.parse_args()
    eossl.progress.set_enabled(False)
    warnings.filterwarnings("ignore", category=UserWarning)
    steps, depth = (2, 1) if args.quick else (args.steps, args.depth)
    encoder = {"name": "vit_tiny", "depth": depth}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, stack, labels, patch, window in datasets(SHARED.is_dir() and not args.no_shared, args.quick):
            t = time.perf_counter()
            rows.append({"pair": name, "patch px": patch, **scores(stack, labels, patch, window, steps, encoder,
                                                                     Path(tmp))})
            print(f"  {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    cols = ["pair", "patch px", "patches (changed)", "CVA AUC", "CVA F1", "random AUC", "random F1",
            "MAE AUC", "MAE F1", "MAE raw cos AUC", "MAE raw cos F1", "pretrain s"]
    rows = [{c: r.get(c, "") for c in cols} for r in rows]
    mean = {c: f"{np.mean([float(r[c]) for r in rows]):.3f}" if ("AUC" in c or "F1" in c) else "" for c in cols}
    mean["pair"] = f"mean of {len(rows)}"
    print(f"Change detection: AUC and best F1 on labeled patches; MAE = ViT-tiny ({depth} blocks) pretrained "
          f"{steps} steps (batch 32, seed 0) on both dates of each pair, no labels; random = the same encoder "
          f"untrained; embeddings and CVA standardised per date; machine: {machine()}\n")
    print(markdown_table(rows + ([mean] if len(rows) > 1 else [])))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
