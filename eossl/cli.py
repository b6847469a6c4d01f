"""Command line: ``eossl pretrain CONFIG.yaml`` (also under ``torchrun ... -m eossl``),
``eossl embed MODEL DATA --out emb.nc``, ``eossl evaluate EMB_OR_MODEL LABELLED_DATA`` and
``eossl methods``.

A config is a YAML file with the keyword arguments of :func:`eossl.pretrain` plus a ``data`` entry::

    data:                      # one source or a list of them, all with the same bands
      - sample: eurosat_ms     # a bundled sample (Datasets give their 'image')
      - chips: path/to/eurosat_ms      # a class-per-folder chip set (optional 'bands': [...])
      - scene: path/to/scene.tif       # a GeoTIFF / ENVI / folder of band files
      - stack: [date1.tif, date2.tif]  # several dates (optional 'times': [...])
    method: simclr             # leave method and encoder out for eossl's default recipe
    encoder: resnet18          # or a dict: {name: vit_tiny, patch_size: 8, depth: 6}
    steps: 1000                # or minutes: 10, a wall-clock budget (not both)
    batch_size: 64
    out: runs/simclr
    method_config: {temperature: 0.2}

Unknown keys are refused with the list of known ones. The fully resolved config (every argument
of :func:`eossl.pretrain` with the value the run used, the data entry as given) is written to
``out/config.yaml`` before the first step, beside the checkpoint; ``eossl pretrain out/config.yaml``
reruns (or resumes) the same run. Logs: ``out/history.csv`` and, when tensorboard is installed,
``out/tensorboard``.

``eossl embed MODEL DATA --out emb.nc`` (or ``.zarr``) embeds chips, a scene or a bundled sample with
an eossl checkpoint or a community state dict (``--encoder/--bands/--normalization`` describe a
foreign file). A scene file into ``.zarr`` goes through :func:`eossl.embed_to_zarr`: chunk by
chunk, resumable after an interruption. ``eossl evaluate`` prints the few-label probe table of :func:`eossl.probe` for saved
embeddings or a model, on labelled chips. Outputs are written to a temporary name and renamed, so
an interrupted command never leaves a half-written file where a good one was.

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

from eossl.errors import DataError, EosslError

DATA_KINDS = ("sample", "chips", "scene", "stack")
FLOAT_KEYS = {"lr", "min_lr", "weight_decay", "grad_clip", "minutes", "max_invalid"}


def load_data(spec):
    """A ``data`` entry of a config -> what :func:`eossl.pretrain` takes."""
    import eossl
    if isinstance(spec, list):
        return [load_data(s) for s in spec]
    if not isinstance(spec, dict) or len(set(spec) & set(DATA_KINDS)) != 1:
        raise EosslError(f"each data entry needs exactly one of {DATA_KINDS}, got {spec!r}")
    extra = {k: v for k, v in spec.items() if k not in DATA_KINDS}
    if "sample" in spec:
        from eossl.data.samples import SAMPLES
        if spec["sample"] not in SAMPLES:
            raise DataError(f"data: no bundled sample {spec['sample']!r}; available: {sorted(SAMPLES)}")
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
    for key in FLOAT_KEYS & set(config):
        # YAML 1.1 reads 1e-3 (no dot) as text; a number is what was meant. Other text (lr: fast)
        # stays text and pretrain refuses it, naming the key.
        if isinstance(config[key], str):
            try:
                config[key] = float(config[key])
            except ValueError:
                pass
    return config


def resolved_config(trainer_config, data_spec, out) -> dict:
    """A config file's content with every value a run used: ``eossl pretrain`` on it reruns the run."""
    import dataclasses
    cfg = dataclasses.asdict(trainer_config)
    known = _pretrain_keys()
    resolved = {"data": data_spec, "method": cfg.pop("method"), "encoder": cfg.pop("encoder"),
                "method_config": cfg.pop("method_config"), "out": str(out)}
    resolved.update({k: v for k, v in cfg.items() if k in known})
    return resolved


def _resolved_config_writer(data_spec, out):
    from eossl.outputs import atomic_write_bytes
    from eossl.distributed import is_main
    from eossl.train.callbacks import Callback

    class WriteResolvedConfig(Callback):
        """Writes ``out/config.yaml`` when training starts, so it sits beside every checkpoint."""

        def on_train_start(self, trainer):
            if is_main():
                text = yaml.safe_dump(resolved_config(trainer.config, data_spec, out), sort_keys=False)
                atomic_write_bytes(Path(out) / "config.yaml", text.encode())

    return WriteResolvedConfig()


def cmd_pretrain(args) -> int:
    import eossl
    from eossl.distributed import is_main
    config = read_config(args.config)
    for key in ("out", "steps", "minutes", "device"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    # a budget on the command line replaces the config's budget of the other kind
    if args.minutes is not None:
        config.pop("steps", None)
    elif args.steps is not None:
        config.pop("minutes", None)
    data = load_data(config["data"])
    kwargs = {k: v for k, v in config.items() if k not in ("data", "method_config")}
    kwargs.update(config.get("method_config") or {})
    out = Path(config.get("out", inspect.signature(eossl.pretrain).parameters["out"].default))
    run = eossl.pretrain(data, callbacks=[_resolved_config_writer(config["data"], out)], **kwargs)
    if is_main():
        last = run.history.iloc[-1] if len(run.history) else None
        print(f"checkpoint: {run.checkpoint_path}" + (f" (step {int(last['step'])}, loss {last['loss']:.4f})"
                                                      if last is not None else ""))
    return 0


def open_data(arg: str):
    """DATA on the command line: a bundled sample name (or ``sample:NAME``), a chip folder
    (``<folder>/<class>/<chip>.tif``), or a scene (a raster file, or a folder of band files)."""
    import eossl
    from eossl.data.samples import SAMPLES
    name = arg[len("sample:"):] if arg.startswith("sample:") else arg
    path = Path(arg)
    if not path.exists():
        if name in SAMPLES:
            data = eossl.datasets.load_sample(name)
            return data["image"] if hasattr(data, "data_vars") else data
        raise DataError(f"{arg}: no such file or folder (nor a bundled sample: {sorted(SAMPLES)})")
    if _is_chip_folder(path):
        return eossl.open_chips(path)
    return eossl.open_scene(path)


def save_embeddings_any(emb, path, overwrite: bool = False) -> Path:
    """Write embeddings to ``.nc`` (netCDF) or ``.zarr`` atomically (temp + rename), under the one
    write rule of :mod:`eossl.outputs` (the same check :func:`eossl.save_embeddings` makes)."""
    from eossl.analysis.io import encoded_attrs, save_embeddings
    from eossl.outputs import atomic_write_dir, claim_output
    path = Path(path)
    if path.suffix == ".nc":
        return save_embeddings(emb, path, overwrite=overwrite)
    if path.suffix != ".zarr":
        raise EosslError(f"--out {path}: give a .nc or .zarr path")
    claim_output(path, overwrite=overwrite, kind="dir", what="embeddings store", option="--overwrite")
    out = emb.copy()
    out.attrs = encoded_attrs(emb)  # the same encoding as save_embeddings: open_embeddings reads both
    import importlib.util
    if importlib.util.find_spec("zarr") is None:
        raise EosslError(f"--out {path}: writing Zarr needs the zarr package: pip install "
                         "'eossl[distributed]' (or write .nc)")
    ds = out.to_dataset(name=emb.name or "embedding")
    # Zarr format 2: read by zarr 2 and 3 and other libraries, and it specifies text coordinates
    # (chip labels, file names), which format 3 does not yet
    atomic_write_dir(path, lambda tmp: ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True))
    return path


def _atomic_write_text(path: Path, text: str) -> None:
    from eossl.outputs import atomic_write_bytes
    atomic_write_bytes(Path(path), text.encode())


def _load_model(args):
    import eossl
    bands = args.bands.split(",") if getattr(args, "bands", None) else None
    return eossl.load_model(args.model, encoder=getattr(args, "encoder", None), bands=bands,
                            normalization=getattr(args, "normalization", None),
                            on_mismatch=getattr(args, "on_mismatch", None))


def cmd_embed(args) -> int:
    import eossl
    from eossl.outputs import claim_output
    out = Path(args.out)
    if out.suffix not in (".nc", ".zarr"):
        raise EosslError(f"--out {out}: give a .nc or .zarr path")
    source = Path(args.data)
    scene_to_zarr = out.suffix == ".zarr" and source.exists() and not _is_chip_folder(source)
    # before any work: is --out a place eossl may write? (embed_to_zarr checks its own store)
    if not scene_to_zarr:
        claim_output(out, overwrite=args.overwrite, kind="dir" if out.suffix == ".zarr" else "file",
                     what="embeddings " + ("store" if out.suffix == ".zarr" else "file"), option="--overwrite")
    model = _load_model(args)
    if scene_to_zarr:
        # A scene file into Zarr: chunk by chunk, never the whole scene in memory; resumable, and a
        # store of another model or scene is refused unless --overwrite
        emb = eossl.embed_to_zarr(model, str(source), out, chunk=args.chunk, batch_size=args.batch_size,
                                  device=args.device, window=args.window, overwrite=args.overwrite,
                                  on_mismatch=args.on_mismatch)
    else:
        data = open_data(args.data)
        emb = eossl.embed(model, data, batch_size=args.batch_size, window=args.window, device=args.device)
        save_embeddings_any(emb, out, overwrite=args.overwrite)
    print(f"embeddings {dict(emb.sizes)} -> {out}")
    return 0


def _is_chip_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() for p in path.iterdir())


def _is_embeddings(path: Path) -> bool:
    return path.suffix in (".nc", ".zarr")


def _labels_for(emb, arg: str):
    """Labels for saved embeddings: a CSV with a 'label' column (and optionally 'file'), or
    labelled chips (their 'label' coordinate; matched by 'file' when both have it)."""
    import numpy as np
    import pandas as pd
    path = Path(arg)
    if path.suffix == ".csv":
        if not path.is_file():
            raise DataError(f"{arg}: no such file")
        table = pd.read_csv(path)
        if "label" not in table:
            raise DataError(f"{arg}: needs a 'label' column (columns: {list(table.columns)})")
        if "file" in table and "file" in emb.coords:
            table = table.set_index("file")
            missing = [f for f in emb["file"].values if f not in table.index]
            if missing:
                raise DataError(f"{arg}: no label for {len(missing)} embeddings (e.g. {missing[:2]})")
            return table.loc[emb["file"].values, "label"].to_numpy()
        return table["label"].to_numpy()
    chips = open_data(arg)
    if "label" not in chips.coords:
        raise DataError(f"{arg}: has no labels ('label' coordinate); give labelled chips or a CSV")
    if "file" in chips.coords and "file" in emb.coords:
        index = {f: i for i, f in enumerate(chips["file"].values)}
        missing = [f for f in emb["file"].values if f not in index]
        if missing:
            raise DataError(f"{arg}: {len(missing)} embedded files are not among these chips (e.g. {missing[:2]})")
        return chips["label"].values[[index[f] for f in emb["file"].values]]
    return np.asarray(chips["label"].values)


def cmd_evaluate(args) -> int:
    import eossl
    from eossl.outputs import claim_output
    if args.out:  # before any work: may the table be written there?
        claim_output(args.out, overwrite=args.overwrite, kind="file", what="probe table", option="--overwrite")
    source = Path(args.model)
    if _is_embeddings(source):
        if not source.exists():
            raise DataError(f"{source}: no such embeddings file")
        emb = eossl.open_embeddings(source)
        labels = _labels_for(emb, args.labels)
        what = f"embeddings {source.name}"
    else:
        model = _load_model(args)
        chips = open_data(args.labels)
        if "sample" not in chips.dims or "label" not in chips.coords:
            raise DataError(f"{args.labels}: evaluate needs labelled chips (sample, band, y, x) with a "
                            "'label' coordinate, e.g. a class-per-folder chip set")
        emb = eossl.embed(model, chips, batch_size=args.batch_size, device=args.device)
        labels = chips["label"].values
        what = f"model {source}"
    table = eossl.probe(emb, labels, shots=args.shots, repeats=args.repeats, k=args.k, seed=args.seed)
    print(f"few-label probes on {what}: {emb.sizes[emb.dims[0]]} samples, "
          f"{len(set(labels.tolist()))} classes, {args.repeats} draws per row")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        _atomic_write_text(Path(args.out), table.to_csv(index=False))
        print(f"table -> {args.out}")
    return 0


def _whole_number(minimum: int):
    """argparse type: a whole number of at least ``minimum`` (batch sizes, chunks, steps, ...)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}" if minimum
                                             else f"must be 0 or more, got {value}")
        return value
    return parse


_positive_int, _non_negative_int = _whole_number(1), _whole_number(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _model_options(p):
    g = p.add_argument_group("foreign checkpoints (torchgeo / timm / SSL4EO-S12 state dicts)")
    g.add_argument("--encoder", help="architecture, e.g. resnet50 or vit_small_patch16_224 (default: "
                                     "read from the weights)")
    g.add_argument("--bands", help="comma-separated band names of the input channels, in order")
    g.add_argument("--normalization", "--normalisation", dest="normalization", help="'ssl4eo' (DN / 10000) when the file does not say")
    g.add_argument("--on-mismatch", dest="on_mismatch", choices=["convert", "warn", "error"],
                   help="data in other units than the model's (DN vs reflectance)")


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
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_non_negative_int, help="training steps (overrides the config's budget)")
    budget.add_argument("--minutes", type=_positive_float,
                        help="wall-clock budget in minutes (overrides the config's budget)")
    p.add_argument("--device", help="auto, cpu, cuda, mps (overrides the config)")
    p.set_defaults(func=cmd_pretrain)
    e = sub.add_parser("embed", help="embed chips or a scene with a checkpoint",
                       description="Embed DATA (a chip folder, a scene file or folder, or a bundled sample "
                                   "name) with MODEL (an eossl run / checkpoint or a foreign state dict).")
    e.add_argument("model", help="eossl run folder / checkpoint, or a .safetensors / .pt / .pth file")
    e.add_argument("data", help="chip folder, scene file / band folder, or a bundled sample name")
    e.add_argument("--out", required=True, help="output: .nc (netCDF) or .zarr")
    e.add_argument("--window", type=_positive_int, help="scene tile size in pixels (default: the model's)")
    e.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=64)
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    e.add_argument("--chunk", type=_positive_int, default=2048,
                   help="scene -> .zarr: output chunk in pixels (memory per chunk; eossl.embed_to_zarr)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an --out file eossl did not write, or a store written for another model "
                        "or scene (a folder holding other files is never deleted)")
    _model_options(e)
    e.set_defaults(func=cmd_embed)
    v = sub.add_parser("evaluate", help="few-label kNN / logistic probes of embeddings or a model",
                       description="Print the few-label probe table (eossl.probe) for saved embeddings "
                                   "(.nc / .zarr) or a model, on labelled chips.")
    v.add_argument("model", metavar="EMB_OR_MODEL", help="embeddings (.nc / .zarr) or a model")
    v.add_argument("labels", metavar="LABELLED_DATA",
                   help="labelled chips (folder or sample name), or a CSV with a 'label' column for embeddings")
    v.add_argument("--shots", type=_positive_int, nargs="+", default=[1, 5, 10], help="labels per class")
    v.add_argument("--repeats", type=_positive_int, default=10, help="random draws per row")
    v.add_argument("--k", type=_positive_int, default=5, help="kNN neighbours")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", help="also write the table as CSV")
    v.add_argument("--overwrite", action="store_true", help="replace an --out file eossl did not write")
    v.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=64)
    v.add_argument("--device", default="auto")
    _model_options(v)
    v.set_defaults(func=cmd_evaluate)
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
