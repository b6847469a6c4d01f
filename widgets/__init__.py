"""eossl_widgets: the eossl workbench on interactive maps and linked plots (Jupyter).

Installed from the repository's ``widgets/`` folder as ``eossl_widgets`` (``pip install 'eossl[maps]'``).
It imports :mod:`eossl`; eossl never imports it.

    from eossl_widgets import MapExplorer, EmbeddingExplorer
    explorer = MapExplorer(scene, emb)
    explorer                       # a map with layers, opacity sliders, click-to-search and a gallery
"""

from eossl_widgets.bands import BandImportancePanel
from eossl_widgets.change import ChangeExplorer
from eossl_widgets.embedding_explorer import EmbeddingExplorer, load_bokehjs
from eossl_widgets.map_explorer import MapExplorer
from eossl_widgets.monitor import TrainingMonitor
from eossl_widgets.painter import LabelPainter
from eossl_widgets.overlay import (array_overlay, base_map, footprints_layer, opacity_sliders, rgb_image,
                                   scene_overlay, thumbnail_png)

__all__ = [
    "MapExplorer", "EmbeddingExplorer", "load_bokehjs", "rgb_image",
    "TrainingMonitor", "BandImportancePanel", "LabelPainter", "ChangeExplorer",
    "array_overlay", "scene_overlay", "footprints_layer", "thumbnail_png", "base_map", "opacity_sliders",
]
