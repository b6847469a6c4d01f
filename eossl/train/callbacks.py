"""Callbacks for :func:`eossl.pretrain`: the hook points (:class:`Callback`), TensorBoard logging,
and ready-made ones for notebooks (:class:`LivePlot`, :class:`StopAfter`)."""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path


class Callback:
    """Hooks into a run. Override what you need; set ``trainer.stop_requested = True`` to end the
    run cleanly (it checkpoints and returns)."""

    def on_train_start(self, trainer) -> None: ...
    def on_step_end(self, trainer, logs: dict) -> None: ...
    def on_checkpoint(self, trainer, path: Path) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class FunctionCallback(Callback):
    """A plain function ``fn(logs)`` called after every step."""

    def __init__(self, fn):
        self.fn = fn

    def on_step_end(self, trainer, logs):
        self.fn(logs)


def tensorboard_available() -> bool:
    """Whether ``tensorboard`` is installed (checked without importing it)."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger(Callback):
    """Every numeric value of each history row as a TensorBoard scalar (``train/loss``, ...) in
    ``folder`` (default: the run's ``out/tensorboard``). ``tensorboard --logdir runs`` shows them.
    The writer is created on the first step, so importing eossl never imports tensorboard."""

    def __init__(self, folder=None):
        self.folder = folder
        self.writer = None

    def on_train_start(self, trainer):
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("TensorBoard logging needs the tensorboard package: pip install "
                                  "'eossl[tensorboard]' (or pass tensorboard=False)") from None
            self.writer = SummaryWriter(str(self.folder or Path(trainer.out) / "tensorboard"))

    def on_step_end(self, trainer, logs):
        for key, value in logs.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"train/{key}", value, logs["step"])

    def on_checkpoint(self, trainer, path):
        self.writer.flush()  # what a killed run logged up to its checkpoint stays readable

    def on_train_end(self, trainer):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class LivePlot(Callback):
    """A loss curve (and the embedding-collapse indicator) redrawn in the notebook every
    ``every`` steps, in one output area. Uses matplotlib and IPython's display only."""

    def __init__(self, every: int = 10, keys=("loss", "emb_std")):
        self.every, self.keys = every, keys
        self.handle = None

    def _draw(self, trainer):
        import matplotlib.pyplot as plt
        import pandas as pd
        from IPython.display import display
        df = pd.DataFrame(trainer.history)
        keys = [k for k in self.keys if k in df]
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 2.6), squeeze=False)
        for ax, key in zip(axes[0], keys):
            ax.plot(df["step"], df[key])
            ax.set_title(key if key != "emb_std" else "embedding std (collapse if ~0)", fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)

    def on_step_end(self, trainer, logs):
        if logs["step"] % self.every == 0:
            self._draw(trainer)

    def on_train_end(self, trainer):
        if trainer.history:
            self._draw(trainer)


class StopAfter(Callback):
    """End the run cleanly after ``seconds`` of wall time (a time budget for tutorials)."""

    def __init__(self, seconds: float):
        self.seconds, self.start, self._time = seconds, None, time.perf_counter

    def on_train_start(self, trainer):
        self.start = self._time()

    def on_step_end(self, trainer, logs):
        if self._time() - self.start > self.seconds:
            trainer.stop_requested = True
