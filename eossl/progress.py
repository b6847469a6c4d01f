"""Progress bars (tqdm.auto: a widget in Jupyter, text in a terminal) with one library-wide switch.

    eossl.progress.set_enabled(False)   # or EOSSL_PROGRESS=0 in the environment
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

_enabled = os.environ.get("EOSSL_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def set_enabled(enabled: bool) -> None:
    """Turn every eossl progress bar on or off."""
    global _enabled
    _enabled = bool(enabled)


def enabled() -> bool:
    return _enabled


def progress(iterable=None, **kwargs):
    """A tqdm bar that respects the switch."""
    kwargs.setdefault("disable", not _enabled)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
