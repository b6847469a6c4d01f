"""Joint-embedding methods: SimCLR, MoCo v3 and BYOL, for any number of bands.

All three see two random views of each image (:class:`~eossl.models.views.MultispectralViews`,
multispectral-safe augmentations) and pull the two embeddings of an image together:

- SimCLR (Chen et al. 2020) pushes the other images of the batch away (``nt_xent``);
- MoCo v3 (Chen, Xie & He 2021) compares a query network with a slowly moving momentum copy of
  itself, the other images' keys being the negatives (``info_nce``);
- BYOL (Grill et al. 2020) has no negatives at all: an online network predicts a momentum
  target's projection, and the predictor plus the slow target keep it from collapsing.

Shapes: B batch, C bands, H/W pixels, D encoder width, P projection width. The momentum (EMA)
networks are registered submodules, so checkpoints save and restore them, but their parameters
have ``requires_grad=False``: the optimiser never sees them and ``after_optimizer_step`` moves
them towards the online weights. With several processes the contrastive losses take their
negatives from every process (see :mod:`eossl.models.losses`). The heads are narrower than the
papers' (hidden 512-1024 instead of 2048-4096) to suit the small encoders of remote sensing.
``views`` (a dict of :class:`~eossl.models.views.ViewConfig` fields) sets the augmentations.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from eossl.models.backbones import Encoder
from eossl.models.losses import embedding_std, info_nce, nt_xent
from eossl.models.views import MultispectralViews, ViewConfig


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
        last_batchnorm: bool = False) -> nn.Sequential:
    """``num_layers`` linear layers with BatchNorm + ReLU between them (the heads of all three
    papers). ``last_batchnorm`` ends with a BatchNorm without affine parameters, as MoCo v3 does.
    Linear layers followed by BatchNorm have no bias: the norm removes it anyway."""
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == num_layers - 1
        layers.append(nn.Linear(d_in, d_out, bias=last and not last_batchnorm))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_batchnorm:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy that follows ``module`` by EMA: no gradients, but saved in the state dict."""
    twin = copy.deepcopy(module)
    twin.requires_grad_(False)
    return twin


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """BYOL's schedule: ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``, from ``base`` at
    step 0 up to 1 at the end, so the target settles as training converges."""
    progress = min(1.0, step / max(1, total_steps))
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online``, parameter by parameter.
    Buffers (BatchNorm running statistics) are the target's own, kept by its forward passes."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o.detach(), 1 - momentum)


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos(prediction, target)`` averaged over the batch (B, P): the squared distance of
    the L2-normalised vectors. The target gets no gradient."""
    p = F.normalize(prediction, dim=1)
    z = F.normalize(target.detach(), dim=1)
    return (2 - 2 * (p * z).sum(dim=1)).mean()


class SimCLR(nn.Module):
    """Encoder -> projection MLP -> NT-Xent between the two views of every image."""

    method = "simclr"
    input_kind = "image"

    def __init__(self, encoder: Encoder, hidden_dim: int = 512, projection_dim: int = 128,
                 temperature: float = 0.2, views: dict | None = None):
        super().__init__()
        self.views = MultispectralViews(ViewConfig(**(views or {})))
        self.config = dict(hidden_dim=hidden_dim, projection_dim=projection_dim,
                           temperature=temperature, views=self.views.config.to_dict())
        self.encoder = encoder
        self.projector = mlp(encoder.dim, hidden_dim, projection_dim, num_layers=2)
        self.temperature = temperature

    def training_step(self, imgs: torch.Tensor):
        """(B, C, H, W) -> (loss, {"emb_std"}), emb_std on the pooled features of view 1. Both
        views go through in one batch of 2B, so BatchNorm normalises over all of them as in the
        paper; MoCo v3 and BYOL instead pass each view on its own, as theirs do."""
        view1, view2 = self.views(imgs)
        features = self.encoder(torch.cat([view1, view2]))   # (2B, D)
        z1, z2 = self.projector(features).chunk(2)           # (B, P) each
        loss = nt_xent(z1, z2, self.temperature)
        return loss, {"emb_std": embedding_std(features[:len(imgs)])}


class MoCoV3(nn.Module):
    """Query encoder + projector + predictor against a momentum key encoder + projector.

    Follows facebookresearch/moco-v3: a 3-layer projector and 2-layer predictor ending in
    BatchNorm, the symmetric loss ``ctr(q1, k2) + ctr(q2, k1)`` scaled by ``2 * temperature``
    (which makes the gradient scale independent of the temperature), and a momentum that rises
    from ``base_momentum`` to 1 on a cosine.
    """

    method = "mocov3"
    input_kind = "image"

    def __init__(self, encoder: Encoder, hidden_dim: int = 1024, projection_dim: int = 256,
                 temperature: float = 0.2, base_momentum: float = 0.99, views: dict | None = None):
        super().__init__()
        self.views = MultispectralViews(ViewConfig(**(views or {})))
        self.config = dict(hidden_dim=hidden_dim, projection_dim=projection_dim, temperature=temperature,
                           base_momentum=base_momentum, views=self.views.config.to_dict())
        self.encoder = encoder
        self.projector = mlp(encoder.dim, hidden_dim, projection_dim, num_layers=3, last_batchnorm=True)
        self.predictor = mlp(projection_dim, hidden_dim, projection_dim, num_layers=2, last_batchnorm=True)
        self.momentum_encoder = momentum_copy(encoder)
        self.momentum_projector = momentum_copy(self.projector)
        self.temperature, self.base_momentum = temperature, base_momentum

    def training_step(self, imgs: torch.Tensor):
        view1, view2 = self.views(imgs)
        h1, h2 = self.encoder(view1), self.encoder(view2)      # (B, D) each
        q1, q2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))  # (B, P)
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_encoder(view1))  # (B, P)
            k2 = self.momentum_projector(self.momentum_encoder(view2))
        t = self.temperature
        loss = 2 * t * (info_nce(q1, k2, t) + info_nce(q2, k1, t))
        return loss, {"emb_std": embedding_std(h1)}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        m = cosine_momentum(step, total_steps, self.base_momentum)
        ema_update(self.momentum_encoder, self.encoder, m)
        ema_update(self.momentum_projector, self.projector, m)


class BYOL(nn.Module):
    """Online encoder + projector + predictor regressing a momentum target's projection of the
    other view; the loss ``2 - 2 cos`` is summed over both directions, as in the paper."""

    method = "byol"
    input_kind = "image"

    def __init__(self, encoder: Encoder, hidden_dim: int = 1024, projection_dim: int = 256,
                 base_momentum: float = 0.99, views: dict | None = None):
        super().__init__()
        self.views = MultispectralViews(ViewConfig(**(views or {})))
        self.config = dict(hidden_dim=hidden_dim, projection_dim=projection_dim,
                           base_momentum=base_momentum, views=self.views.config.to_dict())
        self.encoder = encoder
        self.projector = mlp(encoder.dim, hidden_dim, projection_dim, num_layers=2)
        self.predictor = mlp(projection_dim, hidden_dim, projection_dim, num_layers=2)
        self.target_encoder = momentum_copy(encoder)
        self.target_projector = momentum_copy(self.projector)
        self.base_momentum = base_momentum

    def training_step(self, imgs: torch.Tensor):
        view1, view2 = self.views(imgs)
        h1, h2 = self.encoder(view1), self.encoder(view2)      # (B, D) each
        p1, p2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))  # (B, P)
        with torch.no_grad():
            z1 = self.target_projector(self.target_encoder(view1))  # (B, P)
            z2 = self.target_projector(self.target_encoder(view2))
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return loss, {"emb_std": embedding_std(h1)}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        m = cosine_momentum(step, total_steps, self.base_momentum)
        ema_update(self.target_encoder, self.encoder, m)
        ema_update(self.target_projector, self.projector, m)


METHODS = {
    "simclr": (SimCLR, "SimCLR: two augmented views of each chip attract, the rest of the batch repels",
               dict(name="resnet18")),
    "mocov3": (MoCoV3, "MoCo v3: queries match the keys of a momentum encoder, other chips are negatives",
               dict(name="vit_tiny", patch_size=8, depth=6)),
    "byol": (BYOL, "BYOL: an online network predicts a momentum target's view, no negatives needed",
             dict(name="resnet18")),
}
