"""What units the pixel values are in: digital numbers (DN) or reflectance.

Sentinel-2 products store reflectance x 10000 as integers ("DN"); STAC loaders and many tools
apply the scale and give reflectance 0..1. A model fed the other one sees values 10^4 off and
produces confident garbage, so checkpoint cards record the units their model expects
(``card["units"]``) and :func:`eossl.embed` compares them with :func:`guess_units` of the data.
"""

from __future__ import annotations

import warnings

import numpy as np

#: The two kinds of values eossl tells apart.
UNITS = ("DN", "reflectance")

#: reflectance = DN * scale + offset, per sensor, where one convention holds for the whole sensor.
#: (Sentinel-2 processing baseline 04.00+ adds an offset of -1000 DN; STAC loaders remove it.)
#: Landsat scales depend on the product level (Collection 2 L2: 2.75e-5, -0.2), which the band
#: table does not record, so they are not guessed.
DN_SCALE = {"sentinel2_l1c": (1e-4, 0.0), "sentinel2_l2a": (1e-4, 0.0)}

# Median band values above this are DN; below REFLECTANCE_MAX reflectance (clouds reach ~1.5).
DN_MIN = 20.0
REFLECTANCE_MAX = 2.0


def normalise_units(units) -> str | None:
    """'dn', 'DN', 'digital numbers' -> 'DN'; 'reflectance', 'surface reflectance', 'TOA
    reflectance' -> 'reflectance'; anything else -> None."""
    if not isinstance(units, str):
        return None
    u = units.strip().lower()
    if u in ("dn", "digital number", "digital numbers", "counts"):
        return "DN"
    if "reflectance" in u:
        return "reflectance"
    return None


def guess_units(values, dtype=None, attrs: dict | None = None) -> str | None:
    """``"DN"``, ``"reflectance"`` or None (cannot tell) for an array of pixel values.

    An explicit ``attrs["units"]`` wins; integer data are DN; otherwise the median over bands of
    the per-band medians of valid (finite, non-zero) values decides. ``values`` is ``(C, N)`` or
    anything whose first axis is the band.
    """
    declared = normalise_units((attrs or {}).get("units"))
    if declared:
        return declared
    arr = np.asarray(values)
    if np.issubdtype(dtype or arr.dtype, np.integer):
        return "DN"
    flat = arr.reshape(arr.shape[0], -1).astype("float64")
    if flat.shape[1] > 100_000:  # a median of 10^5 values per band is plenty
        flat = flat[:, :: flat.shape[1] // 100_000]
    flat = np.where(flat == 0, np.nan, flat)  # 0 is the usual fill value, in either unit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands
        level = np.nanmedian(np.abs(np.nanmedian(flat, axis=1)))
    if not np.isfinite(level):
        return None
    if level >= DN_MIN:
        return "DN"
    if level <= REFLECTANCE_MAX:
        return "reflectance"
    return None


def dn_scale(card: dict) -> tuple[float, float] | None:
    """``(scale, offset)`` with reflectance = DN * scale + offset for the card's data, or None."""
    if "dn_scale" in card:
        return float(card["dn_scale"]), float(card.get("dn_offset", 0.0))
    return DN_SCALE.get(card.get("sensor", ""))
