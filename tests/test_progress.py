"""The library-wide progress-bar switch."""

from __future__ import annotations

import pytest

from eossl import progress


@pytest.fixture(autouse=True)
def _restore():
    before = progress.enabled()
    yield
    progress.set_enabled(before)


def test_set_enabled_toggles_the_bars():
    progress.set_enabled(False)
    assert progress.enabled() is False
    bar = progress.progress(range(3))
    assert bar.disable is True and list(bar) == [0, 1, 2]
    progress.set_enabled(True)
    assert progress.enabled() is True
    with open("/dev/null", "w") as devnull:
        bar = progress.progress(range(3), file=devnull)
        assert bar.disable is False and list(bar) == [0, 1, 2]
        bar.close()
    progress.set_enabled(0)  # any falsy value
    assert progress.enabled() is False


def test_explicit_disable_wins_over_the_switch():
    progress.set_enabled(False)
    with open("/dev/null", "w") as devnull:
        bar = progress.progress(range(2), disable=False, file=devnull)
        assert bar.disable is False
        bar.close()


def test_switch_reaches_the_trainer_and_embed_bars():
    """The trainer and embed import the bar function: the switch must still reach them."""
    import eossl.analysis.embed as embed_mod
    import eossl.train.loop as loop_mod
    with open("/dev/null", "w") as devnull:
        for enabled in (True, False):
            progress.set_enabled(enabled)
            for fn in (loop_mod.progress, embed_mod.progress):
                bar = fn(range(1), file=devnull)
                assert bar.disable is (not enabled)
                bar.close()


@pytest.mark.parametrize("value,expected", [("0", False), ("false", False), ("OFF", False), ("no", False),
                                            ("1", True), ("yes", True), ("", True)])
def test_environment_variable(monkeypatch, value, expected):
    import importlib
    monkeypatch.setenv("EOSSL_PROGRESS", value)
    fresh = importlib.reload(progress)
    try:
        assert fresh.enabled() is expected
    finally:
        monkeypatch.setenv("EOSSL_PROGRESS", "0")
        importlib.reload(progress)
