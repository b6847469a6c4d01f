"""SSL methods by name: ``eossl.methods()`` lists them, :func:`build_method` makes one."""

from __future__ import annotations

from eossl.models.backbones import Encoder
from eossl.models.mae import MAE

# name -> (class, one-line description, default encoder settings)
_METHODS = {
    "mae": (MAE, "Masked autoencoder: rebuild hidden patches of all bands from the visible ones",
            dict(name="vit_tiny", patch_size=8, depth=6)),
}


def methods() -> dict[str, str]:
    """Available SSL methods with a one-line description each."""
    return {name: desc for name, (_, desc, _) in _METHODS.items()}


def default_encoder(method: str) -> dict:
    return dict(_check(method)[2])


def _check(method: str):
    if method not in _METHODS:
        raise ValueError(f"unknown SSL method {method!r}; available: {sorted(_METHODS)}")
    return _METHODS[method]


def build_method(method: str, encoder_spec: dict, method_config: dict | None = None):
    """Build an SSL method module around a freshly initialised encoder."""
    cls = _check(method)[0]
    encoder = Encoder(**encoder_spec)
    return cls(encoder, **(method_config or {}))
