"""The pretraining loop: ``eossl.pretrain(data, method="mae", ...)``.

One loop for every method: it draws normalised windows from the data, calls the method's
``training_step``, steps AdamW on a warmup + cosine schedule, logs a history row per step, calls
callbacks (so a notebook can plot live), and writes an atomic checkpoint every
``checkpoint_every`` steps and at the end. Calling it again on the same ``out`` folder resumes the
run from its last checkpoint (a killed run loses at most the steps since that checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from eossl import validate as check
from eossl.card import READOUTS, Card, training_card
from eossl.checkpoint import CHECKPOINT_FILE, atomic_write_bytes, read_checkpoint, save_checkpoint
from eossl.data.normalize import stats_of
from eossl.data.patches import PatchSampler, align_bands
from eossl.device import resolve_device
from eossl.distributed import init_from_env, is_main
from eossl.distributed import rank as dist_rank
from eossl.errors import CheckpointError, DataError, ParameterError
from eossl.models.registry import build_method, default_encoder, method_class
from eossl.progress import enabled as progress_enabled
from eossl.progress import progress
from eossl.train.callbacks import Callback, FunctionCallback, TensorBoardLogger, tensorboard_available
from eossl.train.recipes import resolve_recipe

__all__ = ["PretrainConfig", "PretrainRun", "Trainer", "pretrain", "Callback", "resolve_device",
           "training_arrays", "make_card"]


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (saved in the card and as ``config.json``)."""

    method: str = "mae"
    encoder: dict = field(default_factory=dict)  # Encoder spec; defaults per method
    method_config: dict = field(default_factory=dict)  # e.g. mask_ratio for the MAE
    steps: int | None = 200
    # A wall-clock budget instead of a step count: the cosine runs over the budget's time, the run
    # stops (and checkpoints) when it is spent. Exactly one of steps / minutes is set.
    minutes: float | None = None
    batch_size: int = 64
    # AdamW with a higher rate than the MAE paper's 1.5e-4 * B/256: tiny encoders on short CPU
    # runs need to move fast; warmup keeps the first steps of a ViT stable.
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 20
    weight_decay: float = 0.05
    grad_clip: float = 1.0   # ViTs on few images spike early; clipping keeps one bad batch harmless
    img_size: int = 64       # training window in pixels (EuroSAT chips are 64 px)
    max_invalid: float = 0.0  # fraction of NaN / nodata pixels allowed in a window
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0     # >0: batches are cut in worker processes (pinned memory on CUDA)
    compile: bool = False    # torch.compile the training step: several times faster on GPUs
    tensorboard: bool | None = None  # log to out/tensorboard; None: when tensorboard is installed
    balance: str = "pixels"  # how sources are mixed: "pixels" (by size) or "sources" (equally)
    readout: str = "mean"    # what embed returns for a chip: "mean" or "mean_std" of the tokens
    recipe: str | None = None  # the recipe these settings came from (None: chosen by hand)

    def __post_init__(self):
        # Every value is checked here, where configs, the CLI and pretrain() all pass, so a bad one
        # is refused with its name before any data is read (not as a numpy / torch error at step 1).
        if (self.steps is None) == (self.minutes is None):
            raise ParameterError("give either steps or minutes (a step count or a wall-clock budget), "
                                 f"not {'both' if self.steps is not None else 'neither'}")
        if self.steps is not None:
            self.steps = check.integer("steps", self.steps, minimum=0)  # 0: random weights, saved
        if self.minutes is not None:
            self.minutes = check.number("minutes", self.minutes, above=0)
        self.batch_size = check.integer("batch_size", self.batch_size, minimum=1)
        self.lr = check.number("lr", self.lr, above=0)
        self.min_lr = check.number("min_lr", self.min_lr, minimum=0)
        self.warmup_steps = check.integer("warmup_steps", self.warmup_steps, minimum=0)
        self.weight_decay = check.number("weight_decay", self.weight_decay, minimum=0)
        self.grad_clip = check.number("grad_clip", self.grad_clip, minimum=0)
        self.img_size = check.integer("img_size", self.img_size, minimum=2)
        self.max_invalid = check.number("max_invalid", self.max_invalid, minimum=0, below=1)
        self.checkpoint_every = check.integer("checkpoint_every", self.checkpoint_every, minimum=1)
        self.seed = check.integer("seed", self.seed, minimum=0)
        self.num_workers = check.integer("num_workers", self.num_workers, minimum=0)
        check.device(self.device)
        check.choice("balance", self.balance, ("pixels", "sources"))
        check.choice("readout", self.readout, READOUTS)
        if not isinstance(self.method, str):
            raise ParameterError(f"method must be a method name (see eossl.methods()), not {self.method!r}")
        if not isinstance(self.method_config, dict):
            raise ParameterError(f"method_config must be a mapping of method settings, not {self.method_config!r}")

    def lr_at(self, step: int, progress: float | None = None) -> float:
        """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr``. ``progress`` in
        [0, 1] is the share of the budget spent (a time budget's elapsed / budget); without it,
        the share of ``steps`` done."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if progress is None:
            progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class PretrainRun:
    """What ``pretrain`` gives back."""

    model: torch.nn.Module
    history: pd.DataFrame
    checkpoint_path: Path
    config: PretrainConfig
    stopped_early: bool = False

    @property
    def encoder(self):
        return self.model.encoder


def check_out_folder(out) -> Path:
    """``out`` as a run folder path: refused when it is an existing file (a run is a folder)."""
    if not isinstance(out, (str, Path)) or not str(out):
        raise ParameterError(f"out must be a folder path for the run, not {out!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out={str(out)!r} is an existing file, not a folder; a run writes a folder "
                             "(checkpoint, history, config). Choose another path (the file was left as it is)")
    return out


def training_arrays(data) -> list[xr.DataArray]:
    """Accept a DataArray, a Dataset (its ``image`` variable) or a list of them."""
    items = list(data) if isinstance(data, (list, tuple)) else [data]
    if not items:
        raise DataError("no data to train on (an empty list); give a DataArray or a list of them "
                        "(from eossl.open_scene, open_stack, open_chips or load_sample)")
    out = []
    for item in items:
        if isinstance(item, xr.Dataset):
            if "image" not in item:
                raise DataError(f"a Dataset needs an 'image' variable to train on; it has {list(item.data_vars)}")
            item = item["image"]
        if not isinstance(item, xr.DataArray) or "band" not in item.dims:
            raise DataError(f"cannot train on {type(item).__name__}; give a DataArray with a 'band' "
                            "dimension (from eossl.open_scene, open_stack, open_chips or load_sample)")
        out.append(item)
    return align_bands(out)


def make_card(config: PretrainConfig, model, arrays: list[xr.DataArray], stats: xr.Dataset) -> Card:
    """The checkpoint card of a run with ``config`` (see :func:`eossl.card.training_card`)."""
    return training_card(method=config.method, encoder=model.encoder, arrays=arrays, stats=stats,
                         method_config=model.config, readout=config.readout, recipe=config.recipe,
                         config=dataclasses.asdict(config))


class _TrainingStep(torch.nn.Module):
    """Makes ``training_step`` the forward pass, so DDP's gradient hooks and torch.compile see it."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.training_step(batch)


class _BatchStream(torch.utils.data.IterableDataset):
    """Batches drawn in a DataLoader worker, with a random stream per worker."""

    def __init__(self, trainer, seed: int):
        self.sampler, self.seed = trainer.sampler, seed
        self.kind = trainer.model.input_kind
        self.batch_size = trainer.config.batch_size
        self.length = getattr(trainer.model, "series_length", 2)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            if self.kind == "series":
                yield torch.from_numpy(self.sampler.sample_series(self.batch_size, rng, self.length))
            elif self.kind == "pair":
                yield torch.from_numpy(self.sampler.sample_pairs(self.batch_size, rng))
            else:
                yield torch.from_numpy(self.sampler.sample(self.batch_size, rng))


class Trainer:
    """Runs one pretraining; :func:`pretrain` is the friendly front door."""

    def __init__(self, data, config: PretrainConfig, out, callbacks=(), resume: bool = True):
        self.config, self.out = config, check_out_folder(out)
        self.callbacks = [c if isinstance(c, Callback) else FunctionCallback(c) for c in callbacks]
        self.stop_requested = False
        self.device = resolve_device(config.device)
        self.distributed = init_from_env(self.device.type)
        if config.tensorboard is None:
            config.tensorboard = tensorboard_available()
        if config.tensorboard and is_main():  # one writer: the main process
            self.callbacks.append(TensorBoardLogger())
        if self.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        arrays = training_arrays(data)
        cfg = config
        method_cls = method_class(cfg.method)
        if hasattr(method_cls, "check_data"):
            method_cls.check_data(arrays, cfg.method_config)
        if not cfg.encoder:
            cfg.encoder = default_encoder(cfg.method)
        cfg.encoder = {**cfg.encoder, "in_chans": arrays[0].sizes["band"], "img_size": cfg.img_size}
        patch = cfg.encoder.get("patch_size", 16)
        if cfg.encoder["name"].startswith("vit") and cfg.img_size % patch:
            raise DataError(f"patch size {patch} does not divide the {cfg.img_size} px training window; "
                            f"pick img_size as a multiple of {patch}")

        self.resumed = None
        if (self.out / "checkpoint" / CHECKPOINT_FILE).exists():
            if not resume:
                raise CheckpointError(f"{self.out} already holds a checkpoint; pass resume=True to "
                                      "continue it, or choose another out folder (nothing was overwritten)")
            self.resumed = read_checkpoint(self.out / "checkpoint", optimizer=True)
            self._check_compatible(self.resumed["card"], arrays)

        if self.resumed:  # the run's own statistics, so normalisation never drifts between sessions
            norm = self.resumed["card"]["normalization"]
            stats = xr.Dataset({"mean": ("band", norm["mean"]), "std": ("band", norm["std"])},
                               coords={"band": arrays[0]["band"].values})
        else:
            stats = stats_of(arrays)
        self.stats = stats
        # methods that cut their own views (place contrast) sample a larger window
        window = (method_cls.window_size(cfg.img_size, cfg.method_config)
                  if hasattr(method_cls, "window_size") else cfg.img_size)
        self.sampler = PatchSampler(arrays, window, stats=stats, max_invalid=cfg.max_invalid,
                                    balance=cfg.balance)
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        self.model = build_method(cfg.method, cfg.encoder, cfg.method_config).to(self.device)
        if self.model.input_kind == "series":  # fail now, with the method's needs, not at step 1
            self.sampler.sample_series(1, np.random.default_rng(0), self.model.series_length)
        if self.device.type == "cuda" and not self.model.encoder.is_vit:
            self.model = self.model.to(memory_format=torch.channels_last)  # faster CNN kernels
        cfg.method_config = dict(self.model.config)
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=cfg.lr, betas=(0.9, 0.95))
        self.card = make_card(cfg, self.model, arrays, stats)
        self.rng = np.random.default_rng(cfg.seed + dist_rank())  # each process its own windows
        self.step_module = _TrainingStep(self.model)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=getattr(self.model, "ddp_find_unused_parameters", False))
        if cfg.compile:
            self.step_module = torch.compile(self.step_module)
        self.step, self.history = 0, []
        self.train_seconds = 0.0  # time spent in training steps, over every session of this run
        if self.resumed:
            self._restore(self.resumed)

    def _param_groups(self):
        """No weight decay on biases, norms and position/class tokens (as timm and MAE do)."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "token" in name or "pos_embed" in name else decay).append(p)
        return [{"params": decay, "weight_decay": self.config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    def _check_compatible(self, card, arrays):
        names = arrays[0]["band"].values.tolist()
        theirs = [b["name"] for b in card["bands"]]
        problems = []
        if card["method"] != self.config.method:
            problems.append(f"method {card['method']!r} (asked: {self.config.method!r})")
        if theirs != names:
            problems.append(f"bands {theirs} (data: {names})")
        if card["encoder"] != self.config.encoder:
            problems.append(f"encoder {card['encoder']} (asked: {self.config.encoder})")
        if problems:
            raise CheckpointError(f"{self.out} holds a checkpoint of another run: " + "; ".join(problems)
                                  + ". Choose another out folder; nothing was overwritten.")

    def _restore(self, ckpt):
        self.model.load_state_dict(ckpt["model"])
        if ckpt.get("optim"):
            state = ckpt["optim"]
            groups = self.optimizer.state_dict()["param_groups"]
            for g, saved in zip(groups, state["param_groups"]):
                g.update({k: v for k, v in saved.items() if k != "params"})
            self.optimizer.load_state_dict({"state": {k: {n: t.to(self.device) if n != "step" else t
                                                          for n, t in v.items()}
                                                      for k, v in state["state"].items()},
                                            "param_groups": groups})
        trainer = ckpt["trainer"] or {}
        self.step = int(trainer.get("step", 0))
        self.train_seconds = float(trainer.get("train_seconds", 0.0))
        self.history = list(trainer.get("history", []))
        if "numpy_rng" in trainer:
            self.rng.bit_generator.state = trainer["numpy_rng"]
        if ckpt.get("rng") is not None:
            torch.set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------ the loop

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        if self.model.input_kind == "series":
            return self.sampler.sample_series(self.config.batch_size, rng, self.model.series_length)
        if self.model.input_kind == "pair":
            return self.sampler.sample_pairs(self.config.batch_size, rng)
        return self.sampler.sample(self.config.batch_size, rng)

    def batches(self):
        """Endless training batches as tensors on the device; in worker processes when
        ``num_workers`` > 0 (each worker with its own random stream), pinned on CUDA."""
        if self.config.num_workers <= 0:
            while True:
                yield torch.from_numpy(self._draw(self.rng)).to(self.device, non_blocking=True)
        loader = torch.utils.data.DataLoader(
            _BatchStream(self, int(self.rng.integers(2**31))), batch_size=None,
            num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=True, prefetch_factor=4)
        for batch in loader:
            yield batch.to(self.device, non_blocking=True)

    def save(self) -> Path | None:
        if not is_main():  # one writer: the main process
            return None
        state = {"step": self.step, "history": self.history, "numpy_rng": self.rng.bit_generator.state,
                 "train_seconds": self.train_seconds}
        card = self.card.replace(step=self.step, train_seconds=round(self.train_seconds, 1))
        path = save_checkpoint(self.out / "checkpoint", self.model, card, self.optimizer, state)
        atomic_write_bytes(self.out / "history.csv", pd.DataFrame(self.history).to_csv(index=False).encode())
        atomic_write_bytes(self.out / "config.json",
                           json.dumps(dataclasses.asdict(self.config), indent=2).encode())
        for cb in self.callbacks:
            cb.on_checkpoint(self, path)
        return path

    def _budget_spent(self) -> bool:
        """Steps done, or the time budget used up (checked before each step, so a run ends within
        its budget plus at most one step)."""
        if self.config.minutes is not None:
            return self.train_seconds >= self.config.minutes * 60
        return self.step >= self.config.steps

    def _total_steps(self) -> int:
        """The run's length in steps, for schedules kept by methods (momentum); for a time budget,
        extrapolated from the pace so far."""
        if self.config.minutes is None:
            return self.config.steps
        share = self.train_seconds / (self.config.minutes * 60)
        return max(self.step + 1, round(self.step / share)) if share > 0 else self.step + 1

    def fit(self) -> PretrainRun:
        cfg = self.config
        self.model.train()
        for cb in self.callbacks:
            cb.on_train_start(self)
        use_bf16 = self.device.type == "cuda"  # bf16 autocast is not faster than fp32 on CPU
        first_std, warned = None, False
        stopped = False
        budget = cfg.minutes * 60 if cfg.minutes is not None else None
        show = is_main() and progress_enabled()
        if budget is None:
            bar = progress(total=cfg.steps, initial=self.step, desc=f"pretrain {cfg.method}", unit="step",
                           disable=not show)
        else:  # the bar counts seconds, so it shows the time spent and the time left of the budget
            bar = progress(total=round(budget), initial=min(round(self.train_seconds), round(budget)),
                           desc=f"pretrain {cfg.method}, {cfg.minutes:g} min", unit="s", disable=not show,
                           bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
        batches = self.batches() if not self._budget_spent() else iter(())
        try:
            while not self._budget_spent() and not self.stop_requested:
                t0 = time.perf_counter()
                lr = cfg.lr_at(self.step, None if budget is None else self.train_seconds / budget)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                batch = next(batches)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss, logs = self.step_module(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; lower lr "
                                             f"(now {cfg.lr}) or check the data for extreme values")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                if hasattr(self.model, "after_optimizer_step"):  # e.g. momentum-encoder updates
                    self.model.after_optimizer_step(self.step, self._total_steps())
                self.step += 1
                dt = time.perf_counter() - t0
                self.train_seconds += dt
                row = {"step": self.step, "loss": float(loss.detach()), "lr": lr,
                       **logs, "images_per_s": cfg.batch_size / dt}
                self.history.append(row)
                first_std = first_std or row.get("emb_std")
                if first_std and not warned and row.get("emb_std", 1.0) < 0.05 * first_std:
                    warnings.warn(f"step {self.step}: embedding std fell to {row['emb_std']:.2e} "
                                  f"(from {first_std:.2e}); the embeddings are collapsing", stacklevel=2)
                    warned = True
                # refresh=False: set_postfix would otherwise redraw on every step, bypassing tqdm's
                # mininterval and flooding a notebook with one widget message per step
                if budget is None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
                    bar.update(1)
                else:
                    bar.set_postfix(step=self.step, loss=f"{row['loss']:.4f}", refresh=False)
                    bar.update(min(self.train_seconds, budget) - bar.n)
                for cb in self.callbacks:
                    cb.on_step_end(self, row)
                if self.step % cfg.checkpoint_every == 0 and not self._budget_spent():
                    self.save()
        except KeyboardInterrupt:
            # Stopping a notebook cell is a normal way to end a run: keep what was learned.
            warnings.warn(f"interrupted at step {self.step}; checkpoint saved, call pretrain again "
                          "with the same out folder to resume", stacklevel=2)
            stopped = True
        finally:
            bar.close()
            if hasattr(batches, "close"):
                batches.close()  # stops loader workers
        stopped = stopped or self.stop_requested
        path = self.save()
        if self.distributed:
            torch.distributed.barrier()  # nobody leaves before the checkpoint is on disk
        path = path or self.out / "checkpoint" / CHECKPOINT_FILE
        for cb in self.callbacks:
            cb.on_train_end(self)
        self.model.eval()
        self.model.card = self.card.replace(step=self.step, train_seconds=round(self.train_seconds, 1))
        return PretrainRun(self.model, pd.DataFrame(self.history), path, cfg, stopped_early=stopped)


def pretrain(data, method: str | None = None, *, steps: int | None = None, minutes: float | None = None,
             batch_size: int | None = None, lr: float | None = None,
             encoder: str | dict | None = None, patch_size: int | None = None, img_size: int | None = None,
             out="runs/pretrain", device: str = "auto", callbacks=(), resume: bool = True,
             seed: int = 0, checkpoint_every: int = 50, warmup_steps: int | None = None,
             max_invalid: float = 0.0, num_workers: int = 0, compile: bool = False,
             min_lr: float = 1e-5, weight_decay: float = 0.05, grad_clip: float = 1.0,
             tensorboard: bool | None = None, recipe: str | None = None, balance: str | None = None,
             readout: str | None = None, **method_config) -> PretrainRun:
    """Pretrain an SSL encoder on scenes, stacks or chips.

    ``eossl.pretrain(data, minutes=10)`` is the short way: with no ``method`` it uses eossl's default
    recipe for the budget and the data (see :func:`eossl.recipes`), and trains for ten minutes.

    Args:
        data: DataArray (band, y, x) / (time, band, y, x) / (sample, band, y, x), a Dataset with an
            ``image`` variable, or a list of them with the same bands (windows drawn from all).
        method: one of :func:`eossl.methods`; ``None`` (default): the recipe's method.
        steps / minutes: the budget, a number of steps or a wall-clock time (give one; neither
            means 200 steps). With ``minutes`` the learning-rate cosine runs over the time, the run
            stops when the time is spent (within one step), checkpoints, and a later call with the
            same ``out`` resumes what is left.
        recipe: a recipe by name (``eossl.recipes()``); used anyway when ``method`` is None. Any
            setting passed explicitly wins over the recipe.
        encoder: a short name (``"vit_tiny"``) or a full spec dict; ``patch_size`` overrides its
            patch size.
        img_size: training window (view) in pixels (default 64, or the recipe's).
        batch_size, lr: defaults 64 and 1e-3, or the recipe's.
        balance: ``"pixels"`` (sources by size, the default) or ``"sources"`` (each equally often).
        readout: what :func:`eossl.embed` returns per chip: ``"mean"`` of the token grid
            (default) or ``"mean_std"`` (mean and std, twice the width); recorded on the card.
        out: run folder; an existing checkpoint there is resumed (``resume=False`` refuses instead).
        callbacks: :class:`Callback` objects or functions ``fn(logs)`` called after every step.
        num_workers: cut batches in this many worker processes (GPU training).
        compile: ``torch.compile`` the training step (GPU speed; slow to start).
        min_lr, weight_decay, grad_clip: optimiser settings (see :class:`PretrainConfig`).
        tensorboard: also log to ``out/tensorboard`` (default: when tensorboard is installed).
        **method_config: method settings, e.g. ``mask_ratio=0.75`` for the MAE.

    Under ``torchrun`` every process runs this same call; ``batch_size`` is per process.
    """
    if steps is not None and minutes is not None:
        raise ParameterError(f"give steps or minutes, not both (got steps={steps}, minutes={minutes}): "
                         "steps counts optimiser steps, minutes is a wall-clock budget")
    if steps is None and minutes is None:
        steps = 200
    # the budget first: the recipe and the warm-up are derived from it
    steps = None if steps is None else check.integer("steps", steps, minimum=0)
    minutes = None if minutes is None else check.number("minutes", minutes, above=0)
    chosen = {}
    if method is None or recipe is not None:
        chosen = resolve_recipe(training_arrays(data), recipe, minutes)
        if method is not None and method != chosen["method"]:
            raise ParameterError(f"recipe {chosen['recipe']!r} is for method {chosen['method']!r}, not {method!r}; "
                             "name one or the other")
        method = chosen["method"]
        method_config = {**chosen["method_config"], **method_config}
    spec = dict(chosen.get("encoder") or default_encoder(method))
    if isinstance(encoder, str):
        spec = {"name": encoder, "patch_size": spec.get("patch_size", 16)}
    elif isinstance(encoder, dict):
        spec = dict(encoder)
    if patch_size is not None:
        spec["patch_size"] = patch_size

    def pick(value, key, fallback):
        return value if value is not None else chosen.get(key, fallback)

    if warmup_steps is None:
        warmup_steps = 20 if steps is None else min(20, max(1, steps // 10))
    config = PretrainConfig(method=method, encoder=spec, method_config=method_config, steps=steps,
                            minutes=minutes, batch_size=pick(batch_size, "batch_size", 64),
                            lr=pick(lr, "lr", 1e-3), img_size=pick(img_size, "img_size", 64), seed=seed,
                            device=device, checkpoint_every=checkpoint_every, max_invalid=max_invalid,
                            num_workers=num_workers, compile=compile, min_lr=min_lr,
                            weight_decay=weight_decay, grad_clip=grad_clip, tensorboard=tensorboard,
                            warmup_steps=warmup_steps, balance=pick(balance, "balance", "pixels"),
                            readout=pick(readout, "readout", "mean"), recipe=chosen.get("recipe"))
    return Trainer(data, config, out, callbacks=callbacks, resume=resume).fit()
