"""Multi-process training helpers (PyTorch DDP launched by ``torchrun``).

Everything here is a no-op in a single process, so methods call :func:`gather` unconditionally:
a contrastive loss then sees the negatives of every process when there are several.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Only the main process writes checkpoints, logs and progress bars."""
    return rank() == 0


def init_from_env(device_type: str = "cpu") -> bool:
    """Join the process group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, ...). gloo on CPU, nccl on CUDA. Returns True when distributed."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device_type == "cuda" and dist.is_nccl_available() else "gloo"
    dist.init_process_group(backend=backend)
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0, keeping gradients for the local
    part (and, through torch.distributed.nn, for the others). Identity in one process."""
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(x), dim=0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Average a tensor over processes (for statistics such as DINO's centre). Identity in one."""
    if not is_distributed():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world_size()
