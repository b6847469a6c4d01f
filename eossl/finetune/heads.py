"""The fine-tuned model: one encoder (pretrained or random) plus a small task head.

- classification: a linear layer on the pooled features ``(B, D)`` (a linear probe when the encoder
  is frozen);
- segmentation: a light decoder on the patch features ``(B, D, h, w)``: 1x1 conv -> GELU -> 3x3
  conv -> 1x1 conv to class logits, bilinearly upsampled to the pixels; ``decoder="skip"`` adds a
  shallow full-resolution branch on the input pixels (sharper edges, a UNet's last skip);
- change: the same decoder on a siamese pair: both dates go through the *same* encoder and the head
  sees ``[f1, f2, |f1 - f2|]`` stacked on the feature axis.

Checkpoints are the trainer's atomic single-file safetensors with a card naming the task, classes,
bands, normalisation and the base encoder, so :func:`load` rebuilds the model with no pickle.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eossl.errors import CheckpointError
from eossl.models.backbones import Encoder
from eossl.checkpoint import read_checkpoint

TASKS = ("classification", "segmentation", "change")
DECODERS = ("patch", "skip")


class DenseHead(nn.Module):
    """Patch features ``(B, Din, h, w)`` -> logits ``(B, K, H, W)``."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 64, decoder: str = "patch",
                 pixel_chans: int = 0):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.decoder = decoder
        self.features = nn.Sequential(nn.Conv2d(in_dim, hidden, 1), nn.GELU(),
                                      nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU())
        extra = 0
        if decoder == "skip":
            # Two 3x3 convs on the normalised pixels: enough to place class edges inside a patch.
            self.pixels = nn.Sequential(nn.Conv2d(pixel_chans, 16, 3, padding=1), nn.GELU(),
                                        nn.Conv2d(16, 16, 3, padding=1), nn.GELU())
            extra = 16
        self.classify = nn.Conv2d(hidden + extra, num_classes, 1)

    def forward(self, feats: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        size = pixels.shape[-2:]
        x = F.interpolate(self.features(feats), size=size, mode="bilinear", align_corners=False)  # (B, hidden, H, W)
        if self.decoder == "skip":
            x = torch.cat([x, self.pixels(pixels)], dim=1)  # (B, hidden + 16, H, W)
        return self.classify(x)  # (B, K, H, W)


class FinetuneModel(nn.Module):
    """Encoder + head for one task. ``forward(x)`` gives logits:

    - classification: x ``(B, C, H, W)`` -> ``(B, K)``
    - segmentation: x ``(B, C, H, W)`` -> ``(B, K, H, W)``
    - change: x ``(B, 2, C, H, W)`` (two dates) -> ``(B, K, H, W)``

    ``features`` and ``decode`` are the two stages, so a frozen encoder's features can be computed
    once and only the head trained. ``.card`` is attached by :func:`eossl.finetune` and :func:`load`.
    """

    def __init__(self, encoder: Encoder, task: str, num_classes: int, head: dict | None = None):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.encoder, self.task, self.num_classes = encoder, task, num_classes
        self.head_config = {"hidden": 64, "decoder": "patch", **(head or {})}
        D, C = encoder.dim, encoder.in_chans
        if task == "classification":
            self.head = nn.Linear(D, num_classes)
        elif task == "segmentation":
            self.head = DenseHead(D, num_classes, self.head_config["hidden"], self.head_config["decoder"], C)
        else:
            self.head = DenseHead(3 * D, num_classes, self.head_config["hidden"],
                                  self.head_config["decoder"], 2 * C)

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return self.encoder(x)  # (B, D)
        if self.task == "segmentation":
            return self.encoder.feature_map(x)  # (B, D, h, w)
        B = x.shape[0]
        both = self.encoder.feature_map(x.flatten(0, 1))  # (2B, D, h, w): one pass, shared weights
        f1, f2 = both.view(B, 2, *both.shape[1:]).unbind(1)  # (B, D, h, w) each
        return torch.cat([f1, f2, (f1 - f2).abs()], dim=1)  # (B, 3D, h, w)

    def decode(self, feats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return self.head(feats)  # (B, K)
        pixels = x.flatten(1, 2) if self.task == "change" else x  # (B, 2C, H, W) for a pair
        return self.head(feats, pixels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x), x)


def encoder_blocks(encoder: Encoder) -> list[nn.Module]:
    """The encoder's stages, input to output: ViT blocks, or ResNet layer1..layer4."""
    if encoder.is_vit:
        return list(encoder.model.blocks)
    return [getattr(encoder.model, f"layer{i}") for i in range(1, 5) if hasattr(encoder.model, f"layer{i}")]


TRAIN_MODES = ("head", "last_blocks", "all")


def set_trainable(model: FinetuneModel, train: str, last_blocks: int = 1) -> list[nn.Parameter]:
    """Freeze what ``train`` says stays fixed; returns the encoder parameters that will learn.

    ``"head"``: the encoder is frozen (a linear probe for classification); ``"last_blocks"``: the
    last ``last_blocks`` ViT blocks (and the final norm) or ResNet stages learn; ``"all"``: all of it.
    """
    if train not in TRAIN_MODES:
        raise ValueError(f"train must be one of {TRAIN_MODES}, got {train!r}")
    enc = model.encoder
    for p in enc.parameters():
        p.requires_grad_(train == "all")
    if train == "last_blocks":
        blocks = encoder_blocks(enc)
        if not 1 <= last_blocks <= len(blocks):
            raise ValueError(f"last_blocks must be between 1 and {len(blocks)} for this encoder")
        parts = blocks[-last_blocks:] + ([enc.model.norm] if enc.is_vit else [])
        for part in parts:
            for p in part.parameters():
                p.requires_grad_(True)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return [p for p in enc.parameters() if p.requires_grad]


def build(encoder: Encoder, task: str, num_classes: int, head: dict | None = None) -> FinetuneModel:
    """A fine-tunable model on a *copy* of ``encoder`` (the caller's pretrained model is untouched)."""
    return FinetuneModel(copy.deepcopy(encoder), task, num_classes, head)


def load(path, device: str | torch.device = "cpu") -> FinetuneModel:
    """Load a fine-tuned checkpoint (run folder, its ``checkpoint`` folder or the .safetensors file)
    written by :func:`eossl.finetune`. Returns the model in eval mode with ``.card`` attached, ready
    for :func:`eossl.predict`."""
    ckpt = read_checkpoint(path)
    card = ckpt["card"]
    if "task" not in card:
        raise CheckpointError(f"{ckpt['file']}: a pretraining checkpoint ({card.get('method')}), not a "
                              "fine-tuned one; load it with eossl.load_model and pass it to eossl.finetune")
    try:
        encoder = Encoder(**card["encoder"])
        model = FinetuneModel(encoder, card["task"], len(card["classes"]), card.get("head"))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{ckpt['file']}: weights or card do not describe a {card.get('task')} "
                              f"model eossl can build ({str(err)[:300]})") from None
    model.card = card
    model.checkpoint_path = Path(ckpt["file"])
    return model.to(device).eval()
