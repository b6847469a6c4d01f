"""SIGKILL of real processes: pretraining at random moments and inside checkpoint writes, and a
scene embedding into Zarr mid-way. After every kill the checkpoint loads and the run resumes;
a resumed run equals an uninterrupted one; no temporary file outlives the next write.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import eossl
from _fault_counts import RESULTS
from _tiny import REPO, TINY_ENCODER
from eossl.checkpoint import read_card, read_checkpoint

# The same tiny run in every process: 20 real EuroSAT-MS chips, a one-block ViT.
TRAIN = """
import sys
import numpy as np
import eossl
chips = eossl.datasets.load_sample("eurosat_ms")
labels = chips["label"].values
keep = np.concatenate([np.flatnonzero(labels == c)[:5] for c in np.unique(labels)[:4]])
chips = chips.isel(sample=keep).load()
{patch}
eossl.pretrain(chips, method="mae", steps=int(sys.argv[2]), batch_size=4, encoder={encoder!r}, decoder_dim=32,
               decoder_depth=1, checkpoint_every=1, out=sys.argv[1], tensorboard=False, seed=0)
"""

# Inside a checkpoint write: the tensors are in the temporary file, the rename has not happened.
SLOW_WRITE = """
import time
import eossl.checkpoint as ckpt
_save = ckpt.save_file
def slow_save(tensors, path, metadata=None):
    _save(tensors, path, metadata=metadata)
    print("WRITTEN", path, flush=True)
    time.sleep(3)
ckpt.save_file = slow_save
"""

ENV = {**os.environ, "EOSSL_PROGRESS": "0", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _script(tmp_path: Path, slow_write: bool = False) -> Path:
    path = tmp_path / ("train_slow.py" if slow_write else "train.py")
    path.write_text(textwrap.dedent(TRAIN.format(encoder=dict(TINY_ENCODER), patch=SLOW_WRITE if slow_write else "")))
    return path


def _step(out: Path) -> int:
    try:
        return read_card(out)["step"]
    except Exception:  # no checkpoint yet
        return -1


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@contextlib.contextmanager
def _training(script: Path, out: Path, steps: int, **popen):
    """A pretraining child process; never left running, its pipes closed, whatever the test does."""
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(steps)], env=ENV,
                            stderr=subprocess.PIPE, **{"stdout": subprocess.DEVNULL, **popen})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int) -> None:
    """Until the run in ``out`` has checkpointed a step above ``step`` (bounded in time)."""
    deadline = time.monotonic() + 120
    while _step(out) <= step:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)


def _temps(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def _check_loads_and_is_consistent(out: Path) -> int:
    saved = read_checkpoint(out, optimizer=True)
    k = saved["trainer"]["step"]
    assert saved["card"]["step"] == k and saved["optim"] is not None
    assert [row["step"] for row in saved["trainer"]["history"]] == list(range(1, k + 1))
    assert eossl.load_model(out).card["step"] == k
    return k


def _resume_in_process(chips, out: Path, steps: int):
    return eossl.pretrain(chips, method="mae", steps=steps, batch_size=4, encoder=dict(TINY_ENCODER),
                          decoder_dim=32, decoder_depth=1, checkpoint_every=1, out=out, tensorboard=False,
                          seed=0)


def test_random_kills_during_training_each_load_and_resume(small_chips, tmp_path):
    """Eight kills at random moments (steps checkpoint every step, so many land in a write); each
    following process resumes where the last checkpoint left off."""
    out, script, rng = tmp_path / "run", _script(tmp_path), random.Random(0)
    steps_seen = []
    for kill in range(8):
        before = _step(out)
        with _training(script, out, 100000, text=True) as proc:
            _wait_for_step(proc, out, before)  # this process has made progress of its own
            time.sleep(rng.uniform(0.0, 0.5))
            _kill(proc)
        k = _check_loads_and_is_consistent(out)
        assert k > before
        steps_seen.append(k)
        RESULTS["kills"] += 1
    run = _resume_in_process(small_chips, out, steps_seen[-1] + 2)
    assert run.history["step"].tolist() == list(range(1, steps_seen[-1] + 3))
    assert not _temps(out), "a finished run left temporary files"


def test_kills_inside_checkpoint_writes_leave_the_previous_checkpoint_and_no_temp_files(small_chips, tmp_path):
    """Three kills between writing the temporary file and renaming it: the previous checkpoint
    stays whole, the killed write's file is there until the next write, then gone."""
    out, script = tmp_path / "run", _script(tmp_path, slow_write=True)
    for kill in range(3):
        before = _step(out)
        with _training(script, out, 100000, stdout=subprocess.PIPE, text=True) as proc:
            writes = 0
            for line in proc.stdout:  # blocks until the child reports a write; bounded by its speed
                if line.startswith("WRITTEN") and ".checkpoint.safetensors." in line:
                    writes += 1
                    if writes == 2:  # the first write of this process completed; kill in the second
                        break
            assert writes == 2, proc.stderr.read()[-2000:]
            _kill(proc)
        leftovers = [p for p in _temps(out) if p.name.startswith(".checkpoint.safetensors.")]
        assert leftovers, "the kill did not land inside a write"
        k = _check_loads_and_is_consistent(out)
        assert k == before + 1 if before >= 0 else k == 1  # the completed write, not the killed one
        RESULTS["kills"] += 1
    _resume_in_process(small_chips, out, _step(out) + 1)
    assert not _temps(out), f"temporary files of killed writes were not cleaned: {_temps(out)}"


def test_a_resumed_run_equals_an_uninterrupted_one(small_chips, tmp_path):
    """SIGKILL at step >= 3 of 8, resume to 8, compare with 8 uninterrupted steps (same seed).
    Tolerance 1e-5: both runs execute the same operations; only the thread count differs."""
    out, script = tmp_path / "killed", _script(tmp_path)
    with _training(script, out, 8, text=True) as proc:
        _wait_for_step(proc, out, 2)
        _kill(proc)
    k = _check_loads_and_is_consistent(out)
    assert 3 <= k < 8
    RESULTS["kills"] += 1
    torch.set_num_threads(1)  # as the killed process, so the sums run in the same order
    try:
        resumed = _resume_in_process(small_chips, out, 8)
        straight = _resume_in_process(small_chips, tmp_path / "straight", 8)
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], rtol=1e-5, atol=1e-6)
    a, b = resumed.model.state_dict(), straight.model.state_dict()
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), atol=1e-5, err_msg=name)


def test_embed_to_zarr_killed_mid_way_skips_finished_chunks_and_ends_equal(small_run, tmp_path):
    import rasterio
    import xarray as xr
    scene = eossl.datasets.load_sample("slovenia_s2")["image"].isel(time=0)
    # 202 x 200 px from the real scene with flips (no two 64 px chunks equal): 4 x 4 chunks
    top = np.concatenate([scene.values, scene.values[:, :, ::-1]], axis=2)     # (C, 101, 200)
    values = np.concatenate([top, top[:, ::-1, :]], axis=1)                      # (C, 202, 200)
    t = scene.rio.transform()
    big = xr.DataArray(values, dims=("band", "y", "x"), coords={
        "band": scene["band"].values, "y": t.f + t.e * (np.arange(202) + 0.5), "x": t.c + t.a * (np.arange(200) + 0.5)})
    tif = tmp_path / "scene.tif"
    big.rio.write_crs(scene.rio.crs).rio.write_transform(t).rio.to_raster(tif)
    with rasterio.open(tif, "r+") as f:  # band names, as a real export carries them
        f.descriptions = tuple(str(b) for b in scene["band"].values)
    store = tmp_path / "k.zarr"
    script = textwrap.dedent(f"""
        import os, signal, eossl
        n = []
        def kill(i, j):
            n.append(1)
            if len(n) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        eossl.embed_to_zarr({str(small_run.checkpoint_path)!r}, {str(tif)!r}, {str(store)!r}, chunk=64,
                            on_chunk=kill)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    RESULTS["kills"] += 1
    again = []
    out = eossl.embed_to_zarr(small_run.checkpoint_path, tif, store, chunk=64,
                              on_chunk=lambda i, j: again.append((i, j)))
    straight = eossl.embed_to_zarr(small_run.checkpoint_path, tif, tmp_path / "straight.zarr", chunk=64)
    chunks = int(np.prod([len(c) for c in straight.chunks[:2]]))
    assert len(again) == chunks - 3  # the three written before the kill are not redone
    np.testing.assert_allclose(out.values, straight.values, atol=1e-6)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("leftover", [".checkpoint.safetensors.a1b2c3d4.tmp",          # an older eossl's name
                                      ".checkpoint.safetensors.pid999999999.x.tmp"])  # a dead writer
def test_the_next_write_removes_leftovers_of_killed_writes(small_run, tmp_path, leftover):
    from eossl.checkpoint import save_checkpoint
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / leftover).write_bytes(b"x" * 1000)
    live = folder / f".checkpoint.safetensors.pid{os.getpid()}.live.tmp"  # this process: in progress
    live.write_bytes(b"y")
    save_checkpoint(folder, small_run.model, small_run.model.card)
    assert not (folder / leftover).exists() and live.exists()
