"""Masked autoencoder (He et al. 2022) for any number of bands.

Patchify over all C bands, hide ``mask_ratio`` of the patches, encode the visible ones with a
timm ViT, and let a light decoder rebuild the hidden patches; the loss is the squared error on the
hidden patches only. Shapes: B batch, C bands, H/W pixels, p patch size, L = (H/p)(W/p) patches,
D encoder width, E decoder width.

Follows facebookresearch/mae ``models_mae.py`` in its stages (``forward_encoder``,
``forward_decoder``, ``forward_loss``), without its 3 channels or ImageNet statistics: inputs
arrive normalised per band by the data's own statistics.
"""

from __future__ import annotations

import numpy as np
import torch
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn import functional as F

from eossl.models.backbones import Encoder
from eossl.models.losses import embedding_std


def sincos_pos_embed(dim: int, h: int, w: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes, (h*w, dim): half the channels encode the row,
    half the column, so positions generalise to grids of other sizes."""
    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)  # (M, d/2)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, d)
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    emb = np.concatenate([one_axis(dim // 2, rows), one_axis(dim // 2, cols)], axis=1)  # (h*w, dim)
    return torch.from_numpy(emb).float()


def cached_positions(module: nn.Module, grid, like: torch.Tensor) -> torch.Tensor:
    """(h*w, width) :func:`sincos_pos_embed` codes for ``like``'s width, device and dtype, built
    once per grid and kept on ``module`` (numpy builds them; every step would otherwise pay)."""
    cache = module.__dict__.setdefault("_positions", {})
    key = (tuple(grid), like.shape[-1], like.device, like.dtype)
    if key not in cache:
        cache[key] = sincos_pos_embed(like.shape[-1], *grid).to(like)
    return cache[key]


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C): patches row-major, each flattened (row, col, band)."""
    B, C, H, W = imgs.shape
    h, w = H // p, W // p
    x = imgs.reshape(B, C, h, p, w, p)
    x = torch.einsum("bchpwq->bhwpqc", x)  # (B, h, w, p, p, C)
    return x.reshape(B, h * w, p * p * C)


def norm_pix_target(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch relative to its own mean and spread, as in the MAE paper: (..., N) -> (..., N).
    ``var_mean`` + ``rsqrt`` make one pass for the statistics and one for the result."""
    var, mean = torch.var_mean(patches, dim=-1, keepdim=True)
    return (patches - mean) * torch.rsqrt(var + eps)


def take_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, L, N) and ids (B, K) -> (B, K, N): for each sample, the tokens at ``ids``.

    Whole rows by ``index_select`` rather than ``gather`` with an index expanded to (B, K, N):
    the same result, without reading one int64 index per element (about twice as fast here)."""
    B, L, N = x.shape
    rows = (ids + L * torch.arange(B, device=ids.device)[:, None]).reshape(-1)  # (B*K,) rows of (B*L, N)
    return x.reshape(B * L, N).index_select(0, rows).view(B, ids.shape[1], N)


def unpatchify(x: torch.Tensor, p: int, C: int, h: int, w: int) -> torch.Tensor:
    """(B, L, p*p*C) -> (B, C, H, W), the inverse of :func:`patchify`."""
    B = x.shape[0]
    x = x.reshape(B, h, w, p, p, C)
    x = torch.einsum("bhwpqc->bchpwq", x)  # (B, C, h, p, w, p)
    return x.reshape(B, C, h * p, w * p)


class MAE(nn.Module):
    """Masked image modeling with a ViT encoder over C bands."""

    method = "mae"
    input_kind = "image"

    def __init__(self, encoder: Encoder, mask_ratio: float = 0.75, decoder_dim: int = 128,
                 decoder_depth: int = 2, decoder_heads: int = 4, norm_pix_loss: bool = True):
        super().__init__()
        if not encoder.is_vit:
            raise ValueError("the MAE needs a ViT encoder (it drops masked patch tokens); "
                             f"got {encoder.spec['name']!r}: use encoder='vit_tiny' or 'vit_small'")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be between 0 and 1, got {mask_ratio}")
        self.encoder = encoder
        self.config = dict(mask_ratio=mask_ratio, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                           decoder_heads=decoder_heads, norm_pix_loss=norm_pix_loss)
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        p, C, D = encoder.patch_size, encoder.in_chans, encoder.dim
        self.patch_size, self.in_chans = p, C

        # Fixed sine-cosine positions for the encoder too (MAE paper); the class token gets zeros.
        vit = encoder.model
        grid = vit.patch_embed.grid_size
        with torch.no_grad():
            vit.pos_embed[0, vit.num_prefix_tokens:] = sincos_pos_embed(D, *grid)
            vit.pos_embed[0, :vit.num_prefix_tokens] = 0
        vit.pos_embed.requires_grad_(False)

        self.decoder_embed = nn.Linear(D, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_dim, decoder_heads, mlp_ratio=4.0) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, p * p * C)
        nn.init.normal_(self.mask_token, std=0.02)

    # ------------------------------------------------------------------ shapes

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, p*p*C)"""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, L, p*p*C) -> (B, C, H, W)"""
        return unpatchify(x, self.patch_size, self.in_chans, h, w)

    @staticmethod
    def random_masking(x: torch.Tensor, mask_ratio: float):
        """Keep a random (1 - mask_ratio) of the tokens of each sample.

        x: (B, L, D) -> kept (B, L_keep, D), mask (B, L) with 1 = hidden, ids_restore (B, L).
        """
        B, L, D = x.shape
        n_keep = max(1, int(round(L * (1 - mask_ratio))))
        noise = torch.rand(B, L, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)          # ascending: small noise is kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :n_keep]
        kept = take_tokens(x, ids_keep)                    # (B, L_keep, D)
        mask = torch.ones(B, L, device=x.device)
        mask[:, :n_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)           # back to patch order
        return kept, mask, ids_restore

    # ------------------------------------------------------------------ stages

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float):
        vit = self.encoder.model
        x = vit.patch_embed(imgs)                 # (B, h, w, D)
        B, h, w, D = x.shape
        x = vit._pos_embed(x)                     # (B, P + L, D), P prefix (class) tokens
        prefix, tokens = x[:, :vit.num_prefix_tokens], x[:, vit.num_prefix_tokens:]
        tokens, mask, ids_restore = self.random_masking(tokens, mask_ratio)  # (B, L_keep, D)
        x = torch.cat([prefix, tokens], dim=1)    # (B, P + L_keep, D)
        x = vit.norm_pre(x)
        x = vit.blocks(x)
        x = vit.norm(x)
        return x, mask, ids_restore, (h, w)

    def decode_tokens(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid) -> torch.Tensor:
        """Encoder output (B, P + L_keep, D) -> decoder features of every patch (B, L, E)."""
        P = self.encoder.num_prefix_tokens
        x = self.decoder_embed(latent)            # (B, P + L_keep, E)
        B, _, E = x.shape
        L = ids_restore.shape[1]
        n_masked = L - (x.shape[1] - P)
        tokens = torch.cat([x[:, P:], self.mask_token.expand(B, n_masked, E)], dim=1)  # (B, L, E) shuffled
        tokens = take_tokens(tokens, ids_restore) + cached_positions(self, grid, tokens)  # unshuffled
        x = torch.cat([x[:, :P], tokens], dim=1)  # (B, P + L, E)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_norm(x)[:, P:]        # (B, L, E)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid) -> torch.Tensor:
        """Predicted pixels of every patch, (B, L, p*p*C)."""
        return self.decoder_pred(self.decode_tokens(latent, ids_restore, grid))

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the hidden patches (mask 1), pred (B, L, p*p*C) for every patch."""
        target = self.patchify(imgs)              # (B, L, p*p*C)
        if self.norm_pix_loss:
            target = norm_pix_target(target)
        per_patch = ((pred.float() - target) ** 2).mean(dim=-1)  # (B, L)
        return (per_patch * mask).sum() / mask.sum()

    def hidden_patch_loss(self, imgs: torch.Tensor, latent: torch.Tensor, ids_restore: torch.Tensor,
                          grid) -> torch.Tensor:
        """The same loss as :meth:`forward_loss`, computed only where it counts: the pixel head and
        the target run on the hidden patches alone (the visible quarter at mask 0.75 is never
        predicted) and the error is one fused ``mse_loss``; with :func:`take_tokens` this is what
        puts a training step ahead of a plain MAE that predicts every patch and masks afterwards."""
        features = self.decode_tokens(latent, ids_restore, grid)  # (B, L, E)
        n_keep = latent.shape[1] - self.encoder.num_prefix_tokens
        ids_hidden = torch.argsort(ids_restore, dim=1)[:, n_keep:]  # (B, L_hidden): the shuffle's tail
        pred = self.decoder_pred(take_tokens(features, ids_hidden)).float()  # (B, L_hidden, p*p*C)
        target = take_tokens(self.patchify(imgs), ids_hidden)               # (B, L_hidden, p*p*C)
        if self.norm_pix_loss:
            target = norm_pix_target(target)
        # every sample hides the same number of patches, so the plain mean is forward_loss's mean
        return F.mse_loss(pred, target)

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None):
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore, grid = self.forward_encoder(imgs, ratio)
        pred = self.forward_decoder(latent, ids_restore, grid)
        return self.forward_loss(imgs, pred, mask), pred, mask

    # ------------------------------------------------------------------ trainer interface

    def training_step(self, imgs: torch.Tensor):
        """One batch -> (loss, logs). ``emb_std``: the spread of the pooled embedding, as every
        method logs it (:func:`~eossl.models.losses.embedding_std`); near 0 means collapse."""
        latent, mask, ids_restore, grid = self.forward_encoder(imgs, self.mask_ratio)
        loss = self.hidden_patch_loss(imgs, latent, ids_restore, grid)
        pooled = latent[:, self.encoder.num_prefix_tokens:].mean(dim=1).detach().float()  # (B, D)
        return loss, {"emb_std": embedding_std(pooled)}

    @torch.no_grad()
    def reconstruct(self, imgs: torch.Tensor, mask_ratio: float | None = None):
        """Pictures for notebooks: (masked input, reconstruction, mask as an image), each (B, C, H, W).

        With ``norm_pix_loss`` the prediction is in per-patch normalised units; it is mapped back
        with each patch's true mean and spread, as the MAE demo does.
        """
        loss, pred, mask = self.forward(imgs, mask_ratio)
        B, C, H, W = imgs.shape
        h, w = H // self.patch_size, W // self.patch_size
        if self.norm_pix_loss:
            var, mean = torch.var_mean(self.patchify(imgs), dim=-1, keepdim=True)
            pred = pred * (var + 1e-6) ** 0.5 + mean
        recon = self.unpatchify(pred.float(), h, w)
        mask_img = self.unpatchify(mask.unsqueeze(-1).expand(-1, -1, self.patch_size ** 2 * C), h, w)
        masked = imgs * (1 - mask_img)
        pasted = imgs * (1 - mask_img) + recon * mask_img
        return masked, pasted, mask_img


METHODS = {
    "mae": (MAE, "Masked autoencoder: rebuild hidden patches of all bands from the visible ones",
            dict(name="vit_tiny", patch_size=8, depth=6)),
}
