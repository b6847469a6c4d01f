"""Shared fixtures. ../shared/data is optional: tests that need it skip with a clear message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("EOSSL_PROGRESS", "0")  # no progress bars in test logs

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EOSSL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the repo (../shared/data); skips when absent (a user's machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present (development data; the bundled sample is tested elsewhere)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def chips():
    """The bundled EuroSAT-MS chips (120, 13, 64, 64)."""
    import eossl
    return eossl.datasets.load_sample("eurosat_ms")


@pytest.fixture(scope="session")
def slovenia():
    import eossl
    return eossl.datasets.load_sample("slovenia_s2")


@pytest.fixture(scope="session")
def taizhou():
    import eossl
    return eossl.datasets.load_sample("taizhou_change")


# A deliberately tiny ViT so training tests take seconds on 2 CPU cores.
TINY_ENCODER = {"name": "vit_tiny", "patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 2}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, chips):
    """A short MAE run on the bundled chips, shared by tests that only need a trained model."""
    import eossl
    out = tmp_path_factory.mktemp("tiny_run")
    return eossl.pretrain(chips, method="mae", steps=6, batch_size=16, encoder=dict(TINY_ENCODER),
                          out=out, checkpoint_every=3, decoder_dim=32, decoder_depth=1)
