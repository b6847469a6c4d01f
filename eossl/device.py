"""Which device eossl computes on: one rule for every stage (pretrain, embed, fine-tune, search).

``device="auto"`` everywhere: CUDA when there is a GPU, then Apple's MPS, then the CPU.
"""

from __future__ import annotations

import torch

from eossl import validate as check


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then Apple mps, then cpu; anything else must be a device this machine has."""
    if isinstance(device, torch.device):
        return device
    check.device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)
