"""Bundled real sample data: ``eossl.datasets.load_sample(name)``, ``list_samples()``; and
:func:`oscd_stacks` for the OSCD cities where a copy is at hand (OSCD is not bundled: CC BY-NC-SA)."""

from pathlib import Path

from eossl.data.samples import (CHANGE_CLASSES, LULC_CLASSES, list_samples, load_sample,
                                sample_dir)
from eossl.errors import DataError

__all__ = ["load_sample", "list_samples", "sample_dir", "oscd_stacks", "LULC_CLASSES", "CHANGE_CLASSES"]


def oscd_stacks(folder, cities=None) -> list:
    """Every OSCD city under ``folder`` (``<city>/imgs_1``, ``<city>/imgs_2``) as a two-date stack
    ``(time, band, y, x)`` on the 10 m grid, 13 Sentinel-2 L1C bands, unlabeled: more places and
    seasons to pretrain on (place contrast learns most from such date pairs). ``cities``: only these.
    The dataset comes from https://rcdaudt.github.io/oscd/ (non-commercial licence)."""
    from eossl.data.scenes import open_stack

    folder = Path(folder)
    found = sorted(c for c in folder.iterdir() if (c / "imgs_1").is_dir() and (c / "imgs_2").is_dir()) \
        if folder.is_dir() else []
    if cities is not None:
        missing = sorted(set(cities) - {c.name for c in found})
        if missing:
            raise DataError(f"{folder}: no OSCD city {missing} (found {[c.name for c in found]})")
        found = [c for c in found if c.name in cities]
    if not found:
        raise DataError(f"{folder}: no OSCD city folders (<city>/imgs_1 and imgs_2); download OSCD from "
                        "https://rcdaudt.github.io/oscd/ and unpack its images there")
    return [open_stack([c / "imgs_1", c / "imgs_2"]) for c in found]
