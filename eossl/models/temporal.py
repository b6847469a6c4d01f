"""Temporal SSL: learn from the same place seen on several dates.

A stack ``(time, band, y, x)`` gives something a single image cannot: natural views of one place
that differ by season, weather, sun angle and real change, not by hand-made augmentations. Two
methods use it, both with ``input_kind = "series"``, so the trainer hands them batches
``(B, T, C, H, W)`` of one window at ``T`` dates in time order (:meth:`PatchSampler.sample_series`):

- :class:`SeasonalContrast` (``"seco"``): the same place at two dates is a positive pair, every
  other place a negative (SeCo, Mañas et al. 2021). The embedding learns what stays put across
  seasons: land cover rather than greenness.
- :class:`MaskedTimestep` (``"masked_timestep"``): hide one date and rebuild its pixels, all
  bands, from the encoder's features of the other dates. The embedding has to carry what a
  place looks like and how it tends to change.

Shapes: B batch, T dates, C bands, H/W pixels, D encoder width, p patch size, h/w = H/p, W/p the
encoder's grid, L = h*w patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from eossl.errors import DataError
from eossl.models.backbones import Encoder
from eossl.models.contrastive import mlp
from eossl.models.losses import embedding_std, nt_xent
from eossl.models.mae import norm_pix_target, patchify, unpatchify
from eossl.models.views import band_gain_offset, gaussian_noise
from eossl.validate import warn_renamed


def require_stack(arrays, length: int, method: str) -> None:
    """Raise DataError unless some array has a ``time`` dimension with at least ``length`` dates."""
    if any("time" in da.dims and da.sizes["time"] >= length for da in arrays):
        return
    have = []
    for da in arrays:
        if "time" in da.dims:
            have.append(f"a stack with {da.sizes['time']} date(s)")
        elif "sample" in da.dims:
            have.append(f"chips {da.dims} ({da.sizes['sample']} separate images, no dates)")
        else:
            have.append(f"a single-date scene {da.dims}")
    raise DataError(f"{method} needs a stack (time, band, y, x) with at least {length} dates of the "
                    f"same place; got {', '.join(have)}: use eossl.open_stack or "
                    "load_sample('slovenia_s2')")


# ---------------------------------------------------------------------- SeCo

class SeasonalContrast(nn.Module):
    """Seasonal contrast: two dates of one place are a positive pair (SeCo, Mañas et al. 2021).

    Each training window comes at two dates a and b. View 1 is date a, view 2 is date b, each with
    its own light multispectral-safe augmentation (band gain, noise), so the only way to match
    them is by what the place *is*: what changes between seasons (crops, snow, sun angle) must be
    ignored. encoder -> projection MLP -> SimCLR's ``nt_xent``: every other window of the batch
    (of all processes) is a negative.

    Why no momentum encoder (MoCo, as the SeCo paper used): with two dates as views the task is
    hard enough that in-batch negatives suffice, and without an EMA copy there is no second
    encoder to hold, update and warm up; on short CPU runs the loss falls from the first steps,
    whereas keys from a 0.99-momentum copy lag the encoder for the first hundred or so.

    Why no flip or turn per view: both views share the sampler's flip and turn, so they stay
    pixel-aligned and differ by season, the invariance SeCo is after. A turn per view would also
    ask for rotation invariance, which short runs do not learn: on the Slovenia sample the loss
    then stays at chance, log(2B - 1), for 40 steps, while with aligned views it falls below it.

    The paper's extra heads (one subspace per invariance) are left out: this embedding is
    deliberately season-invariant, good for land cover, not for detecting seasonal change.
    """

    method = "seco"
    input_kind = "series"
    series_length = 2

    def __init__(self, encoder: Encoder, hidden_dim: int = 512, projection_dim: int = 128,
                 temperature: float = 0.2, gain_jitter: float = 0.1, noise_std: float = 0.05,
                 proj_hidden_dim: int | None = None, proj_dim: int | None = None):
        super().__init__()
        # the names SimCLR and place contrast use; the old spellings still work (with a warning)
        if proj_hidden_dim is not None:
            warn_renamed("proj_hidden_dim", "hidden_dim", "seco")
            hidden_dim = proj_hidden_dim
        if proj_dim is not None:
            warn_renamed("proj_dim", "projection_dim", "seco")
            projection_dim = proj_dim
        self.encoder = encoder
        self.config = dict(hidden_dim=hidden_dim, projection_dim=projection_dim, temperature=temperature,
                           gain_jitter=gain_jitter, noise_std=noise_std)
        self.temperature, self.gain_jitter, self.noise_std = temperature, gain_jitter, noise_std
        # SimCLR's projection (the same MLP): the loss acts on this, the encoder keeps the more
        # general features.
        self.projector = mlp(encoder.dim, hidden_dim, projection_dim, num_layers=2)

    @classmethod
    def check_data(cls, arrays, config: dict | None = None) -> None:
        require_stack(arrays, cls.series_length, cls.method)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), a fresh random draw per image: a gain per band (std
        ``gain_jitter``, like a small calibration or illumination difference) and sensor-like noise
        (std ``noise_std`` in standardised units). Multispectral-safe: no RGB colour jitter."""
        images = band_gain_offset(images, gain_std=self.gain_jitter, offset_std=0.0)
        return gaussian_noise(images, std=self.noise_std, prob=1.0) if self.noise_std > 0 else images

    def views(self, series: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, C, H, W) -> two augmented views (B, C, H, W): the first and the second date."""
        return self.augment(series[:, 0]), self.augment(series[:, 1])

    def training_step(self, series: torch.Tensor):
        """One batch (B, 2, C, H, W) -> (loss, logs); ``emb_std`` of the encoder's embedding."""
        view_a, view_b = self.views(series)
        B = view_a.shape[0]
        pooled = self.encoder(torch.cat([view_a, view_b]))  # (2B, D): one pass, one BatchNorm batch
        z = self.projector(pooled)                           # (2B, projection_dim)
        loss = nt_xent(z[:B], z[B:], self.temperature)
        return loss, {"emb_std": embedding_std(pooled[:B])}


# ---------------------------------------------------------------------- masked date

class MaskedTimestep(nn.Module):
    """Hide one of T dates and rebuild all its bands from the other dates.

    ``predict="random"`` hides a random date per window (fill a gap, e.g. a cloudy date);
    ``predict="last"`` always hides the last one (forecast the next observation).

    1. Each visible date goes through the encoder on its own: ``feature_map`` -> (B, D, h, w).
    2. At every patch position, the visible dates' features and one query token for the hidden
       date form a short sequence of T tokens. A learned date embedding (the date's place in the
       series, 0..T-1) tells each token which date it is, so the query knows which date to
       predict and how far the others are from it. One transformer block mixes them; the
       query's output is the fused feature of that patch.
    3. A linear layer turns it into the patch's p*p*C pixels, as the MAE decoder does.
    Loss: squared error on the hidden date only (optionally per-patch normalised pixels).

    The date embedding knows the order of the drawn dates, not their calendar days: the sampler
    draws dates at random, so "two steps later" may be a month or a season.

    The encoder must be a ViT: its patch grid (p = 8 or 16) makes one linear layer per patch a
    sufficient decoder, whereas a ResNet's last stage is 32x coarser and would need an
    upsampling decoder of its own.
    """

    method = "masked_timestep"
    input_kind = "series"
    series_length = 3  # the default; each instance has its own

    def __init__(self, encoder: Encoder, series_length: int = 3, predict: str = "random",
                 norm_pix_loss: bool = False):
        super().__init__()
        if not encoder.is_vit:
            raise ValueError("masked_timestep needs a ViT encoder (it decodes pixels per patch of the "
                             f"encoder's grid); got {encoder.spec['name']!r}: use encoder='vit_tiny'")
        if series_length < 2:
            raise ValueError(f"series_length must be at least 2 (one date to hide, one to see), "
                             f"got {series_length}")
        if predict not in ("random", "last"):
            raise ValueError(f"predict must be 'random' or 'last', got {predict!r}")
        self.encoder = encoder
        self.config = dict(series_length=series_length, predict=predict, norm_pix_loss=norm_pix_loss)
        self.series_length, self.predict, self.norm_pix_loss = series_length, predict, norm_pix_loss
        D, p, C = encoder.dim, encoder.patch_size, encoder.in_chans
        self.patch_size = p
        self.date_embed = nn.Parameter(torch.zeros(1, series_length, D))
        self.query_token = nn.Parameter(torch.zeros(1, D))  # "the date to predict"
        heads = encoder.model.blocks[0].attn.num_heads  # the encoder's head count: it divides D
        self.fusion = Block(D, heads, mlp_ratio=4.0)
        self.fusion_norm = nn.LayerNorm(D)
        self.decoder_pred = nn.Linear(D, p * p * C)
        nn.init.trunc_normal_(self.date_embed, std=0.02)
        nn.init.trunc_normal_(self.query_token, std=0.02)

    @classmethod
    def check_data(cls, arrays, config: dict | None = None) -> None:
        require_stack(arrays, (config or {}).get("series_length", cls.series_length), cls.method)

    # ------------------------------------------------------------------ stages

    def choose_hidden(self, batch_size: int, device) -> torch.Tensor:
        """Which date each window hides: (B,) indices into its T dates."""
        T = self.series_length
        if self.predict == "last":
            return torch.full((batch_size,), T - 1, dtype=torch.long, device=device)
        return torch.randint(T, (batch_size,), device=device)

    def visible_dates(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B,) hidden date -> (B, T-1) the other dates in time order: 0..T-2, shifted by one
        from the hidden date on."""
        others = torch.arange(self.series_length - 1, device=hidden.device)  # (T-1,)
        return others + (others >= hidden[:, None]).long()                    # (B, T-1)

    def encode_visible(self, series: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) and (B, T-1) -> feature maps of the visible dates (B, T-1, D, h, w)."""
        B = series.shape[0]
        images = series[torch.arange(B, device=series.device)[:, None], visible]  # (B, T-1, C, H, W)
        features = self.encoder.feature_map(images.flatten(0, 1))                # (B*(T-1), D, h, w)
        return features.reshape(B, visible.shape[1], *features.shape[1:])       # (B, T-1, D, h, w)

    def fuse(self, features: torch.Tensor, visible: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Visible features (B, T-1, D, h, w) -> one feature per patch for the hidden date (B, L, D)."""
        B, V, D, h, w = features.shape
        tokens = features.permute(0, 3, 4, 1, 2)                              # (B, h, w, T-1, D)
        tokens = tokens + self.date_embed[0, visible][:, None, None]          # + (B, 1, 1, T-1, D)
        query = self.query_token + self.date_embed[0, hidden]                 # (B, D)
        query = query[:, None, None, None].expand(B, h, w, 1, D)              # (B, h, w, 1, D)
        sequence = torch.cat([tokens, query], dim=3).reshape(B * h * w, V + 1, D)  # (B*L, T, D)
        fused = self.fusion_norm(self.fusion(sequence))[:, -1]                # (B*L, D): the query's output
        return fused.reshape(B, h * w, D)                                     # (B, L, D)

    def forward_loss(self, target_images: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Squared error between the hidden dates (B, C, H, W) and the prediction (B, L, p*p*C)."""
        target = patchify(target_images, self.patch_size)  # (B, L, p*p*C)
        if self.norm_pix_loss:  # each patch relative to its own mean and spread, as in the MAE
            target = norm_pix_target(target)
        return F.mse_loss(pred.float(), target)

    def forward(self, series: torch.Tensor, hidden: torch.Tensor | None = None):
        """(B, T, C, H, W) -> (loss, prediction (B, L, p*p*C), hidden (B,), visible features
        (B, T-1, D, h, w)). ``hidden`` defaults to :meth:`choose_hidden`."""
        B, T = series.shape[:2]
        if T != self.series_length:
            raise ValueError(f"expected {self.series_length} dates per window, got {T}")
        if hidden is None:
            hidden = self.choose_hidden(B, series.device)
        visible = self.visible_dates(hidden)
        features = self.encode_visible(series, visible)
        pred = self.decoder_pred(self.fuse(features, visible, hidden))  # (B, L, p*p*C)
        hidden_images = series[torch.arange(B, device=series.device), hidden]  # (B, C, H, W)
        return self.forward_loss(hidden_images, pred), pred, hidden, features

    @torch.no_grad()
    def predict_hidden(self, series: torch.Tensor, hidden: torch.Tensor | None = None):
        """Pictures: the predicted hidden date as images (B, C, H, W), and which date was hidden (B,).
        With ``norm_pix_loss`` the prediction is per-patch normalised and is shown as such."""
        _, pred, hidden, _ = self.forward(series, hidden)
        B, _, C, H, W = series.shape
        p = self.patch_size
        return unpatchify(pred.float(), p, C, H // p, W // p), hidden

    def training_step(self, series: torch.Tensor):
        """One batch (B, T, C, H, W) -> (loss, logs); ``emb_std`` of the visible dates' pooled features."""
        loss, _, _, features = self.forward(series)
        pooled = features.mean(dim=(3, 4)).flatten(0, 1)  # (B*(T-1), D)
        return loss, {"emb_std": embedding_std(pooled)}


METHODS = {
    "seco": (SeasonalContrast,
             "Seasonal contrast: the same place on two dates is a positive pair (needs a stack)",
             dict(name="resnet18")),
    "masked_timestep": (MaskedTimestep,
                        "Hide one date of a stack and rebuild all its bands from the other dates",
                        dict(name="vit_tiny", patch_size=8, depth=4)),
}
