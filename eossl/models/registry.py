"""SSL methods by name: ``eossl.methods()`` lists them, :func:`build_method` makes one.

A method is an ``nn.Module`` class in its own file that follows one small contract, so the trainer,
checkpoints, ``load_model`` and ``embed`` work the same for all of them:

- ``__init__(self, encoder: Encoder, **config)`` and ``self.config``: a JSON-able dict of those
  keyword arguments (it goes into the checkpoint card and comes back to ``__init__`` on load);
- ``self.encoder``: the :class:`~eossl.models.backbones.Encoder` that ``embed`` uses;
- ``input_kind``: ``"image"`` (batches ``(B, C, H, W)``), ``"series"`` (``(B, T, C, H, W)``: the
  same place at ``series_length`` dates, drawn from stacks) or ``"pair"`` (``(B, 2, C, S, S)``: two
  looks at one place, another date where the data has one, from any data);
- optional ``window_size(img_size, config)`` (static): the window the trainer samples, when the
  method cuts its own views out of a larger one;
- ``training_step(batch) -> (loss, logs)``; ``logs`` holds floats, including ``emb_std`` (the
  collapse monitor, see :func:`eossl.models.losses.embedding_std`);
- optional ``after_optimizer_step(step, total_steps)`` (momentum / EMA updates) and
  ``check_data(arrays)`` (raise :class:`~eossl.errors.DataError` for data the method cannot use).

Each method module exposes ``METHODS = {name: (class, one-line description, default encoder)}``.
"""

from __future__ import annotations

import importlib
import inspect

from eossl.errors import ParameterError
from eossl.models.backbones import Encoder

# Modules that define methods; each has a METHODS dict.
METHOD_MODULES = ["eossl.models.mae", "eossl.models.temporal", "eossl.models.contrastive", "eossl.models.spectral",
                  "eossl.models.position", "eossl.models.place"]


def _registry() -> dict:
    found = {}
    for module in METHOD_MODULES:
        found.update(importlib.import_module(module).METHODS)
    return found


def methods() -> dict[str, str]:
    """Available SSL methods with a one-line description each."""
    return {name: desc for name, (_, desc, _) in _registry().items()}


def method_class(method: str):
    return _check(method)[0]


def default_encoder(method: str) -> dict:
    return dict(_check(method)[2])


def _check(method: str):
    registry = _registry()
    if not isinstance(method, str) or method not in registry:
        raise ParameterError(f"unknown SSL method {method!r}; available: {sorted(registry)} (eossl.methods())")
    return registry[method]


def build_method(method: str, encoder_spec: dict, method_config: dict | None = None):
    """Build an SSL method module around a freshly initialised encoder."""
    cls = _check(method)[0]
    method_config = dict(method_config or {})
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = sorted(k for k in params if k not in ("self", "encoder"))
        unknown = sorted(set(method_config) - set(known))
        if unknown:  # a typo would otherwise surface as a TypeError from the method's __init__
            raise ParameterError(f"{method}: unknown setting(s) {unknown}; {method} takes {known} "
                                 "(other keyword arguments of pretrain go to the method)")
    encoder = Encoder(**encoder_spec)
    return cls(encoder, **method_config)
