"""A live view of a pretraining run, with a Stop button: ``eossl.pretrain(..., callbacks=[monitor])``.

    monitor = TrainingMonitor(every=10)
    monitor                                   # show it (or it shows itself when the run starts)
    run = eossl.pretrain(chips, method="mae", steps=500, out=RUNS / "x", callbacks=[monitor])

It draws the loss curve, the embedding-collapse indicator (``emb_std`` of the run history, in a warning
colour once it falls below ``collapse_ratio`` of its first value) and, every ``images_every`` steps, the
model's own pictures of a fixed batch: MAE reconstructions, or for contrastive methods the two
augmented views with the cosine similarity the encoder gives each pair. Pictures are PNGs drawn with
matplotlib's Agg backend, so the run slows only on the steps that draw.

Stop ends the run cleanly: the trainer finishes the step in progress, writes its checkpoint and
returns (``run.stopped_early``). A notebook cell that runs ``pretrain`` keeps the kernel busy, and
a kernel normally reads widget messages only between cells; on ipykernel 7 the click is caught where
the kernel receives messages (its shell-channel thread), so the button works while the cell runs.
On older kernels the interrupt button (the trainer saves on KeyboardInterrupt) does the same job.
"""

from __future__ import annotations

import io
import math
import threading
import time

import numpy as np

try:
    import ipywidgets as ipw
    import traitlets as tr
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("eossl_widgets needs ipywidgets: pip install 'eossl[maps]'") from None

from eossl.train.callbacks import Callback

OK_COLOUR, WARN_COLOUR = "#1b7837", "#c51b7d"


def _new_figure(*args, **kwargs):
    # The Agg canvas draws off-screen, whatever backend the notebook uses, and never displays
    # the figure twice (once as our PNG, once by the inline backend).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(*args, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _is_click(data) -> bool:
    """Is a comm message from the frontend an ipywidgets Button click?"""
    return (isinstance(data, dict) and data.get("method") == "custom"
            and isinstance(data.get("content"), dict) and data["content"].get("event") == "click")


def catch_click_while_busy(button: "ipw.Button", on_click) -> bool:
    """Call ``on_click()`` as soon as the kernel *receives* a click on ``button``, even while a
    cell is running. ipykernel 7 routes every incoming comm message through the comm's
    ``_reply_subshell_for(data, default)`` on its shell-channel thread before queueing it for the
    busy main thread; this wraps that hook for this one button (routing unchanged). ``on_click``
    runs on that thread, so it must only set a flag. Returns False where the kernel has no such
    hook (older ipykernel, no kernel): the click is then handled when the cell ends."""
    comm = getattr(button, "comm", None)
    original = getattr(comm, "_reply_subshell_for", None)
    if original is None or getattr(original, "_eossl_hook", False):
        return original is not None

    def route(data, default):
        try:
            if _is_click(data):
                on_click()
        except Exception:  # noqa: BLE001 - never break the kernel's message routing
            pass
        return original(data, default)

    route._eossl_hook = True
    comm._reply_subshell_for = route
    return True


def _rgb_indices(card: dict) -> list[int]:
    """Indices of the true-colour bands among the run's bands (by common name or wavelength)."""
    import xarray as xr
    from eossl.data.bands import rgb_bands
    bands = card.get("bands", [])
    names = [b["name"] for b in bands]
    coords = {"band": names,
              "common_name": ("band", [b.get("common_name") or "" for b in bands]),
              "wavelength": ("band", [np.nan if b.get("wavelength_nm") is None else b["wavelength_nm"]
                                      for b in bands])}
    da = xr.DataArray(np.zeros(len(names)), dims="band", coords=coords)
    return [names.index(b) for b in rgb_bands(da)]


def _stretch(rgb: np.ndarray, ref: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(ref, (2, 98), axis=(0, 1))
    return np.clip((rgb - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)


class TrainingMonitor(Callback, ipw.VBox):
    """Loss curve, collapse indicator, the method's pictures and a Stop button for a running
    :func:`eossl.pretrain`. Pass it in ``callbacks``; it is also an ipywidget to display.

    Args:
        every: redraw the curves every this many steps.
        images_every: redraw the pictures every this many steps (default ``5 * every``).
        n_images: how many images of the fixed preview batch to show.
        collapse_ratio: warn once ``emb_std`` falls below this fraction of its first value
            (the trainer warns at the same ratio).
        min_seconds: never redraw more often than this (fast GPU steps), except at the end.
        max_overhead: skip redraws that would make drawing more than this fraction of the wall
            time (the gap after a redraw is at least its cost / max_overhead); None: no limit.
        auto_display: show itself when the run starts if it was not displayed before.
    """

    step = tr.Int(0, help="last step finished")
    total_steps = tr.Int(0)
    loss = tr.Float(math.nan)
    emb_std = tr.Float(math.nan)
    collapsed = tr.Bool(False, help="emb_std fell below collapse_ratio of its first value")
    stop_requested = tr.Bool(False, help="Stop was pressed; the run ends after the current step")
    running = tr.Bool(False)
    stopped_early = tr.Bool(False)
    checkpoint_path = tr.Unicode("", help="the last checkpoint the run wrote")
    draws = tr.Int(0, help="how many times the curves were redrawn")
    picture_draws = tr.Int(0, help="how many times the pictures were redrawn")
    draw_seconds = tr.Float(0.0, help="time spent drawing, in seconds (the monitor's own cost)")
    picture_kind = tr.Unicode("", help="'reconstructions', 'views' or '' (no pictures for this method)")
    message = tr.Unicode("")

    def __init__(self, every: int = 10, images_every: int | None = None, n_images: int = 4,
                 collapse_ratio: float = 0.05, min_seconds: float = 1.0, max_overhead: float | None = 0.05,
                 auto_display: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        self.every = int(every)
        self.images_every = int(images_every or 5 * every)
        self.n_images, self.collapse_ratio = int(n_images), float(collapse_ratio)
        self.min_seconds, self.auto_display = float(min_seconds), auto_display
        self.max_overhead = max_overhead
        self._draw_cost = 0.0  # seconds the last redraw took
        self.history: list[dict] = []
        self._shown = False
        self._stop = threading.Event()  # set from the kernel's message thread: only a flag
        self._first_std = None
        self._last_draw = -math.inf
        self._preview = None
        self._rgb = [0, 1, 2]

        self.status = ipw.HTML("<b>Training monitor</b>: waiting for a run to start")
        self.indicator = ipw.HTML("")
        self.curves = ipw.Image(format="png", layout=ipw.Layout(max_width="100%"))
        self.pictures = ipw.Image(format="png", layout=ipw.Layout(max_width="100%"))
        self.stop_button = ipw.Button(description="Stop", icon="stop", button_style="danger",
                                      tooltip="end the run after this step and save a checkpoint",
                                      disabled=True)
        self.stop_button.on_click(lambda _: self.request_stop())
        self.busy_click = catch_click_while_busy(self.stop_button, self._stop.set)
        self.stop_button.add_class("eossl-stop")          # CSS hooks (the browser test finds them)
        self.status.add_class("eossl-monitor-status")
        self.children = [ipw.HBox([self.status, self.stop_button]), self.indicator, self.curves,
                         self.pictures]

    # ------------------------------------------------------------------ user actions

    def request_stop(self) -> None:
        """What the Stop button does: the run ends after the current step, with a checkpoint."""
        self._stop.set()
        if self.running:
            self.stop_requested = True
            self.stop_button.disabled = True
            self.stop_button.description = "Stopping..."

    def _repr_mimebundle_(self, **kwargs):
        self._shown = True
        return super()._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ callback hooks

    def _of_total(self) -> str:
        """" / 200" for a step budget, " of a 10 min budget" for a time budget."""
        return f" / {self.total_steps}" if self.total_steps else getattr(self, "_budget", "")

    def on_train_start(self, trainer) -> None:
        from eossl.distributed import is_main
        self._main = is_main()
        self._stop.clear()  # a click left over from an earlier run must not end this one
        self.history = list(trainer.history)  # a resumed run brings its history
        # a wall-clock budget (minutes=) has no step count: 0, and the status names the budget
        self.step, self.total_steps = trainer.step, trainer.config.steps or 0
        self._budget = (f" of a {trainer.config.minutes:g} min budget"
                        if getattr(trainer.config, "minutes", None) else "")
        self.stop_requested = self.stopped_early = self.collapsed = False
        self.running, self.message = True, ""
        self._first_std = next((r["emb_std"] for r in self.history if r.get("emb_std")), None)
        self.stop_button.disabled, self.stop_button.description = False, "Stop"
        self._setup_pictures(trainer)
        self._last_picture_step = trainer.step
        self.status.value = f"<b>{trainer.config.method}</b>: step {self.step}{self._of_total()}"
        if self.auto_display and not self._shown and self._main:
            try:
                from IPython import get_ipython
                from IPython.display import display
                if get_ipython() is not None:
                    display(self)
            except ImportError:  # pragma: no cover
                pass

    def on_step_end(self, trainer, logs: dict) -> None:
        self.history.append(dict(logs))
        self.step = int(logs["step"])
        self.loss = float(logs.get("loss", math.nan))
        std = logs.get("emb_std")
        if std is not None and math.isfinite(std):
            self.emb_std = float(std)
            self._first_std = self._first_std or float(std)
            if self._first_std and std < self.collapse_ratio * self._first_std:
                self.collapsed = True
        if self._stop.is_set() and not trainer.stop_requested:
            self.request_stop()
            trainer.stop_requested = True  # the loop checks this before the next step
        if not self._main:
            return
        now = time.perf_counter()
        gap = max(self.min_seconds, self._draw_cost / self.max_overhead if self.max_overhead else 0.0)
        if self.step % self.every == 0 and now - self._last_draw >= gap:
            self._last_draw = now
            pictures = self.step - self._last_picture_step >= self.images_every
            self.redraw(trainer, pictures=pictures)

    def on_checkpoint(self, trainer, path) -> None:
        self.checkpoint_path = str(path)

    def on_train_end(self, trainer) -> None:
        self.running = False
        self.stopped_early = bool(trainer.stop_requested)
        self.stop_button.disabled = True
        self.stop_button.description = "Stopped" if self.stopped_early else "Done"
        if getattr(self, "_main", True) and self.history:
            self.redraw(trainer, pictures=True)
        where = f"; checkpoint: <code>{self.checkpoint_path}</code>" if self.checkpoint_path else ""
        if self.stopped_early:
            self.message = (f"stopped at step {self.step}{self._of_total()}; checkpoint "
                            f"{self.checkpoint_path}. Call pretrain again with the same out folder to continue.")
            self.status.value = (f"<b>{trainer.config.method}</b>: stopped at step {self.step}"
                                 f"{self._of_total()}{where}")
        else:
            self.status.value = f"<b>{trainer.config.method}</b>: finished {self.step} steps{self._budget}{where}"

    # ------------------------------------------------------------------ drawing

    def _setup_pictures(self, trainer) -> None:
        """A fixed preview batch (own random stream: the run's draws are not disturbed)."""
        model = trainer.model
        self._preview, self.picture_kind = None, ""
        if getattr(model, "input_kind", "image") != "image" or self.n_images < 1:
            self.pictures.layout.display = "none"
            return
        if hasattr(model, "reconstruct"):
            self.picture_kind = "reconstructions"
        elif hasattr(model, "views"):
            self.picture_kind = "views"
        else:
            self.pictures.layout.display = "none"
            return
        self.pictures.layout.display = None
        try:
            self._preview = trainer.sampler.sample(self.n_images, np.random.default_rng(1234))  # (N, C, H, W)
            self._rgb = _rgb_indices(trainer.card)
        except Exception as err:  # noqa: BLE001 - pictures are optional, training is not
            self.picture_kind, self.message = "", f"no pictures: {err}"

    def redraw(self, trainer=None, pictures: bool = True) -> None:
        """Redraw the curves (and the pictures, given the trainer) now."""
        t0 = time.perf_counter()
        self.curves.value = self._curves_png()
        self.draws += 1
        self._update_indicator()
        if pictures and trainer is not None and self._preview is not None:
            try:
                self.pictures.value = self._pictures_png(trainer)
                self.picture_draws += 1
                self._last_picture_step = self.step
            except Exception as err:  # noqa: BLE001 - a failed picture must not end the run
                self.message = f"pictures failed: {type(err).__name__}: {err}"
        if self.running:
            self.status.value = (f"<b>{trainer.config.method if trainer else ''}</b>: step {self.step}"
                                 f"{self._of_total()}, loss {self.loss:.4g}")
        self._draw_cost = time.perf_counter() - t0
        self.draw_seconds += self._draw_cost

    def _update_indicator(self) -> None:
        if not math.isfinite(self.emb_std):
            self.indicator.value = ""
            return
        colour = WARN_COLOUR if self.collapsed else OK_COLOUR
        text = ("collapsing: every image gets nearly the same embedding" if self.collapsed
                else "healthy spread")
        self.indicator.value = (f"<span style='color:{colour};font-weight:bold'>&#9679; embedding std "
                                f"{self.emb_std:.3g}</span> (first {self._first_std:.3g}): {text}")

    def _curves_png(self) -> bytes:
        """The curves on one figure kept between redraws: only the line data change, which is
        several times cheaper than building and laying out a new figure every time."""
        steps = np.array([r["step"] for r in self.history])
        keys = ("loss",) + (("emb_std",) if any("emb_std" in r for r in self.history) else ())
        if getattr(self, "_fig_keys", None) != keys:
            fig = _new_figure(figsize=(4.2 * len(keys), 2.4))
            fig.subplots_adjust(left=0.08 if len(keys) > 1 else 0.14, right=0.98, bottom=0.2, top=0.88,
                                wspace=0.25)
            self._fig, self._fig_keys, self._axes = fig, keys, {}
            for i, key in enumerate(keys):
                ax = fig.add_subplot(1, len(keys), i + 1)
                ax.set_title("loss" if key == "loss" else "embedding std (collapse if near 0)", fontsize=9)
                ax.set_xlabel("step", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
                line, = ax.plot([], [], color="#2166ac", lw=1.2)
                floor = ax.axhline(np.nan, color=WARN_COLOUR, ls=":", lw=1) if key == "emb_std" else None
                self._axes[key] = (ax, line, floor)
        for key, (ax, line, floor) in self._axes.items():
            values = np.array([r.get(key, np.nan) for r in self.history], dtype=float)
            line.set_data(steps, values)
            line.set_color(WARN_COLOUR if key == "emb_std" and self.collapsed else "#2166ac")
            if floor is not None and self._first_std:
                floor.set_ydata([self.collapse_ratio * self._first_std] * 2)
            ax.relim()
            ax.autoscale_view()
            if key == "emb_std":
                ax.set_ylim(bottom=0)
        return _png(self._fig)

    def _pictures_png(self, trainer) -> bytes:
        import torch
        model, device = trainer.model, trainer.device
        x = torch.from_numpy(self._preview).to(device)
        was_training = model.training
        # Our own RNG: the run's random stream (masks, views, batches) stays what it would be.
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(0)
            model.eval()
            try:
                if self.picture_kind == "reconstructions":
                    masked, pasted, mask = model.reconstruct(x)
                    masked = masked.masked_fill(mask.bool(), float("nan"))
                    rows = [("input", x), ("visible to the encoder", masked), ("reconstruction", pasted)]
                    notes = None
                else:
                    from eossl.models.views import MultispectralViews
                    views = MultispectralViews(model.views.config,
                                               generator=torch.Generator(device=device).manual_seed(0))
                    v1, v2 = views(x)
                    e1, e2 = model.encoder(v1), model.encoder(v2)  # (N, D) each
                    sims = torch.nn.functional.cosine_similarity(e1, e2, dim=-1).float().cpu().numpy()
                    rows = [("view 1", v1), ("view 2", v2)]
                    notes = [f"cos {s:.2f}" for s in sims]
            finally:
                model.train(was_training)
        rows = [(name, t.float().cpu().numpy()) for name, t in rows]
        return mosaic_png(rows, self._rgb, notes,
                          title=f"step {self.step}: {self.picture_kind} of a fixed batch")


def mosaic_png(rows, rgb, notes=None, title: str = "", tile: int = 96, gap: int = 4) -> bytes:
    """Rows of (B, C, H, W) images as one PNG: true colour from band indices ``rgb``, each column
    stretched by its first row (so a reconstruction is seen in the input's colours), NaN white.
    Drawn with PIL, not matplotlib: a few milliseconds, so refreshing costs the run little."""
    from PIL import Image, ImageDraw
    n = len(rows[0][1])
    label_w, head, foot = 150, 18 if title else 4, 14 if notes else 0
    width = label_w + n * (tile + gap)
    height = head + len(rows) * (tile + gap) + foot
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill="black")
    ref = np.nan_to_num(rows[0][1][:, rgb])                                    # (B, 3, H, W)
    for i, (name, images) in enumerate(rows):
        top = head + i * (tile + gap)
        draw.text((4, top + tile // 2 - 6), name, fill="black")
        for j in range(n):
            img = images[j, rgb].transpose(1, 2, 0)                             # (H, W, 3)
            shown = np.where(np.isnan(img), 1.0, _stretch(img, ref[j].transpose(1, 2, 0)))
            pic = Image.fromarray((shown * 255).round().astype("uint8"))
            scale = tile / max(pic.size)
            pic = pic.resize((max(1, round(pic.width * scale)), max(1, round(pic.height * scale))),
                             Image.NEAREST)
            canvas.paste(pic, (label_w + j * (tile + gap), top))
    if notes:
        for j, text in enumerate(notes):
            draw.text((label_w + j * (tile + gap) + 4, height - foot), text, fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


__all__ = ["TrainingMonitor", "catch_click_while_busy"]
