"""Ready-made callbacks: LivePlot (a loss curve redrawn in place) and StopAfter (a time budget)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import IPython.display  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import eossl  # noqa: E402
from _tiny import TINY_ENCODER  # noqa: E402
from eossl.train.callbacks import LivePlot, StopAfter  # noqa: E402
from eossl.checkpoint import read_card  # noqa: E402


def _pretrain(chips, out, steps, callbacks):
    return eossl.pretrain(chips, method="mae", steps=steps, batch_size=4, encoder=dict(TINY_ENCODER), decoder_dim=32,
                          decoder_depth=1, out=out, callbacks=callbacks)


class FakeDisplay:
    """Stands in for IPython.display.display: records figures shown and updated."""

    def __init__(self):
        self.shown, self.updated = [], []

    def __call__(self, fig, display_id=False):
        assert display_id is True
        self.shown.append(fig)
        return self

    def update(self, fig):
        self.updated.append(fig)


def test_liveplot_draws_every_n_steps_and_at_the_end(tmp_path, chips, monkeypatch):
    fake = FakeDisplay()
    monkeypatch.setattr(IPython.display, "display", fake)
    live = LivePlot(every=2)
    run = _pretrain(chips, tmp_path, 5, [live])
    # steps 2 and 4, then the end of training: one display, then updates of the same output
    assert len(fake.shown) == 1 and len(fake.updated) == 2
    assert live.handle is fake
    last = fake.updated[-1]
    axes = last.axes
    assert [ax.get_title() for ax in axes] == ["loss", "embedding std (collapse if ~0)"]
    x, y = axes[0].lines[0].get_data()
    np.testing.assert_array_equal(x, run.history["step"])
    np.testing.assert_allclose(y, run.history["loss"])
    np.testing.assert_allclose(axes[1].lines[0].get_data()[1], run.history["emb_std"])
    first_x = fake.shown[0].axes[0].lines[0].get_data()[0]
    np.testing.assert_array_equal(first_x, [1, 2])


def test_liveplot_keys_that_are_missing_are_skipped(tmp_path, chips, monkeypatch):
    fake = FakeDisplay()
    monkeypatch.setattr(IPython.display, "display", fake)
    _pretrain(chips, tmp_path, 2, [LivePlot(every=1, keys=("lr", "no_such_column"))])
    assert [ax.get_title() for ax in fake.updated[-1].axes] == ["lr"]


def test_liveplot_works_outside_a_notebook(tmp_path, chips, capsys):
    live = LivePlot(every=1)
    run = _pretrain(chips, tmp_path, 2, [live])
    # IPython's real display in plain python: no updatable output, each draw prints the figure
    assert len(run.history) == 2
    assert capsys.readouterr().out.count("Figure(") == 3  # steps 1, 2 and the end


def test_stop_after_ends_the_run_on_its_time_budget(tmp_path, chips):
    clock = iter(np.arange(0.0, 100.0, 1.0))  # 0 at the start, then 1 s more at every step
    stop = StopAfter(seconds=2.5)
    stop._time = lambda: float(next(clock))
    run = _pretrain(chips, tmp_path, 50, [stop])
    assert run.stopped_early
    assert run.history["step"].tolist() == [1, 2, 3]
    assert read_card(tmp_path)["step"] == 3


@pytest.mark.parametrize("seconds,steps", [(0.0, 1), (3600.0, 4)])
def test_stop_after_with_the_real_clock(tmp_path, chips, seconds, steps):
    run = _pretrain(chips, tmp_path, 4, [StopAfter(seconds)])
    assert len(run.history) == steps
    assert run.stopped_early == (seconds == 0.0)
