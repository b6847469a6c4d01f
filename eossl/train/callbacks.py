"""Ready-made callbacks for :func:`eossl.pretrain`."""

from __future__ import annotations

from eossl.train.loop import Callback


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
        import time
        self.seconds, self.start, self._time = seconds, None, time.perf_counter

    def on_train_start(self, trainer):
        self.start = self._time()

    def on_step_end(self, trainer, logs):
        if self._time() - self.start > self.seconds:
            trainer.stop_requested = True
