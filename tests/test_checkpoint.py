"""Checkpoints: one safetensors file written atomically, readable back, refusing damaged files."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

import eossl.checkpoint as ckpt_mod
from _tiny import TINY_ENCODER
from eossl.errors import CheckpointError
from eossl.models.registry import build_method
from eossl.checkpoint import (CARD_FILE, CHECKPOINT_FILE, FORMAT, atomic_write_bytes,
                                    read_card, read_checkpoint, resolve, save_checkpoint)

CARD = {"method": "mae", "encoder": {**TINY_ENCODER, "in_chans": 3, "img_size": 32},
        "bands": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        "normalization": {"mean": [1.0, 2.0, 3.0], "std": [1.0, 1.0, 1.0]}}


def _model(seed=0):
    torch.manual_seed(seed)
    return build_method("mae", CARD["encoder"], {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2})


def _optimizer_with_state(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss, _ = model.training_step(torch.randn(2, 3, 32, 32))
    loss.backward()
    opt.step()
    return opt


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_round_trip_of_weights_card_optimizer_and_trainer_state(tmp_path):
    model = _model()
    opt = _optimizer_with_state(model)
    state = {"step": 7, "history": [{"step": 7, "loss": 0.5}]}
    path = save_checkpoint(tmp_path / "checkpoint", model, CARD, opt, state)
    assert path == tmp_path / "checkpoint" / CHECKPOINT_FILE
    out = read_checkpoint(tmp_path, optimizer=True)
    assert out["card"] == CARD and out["trainer"] == state and out["file"] == path
    ref = model.state_dict()
    assert out["model"].keys() == ref.keys()
    for k, v in ref.items():
        assert torch.equal(out["model"][k], v), k
    saved = opt.state_dict()
    assert out["optim"]["param_groups"] == json.loads(json.dumps(saved["param_groups"]))
    assert out["optim"]["state"].keys() == saved["state"].keys()
    for idx, entries in saved["state"].items():
        for name, value in entries.items():
            assert torch.equal(out["optim"]["state"][idx][name], torch.as_tensor(value)), (idx, name)
    assert torch.equal(out["rng"], torch.get_rng_state())
    # without optimizer=True the optimiser state is not read
    assert "optim" not in read_checkpoint(tmp_path)


def test_card_json_equals_the_card_in_the_file(tmp_path):
    save_checkpoint(tmp_path, _model(), CARD)
    assert json.loads((tmp_path / CARD_FILE).read_text()) == CARD
    assert read_card(tmp_path) == CARD


def test_written_files_are_not_private(tmp_path):
    save_checkpoint(tmp_path, _model(), CARD)
    atomic_write_bytes(tmp_path / "other.txt", b"x")
    expected = 0o666 & ~_umask()
    for name in (CHECKPOINT_FILE, CARD_FILE, "other.txt"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode != 0o600 and mode == expected, (name, oct(mode))


def test_resolve_accepts_run_folder_checkpoint_folder_and_file(tmp_path):
    file = save_checkpoint(tmp_path / "run" / "checkpoint", _model(), CARD)
    for p in (tmp_path / "run", tmp_path / "run" / "checkpoint", file, str(file)):
        assert resolve(p) == file
    with pytest.raises(CheckpointError, match="no eossl checkpoint"):
        resolve(tmp_path / "nothing")


def test_failure_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    first = _model(seed=0)
    path = save_checkpoint(tmp_path, first, {**CARD, "step": 1})
    before = path.read_bytes()
    card_before = (tmp_path / CARD_FILE).read_bytes()

    def half_then_fail(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_mod, "save_file", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path, _model(seed=1), {**CARD, "step": 2})
    assert path.read_bytes() == before
    assert (tmp_path / CARD_FILE).read_bytes() == card_before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_FILE, CARD_FILE])
    out = read_checkpoint(tmp_path)
    assert out["card"]["step"] == 1
    for k, v in first.state_dict().items():
        assert torch.equal(out["model"][k], v)


def test_atomic_write_bytes_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "history.csv"
    atomic_write_bytes(target, b"old")

    def boom(src, dst):
        raise OSError("rename failed (simulated)")

    import eossl.outputs as outputs_mod  # where atomic writes live (re-exported by checkpoint)
    monkeypatch.setattr(outputs_mod.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


@pytest.mark.parametrize("keep", [0.5, 0.99, 40, 3])
def test_truncated_checkpoint_is_reported_as_damaged(tmp_path, keep):
    path = save_checkpoint(tmp_path, _model(), CARD)
    data = path.read_bytes()
    n = int(len(data) * keep) if keep < 1 else keep
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="damaged") as info:
        read_checkpoint(tmp_path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="damaged"):
        read_card(tmp_path)


def test_garbage_file_is_reported_as_damaged(tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("metadata", [None, {"format": "something-else/1"}])
def test_foreign_safetensors_file_is_refused(tmp_path, metadata):
    file = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(file), metadata=metadata)
    with pytest.raises(CheckpointError, match="not an eossl checkpoint"):
        read_checkpoint(file)
    with pytest.raises(CheckpointError, match="not an eossl checkpoint"):
        read_card(file)


def test_format_marker_is_written(tmp_path):
    from safetensors import safe_open
    path = save_checkpoint(tmp_path, _model(), CARD)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT
