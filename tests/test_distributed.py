"""DDP: torchrun with 2 CPU processes on gloo trains through the real CLI; losses gathered across
processes equal the single-process computation on the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

import eossl
from eossl.models.losses import info_nce, nt_xent
from eossl import distributed

from _tiny import TINY_ENCODER


def test_single_process_helpers_are_identities():
    x = torch.randn(4, 3)
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.is_main()
    assert distributed.gather(x) is x and distributed.all_reduce_mean(x) is x
    assert distributed.init_from_env() is False  # WORLD_SIZE unset: one process


def _loss_worker(rank, world, init_file, z1, z2, q, k, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    half = z1.shape[0] // world
    part = slice(rank * half, (rank + 1) * half)
    results[rank] = (float(nt_xent(z1[part], z2[part])), float(info_nce(q[part], k[part])))
    dist.destroy_process_group()


def test_losses_gather_negatives_across_processes(tmp_path):
    g = torch.Generator().manual_seed(0)
    z1, z2, q, k = (torch.randn(8, 5, generator=g) for _ in range(4))
    results = mp.Manager().dict()
    mp.spawn(_loss_worker, args=(2, str(tmp_path / "init"), z1, z2, q, k, results), nprocs=2)
    # Each process scores its own rows against every process's candidates: the mean over the two
    # processes is the single-process loss over the whole batch.
    nt = (results[0][0] + results[1][0]) / 2
    nce = (results[0][1] + results[1][1]) / 2
    assert nt == pytest.approx(float(nt_xent(z1, z2)), rel=1e-5)
    assert nce == pytest.approx(float(info_nce(q, k)), rel=1e-5)


def test_torchrun_two_cpu_processes_train_through_the_cli(tmp_path):
    out = tmp_path / "run"
    config = {"data": [{"sample": "eurosat_ms"}], "method": "mae", "encoder": dict(TINY_ENCODER),
              "steps": 4, "batch_size": 8, "checkpoint_every": 2, "out": str(out),
              "method_config": {"decoder_dim": 32, "decoder_depth": 1}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "EOSSL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_port=29517", "-m", "eossl", "pretrain", str(path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint:") == 1  # only the main process reports and writes
    model = eossl.load_model(out)
    assert model.card["step"] == 4
    assert pd.read_csv(out / "history.csv")["step"].tolist() == [1, 2, 3, 4]
    assert [p.name for p in (out / "checkpoint").iterdir() if p.name.endswith(".tmp")] == []
