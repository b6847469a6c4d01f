"""Bundled real sample data: ``eossl.datasets.load_sample(name)``, ``list_samples()``."""

from eossl.data.samples import (CHANGE_CLASSES, LULC_CLASSES, list_samples, load_sample,
                                sample_dir)

__all__ = ["load_sample", "list_samples", "sample_dir", "LULC_CLASSES", "CHANGE_CLASSES"]
