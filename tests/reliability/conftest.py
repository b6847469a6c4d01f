"""Fixtures of the fault suite, and its one-line summary at the end of the test run.

Every case records what it saw in ``RESULTS``: ``clean`` when bad input was refused with the eossl
error class the case names and a message naming the problem, ``kills`` for each SIGKILL of a
real process that was followed by a successful load and resume.
"""

from __future__ import annotations

import numpy as np
import pytest

from _fault_counts import RESULTS
from _tiny import TINY_ENCODER


def pytest_terminal_summary(terminalreporter):
    if RESULTS["cases"] or RESULTS["kills"]:
        terminalreporter.write_line(
            f"reliability: {RESULTS['cases']} bad inputs, {RESULTS['clean']} refused with a clean eossl "
            f"error, {RESULTS['kills']} SIGKILLs survived (checkpoint loaded and resumed)")


@pytest.fixture(scope="session")
def small_chips(chips):
    """20 real EuroSAT-MS chips of 4 classes (the bundled sample), enough for every API."""
    labels = chips["label"].values
    keep = np.concatenate([np.flatnonzero(labels == c)[:5] for c in np.unique(labels)[:4]])
    return chips.isel(sample=keep).load()


@pytest.fixture(scope="session")
def small_run(small_chips, tmp_path_factory):
    """A 2-step MAE run on those chips: a real checkpoint to load, embed with and break."""
    import eossl
    out = tmp_path_factory.mktemp("reliability_run")
    return eossl.pretrain(small_chips, method="mae", steps=2, batch_size=4, encoder=dict(TINY_ENCODER),
                          out=out, decoder_dim=32, decoder_depth=1, tensorboard=False)
