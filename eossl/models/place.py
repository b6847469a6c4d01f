"""Place contrast: two looks at the same place are a positive pair, every other place a negative.

The trainer hands this method pairs of windows of one place, ``(B, 2, C, S, S)``
(:meth:`PatchSampler.sample_pairs`): from a stack the second window is another date, from a single
scene or a chip the same window again. Each look is then cut to a ``crop`` px view at its own
random offset inside the ``S = crop + max_shift`` window and given its own flip and turn, so the
two views of a pair differ by

- date (season, weather, sun angle), where the data has several: SeCo's positive
  (Mañas et al. 2021, see :mod:`eossl.models.temporal`);
- a shift of up to ``max_shift`` px: nearby ground is the same land cover, Tile2Vec's neighbour
  (Jean et al. 2019), kept small so the two views still overlap;
- orientation: satellite images have no "up".

encoder -> projection MLP -> SimCLR's ``nt_xent`` (every other place in the batch, and of every
process, is a negative). No colour or gain jitter: on multispectral data a band's level *is* the
signal (it is what separates water, crops and roofs), and the date pairs already bring natural
radiometric change.

Why this is eossl's default recipe: on a CPU budget it is the first of our methods to beat both
floors on EuroSAT-MS (see ``benchmarks/bench_quality.py``). Measured on 150 s runs of a 2-block
ViT with 4 px patches, the date pair is the lever: same place same date (shift and turn only)
reached 57.7 % at 5 labels per class, the random weights 54.7 %; with the other date 67-69 %.

Shapes: B batch, C bands, S sampled window, V = ``crop`` view size, D encoder width,
P projection width.
"""

from __future__ import annotations

import torch
from torch import nn

from eossl.models.backbones import Encoder
from eossl.models.contrastive import mlp
from eossl.models.losses import embedding_std, nt_xent


def shifted_crops(windows: torch.Tensor, crop: int, generator=None) -> torch.Tensor:
    """(B, C, S, S) -> (B, C, crop, crop): a crop at a random offset per sample, then a random
    flip and 90-degree turn per sample (pixels are moved, never interpolated)."""
    B, C, S, _ = windows.shape
    device = windows.device
    offsets = torch.randint(0, S - crop + 1, (B, 2), generator=generator, device=device)
    rows = offsets[:, 0, None] + torch.arange(crop, device=device)          # (B, V)
    cols = offsets[:, 1, None] + torch.arange(crop, device=device)          # (B, V)
    batch = torch.arange(B, device=device)[:, None, None]
    views = windows.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, V, V, C)
    views = views.permute(0, 3, 1, 2)                                       # (B, C, V, V)
    flip = torch.rand(B, generator=generator, device=device) < 0.5
    views = torch.where(flip[:, None, None, None], views.flip(-1), views)
    turns = torch.randint(0, 4, (B,), generator=generator, device=device)
    out = views.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        if chosen.any():
            out[chosen] = torch.rot90(views[chosen], k, dims=(2, 3))
    return out


class PlaceContrast(nn.Module):
    """Contrast places: two dates / nearby shifted crops of one place attract, other places repel."""

    method = "place_contrast"
    input_kind = "pair"

    def __init__(self, encoder: Encoder, crop: int | None = None, max_shift: int = 8,
                 hidden_dim: int = 512, projection_dim: int = 128, temperature: float = 0.2):
        super().__init__()
        self.encoder = encoder
        crop = int(crop or encoder.spec.get("img_size", 32))
        self.config = dict(crop=crop, max_shift=max_shift, hidden_dim=hidden_dim,
                           projection_dim=projection_dim, temperature=temperature)
        self.crop, self.max_shift, self.temperature = crop, max_shift, temperature
        self.projector = mlp(encoder.dim, hidden_dim, projection_dim, num_layers=2)

    @staticmethod
    def window_size(img_size: int, config: dict) -> int:
        """The window the trainer samples: the view size plus room for the shift."""
        return int(config.get("crop") or img_size) + int(config.get("max_shift", 8))

    def views(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, C, S, S) -> two views (B, C, V, V): look 1 and look 2, each cut and turned on its own."""
        return shifted_crops(pairs[:, 0], self.crop), shifted_crops(pairs[:, 1], self.crop)

    def training_step(self, pairs: torch.Tensor):
        """(B, 2, C, S, S) -> (loss, {"emb_std"}); both views in one pass (one BatchNorm batch)."""
        view1, view2 = self.views(pairs)
        B = view1.shape[0]
        pooled = self.encoder(torch.cat([view1, view2]))   # (2B, D)
        z = self.projector(pooled)                         # (2B, P)
        loss = nt_xent(z[:B], z[B:], self.temperature)
        return loss, {"emb_std": embedding_std(pooled[:B])}


METHODS = {
    "place_contrast": (PlaceContrast, "Place contrast: the same place on another date or a few pixels "
                       "away is a positive pair, other places are negatives (eossl's default recipe)",
                       dict(name="vit_tiny", patch_size=4, depth=2, embed_dim=64, num_heads=2)),
}
