"""eossl.pretrain: learning, history, schedule, callbacks, checkpoints and resuming."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import eossl
from _tiny import REPO, TINY_ENCODER
from eossl.errors import CheckpointError, DataError
from eossl.checkpoint import CHECKPOINT_FILE, read_card, read_checkpoint
from eossl.device import resolve_device
from eossl.train.callbacks import Callback
from eossl.train.loop import PretrainConfig, training_arrays

SMALL = dict(batch_size=16, decoder_dim=32, decoder_depth=1)


def _pretrain(data, out, steps, **kwargs):
    kwargs = {"method": "mae", **SMALL, "encoder": dict(TINY_ENCODER), **kwargs}
    return eossl.pretrain(data, steps=steps, out=out, **kwargs)


def _ckpt(out):
    return out / "checkpoint" / CHECKPOINT_FILE


def _numpy_stats(*arrays):
    flat = np.concatenate([a.transpose("band", ...).values.reshape(a.sizes["band"], -1).astype("float64")
                           for a in arrays], axis=1)
    return flat.mean(axis=1), flat.std(axis=1)


@pytest.fixture(scope="module")
def run40(tmp_path_factory, chips):
    return _pretrain(chips, tmp_path_factory.mktemp("run40"), 40, checkpoint_every=15)


# ----------------------------------------------------------------------------- learning + history

def test_loss_falls_on_real_imagery(run40):
    loss = run40.history["loss"].to_numpy()
    assert len(loss) == 40 and np.isfinite(loss).all()
    assert loss[-5:].mean() < loss[:5].mean() * 0.95


def test_history_columns_and_rows(run40):
    h = run40.history
    assert list(h.columns) == ["step", "loss", "lr", "emb_std", "images_per_s"]
    assert h["step"].tolist() == list(range(1, 41))
    assert (h["emb_std"] > 0).all() and (h["images_per_s"] > 0).all()
    # the lr logged at each step is the schedule's value for that step
    np.testing.assert_allclose(h["lr"], [run40.config.lr_at(s - 1) for s in h["step"]])


def test_run_folder_contents(run40):
    out = run40.checkpoint_path.parent.parent
    assert run40.checkpoint_path == _ckpt(out)
    on_disk = pd.read_csv(out / "history.csv")
    pd.testing.assert_frame_equal(on_disk, run40.history, check_dtype=False)
    assert json.loads((out / "config.json").read_text()) == json.loads(
        json.dumps(dataclasses.asdict(run40.config)))
    saved = read_checkpoint(out)
    assert saved["trainer"]["step"] == 40 and len(saved["trainer"]["history"]) == 40
    for k, v in run40.model.state_dict().items():
        assert torch.equal(saved["model"][k], v), k
    assert not run40.stopped_early and run40.encoder is run40.model.encoder
    assert not run40.model.training


def test_card_describes_bands_units_and_statistics(tiny_run, chips):
    card = tiny_run.model.card
    assert card == read_card(tiny_run.checkpoint_path)
    assert card["method"] == "mae" and card["step"] == 6
    assert card["embedding_dim"] == TINY_ENCODER["embed_dim"]
    assert card["encoder"] == {**TINY_ENCODER, "in_chans": 13, "img_size": 64}
    assert [b["name"] for b in card["bands"]] == chips["band"].values.tolist()
    b8a = card["bands"][-1]
    assert b8a == {"name": "B8A", "common_name": "nir08", "wavelength_nm": 865.0, "resolution_m": 20.0}
    assert card["sensor"] == "sentinel2_l1c" and card["input_dtype"] == "uint16"
    mean, std = _numpy_stats(chips)
    np.testing.assert_allclose(card["normalization"]["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(card["normalization"]["std"], std, rtol=1e-9)
    assert card["method_config"]["decoder_dim"] == 32 and card["config"]["steps"] == 6


def test_lr_schedule_warmup_then_cosine():
    cfg = PretrainConfig(lr=1e-3, min_lr=1e-5, warmup_steps=5, steps=25)
    lrs = [cfg.lr_at(s) for s in range(30)]
    np.testing.assert_allclose(lrs[:5], [2e-4, 4e-4, 6e-4, 8e-4, 1e-3])
    assert lrs[5] == pytest.approx(1e-3)
    assert lrs[15] == pytest.approx((1e-3 + 1e-5) / 2)  # half way through the cosine
    t = (12 - 5) / 20
    assert lrs[12] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t)))
    assert all(a > b for a, b in zip(lrs[5:25], lrs[6:25]))  # strictly falling after warmup
    assert lrs[25] == pytest.approx(1e-5) and lrs[29] == pytest.approx(1e-5)  # floor after the end


def test_pretrain_arguments_reach_config_and_model(tmp_path, chips):
    run = _pretrain(chips, tmp_path, 2, batch_size=4, patch_size=16, mask_ratio=0.5, warmup_steps=3,
                    lr=5e-4, seed=3)
    cfg = run.config
    assert cfg.encoder["patch_size"] == 16 and run.model.encoder.patch_size == 16
    assert run.model.mask_ratio == 0.5 and cfg.method_config["mask_ratio"] == 0.5
    assert cfg.warmup_steps == 3 and cfg.lr == 5e-4 and cfg.seed == 3 and cfg.batch_size == 4
    assert run.history["lr"].tolist() == [5e-4 / 3, 2 * 5e-4 / 3]


def test_optimiser_settings_are_pretrain_arguments(tmp_path, chips):
    run = _pretrain(chips, tmp_path, 1, batch_size=2, min_lr=1e-6, weight_decay=0.1, grad_clip=0.5,
                    tensorboard=False)
    cfg = run.config
    assert (cfg.min_lr, cfg.weight_decay, cfg.grad_clip, cfg.tensorboard) == (1e-6, 0.1, 0.5, False)
    assert "weight_decay" not in cfg.method_config  # no longer swallowed as a method setting
    assert not (tmp_path / "tensorboard").exists()


def _scalars(folder):
    """Every scalar in every event file of ``folder`` (a resumed run adds a file), by step."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    found: dict = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                value = v.simple_value if v.HasField("simple_value") else float(v.tensor.float_val[0])
                found.setdefault(v.tag, {})[event.step] = value
    return {tag: sorted(steps.items()) for tag, steps in found.items()}


def test_tensorboard_logs_every_step_and_resumes(tmp_path, chips):
    pytest.importorskip("tensorboard")
    run = _pretrain(chips, tmp_path, 3, batch_size=4, checkpoint_every=2)  # default: on when installed
    assert run.config.tensorboard is True
    logged = _scalars(tmp_path / "tensorboard")
    assert {"train/loss", "train/lr", "train/emb_std", "train/images_per_s"} <= set(logged)
    assert [s for s, _ in logged["train/loss"]] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in logged["train/loss"]], run.history["loss"], rtol=1e-6)
    _pretrain(chips, tmp_path, 5, batch_size=4, checkpoint_every=2)  # resumed: steps 4, 5 appended
    assert [s for s, _ in _scalars(tmp_path / "tensorboard")["train/loss"]] == [1, 2, 3, 4, 5]


def test_tensorboard_logger_needs_tensorboard(tmp_path, monkeypatch):
    from eossl.train.callbacks import TensorBoardLogger
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ImportError, match=r"eossl\[tensorboard\]"):
        TensorBoardLogger(tmp_path).on_train_start(None)


def test_encoder_given_by_name(tmp_path, chips):
    run = eossl.pretrain(chips, method="mae", encoder="vit_tiny", patch_size=16, steps=1, batch_size=2,
                         decoder_dim=16, decoder_depth=1, out=tmp_path)
    assert run.model.encoder.spec["name"] == "vit_tiny" and run.model.encoder.patch_size == 16
    assert len(run.model.encoder.model.blocks) == 12  # timm's vit_tiny depth


def test_same_seed_gives_the_same_run(tmp_path, chips):
    a = _pretrain(chips, tmp_path / "a", 3, batch_size=4)
    b = _pretrain(chips, tmp_path / "b", 3, batch_size=4)
    c = _pretrain(chips, tmp_path / "c", 3, batch_size=4, seed=1)
    assert a.history["loss"].tolist() == b.history["loss"].tolist()
    assert a.history["loss"].tolist() != c.history["loss"].tolist()


# ----------------------------------------------------------------------------- inputs

def test_dataset_input(tmp_path, slovenia):
    run = _pretrain(slovenia, tmp_path, 2, batch_size=4)
    card = run.model.card
    assert [b["name"] for b in card["bands"]] == slovenia["band"].values.tolist()
    mean, std = _numpy_stats(slovenia["image"])
    np.testing.assert_allclose(card["normalization"]["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(card["normalization"]["std"], std, rtol=1e-9)
    assert len(run.history) == 2 and np.isfinite(run.history["loss"]).all()


def test_mixed_list_of_chips_and_a_stack(tmp_path, chips, slovenia):
    run = _pretrain([chips, slovenia.image], tmp_path, 2, batch_size=8)
    # statistics pooled over both sources, the stack put in the chips' band order by name
    mean, std = _numpy_stats(chips, slovenia.image.sel(band=chips["band"].values))
    np.testing.assert_allclose(run.model.card["normalization"]["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(run.model.card["normalization"]["std"], std, rtol=1e-6)
    assert len(run.history) == 2 and np.isfinite(run.history["loss"]).all()


def test_training_arrays_accepts_and_refuses(chips, slovenia):
    assert training_arrays(chips)[0] is chips
    assert training_arrays(slovenia)[0].identical(slovenia["image"])
    assert len(training_arrays([chips, slovenia])) == 2
    with pytest.raises(DataError, match="'image' variable"):
        training_arrays(slovenia.drop_vars("image"))
    with pytest.raises(DataError, match="band"):
        training_arrays(chips.values)
    with pytest.raises(DataError, match="band"):
        training_arrays(chips.rename(band="channel"))


@pytest.mark.parametrize("kwargs", [dict(patch_size=7), dict(img_size=60)])
def test_patch_size_must_divide_the_window(tmp_path, chips, kwargs):
    with pytest.raises(DataError, match="does not divide"):
        _pretrain(chips, tmp_path, 2, **kwargs)
    assert not tmp_path.joinpath("checkpoint").exists()


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, chips):
    with pytest.raises(FloatingPointError, match="lower lr"):
        _pretrain(chips, tmp_path, 10, batch_size=4, lr=1e8, warmup_steps=0)
    assert not _ckpt(tmp_path).exists()  # no NaN weights written


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected


# ----------------------------------------------------------------------------- callbacks

class Recorder(Callback):
    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.step))

    def on_step_end(self, trainer, logs):
        self.events.append(("step", logs["step"]))
        assert trainer.history[-1] is logs
        if self.stop_at is not None and logs["step"] == self.stop_at:
            trainer.stop_requested = True

    def on_checkpoint(self, trainer, path):
        assert path.is_file()
        self.events.append(("checkpoint", read_card(path)["step"]))

    def on_train_end(self, trainer):
        self.events.append(("end", trainer.step))


def test_callback_object_and_plain_function_are_called(tmp_path, chips):
    rec, seen = Recorder(), []
    run = _pretrain(chips, tmp_path, 6, batch_size=4, checkpoint_every=4, callbacks=[rec, seen.append])
    assert rec.events == [("start", 0), ("step", 1), ("step", 2), ("step", 3), ("step", 4),
                          ("checkpoint", 4), ("step", 5), ("step", 6), ("checkpoint", 6), ("end", 6)]
    assert [row["step"] for row in seen] == [1, 2, 3, 4, 5, 6]
    assert seen == run.history.to_dict("records")


def test_stop_requested_ends_early_with_a_checkpoint(tmp_path, chips):
    rec = Recorder(stop_at=3)
    run = _pretrain(chips, tmp_path, 50, batch_size=4, callbacks=[rec])
    assert run.stopped_early
    assert run.history["step"].tolist() == [1, 2, 3]
    assert read_checkpoint(tmp_path)["trainer"]["step"] == 3
    assert rec.events[-2:] == [("checkpoint", 3), ("end", 3)]


def test_keyboard_interrupt_keeps_what_was_learned(tmp_path, chips):
    def interrupt(logs):
        if logs["step"] == 2:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted at step 2"):
        run = _pretrain(chips, tmp_path, 50, batch_size=4, callbacks=[interrupt])
    assert run.stopped_early and len(run.history) == 2
    assert read_card(tmp_path)["step"] == 2


# ----------------------------------------------------------------------------- resuming

def test_resume_continues_the_history(tmp_path, chips):
    first = _pretrain(chips, tmp_path, 10, batch_size=8, checkpoint_every=5)
    second = _pretrain(chips, tmp_path, 20, batch_size=8, checkpoint_every=5)
    assert second.history["step"].tolist() == list(range(1, 21))
    pd.testing.assert_frame_equal(second.history.iloc[:10], first.history)
    assert read_card(tmp_path)["step"] == 20
    assert pd.read_csv(tmp_path / "history.csv")["step"].tolist() == list(range(1, 21))
    # a finished run called again with the same steps trains no further
    third = _pretrain(chips, tmp_path, 20, batch_size=8, checkpoint_every=5)
    assert third.history["step"].tolist() == list(range(1, 21))


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, chips):
    """Weights, optimiser, schedule and both random streams come back: steps 7..12 of a run
    stopped at 6 and resumed are the steps an uninterrupted run takes."""
    straight = _pretrain(chips, tmp_path / "straight", 12, batch_size=8, checkpoint_every=6)
    _pretrain(chips, tmp_path / "split", 12, batch_size=8, checkpoint_every=6, callbacks=[Recorder(stop_at=6)])
    torch.manual_seed(1234)  # whatever happened in between must not matter
    np.random.seed(1234)
    resumed = _pretrain(chips, tmp_path / "split", 12, batch_size=8, checkpoint_every=6)
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], rtol=1e-5)
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-4, atol=1e-6)


def test_resume_false_refuses_and_leaves_the_checkpoint_alone(tmp_path, chips):
    _pretrain(chips, tmp_path, 2, batch_size=4)
    files = {p: p.read_bytes() for p in (_ckpt(tmp_path), tmp_path / "history.csv", tmp_path / "config.json")}
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        _pretrain(chips, tmp_path, 4, batch_size=4, resume=False)
    for p, data in files.items():
        assert p.read_bytes() == data, p


@pytest.fixture
def finished_run(tmp_path, chips):
    _pretrain(chips, tmp_path, 2, batch_size=4)
    return tmp_path, _ckpt(tmp_path).read_bytes()


def test_resume_with_other_bands_is_refused(finished_run, chips):
    out, before = finished_run
    with pytest.raises(CheckpointError, match="bands"):
        _pretrain(chips.isel(band=slice(0, 12)), out, 4, batch_size=4)
    with pytest.raises(CheckpointError, match="another run") as info:  # same bands, other order
        _pretrain(chips.isel(band=list(range(12, -1, -1))), out, 4, batch_size=4)
    assert "bands" in str(info.value) and "encoder" not in str(info.value)
    assert _ckpt(out).read_bytes() == before


def test_resume_with_another_method_or_encoder_is_refused(finished_run, chips, monkeypatch):
    out, before = finished_run
    from eossl.models import mae
    monkeypatch.setitem(mae.METHODS, "mae_copy", mae.METHODS["mae"])
    with pytest.raises(CheckpointError, match="method 'mae'"):
        _pretrain(chips, out, 4, batch_size=4, method="mae_copy")
    with pytest.raises(CheckpointError, match="encoder"):
        _pretrain(chips, out, 4, batch_size=4, encoder={**TINY_ENCODER, "depth": 2})
    assert _ckpt(out).read_bytes() == before


KILL_SCRIPT = """
import sys
import eossl
chips = eossl.datasets.load_sample("eurosat_ms")
eossl.pretrain(chips, method="mae", steps=100000, batch_size=8, encoder={encoder!r}, decoder_dim=32, decoder_depth=1,
               checkpoint_every=2, out=sys.argv[1])
"""


def test_killed_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path, chips):
    out = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT.format(encoder=dict(TINY_ENCODER))))
    env = {**os.environ, "EOSSL_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        step = 0
        while step < 6:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the training subprocess made no checkpoint in time"
            time.sleep(0.05)
            if _ckpt(out).exists():
                step = read_card(out)["step"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    saved = read_checkpoint(out, optimizer=True)
    k = saved["trainer"]["step"]
    assert k >= 6 and k % 2 == 0 and saved["card"]["step"] == k
    assert [row["step"] for row in saved["trainer"]["history"]] == list(range(1, k + 1))
    assert saved["optim"] is not None and saved["rng"] is not None
    model = eossl.load_model(out)
    assert model.card["step"] == k

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resuming must be quiet
        run = _pretrain(chips, out, k + 2, batch_size=8, checkpoint_every=2)
    assert run.history["step"].tolist() == list(range(1, k + 3))
    assert run.history["loss"].tolist()[:k] == [row["loss"] for row in saved["trainer"]["history"]]
    assert read_card(out)["step"] == k + 2


def test_worker_loader_trains_like_the_inline_sampler(tmp_path, chips):
    """num_workers > 0 cuts batches in a worker process (the GPU path); on CPU it must still train."""
    run = _pretrain(chips, tmp_path, 3, batch_size=4, num_workers=1)
    assert run.history["step"].tolist() == [1, 2, 3] and np.isfinite(run.history["loss"]).all()


# ---------------------------------------------------------------------- wall-clock budgets

def test_minutes_budget_stops_within_one_step_checkpoints_and_resumes(chips, tmp_path):
    budget = 3.0  # seconds
    run = _pretrain(chips, tmp_path, None, minutes=budget / 60, batch_size=4, checkpoint_every=10**6)
    card = read_card(tmp_path / "checkpoint")
    longest = 1 / run.history["images_per_s"].min() * 4  # the slowest step, in seconds
    assert budget <= card["train_seconds"] <= budget + longest + 0.1  # rounding of the card
    assert card["step"] == len(run.history) > 1 and card["config"]["minutes"] == budget / 60
    assert card["config"]["steps"] is None
    lrs = run.history["lr"].to_numpy()  # warm-up, then a cosine laid out over the time
    assert lrs[-1] < 0.5 * lrs.max() and np.argmax(lrs) < len(lrs) - 1
    again = _pretrain(chips, tmp_path, None, minutes=budget / 60, batch_size=4)  # spent: nothing to do
    assert len(again.history) == len(run.history)
    more = _pretrain(chips, tmp_path, None, minutes=2 * budget / 60, batch_size=4)  # a larger budget resumes
    assert len(more.history) > len(run.history)
    assert more.history["step"].tolist() == list(range(1, len(more.history) + 1))
    assert read_card(tmp_path / "checkpoint")["train_seconds"] >= 2 * budget


def test_steps_and_minutes_together_is_an_error(chips, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        _pretrain(chips, tmp_path, 5, minutes=1)
    with pytest.raises(ValueError, match="positive"):
        _pretrain(chips, tmp_path, None, minutes=0)
    assert not (tmp_path / "checkpoint").exists()


def test_minutes_progress_bar_counts_seconds(chips, tmp_path, monkeypatch):
    import eossl.train.loop as loop
    bars = []
    real = loop.progress

    def spy(*args, **kwargs):
        bars.append(kwargs)
        return real(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(loop, "progress", spy)
    _pretrain(chips, tmp_path, None, minutes=1 / 60, batch_size=4)
    assert bars[0]["unit"] == "s" and bars[0]["total"] == 1 and "remaining" in bars[0]["bar_format"]
