"""The benchmark scripts run and print their tables (timings are not checked, only that they work)."""

from __future__ import annotations

import os
import subprocess
import sys

from _tiny import REPO


def _run(*args):
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "EOSSL_PROGRESS": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_bench_pretrain_prints_its_table():
    text = _run("benchmarks/bench_pretrain.py", "--steps", "2", "--configs",
                "default: ViT-tiny/8, 6 blocks, 64 px")
    assert "| config | batch | device | images/s | peak memory (MiB) | params (M) |" in text
    row = [line for line in text.splitlines() if line.startswith("| default")][0]
    images_per_s = float(row.split("|")[4])
    assert images_per_s > 0


def test_bench_embed_prints_its_table():
    text = _run("benchmarks/bench_embed.py", "--repeat", "1")
    assert "| input | embed (img/s) | bare forward (img/s) | overhead % |" in text
    assert "480 chips" in text and "scene 13 x 505 x 500" in text
