"""``eossl.load_model``: rebuild a trained model from its checkpoint card and weights."""

from __future__ import annotations

import torch

from eossl.errors import CheckpointError
from eossl.models.registry import build_method
from eossl.train.checkpoint import read_checkpoint


def load_model(path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load an eossl checkpoint (a run folder, its ``checkpoint`` folder or the .safetensors file).

    Returns the SSL method module in eval mode, with ``.encoder`` (used by :func:`eossl.embed`)
    and ``.card`` (bands, normalisation, config) attached.
    """
    ckpt = read_checkpoint(path)
    card = ckpt["card"]
    try:
        model = build_method(card["method"], card["encoder"], card.get("method_config"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt['file']}: its card describes a model eossl cannot build ({err})") from None
    try:
        result = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as err:  # same names, other shapes (e.g. another embed_dim)
        raise CheckpointError(f"{ckpt['file']}: weights do not fit the {card['method']} / "
                              f"{card['encoder'].get('name')} architecture in its card ({err})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{ckpt['file']}: weights do not fit the {card['method']} / {card['encoder'].get('name')} "
            f"architecture in its card (missing {result.missing_keys[:3]}, unexpected "
            f"{result.unexpected_keys[:3]})")
    model.card = card
    return model.to(device).eval()
