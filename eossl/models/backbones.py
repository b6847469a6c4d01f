"""Encoders from timm for any number of bands.

:class:`Encoder` wraps a timm model built with ``in_chans=C`` and gives every SSL method and
``embed`` the same two views of an image batch ``(B, C, H, W)``:
- ``feature_map(x)``: ``(B, D, h, w)`` features on the encoder's patch grid (ViT tokens, or the
  last CNN stage), which become embedding maps aligned with the scene;
- ``forward(x)``: ``(B, D)`` pooled features, the embedding of a chip.

``feature_map(x, layers="all")`` (ViTs) stacks the tokens of every stage instead of the last one:
the patch embedding, each block's output and the final norm, ``(B, D * (depth + 2), h, w)``. Early
stages say what is at a patch, late ones what is around it; change detection, which compares single
patches, gains from both (README, "Does it learn?").
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from eossl.errors import ParameterError

# Short names -> timm architectures. Sizes are overridable (patch_size, img_size, depth, ...).
ALIASES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
}


def available_encoders() -> list[str]:
    """Short encoder names; any timm ViT or ResNet name works too."""
    return list(ALIASES)


LAYERS = ("last", "all")


def check_layers(layers: str, encoder) -> None:
    """``layers`` must be "last" or "all", and "all" needs a ViT."""
    if layers not in LAYERS:
        raise ParameterError(f"layers must be one of {LAYERS}, got {layers!r}")
    if layers == "all" and not encoder.is_vit:
        raise ParameterError(f"layers='all' stacks the tokens of every ViT block; {encoder.spec['name']!r} "
                             "is not a ViT: use layers='last'")


class Encoder(nn.Module):
    """A timm backbone with ``in_chans`` bands and a uniform feature interface.

    ``spec`` holds everything needed to rebuild it (it goes into the checkpoint card).
    """

    def __init__(self, name: str = "vit_tiny", in_chans: int = 3, img_size: int = 64,
                 patch_size: int = 8, **timm_kwargs):
        super().__init__()
        arch = ALIASES.get(name, name)
        self.spec = dict(name=name, in_chans=in_chans, img_size=img_size, patch_size=patch_size,
                         **timm_kwargs)
        self.is_vit = arch.startswith(("vit", "deit"))
        if self.is_vit:
            # fc_norm=False: the final LayerNorm acts on every token, so pooled and per-patch
            # features live in the same space; dynamic_img_size: embed windows of any size.
            try:
                self.model = timm.create_model(
                    arch, pretrained=False, in_chans=in_chans, img_size=img_size, patch_size=patch_size,
                    num_classes=0, global_pool="avg", fc_norm=False, dynamic_img_size=True, **timm_kwargs)
            except RuntimeError as err:
                raise ParameterError(f"unknown encoder {name!r}: {err}; try one of {available_encoders()}") from None
            except TypeError as err:  # a setting timm's model does not take
                raise ParameterError(f"encoder {name!r}: {err}") from None
            self.patch_size = patch_size
            self.num_prefix_tokens = self.model.num_prefix_tokens
        else:
            try:
                self.model = timm.create_model(arch, pretrained=False, in_chans=in_chans,
                                               num_classes=0, **timm_kwargs)
            except RuntimeError as err:
                raise ParameterError(f"unknown encoder {name!r}: {err}; try one of {available_encoders()}") from None
            except TypeError as err:  # a setting timm's model does not take
                raise ParameterError(f"encoder {name!r}: {err}") from None
            self.patch_size = self.model.feature_info[-1]["reduction"]  # output stride, e.g. 32
            self.num_prefix_tokens = 0
        self.dim = self.model.num_features
        self.in_chans = in_chans

    def feature_map(self, x: torch.Tensor, layers: str = "last") -> torch.Tensor:
        """(B, C, H, W) -> (B, D, h, w) with h = H // patch_size; ``layers="all"``:
        (B, D * (depth + 2), h, w), every stage's tokens (ViTs only; see the module docstring)."""
        check_layers(layers, self)
        if not self.is_vit:
            return self.model.forward_features(x)  # (B, D, h, w)
        B, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        if layers == "last":
            tokens = self.model.forward_features(x)[:, self.num_prefix_tokens:]  # (B, h*w, D)
            return tokens.transpose(1, 2).reshape(B, self.dim, h, w)  # (B, D, h, w)
        vit = self.model
        stages = self.stages(vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x)))))
        return torch.cat([t[:, self.num_prefix_tokens:].transpose(1, 2).reshape(B, self.dim, h, w)
                          for t in stages], dim=1)  # (B, D * (depth + 2), h, w)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, P + N, D) tokens entering the blocks -> that input, every block's output and the
        final norm's, each (B, P + N, D)."""
        out = [x]
        for block in self.model.blocks:
            x = block(x)
            out.append(x)
        out.append(self.model.norm(x))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D): mean of the patch features."""
        return self.feature_map(x).mean(dim=(2, 3))
