"""Helpers shared by the benchmark scripts: machine description, peak memory, table printing."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys

import torch


def machine() -> str:
    """One line naming the machine, for the README table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}, Python {platform.python_version()}")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(lines)


def run_isolated(script: str, args: list[str]) -> str:
    """Run one benchmark case in a fresh process, so its peak memory is its own."""
    out = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True,
                         env={**os.environ, "EOSSL_PROGRESS": "0"})
    return out.stdout.strip().splitlines()[-1]
