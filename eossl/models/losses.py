"""Losses shared by several SSL methods. Each is checked against a direct computation in tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eossl.distributed import gather, rank


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE (as in MoCo v3 / CPC): query i's positive is key i, every other key is a negative.

    query, key: (B, D). With several processes the keys of all of them are negatives (gathered),
    which is what makes large effective batches possible. Returns the mean cross-entropy.
    """
    q = F.normalize(query, dim=1)
    k = F.normalize(gather(key), dim=1)                    # (B * world, D)
    logits = q @ k.T / temperature                         # (B, B * world)
    labels = torch.arange(q.shape[0], device=q.device) + rank() * q.shape[0]
    return F.cross_entropy(logits, labels)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy: each of the 2B local views has its pair as
    positive and every other view (of all processes) as a negative.

    z1, z2: (B, D), the two views of the same B images.
    """
    B = z1.shape[0]
    local = F.normalize(torch.cat([z1, z2]), dim=1)                    # (2B, D)
    every = F.normalize(torch.cat([gather(z1), gather(z2)]), dim=1)    # (2N, D), N = B * world
    N = every.shape[0] // 2
    idx = torch.arange(B, device=z1.device) + rank() * B               # local rows among all N
    self_idx = torch.cat([idx, idx + N])                               # (2B,) where each row sits
    pair_idx = torch.cat([idx + N, idx])                               # (2B,) its other view
    sim = local @ every.T / temperature                                # (2B, 2N)
    sim[torch.arange(2 * B, device=z1.device), self_idx] = float("-inf")  # not its own negative
    return F.cross_entropy(sim, pair_idx)


def embedding_std(z: torch.Tensor) -> float:
    """Mean over dimensions of the per-dimension std of L2-normalised embeddings (B, D): about
    1/sqrt(D) when healthy, near 0 when every input maps to the same point (collapse)."""
    z = F.normalize(z.detach().float(), dim=1)
    return float(z.std(dim=0).mean())
