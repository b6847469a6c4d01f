"""Checks for parameters where they enter eossl (``pretrain``, ``embed``, ``finetune``, configs, CLI).

Each check returns the value (converted where that is unambiguous, e.g. ``3.0`` -> ``3``) or raises
:class:`~eossl.errors.ParameterError` with a message that names the parameter, the value given and
what is allowed, so a typo in a config fails before any data is read, not as a numpy or torch
error deep inside a step.
"""

from __future__ import annotations

import math
import numbers

from eossl.errors import ParameterError


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})" if not isinstance(value, (int, float)) else repr(value)


def integer(name: str, value, minimum: int | None = None) -> int:
    """``value`` as an int (a whole float such as ``3.0`` is fine; ``True``, ``2.5`` or ``"abc"``
    are not), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            (not isinstance(value, numbers.Integral) and not float(value).is_integer()):
        raise ParameterError(f"{name} must be a whole number" +
                             (f" >= {minimum}" if minimum is not None else "") + f", not {_describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ParameterError(f"{name} must be at least {minimum}, not {value}")
    return value


def number(name: str, value, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None) -> float:
    """``value`` as a finite float within the bounds (``minimum``/``maximum`` inclusive,
    ``above``/``below`` exclusive)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, not {_describe(value)}")
    value = float(value)
    limits = [(minimum, value >= minimum if minimum is not None else True, ">="),
              (maximum, value <= maximum if maximum is not None else True, "<="),
              (above, value > above if above is not None else True, ">"),
              (below, value < below if below is not None else True, "<")]
    broken = [f"{op} {bound:g}" for bound, ok, op in limits if bound is not None and not ok]
    if broken:
        if above == 0 and minimum is None and maximum is None and below is None:
            raise ParameterError(f"{name} must be a positive number (> 0), not {value:g}")
        allowed = " and ".join(f"{op} {bound:g}" for bound, _, op in limits if bound is not None)
        raise ParameterError(f"{name} must be {allowed}, not {value:g}")
    return value


def choice(name: str, value, allowed) -> str:
    """``value`` if it is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ParameterError(f"{name} must be one of {list(allowed)}, not {_describe(value)}")
    return value


DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


def device(value, name: str = "device") -> str:
    """A device string eossl can use: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; asking for
    a GPU kind the machine lacks is refused here rather than at the first step."""
    import torch
    if not isinstance(value, str):
        raise ParameterError(f"{name} must be one of {list(DEVICE_KINDS)} (or 'cuda:N'), not {_describe(value)}")
    kind, _, index = value.partition(":")
    if kind not in DEVICE_KINDS or (index and (kind != "cuda" or not index.isdigit())):
        raise ParameterError(f"{name} must be one of {list(DEVICE_KINDS)} (or 'cuda:N'), not {value!r}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(f"{name}={value!r}, but torch sees no CUDA GPU here; use 'auto' or 'cpu'")
        if index and int(index) >= torch.cuda.device_count():
            raise ParameterError(f"{name}={value!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParameterError(f"{name}='mps', but Apple's MPS backend is not available here; use 'auto' or 'cpu'")
    return value


_RENAMED_WARNED: set = set()


def warn_renamed(old: str, new: str, where: str = "") -> None:
    """One warning per process that ``old=`` is now spelled ``new=`` (the old spelling still works)."""
    import warnings
    if (old, new, where) in _RENAMED_WARNED:
        return
    _RENAMED_WARNED.add((old, new, where))
    warnings.warn(f"{where + ': ' if where else ''}{old}= is now spelled {new}=; the old spelling still "
                  "works but will be removed", FutureWarning, stacklevel=3)
