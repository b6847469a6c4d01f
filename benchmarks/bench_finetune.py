"""Does SSL pretraining help fine-tuning with few labels? For each task and label budget, the same
head is trained on an MAE-pretrained encoder and on the same encoder with random weights, over
repeated random label draws (mean ± std).

    python benchmarks/bench_finetune.py [--seconds 120] [--repeats 3] [--quick] [--no-shared]

- pretraining: a short MAE (``--seconds`` of CPU per sensor, defaults of ``eossl.pretrain``):
  Sentinel-2 on the OSCD cities (two dates each) + the Slovenia stack (bundled chips + Slovenia stack
  without ../shared/data); Landsat on the Taizhou pair (+ the Nanjing pair from ../shared/data),
  labels never used. The random encoder is the same architecture and normalisation, 0 steps.
- classification: EuroSAT-MS chips (199 from ../shared/data, unseen in pretraining; else the 120
  bundled ones), ``shots`` labeled chips per class, linear probe (frozen encoder); accuracy on the rest.
- segmentation: Slovenia land cover (forest, grassland, shrubland, artificial; cultivated land has
  only 11 pixels), ``shots`` labeled pixels per class, frozen encoder + light patch decoder; mean IoU
  of the tiled whole-scene prediction on every other labeled pixel of the 5 dates.
- change: Taizhou Landsat 2000/2003, ``shots`` labeled pixels per class (unchanged / changed),
  frozen encoder + siamese patch decoder; F1 of "changed" on every other labeled pixel.
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
from eossl.data.bands import EUROSAT_MS_BANDS  # noqa: E402
from eossl.train.callbacks import StopAfter  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
QUICK_ENCODER = {"name": "vit_tiny", "patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 2}


def pretrain_pair(data, seconds: float, steps: int, encoder, tmp: Path, name: str):
    """(MAE-pretrained model, same architecture with random weights and the same normalisation)."""
    t = time.perf_counter()
    kwargs = {"encoder": encoder} if encoder else {}
    run = eossl.pretrain(data, method="mae", steps=steps, warmup_steps=min(10, steps), batch_size=32,
                         out=tmp / name, callbacks=[StopAfter(seconds)], checkpoint_every=10**9, **kwargs)
    spent = time.perf_counter() - t
    random = eossl.pretrain(data, method="mae", steps=0, out=tmp / f"{name}_random", **kwargs)
    return run.model, random.model, len(run.history), spent


def score(run, task: str) -> float:
    m = run.metrics
    if task == "classification":
        return float(m.loc["overall", "recall"])  # accuracy
    if task == "segmentation":
        return float(m.loc["macro", "iou"])
    return float(m.loc["changed", "f1"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120, help="MAE pretraining budget per sensor (CPU s)")
    ap.add_argument("--repeats", type=int, default=3, help="random label draws per budget")
    ap.add_argument("--steps", type=int, default=100, help="fine-tuning steps (head)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny encoder, one budget, 1 draw")
    ap.add_argument("--no-shared", action="store_true", help="use only the bundled sample")
    args = ap.parse_args()
    eossl.progress.set_enabled(False)
    warnings.filterwarnings("ignore", category=UserWarning)
    use_shared = SHARED.is_dir() and not args.no_shared and not args.quick
    encoder = QUICK_ENCODER if args.quick else None
    pre_steps = 3 if args.quick else 100_000
    repeats = 1 if args.quick else args.repeats
    steps = 5 if args.quick else args.steps

    slovenia = eossl.datasets.load_sample("slovenia_s2")
    taizhou = eossl.datasets.load_sample("taizhou_change")
    if use_shared:
        s2 = [eossl.open_stack([c / "imgs_1", c / "imgs_2"]) for c in sorted((SHARED / "oscd").iterdir())
              if (c / "imgs_1").is_dir()] + [slovenia.image]
        chips = eossl.open_chips(SHARED / "eurosat_ms", bands=list(EUROSAT_MS_BANDS))
        nanjing = SHARED / "landsat_cd" / "Nanjing"
        landsat = [taizhou.image]
        try:
            hdrs = sorted(nanjing.glob("*.hdr"))
            if len(hdrs) == 2:
                landsat.append(eossl.open_stack(hdrs).assign_coords(band=taizhou.band.values))
        except Exception as err:  # noqa: BLE001 - optional extra data; say so and go on
            print(f"(Nanjing pair not used: {err})", file=sys.stderr)
        where = (f"S2 MAE on {len(s2) - 1} OSCD cities + Slovenia; Landsat MAE on {len(landsat)} pair(s); "
                 f"classification on {chips.sizes['sample']} EuroSAT-MS chips unseen in pretraining")
    else:
        chips = eossl.datasets.load_sample("eurosat_ms")
        s2, landsat = [chips, slovenia.image], [taizhou.image]
        where = "bundled sample only (classification chips also seen unlabeled in pretraining)"

    budgets = {"classification": [5] if args.quick else [1, 5, 10],
               "segmentation": [20] if args.quick else [5, 20, 100],
               "change": [50] if args.quick else [10, 100, 1000]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s2_ssl, s2_rand, s2_steps, s2_s = pretrain_pair(s2, args.seconds, pre_steps, encoder, tmp, "s2")
        ls_ssl, ls_rand, ls_steps, ls_s = pretrain_pair(landsat, args.seconds, pre_steps, encoder, tmp, "ls")
        jobs = {
            "classification": (chips, None, {}, s2_ssl, s2_rand, "accuracy", "chips / class"),
            "segmentation": (slovenia, "lulc", {"classes": [2, 3, 4, 8]}, s2_ssl, s2_rand, "mIoU", "px / class"),
            "change": (taizhou, "change", {}, ls_ssl, ls_rand, "F1 changed", "px / class"),
        }
        t0 = time.perf_counter()
        for task, (data, labels, extra, ssl, rand, metric, unit) in jobs.items():
            for shots in budgets[task]:
                got = {"ssl": [], "random": []}
                for seed in range(repeats):
                    for key, model in (("ssl", ssl), ("random", rand)):
                        run = eossl.finetune(model, data, labels, task=task, shots=shots, steps=steps,
                                             seed=seed, **extra)
                        got[key].append(score(run, task))
                a, b = np.array(got["ssl"]), np.array(got["random"])
                rows.append({"task": task, "labels": f"{shots} {unit}", "metric": metric,
                             "MAE-pretrained": f"{100 * a.mean():.1f} ± {100 * a.std():.1f}",
                             "random init": f"{100 * b.mean():.1f} ± {100 * b.std():.1f}",
                             "difference": f"{100 * (a.mean() - b.mean()):+.1f}"})
        spent = time.perf_counter() - t0
    print(markdown_table(rows))
    print()
    spec = s2_ssl.card["encoder"]
    arch = f"{spec['name']}/{spec['patch_size']}, depth {spec.get('depth', 12)}"
    print(f"Pretraining: MAE {arch} for {s2_steps} steps ({s2_s:.0f} s) "
          f"on Sentinel-2, {ls_steps} steps ({ls_s:.0f} s) on Landsat; {where}. Fine-tuning: frozen "
          f"encoder + head, {steps} steps, {repeats} label draws per budget ({spent:.0f} s in all).")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
