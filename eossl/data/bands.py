"""Sensor band tables: names, common names, centre wavelengths and native resolutions.

Every loader in eossl attaches these as coordinates on the ``band`` dimension, so a band keeps
its identity (``B8A``, 865 nm, 20 m) from the file to the checkpoint card and back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Band:
    name: str            # the sensor's own name, e.g. "B8A"
    common_name: str     # STAC eo common name, e.g. "nir08"
    wavelength_nm: float  # centre wavelength
    resolution_m: float   # native ground sampling distance


def _table(rows):
    return tuple(Band(*row) for row in rows)


_S2 = _table([
    ("B01", "coastal", 443, 60), ("B02", "blue", 490, 10), ("B03", "green", 560, 10),
    ("B04", "red", 665, 10), ("B05", "rededge1", 705, 20), ("B06", "rededge2", 740, 20),
    ("B07", "rededge3", 783, 20), ("B08", "nir", 842, 10), ("B8A", "nir08", 865, 20),
    ("B09", "nir09", 945, 60), ("B10", "cirrus", 1375, 60), ("B11", "swir16", 1610, 20),
    ("B12", "swir22", 2190, 20),
])
_LANDSAT_TM = _table([
    ("B1", "blue", 485, 30), ("B2", "green", 560, 30), ("B3", "red", 660, 30),
    ("B4", "nir", 830, 30), ("B5", "swir16", 1650, 30), ("B6", "lwir", 11450, 120),
    ("B7", "swir22", 2215, 30),
])
_LANDSAT_ETM = _table([
    ("B1", "blue", 483, 30), ("B2", "green", 560, 30), ("B3", "red", 662, 30),
    ("B4", "nir", 835, 30), ("B5", "swir16", 1648, 30), ("B6", "lwir", 11450, 60),
    ("B7", "swir22", 2206, 30), ("B8", "pan", 706, 15),
])
_LANDSAT_OLI = _table([
    ("B1", "coastal", 443, 30), ("B2", "blue", 482, 30), ("B3", "green", 561, 30),
    ("B4", "red", 655, 30), ("B5", "nir08", 865, 30), ("B6", "swir16", 1609, 30),
    ("B7", "swir22", 2201, 30), ("B8", "pan", 590, 15), ("B9", "cirrus", 1373, 30),
    ("B10", "lwir11", 10895, 100), ("B11", "lwir12", 12005, 100),
])

#: Sensor name -> bands in the sensor's canonical order.
SENSORS: dict[str, tuple[Band, ...]] = {
    "sentinel2_l1c": _S2,
    "sentinel2_l2a": tuple(b for b in _S2 if b.name != "B10"),  # L2A drops the cirrus band
    "landsat5": _LANDSAT_TM,
    "landsat7": _LANDSAT_ETM,
    "landsat8": _LANDSAT_OLI,
    "landsat9": _LANDSAT_OLI,
}

#: EuroSAT-MS GeoTIFFs store B8A last, not in the canonical Sentinel-2 order.
EUROSAT_MS_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10",
                    "B11", "B12", "B8A")

#: Bands that make a true-colour picture, by common name.
RGB_COMMON_NAMES = ("red", "green", "blue")

# Words in file names / ENVI headers that identify a sensor.
_SENSOR_HINTS = [
    (re.compile(r"MSIL2A|_L2A_|sentinel-?2.*l2a", re.I), "sentinel2_l2a"),
    (re.compile(r"MSIL1C|MSI_L1C|_L1C_|sentinel-?2", re.I), "sentinel2_l1c"),
    (re.compile(r"\bLC0?[89]|(?<![a-z])OLI(?![a-z])|landsat[ _-]?[89]", re.I), "landsat8"),
    (re.compile(r"\bLE0?7|(?<![a-z])ETM(?![a-z])|landsat[ _-]?7", re.I), "landsat7"),
    (re.compile(r"\bLT0?[45]|\bTM\b|landsat[ _-]?[45]", re.I), "landsat5"),
]


def sensor_bands(sensor: str) -> tuple[Band, ...]:
    """The band table of ``sensor`` (one of :data:`SENSORS`)."""
    try:
        return SENSORS[sensor]
    except KeyError:
        raise ValueError(f"unknown sensor {sensor!r}; known sensors: {sorted(SENSORS)}") from None


def guess_sensor(*texts: str) -> str | None:
    """Guess a sensor from file names or header text; None when nothing matches."""
    for text in texts:
        for pattern, sensor in _SENSOR_HINTS:
            if text and pattern.search(text):
                return sensor
    return None


def lookup(sensor: str | None, names) -> list[Band]:
    """Bands named ``names`` of ``sensor``; unknown names become generic bands with NaN metadata."""
    table = {b.name: b for b in sensor_bands(sensor)} if sensor else {}
    return [table.get(n, Band(n, "", float("nan"), float("nan"))) for n in names]


def match_by_wavelength(sensor: str, wavelengths_nm) -> list[Band]:
    """The sensor band nearest to each centre wavelength (each band used once).

    ENVI files (e.g. the Landsat change pairs) carry wavelengths but not band names; a TM file
    with bands 1,2,3,4,5,7 is recognised as such instead of being assumed to be bands 1..6.
    """
    table = [b for b in sensor_bands(sensor) if b.common_name != "pan"]
    chosen = []
    for wl in wavelengths_nm:
        distances = [abs(b.wavelength_nm - wl) if b not in chosen else np.inf for b in table]
        best = int(np.argmin(distances))
        if distances[best] > 0.15 * wl:  # more than 15 % away: this is not that sensor
            raise ValueError(f"no {sensor} band near {wl:.0f} nm")
        chosen.append(table[best])
    return chosen


def default_bands(sensor: str | None, count: int) -> list[Band]:
    """Bands for a file with ``count`` bands and no names: the sensor's table when the count fits
    it exactly, otherwise generic ``band_1`` ... names."""
    if sensor and len(sensor_bands(sensor)) == count:
        return list(sensor_bands(sensor))
    return lookup(None, [f"band_{i + 1}" for i in range(count)])


def band_coords(bands: list[Band]) -> dict:
    """xarray coordinates for the ``band`` dimension."""
    return {
        "band": [b.name for b in bands],
        "common_name": ("band", [b.common_name for b in bands]),
        "wavelength": ("band", np.array([b.wavelength_nm for b in bands], dtype="float64"),
                       {"units": "nm"}),
        "resolution": ("band", np.array([b.resolution_m for b in bands], dtype="float64"),
                       {"units": "m"}),
    }


def rgb_bands(da) -> list[str]:
    """Names of the red, green and blue bands of ``da`` (by common name, then by wavelength)."""
    names = list(da["band"].values)
    if "common_name" in da.coords:
        common = list(da["common_name"].values)
        if all(c in common for c in RGB_COMMON_NAMES):
            return [names[common.index(c)] for c in RGB_COMMON_NAMES]
    if "wavelength" in da.coords:
        wl = np.asarray(da["wavelength"].values, dtype=float)
        picks = []
        for target in (665.0, 560.0, 490.0):
            if np.all(np.isnan(wl)):
                break
            picks.append(names[int(np.nanargmin(np.abs(wl - target)))])
        if len(set(picks)) == 3:
            return picks
    return names[:3] if len(names) >= 3 else [names[0]] * 3
