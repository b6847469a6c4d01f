"""Command line: ``eossl pretrain CONFIG.yaml`` (also under ``torchrun ... -m eossl``) and
``eossl methods``.

A config is a YAML file with the keyword arguments of :func:`eossl.pretrain` plus a ``data`` entry::

    data:                      # one source or a list of them, all with the same bands
      - sample: eurosat_ms     # a bundled sample (Datasets give their 'image')
      - chips: path/to/eurosat_ms      # a class-per-folder chip set (optional 'bands': [...])
      - scene: path/to/scene.tif       # a GeoTIFF / ENVI / folder of band files
      - stack: [date1.tif, date2.tif]  # several dates (optional 'times': [...])
    method: simclr
    encoder: resnet18          # or a dict: {name: vit_tiny, patch_size: 8, depth: 6}
    steps: 1000
    batch_size: 64
    out: runs/simclr
    method_config: {temperature: 0.2}

Unknown keys are refused with the list of known ones. The resolved config is written beside the
checkpoint as ``config.yaml``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m eossl pretrain CONFIG.yaml`` runs
DistributedDataParallel (batch_size is per process; contrastive negatives are gathered across
processes). On CPU the gloo backend is used, which is how CI tests it.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import yaml

from eossl.errors import EosslError

DATA_KINDS = ("sample", "chips", "scene", "stack")


def load_data(spec):
    """A ``data`` entry of a config -> what :func:`eossl.pretrain` takes."""
    import eossl
    if isinstance(spec, list):
        return [load_data(s) for s in spec]
    if not isinstance(spec, dict) or len(set(spec) & set(DATA_KINDS)) != 1:
        raise EosslError(f"each data entry needs exactly one of {DATA_KINDS}, got {spec!r}")
    extra = {k: v for k, v in spec.items() if k not in DATA_KINDS}
    if "sample" in spec:
        data = eossl.datasets.load_sample(spec["sample"], **extra)
        return data["image"] if hasattr(data, "data_vars") else data
    if "chips" in spec:
        return eossl.open_chips(spec["chips"], **extra)
    if "scene" in spec:
        return eossl.open_scene(spec["scene"], **extra)
    return eossl.open_stack(spec["stack"], **extra)


def _pretrain_keys() -> set[str]:
    from eossl.train.loop import pretrain
    params = inspect.signature(pretrain).parameters
    return {k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD} - {"data", "callbacks"}


def read_config(path) -> dict:
    """Read and check a pretraining config; unknown keys are an error naming the known ones."""
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise EosslError(f"{path}: cannot read the config ({err})") from None
    if not isinstance(config, dict):
        raise EosslError(f"{path}: a config is a mapping of keys to values")
    known = _pretrain_keys() | {"data", "method_config"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise EosslError(f"{path}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    if "data" not in config:
        raise EosslError(f"{path}: no 'data' entry (e.g. data: {{sample: eurosat_ms}})")
    return config


def cmd_pretrain(args) -> int:
    import eossl
    from eossl.train.checkpoint import atomic_write_bytes
    from eossl.train.distributed import is_main
    config = read_config(args.config)
    for key in ("out", "steps", "device"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    data = load_data(config["data"])
    kwargs = {k: v for k, v in config.items() if k not in ("data", "method_config")}
    kwargs.update(config.get("method_config") or {})
    run = eossl.pretrain(data, **kwargs)
    if is_main():
        out = Path(config.get("out", "runs/pretrain"))
        atomic_write_bytes(out / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
        last = run.history.iloc[-1] if len(run.history) else None
        print(f"checkpoint: {run.checkpoint_path}" + (f" (step {int(last['step'])}, loss {last['loss']:.4f})"
                                                      if last is not None else ""))
    return 0


def cmd_methods(args) -> int:
    import eossl
    for name, desc in eossl.methods().items():
        print(f"{name:20s} {desc}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="eossl", description="Self-supervised learning on satellite imagery")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pretrain an SSL encoder from a YAML config")
    p.add_argument("config", help="YAML config (see `python -m eossl pretrain --help`)")
    p.add_argument("--out", help="run folder (overrides the config)")
    p.add_argument("--steps", type=int, help="training steps (overrides the config)")
    p.add_argument("--device", help="auto, cpu, cuda, mps (overrides the config)")
    p.set_defaults(func=cmd_pretrain)
    m = sub.add_parser("methods", help="list the SSL methods")
    m.set_defaults(func=cmd_methods)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EosslError as err:
        print(f"eossl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
