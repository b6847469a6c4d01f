"""eossl: self-supervised learning on satellite imagery, from a scene to embeddings on a map.

    import eossl
    chips = eossl.datasets.load_sample("eurosat_ms")
    run = eossl.pretrain(chips, minutes=2, out="runs/x")   # the default recipe, eossl.recipes()
    emb = eossl.embed(run.model, chips)
"""

import sys as _sys

from eossl import datasets, plot, progress
from eossl.data import stac  # eossl.stac.search / load; pystac-client and odc-stac load lazily
from eossl.analysis.change import change, change_vector, evaluate_change
from eossl.analysis.cluster import cluster
from eossl.analysis.embed import embed
from eossl.analysis.io import open_embeddings, save_embeddings
from eossl.analysis.scene_scale import embed_to_zarr
from eossl.analysis.attribution import band_importance
from eossl.analysis.probe import band_statistics, knn_accuracy, probe, scene_labels
from eossl.analysis.labeling import label_map, next_labels
from eossl.analysis.reduce import pca, pca_rgb, umap
from eossl.analysis.search import SearchIndex, SimilarityResult, similar
from eossl.data.bands import SENSORS
from eossl.data.chips import open_chips
from eossl.data.normalize import band_stats, normalize, with_stats
from eossl.data.patches import grid_patches, random_patches
from eossl.data.scenes import open_scene, open_stack
from eossl.errors import CheckpointError, DataError, EosslError, ParameterError
from eossl.finetune import FinetuneRun, finetune, predict
from eossl.finetune import load as load_finetuned
from eossl.models.load import load_model
from eossl.models.registry import methods
from eossl.card import Card
from eossl.train.callbacks import Callback, LivePlot, StopAfter
from eossl.train.loop import PretrainConfig, pretrain
from eossl.train.recipes import recipes

# `import eossl.stac` and `from eossl.stac import search` find the same module as eossl.stac
# (one module under two names, as os.path is): the data layer owns it, the short name is the public one.
_sys.modules.setdefault("eossl.stac", stac)

__version__ = "0.1.0"

__all__ = [
    "open_scene", "open_stack", "open_chips", "datasets", "band_stats", "with_stats", "normalize",
    "grid_patches", "random_patches", "methods", "recipes", "pretrain", "PretrainConfig", "Callback", "LivePlot", "StopAfter", "Card",
    "load_model", "embed", "embed_to_zarr", "pca_rgb", "pca", "umap", "label_map", "next_labels", "knn_accuracy", "probe", "scene_labels", "band_importance", "band_statistics", "SENSORS", "plot",
    "save_embeddings", "open_embeddings", "change", "change_vector", "evaluate_change", "cluster", "similar", "SimilarityResult", "SearchIndex", "progress", "DataError", "CheckpointError", "EosslError", "ParameterError",
    "finetune", "predict", "load_finetuned", "FinetuneRun",
]
