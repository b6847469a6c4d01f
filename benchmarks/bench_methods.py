"""Does each SSL method learn something useful? Same short CPU budget for every method, then few-label
probes on labeled EuroSAT-MS chips, next to two floors: the same encoder with random weights, and raw
per-band mean/std features.

    python benchmarks/bench_methods.py [--seconds 120] [--methods mae simclr ...] [--repeats 10]
    python benchmarks/bench_methods.py --methods relative_position \
        --encoder '{"name": "vit_tiny", "patch_size": 4, "depth": 1, "embed_dim": 48, "num_heads": 2}'

Pretraining data (unlabeled, real Sentinel-2 L1C, 13 bands, DN):
- with ../shared/data: the 13 OSCD cities (two dates each, 10 m grid) and the bundled Slovenia stack;
  evaluation on the 199 EuroSAT-MS chips of ../shared/data/eurosat_ms, which pretraining never sees;
- without it: the bundled chips (as unlabeled images) and the Slovenia stack; evaluation on the same
  120 bundled chips, so this mode is transductive (the encoder has seen the test images, not their labels).
Nothing is tuned on the evaluation chips: every method runs with its defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table  # noqa: E402

import eossl  # noqa: E402
from eossl.data.bands import EUROSAT_MS_BANDS  # noqa: E402
from eossl.train.callbacks import StopAfter  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHOTS = (1, 5, 10)


def load_data(use_shared: bool):
    slovenia = eossl.datasets.load_sample("slovenia_s2").image
    if use_shared:
        stacks = []
        for city in sorted((SHARED / "oscd").iterdir()):
            if (city / "imgs_1").is_dir():
                stacks.append(eossl.open_stack([city / "imgs_1", city / "imgs_2"]))
        unlabeled = stacks + [slovenia]
        labeled = eossl.open_chips(SHARED / "eurosat_ms", bands=list(EUROSAT_MS_BANDS))
        where = f"OSCD ({len(stacks)} cities x 2 dates) + Slovenia stack; probes on {labeled.sizes['sample']} EuroSAT-MS chips (unseen)"
    else:
        labeled = eossl.datasets.load_sample("eurosat_ms")
        unlabeled = [labeled, slovenia]
        where = (f"bundled chips + Slovenia stack; probes on the same {labeled.sizes['sample']} chips "
                 "(transductive: images seen unlabeled)")
    return unlabeled, labeled, where


def probe_row(emb, metric="cosine") -> dict:
    table = eossl.probe(emb, shots=SHOTS, repeats=ARGS.repeats, metric=metric)
    row = {}
    for _, r in table.iterrows():
        row[f"{r['probe']}@{r['shots']}"] = f"{100 * r['accuracy']:.1f} ± {100 * r['accuracy_std']:.1f}"
    return row


def run_method(method: str, unlabeled, labeled, seconds: float, img_size: int, encoder=None) -> list[dict]:
    needs_stack = eossl.models.registry.method_class(method).input_kind == "series"
    data = [u for u in unlabeled if "time" in u.dims] if needs_stack else unlabeled
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run = eossl.pretrain(data, method=method, steps=100_000, warmup_steps=10, img_size=img_size,
                             batch_size=32, out=Path(tmp) / "run", callbacks=[StopAfter(seconds)],
                             checkpoint_every=10**9, encoder=encoder)
        spent = time.perf_counter() - t
        random_init = eossl.pretrain(data, method=method, steps=0, img_size=img_size, out=Path(tmp) / "random",
                                     encoder=encoder)
    spec = run.model.card["encoder"]
    custom = encoder is not None  # say which variant when it is not the method's default
    encoder = spec["name"] + (f"/{spec['patch_size']}, depth {spec.get('depth', '-')}" if custom else "")
    trained = {"method": method, "encoder": encoder, "steps": len(run.history), "seconds": round(spent),
               **probe_row(eossl.embed(run.model, labeled))}
    random = {"method": f"{method}: random weights", "encoder": encoder, "steps": 0, "seconds": 0,
              **probe_row(eossl.embed(random_init.model, labeled))}
    return [trained, random]


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120, help="pretraining budget per method")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--repeats", type=int, default=10, help="random label draws per probe")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--no-shared", action="store_true", help="use only the bundled sample")
    ap.add_argument("--encoder", type=json.loads, default=None,
                    help="encoder spec (JSON) for every method instead of each method's default")
    ARGS = ap.parse_args()
    eossl.progress.set_enabled(False)
    warnings.filterwarnings("ignore", category=UserWarning)
    use_shared = SHARED.is_dir() and not ARGS.no_shared
    unlabeled, labeled, where = load_data(use_shared)
    rows = [{"method": "raw band mean/std (no learning)", "encoder": "-", "steps": 0, "seconds": 0,
             **probe_row(eossl.band_statistics(labeled), metric="euclidean")}]
    for method in ARGS.methods or list(eossl.methods()):
        t = time.perf_counter()
        rows += run_method(method, unlabeled, labeled, ARGS.seconds, ARGS.img_size, ARGS.encoder)
        print(f"  {method}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    print(f"SSL methods, {ARGS.seconds:.0f} s of CPU pretraining each at {ARGS.img_size} px, batch 32; "
          f"{where}; accuracy % (mean ± std over {ARGS.repeats} draws of k labels per class); "
          f"machine: {machine()}\n")
    print(markdown_table(rows))
    return pd.DataFrame(rows)


ARGS = None

if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
