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
import torch.nn.functional as F
from torch import nn

from eossl.models.backbones import Encoder
from eossl.models.contrastive import mlp
from eossl.models.losses import embedding_std, nt_xent


def shifted_crops(windows: torch.Tensor, crop: int, generator=None, return_geometry: bool = False):
    """(B, C, S, S) -> (B, C, crop, crop): a crop at a random offset per sample, then a random
    flip and 90-degree turn per sample (pixels are moved, never interpolated).

    ``return_geometry``: also return ``(offsets (B, 2) px, flip (B,) bool, turns (B,) 0-3)``, what
    :func:`to_window_frame` needs to put a view's token grid back where it came from."""
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
    out = _turned(views, turns)
    return (out, (offsets, flip, turns)) if return_geometry else out


def _turned(grids: torch.Tensor, turns: torch.Tensor, sign: int = 1) -> torch.Tensor:
    """(B, C, h, w) square grids, each turned by ``sign * turns[b]`` quarter turns."""
    out = grids.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        if chosen.any():
            out[chosen] = torch.rot90(grids[chosen], sign * k, dims=(2, 3))
    return out


def to_window_frame(grids: torch.Tensor, flip: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Undo :func:`shifted_crops`'s turn and flip on a view's token grid (B, D, h, w): token (i, j)
    then lies over the crop's patch (i, j) again. Exact, because the view is a whole number of
    patches: turning the image turns its patch grid."""
    grids = _turned(grids, turns, sign=-1)
    return torch.where(flip[:, None, None, None], grids.flip(-1), grids)


def dense_nt_xent(grid1: torch.Tensor, grid2: torch.Tensor, offsets1: torch.Tensor, offsets2: torch.Tensor,
                  patch: int, max_shift: int, temperature: float) -> torch.Tensor:
    """Token-level contrast between two looks of one place (both grids in the window frame).

    grid1, grid2: (B, P, h, w) projected tokens; offsets (B, 2): where each crop starts in the
    window, px. A token of look 1 and the token of look 2 over the same ground (to the nearest
    patch) are a positive pair; the other tokens of that place in look 2 are its negatives. So a
    token must say what is at its spot (and not only what the whole view is), the same on either
    date: the property change detection needs from per-patch embeddings.
    """
    B, P, h, w = grid1.shape
    margin = -(-max_shift // patch)                       # the most the grids can be apart, in tokens
    R = h - margin                                        # the overlap kept for every sample
    d = torch.round((offsets1 - offsets2).float() / patch).long().clamp(-margin, margin)  # (B, 2)
    start1, start2 = (-d).clamp(min=0), d.clamp(min=0)    # look 1's token i sits over look 2's i + d
    span = torch.arange(R, device=grid1.device)
    batch = torch.arange(B, device=grid1.device)[:, None, None]

    def cut(grid, start):                                 # (B, P, h, w) -> (B, R*R, P)
        rows, cols = start[:, 0, None] + span, start[:, 1, None] + span   # (B, R)
        return grid.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].reshape(B, R * R, P)
    z1 = F.normalize(cut(grid1, start1), dim=-1)
    z2 = F.normalize(cut(grid2, start2), dim=-1)
    logits = z1 @ z2.transpose(1, 2) / temperature        # (B, R*R, R*R): same spot on the diagonal
    target = torch.arange(R * R, device=grid1.device).expand(B, -1)
    return 0.5 * (F.cross_entropy(logits.flatten(0, 1), target.flatten())
                  + F.cross_entropy(logits.transpose(1, 2).flatten(0, 1), target.flatten()))


class PlaceContrast(nn.Module):
    """Contrast places: two dates / nearby shifted crops of one place attract, other places repel."""

    method = "place_contrast"
    input_kind = "pair"

    def __init__(self, encoder: Encoder, crop: int | None = None, max_shift: int = 8,
                 hidden_dim: int = 512, projection_dim: int = 128, temperature: float = 0.2,
                 dense_weight: float = 0.0):
        super().__init__()
        self.encoder = encoder
        crop = int(crop or encoder.spec.get("img_size", 32))
        self.config = dict(crop=crop, max_shift=max_shift, hidden_dim=hidden_dim,
                           projection_dim=projection_dim, temperature=temperature, dense_weight=dense_weight)
        self.crop, self.max_shift, self.temperature = crop, max_shift, temperature
        self.dense_weight = float(dense_weight)
        self.projector = mlp(encoder.dim, hidden_dim, projection_dim, num_layers=2)
        if self.dense_weight:  # a per-token head for the token-level term (1x1 convs = an MLP per token)
            self.dense_projector = nn.Sequential(nn.Conv2d(encoder.dim, hidden_dim, 1), nn.ReLU(inplace=True),
                                                 nn.Conv2d(hidden_dim, projection_dim, 1))

    @staticmethod
    def window_size(img_size: int, config: dict) -> int:
        """The window the trainer samples: the view size plus room for the shift."""
        return int(config.get("crop") or img_size) + int(config.get("max_shift", 8))

    def views(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, C, S, S) -> two views (B, C, V, V): look 1 and look 2, each cut and turned on its own."""
        return shifted_crops(pairs[:, 0], self.crop), shifted_crops(pairs[:, 1], self.crop)

    def training_step(self, pairs: torch.Tensor):
        """(B, 2, C, S, S) -> (loss, {"emb_std"}); both views in one pass (one BatchNorm batch).
        With ``dense_weight`` the loss adds that much of :func:`dense_nt_xent` on the token grids."""
        if not self.dense_weight:
            view1, view2 = self.views(pairs)
            B = view1.shape[0]
            pooled = self.encoder(torch.cat([view1, view2]))   # (2B, D)
            z = self.projector(pooled)                         # (2B, P)
            loss = nt_xent(z[:B], z[B:], self.temperature)
            return loss, {"emb_std": embedding_std(pooled[:B])}
        (view1, (o1, f1, t1)), (view2, (o2, f2, t2)) = (
            shifted_crops(pairs[:, 0], self.crop, return_geometry=True),
            shifted_crops(pairs[:, 1], self.crop, return_geometry=True))
        B = view1.shape[0]
        grids = self.encoder.feature_map(torch.cat([view1, view2]))   # (2B, D, h, w)
        pooled = grids.mean(dim=(2, 3))                               # (2B, D), as encoder(x)
        z = self.projector(pooled)                                    # (2B, P)
        place_loss = nt_xent(z[:B], z[B:], self.temperature)
        dense = self.dense_projector(grids)                           # (2B, P, h, w)
        dense1, dense2 = to_window_frame(dense[:B], f1, t1), to_window_frame(dense[B:], f2, t2)
        dense_loss = dense_nt_xent(dense1, dense2, o1, o2, self.encoder.patch_size, self.max_shift,
                                   self.temperature)
        loss = place_loss + self.dense_weight * dense_loss
        return loss, {"emb_std": embedding_std(pooled[:B]), "place_loss": float(place_loss.detach()),
                      "dense_loss": float(dense_loss.detach())}


METHODS = {
    "place_contrast": (PlaceContrast, "Place contrast: the same place on another date or a few pixels "
                       "away is a positive pair, other places are negatives (eossl's default recipe)",
                       dict(name="vit_tiny", patch_size=4, depth=2, embed_dim=64, num_heads=2)),
}
