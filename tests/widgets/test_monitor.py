"""TrainingMonitor: live state during eossl.pretrain, and the Stop button ending a run with a checkpoint."""

from __future__ import annotations

import math
import sys
import textwrap
import time

import pytest

import eossl
from _tiny import TINY_ENCODER

pytest.importorskip("ipywidgets")
from eossl_widgets.monitor import TrainingMonitor, _is_click, catch_click_while_busy  # noqa: E402

MAE = dict(method="mae", batch_size=8, encoder=dict(TINY_ENCODER), decoder_dim=32, decoder_depth=1)
PNG = b"\x89PNG"


def test_monitor_follows_a_run_and_draws(chips, tmp_path):
    monitor = TrainingMonitor(every=2, images_every=4, n_images=3, min_seconds=0, max_overhead=None,
                              auto_display=False)
    throttled = TrainingMonitor(every=1, min_seconds=1e6, max_overhead=None, auto_display=False)
    capped = TrainingMonitor(every=1, min_seconds=0, max_overhead=1e-6, auto_display=False)
    run = eossl.pretrain(chips, steps=6, out=tmp_path / "run", callbacks=[monitor, throttled, capped], **MAE)
    assert throttled.draws == 2 and throttled.step == 6  # step 1, then nothing until the end
    assert capped.draws == 2                             # a redraw's cost sets the gap to the next
    assert monitor.step == 6 and monitor.total_steps == 6 and not monitor.running
    assert len(monitor.history) == 6 and monitor.loss == pytest.approx(run.history["loss"].iloc[-1])
    assert math.isfinite(monitor.emb_std) and not monitor.collapsed
    # every 2 steps (2, 4, 6) plus the final redraw; pictures at step 4 and at the end
    assert monitor.draws == 4 and monitor.picture_draws == 2
    assert monitor.picture_kind == "reconstructions"
    assert bytes(monitor.curves.value).startswith(PNG) and bytes(monitor.pictures.value).startswith(PNG)
    assert "healthy" in monitor.indicator.value
    assert monitor.checkpoint_path and eossl.load_model(monitor.checkpoint_path).card["step"] == 6
    assert monitor.stop_button.disabled and not monitor.stopped_early


def test_pictures_do_not_change_the_run(chips, tmp_path):
    """Drawing uses its own random stream: the losses are those of a run without the monitor."""
    plain = eossl.pretrain(chips, steps=4, out=tmp_path / "a", **MAE)
    monitor = TrainingMonitor(every=1, images_every=1, n_images=2, min_seconds=0, max_overhead=None,
                              auto_display=False)
    watched = eossl.pretrain(chips, steps=4, out=tmp_path / "b", callbacks=[monitor], **MAE)
    assert monitor.picture_draws == 5
    assert watched.history["loss"].tolist() == pytest.approx(plain.history["loss"].tolist(), rel=1e-5)


def test_stop_button_ends_the_run_with_a_checkpoint(chips, tmp_path):
    monitor = TrainingMonitor(every=5, auto_display=False)

    def press_stop(logs):  # a person pressing Stop while step 3 runs
        if logs["step"] == 3:
            monitor.stop_button.click()

    out = tmp_path / "run"
    run = eossl.pretrain(chips, steps=50, out=out, callbacks=[press_stop, monitor], **MAE)
    assert run.stopped_early and monitor.stopped_early and monitor.stop_requested
    assert len(run.history) == 3 and run.history["step"].tolist() == [1, 2, 3]
    assert "stopped at step 3" in monitor.message
    model = eossl.load_model(out / "checkpoint")
    assert model.card["step"] == 3
    # the same folder resumes from step 3; the next run is not stopped by the old click
    again = eossl.pretrain(chips, steps=5, out=out, callbacks=[monitor], **MAE)
    assert not again.stopped_early and again.history["step"].tolist() == [1, 2, 3, 4, 5]


def test_contrastive_views_and_collapse_warning(chips, tmp_path):
    monitor = TrainingMonitor(every=1, images_every=2, n_images=2, min_seconds=0, max_overhead=None,
                              auto_display=False)
    eossl.pretrain(chips, method="simclr", steps=2, batch_size=8, encoder=dict(TINY_ENCODER),
                   out=tmp_path / "run", callbacks=[monitor], hidden_dim=32, projection_dim=16)
    assert monitor.picture_kind == "views" and bytes(monitor.pictures.value).startswith(PNG)
    # a history whose emb_std falls to 1% of its first value is flagged, in the warning colour
    fresh = TrainingMonitor(auto_display=False)
    fresh._main = True
    for step, std in enumerate([1.0, 0.5, 0.01], start=1):
        fresh.on_step_end(_FakeTrainer(), {"step": step, "loss": 1.0, "emb_std": std})
    assert fresh.collapsed
    fresh.redraw()
    assert "collapsing" in fresh.indicator.value and "#c51b7d" in fresh.indicator.value


class _FakeTrainer:
    stop_requested = False


def test_click_hook_sees_clicks_before_the_main_thread():
    class Comm:
        def _reply_subshell_for(self, data, default):
            return default

    class Button:
        comm = Comm()

    seen = []
    button = Button()
    assert catch_click_while_busy(button, lambda: seen.append(1))
    assert catch_click_while_busy(button, lambda: seen.append(2))  # idempotent: hooked once
    assert button.comm._reply_subshell_for({"method": "update", "state": {}}, "main") == "main"
    assert seen == []
    assert button.comm._reply_subshell_for({"method": "custom", "content": {"event": "click"}}, None) is None
    assert seen == [1]
    assert _is_click({"method": "custom", "content": {"event": "click"}}) and not _is_click("x")
    assert not catch_click_while_busy(object(), lambda: None)  # no comm: nothing to hook


def test_stop_button_works_while_the_cell_runs(tmp_path):
    """A real kernel runs pretrain in one cell; the frontend's click message (what JupyterLab
    sends for a Button) arrives while that cell is busy and ends the run with a checkpoint."""
    jupyter_client = pytest.importorskip("jupyter_client")
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    try:
        def run(code, timeout=120):
            """Execute and collect stdout until the cell is done."""
            msg_id = kc.execute(code)
            return _collect(kc, msg_id, timeout)

        out = run(textwrap.dedent(f"""
            import sys; sys.path[:0] = {sys.path!r}
            import eossl
            from eossl_widgets.monitor import TrainingMonitor
            chips = eossl.datasets.load_sample("eurosat_ms")
            monitor = TrainingMonitor(every=1000, auto_display=False)
            print("COMM", monitor.stop_button.comm.comm_id, monitor.busy_click)
        """))
        comm_id, hooked = out.split("COMM ")[1].split()[:2]
        if hooked != "True":
            pytest.skip("this ipykernel has no shell-channel routing hook; the interrupt button stops runs")
        msg_id = kc.execute(textwrap.dedent(f"""
            run = eossl.pretrain(chips, method="mae", steps=100000, batch_size=8, out={str(tmp_path / 'run')!r},
                                 encoder={TINY_ENCODER!r}, decoder_dim=32, decoder_depth=1,
                                 callbacks=[lambda logs: logs["step"] == 2 and print("TRAINING", flush=True),
                                            monitor])
            print("RESULT", len(run.history), run.stopped_early, monitor.stopped_early)
        """))
        seen, deadline = "", time.time() + 120
        while "TRAINING" not in seen and time.time() < deadline:
            seen += _collect(kc, msg_id, 1, until_idle=False)
        assert "TRAINING" in seen, seen
        click = kc.session.msg("comm_msg", {"comm_id": comm_id,
                                            "data": {"method": "custom", "content": {"event": "click"}}})
        kc.shell_channel.send(click)
        seen += _collect(kc, msg_id, 120)
        steps, stopped, monitor_stopped = seen.split("RESULT ")[1].split()[:3]
        assert stopped == "True" and monitor_stopped == "True" and 2 <= int(steps) < 100000
        assert eossl.load_model(tmp_path / "run" / "checkpoint").card["step"] == int(steps)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _collect(kc, msg_id, timeout, until_idle=True) -> str:
    """stdout of the cell ``msg_id`` (and errors, to show them) until it is idle or ``timeout``."""
    import queue
    text, deadline = "", time.time() + timeout
    while time.time() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except queue.Empty:
            if not until_idle:
                return text
            continue
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            text += content["text"]
        elif kind == "error":
            text += "\n".join(content["traceback"])
        elif kind == "status" and content["execution_state"] == "idle" and until_idle:
            return text
    return text


def test_monitor_follows_a_time_budget_run_of_the_default_recipe(chips, tmp_path):
    """minutes= has no step count: the monitor says the budget instead of "step n / N"."""
    monitor = TrainingMonitor(every=1, min_seconds=0, max_overhead=None, auto_display=False)
    run = eossl.pretrain(chips, minutes=0.03, batch_size=8, out=tmp_path / "run", callbacks=[monitor])
    assert run.model.card["recipe"] == "cpu_small" and monitor.total_steps == 0
    assert monitor.step == len(run.history) > 0 and not monitor.running
    assert "0.03 min budget" in monitor.status.value
