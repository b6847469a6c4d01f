"""Fine-tuning with few labels: ``eossl.finetune(model, data, labels, task=...)`` and ``eossl.predict``.

One pretrained encoder (from :func:`eossl.pretrain` or :func:`eossl.load_model`; ``None`` for random
weights, the baseline) plus a small head per task:

===============  ==================================  ======================  ==========================
task             data                                labels                  head
===============  ==================================  ======================  ==========================
classification   chips (sample, band, y, x)          one per chip / 'label'  linear on pooled features
segmentation     scene or stack (time, band, y, x)   raster (y, x), same grid  light decoder on patches
change           two dates (time=2, band, y, x)      raster (y, x), same grid  siamese decoder
===============  ==================================  ======================  ==========================

Files: ``classification.py``, ``segmentation.py``, ``change.py`` (one per task), ``heads.py``
(model, heads, loading), ``loop.py`` (training loop, losses, metrics, tiled prediction) and
``predict.py`` (prediction for every task, and :class:`FinetuneRun`).
"""

from __future__ import annotations

from eossl.finetune.change import finetune_change, open_oscd
from eossl.finetune.classification import finetune_classification
from eossl.finetune.heads import TASKS, FinetuneModel, load
from eossl.finetune.loop import metrics_table, random_model
from eossl.finetune.predict import FinetuneRun, predict
from eossl.finetune.segmentation import finetune_segmentation

_TASK_FUNCTIONS = {"classification": finetune_classification, "segmentation": finetune_segmentation,
                   "change": finetune_change}


def finetune(model, data, labels=None, task: str = "classification", *, shots: int | None = None,
             train: str = "head", steps: int = 150, out=None, **kwargs) -> FinetuneRun:
    """Fine-tune an encoder on a few labels and score it on the labels it did not see.

    Args:
        model: a pretrained model (``eossl.pretrain(...)`` run or ``.model``, ``eossl.load_model(path)``,
            or a checkpoint path), or ``None`` / ``"random"`` for random weights (``encoder=`` names the
            architecture, default ViT-tiny/8; normalised with the data's own statistics). The model
            is copied: the pretrained weights you pass are never changed.
        data: chips (classification); a scene, stack or Dataset with ``image`` (segmentation);
            two dates as a stack, a Dataset or a pair of scenes (change).
        labels: classification: one label per chip or a coordinate name (default ``"label"``);
            segmentation / change: a raster on the image's grid or a Dataset variable name.
        task: ``"classification"``, ``"segmentation"`` or ``"change"``.
        shots: the label budget: labeled chips (classification) or pixels (segmentation, change)
            per class drawn for training; all other labeled items are held out and scored.
            ``None``: ``1 - test_fraction`` of each class. A budget that leaves a class with nothing
            to score raises :class:`eossl.DataError`.
        train: ``"head"`` (frozen encoder; a linear probe for classification), ``"last_blocks"``
            (also the last ``last_blocks`` ViT blocks / ResNet stages) or ``"all"``. The encoder learns
            at ``lr * encoder_lr_scale`` (default 0.1) so few labels do not wipe out pretraining.
        steps: optimiser steps (AdamW, cosine decay).
        out: run folder for ``checkpoint/`` (safetensors + card), ``history.csv`` and ``metrics.csv``;
            ``None`` saves nothing. An existing checkpoint there is never replaced unless ``overwrite=True``.
        **kwargs: ``classes=[...]`` (which label values to train on, in order; others are ignored),
            ``ignore=`` (label values that mean "no label"; default: values named no data / unknown in
            the labels' ``classes`` attribute), ``loss="ce" | "focal"``, ``class_weight=None |
            "balanced" | [w, ...]`` (rare classes), ``lr``, ``batch_size``, ``augment`` (flips and quarter
            turns while the encoder learns), ``window`` / ``stride`` (training tiles), ``decoder="patch" |
            "skip"`` (dense tasks: patch features only, or plus a full-resolution pixel branch),
            ``dates=(i, j)`` (change), ``test_fraction``, ``encoder``, ``device``, ``seed``.

    Returns:
        :class:`FinetuneRun` with ``model`` (``.card``: task, classes, bands, normalisation, base
        encoder), ``history``, ``checkpoint_path``, ``metrics`` (per-class precision / recall / F1 /
        IoU on the held-out labels, plus macro and overall rows) and ``split``.
    """
    if task not in _TASK_FUNCTIONS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return _TASK_FUNCTIONS[task](model, data, labels, shots=shots, train=train, steps=steps, out=out, **kwargs)


__all__ = ["finetune", "predict", "load", "FinetuneRun", "FinetuneModel", "random_model", "metrics_table",
           "finetune_classification", "finetune_segmentation", "finetune_change", "open_oscd", "TASKS"]
