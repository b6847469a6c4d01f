"""Fixtures shared by the widget state tests."""

import pytest

import eossl
from _tiny import TINY_ENCODER


@pytest.fixture(scope="session")
def taizhou_emb(taizhou, tmp_path_factory):
    """(time, y, x, dim) embeddings of both Taizhou dates by a tiny MAE trained for a few steps."""
    run = eossl.pretrain(taizhou["image"], method="mae", steps=4, batch_size=8, img_size=64, patch_size=8,
                         encoder=dict(TINY_ENCODER), out=tmp_path_factory.mktemp("taizhou_emb"),
                         decoder_dim=32, decoder_depth=1)
    return eossl.embed(run.model, taizhou["image"])
