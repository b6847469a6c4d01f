"""Relative patch position, or context prediction (Doersch, Gupta & Efros 2015).

Cut a window into a 3x3 grid of tiles, take the centre tile and one of its 8 neighbours, and ask
which neighbour it was. Telling "north-east of" from "south-west of" needs the encoder to know
what things are and how scenes are laid out (fields along a road, a shore facing water, the shadow
side of a ridge), without labels. Tiles are separated by a gap and jittered inside their grid cell,
so edges never touch and the network cannot win by continuing lines or textures across a border.

The two tiles are encoded separately by the same encoder. As in Doersch's network, where fc6 sees
pool5's whole spatial map, the classifier sees each tile's feature map average-pooled to a small
``grid`` x ``grid`` layout rather than one pooled vector, because "which side of the centre tile
continues into the neighbour" is about where things are inside the tiles. A small MLP on the two
flattened grids classifies the 8 positions with cross-entropy. Works with ViTs (tiles are a multiple
of the patch size; timm resamples the positions to the tile's grid) and CNNs (whose stride-32 maps
are 1x1 on small tiles, so there the classifier sees pooled vectors; CNNs need tiles of 64 px or more
for a 2x2 map).

What it learns on a CPU budget (benchmarks/bench_position_signal.py: Taizhou Landsat, trained on the
west half, scored on the east half, one-block ViT, 48 px windows, 1500 steps, ~25 s on one core):
with the 2 px gap 19.2 % (chance 12.5 %; pooled vectors 16.9 %); with touching tiles (``min_gap=0``)
46.5 % against 21.6 % for pooled vectors, the border-continuation shortcut that a spatial map can use.
8 px patches leave a 12 px tile one token, and then it stays at chance (13.0 %).

Shapes: B batch, C bands, H/W window pixels, t tile pixels, D encoder width, g grid side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from eossl.card import model_input
from eossl.data.patches import random_patches
from eossl.errors import DataError
from eossl.models.backbones import Encoder
from eossl.models.losses import embedding_std

#: (row, column) step from the centre tile to neighbour ``label``, in reading order:
#: 0 1 2 / 3 . 4 / 5 6 7 (Doersch's numbering, from 0).
NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))

CNN_TILE_STEP = 4  # CNN tiles are a multiple of 4 px, which leaves a few px of each cell for jitter
CNN_MIN_TILE = 8   # below this a CNN's stem has pooled a tile away to nothing


class RelativePosition(nn.Module):
    """Classify where a neighbour tile sits relative to the centre tile (8 classes).

    Args:
        encoder: a ViT or CNN :class:`Encoder`.
        hidden_dim: width of the MLP on the two concatenated tile grids.
        min_gap: pixels kept between neighbouring tiles; the rest of each grid cell is jitter.
            0 lets tiles touch, so lines and textures that cross the border give the answer away
            (the shortcut the gap is there to remove; useful to check the pipeline learns).
        grid: each tile's feature map is average-pooled to ``grid`` x ``grid`` cells for the
            classifier (at most the map's own size at the training window; 1 = pooled vectors).
    """

    method = "relative_position"
    input_kind = "image"

    def __init__(self, encoder: Encoder, hidden_dim: int = 512, min_gap: int = 2, grid: int = 4):
        super().__init__()
        if min_gap < 0:
            raise ValueError(f"min_gap must be 0 or more pixels, got {min_gap}")
        if grid < 1:
            raise ValueError(f"grid must be 1 or more cells, got {grid}")
        self.encoder = encoder
        self.config = dict(hidden_dim=hidden_dim, min_gap=min_gap, grid=grid)
        self.min_gap = min_gap
        size = encoder.spec["img_size"]
        tile = self.tile_size(size, size)  # the training window fits a 3x3 grid, or a DataError now
        # never pool a map *up*: a CNN's 1x1 map on a small tile stays one cell, not 16 copies of it
        self.grid = min(grid, self._map_side(tile))
        self.classifier = nn.Sequential(nn.Linear(2 * encoder.dim * self.grid ** 2, hidden_dim), nn.GELU(),
                                        nn.Linear(hidden_dim, len(NEIGHBOUR_OFFSETS)))
        self.register_buffer("offsets", torch.tensor(NEIGHBOUR_OFFSETS), persistent=False)  # (8, 2)

    def _map_side(self, tile: int) -> int:
        """Side of the encoder's feature map on a ``tile`` px tile (ViT: tile // patch; CNN: measured)."""
        if self.encoder.is_vit:
            return tile // self.encoder.patch_size
        was_training = self.encoder.training
        self.encoder.eval()  # in training mode BatchNorm would fold the zeros into its statistics
        with torch.no_grad():
            side = self.encoder.feature_map(torch.zeros(1, self.encoder.in_chans, tile, tile)).shape[-1]
        self.encoder.train(was_training)
        return side

    def tile_size(self, height: int, width: int) -> int:
        """Tile side for an ``height`` x ``width`` window: the largest multiple of the ViT patch
        size (of 4 px for CNNs) that leaves ``min_gap`` px in each third of the window."""
        step = self.encoder.patch_size if self.encoder.is_vit else CNN_TILE_STEP
        smallest = self.encoder.patch_size if self.encoder.is_vit else CNN_MIN_TILE
        cell = min(height, width) // 3
        tile = (cell - self.min_gap) // step * step
        if tile < smallest:
            need = 3 * (self.min_gap + smallest)
            raise DataError(f"relative_position cuts each {height}x{width} window into a 3x3 grid of "
                            f"tiles of at least {smallest} px with {self.min_gap} px between them, so "
                            f"it needs windows of at least {need} px; use img_size={math.ceil(need / 8) * 8} "
                            "or more")
        return tile

    def cut_tiles(self, imgs: torch.Tensor, labels: torch.Tensor | None = None):
        """(B, C, H, W) -> centre tiles (B, C, t, t), neighbour tiles (B, C, t, t), labels (B,).

        Each tile starts at a random offset inside its grid cell, between ``min_gap // 2`` and
        the cell's slack minus the other half of the gap, so tiles stay apart and inside their
        cell. ``labels`` (default: random) picks the neighbour of each window.
        """
        B, _, H, W = imgs.shape
        t = self.tile_size(H, W)
        cell = torch.tensor([H // 3, W // 3], device=imgs.device)     # (2,) rows, columns
        low = self.min_gap // 2
        high = cell - t - (self.min_gap - low)                         # (2,) last allowed offset
        if labels is None:
            labels = torch.randint(len(NEIGHBOUR_OFFSETS), (B,), device=imgs.device)

        def corner(grid_pos: torch.Tensor) -> torch.Tensor:
            """(B, 2) grid cells -> (B, 2) top-left pixels, jittered"""
            jitter = low + (torch.rand(B, 2, device=imgs.device) * (high - low + 1)).long()
            return grid_pos * cell + jitter

        centre_cell = torch.ones(B, 2, dtype=torch.long, device=imgs.device)  # (B, 2)
        centre = self._crop(imgs, corner(centre_cell), t)
        neighbour = self._crop(imgs, corner(centre_cell + self.offsets[labels]), t)
        return centre, neighbour, labels

    @staticmethod
    def _crop(imgs: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
        """(B, C, H, W), top-left corners (B, 2) -> (B, C, size, size), one crop per image."""
        steps = torch.arange(size, device=imgs.device)
        rows = corners[:, 0, None] + steps                             # (B, size)
        cols = corners[:, 1, None] + steps                             # (B, size)
        batch = torch.arange(imgs.shape[0], device=imgs.device)
        crops = imgs[batch[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, size, size, C)
        return crops.permute(0, 3, 1, 2)                               # (B, C, size, size)

    def forward(self, imgs: torch.Tensor, labels: torch.Tensor | None = None):
        """(B, C, H, W) -> logits (B, 8), labels (B,), centre embeddings (B, D)."""
        centre, neighbour, labels = self.cut_tiles(imgs, labels)
        logits, centre_emb = self.classify(centre, neighbour)
        return logits, labels, centre_emb

    def classify(self, centre: torch.Tensor, neighbour: torch.Tensor):
        """Tiles (B, C, t, t) each -> logits (B, 8) for the neighbour's position, centre embeddings (B, D)."""
        maps = self.encoder.feature_map(torch.cat([centre, neighbour]))  # (2B, D, h, w): one pass, shared weights
        grids = F.adaptive_avg_pool2d(maps, self.grid).flatten(1)        # (2B, D * g * g)
        centre_grid, neighbour_grid = grids.chunk(2)                     # (B, D * g * g) each
        logits = self.classifier(torch.cat([centre_grid, neighbour_grid], dim=1))  # (B, 8)
        centre_emb = maps[: len(centre)].mean(dim=(2, 3))               # (B, D), what embed() gives
        return logits, centre_emb

    @torch.no_grad()
    def accuracy(self, data, n: int = 2000, window: int | None = None, seed: int = 0,
                 batch_size: int = 256) -> float:
        """Fraction of ``n`` tile pairs whose neighbour position the model gets right, on windows
        drawn from ``data`` (a scene, stack or chips, e.g. pixels it never trained on; chance is
        1/8). Windows default to the training size; the draw is the same for the same ``seed``
        and leaves torch's global random state alone."""

        if hasattr(data, "data_vars"):  # a Dataset such as a bundled sample: its imagery
            data = data["image"]
        window = window or self.encoder.spec["img_size"]
        windows = random_patches(data, window, n, seed=seed)
        x = torch.from_numpy(model_input(self, windows))               # (n, C, window, window)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        correct = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, n, batch_size):
                logits, labels, _ = self(x[start:start + batch_size].to(device))
                correct += int((logits.argmax(dim=1) == labels).sum())
        self.train(was_training)
        return correct / n

    def training_step(self, imgs: torch.Tensor):
        """One batch -> (loss, logs); ``accuracy`` of the 8-way guess (chance is 1/8)."""
        logits, labels, centre_emb = self.forward(imgs)
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return loss, {"accuracy": float(accuracy), "emb_std": embedding_std(centre_emb)}


METHODS = {
    "relative_position": (RelativePosition, "Relative patch position (context prediction): tell "
                          "which of the 8 neighbours of a centre tile another tile is",
                          dict(name="resnet18")),
}
