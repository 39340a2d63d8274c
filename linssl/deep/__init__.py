"""The deep backend: ResNets trained with DirectCopy, DirectPred, DirectSet(α) or a trained predictor.

``linssl.deep.train(config, backbone=None, dataset=None)`` is the Python entry (``linssl deep-train``
is its CLI face); ``DeepConfig`` holds every setting (the CLI flags, one to one).

Floors: ``models`` / ``augment`` / ``datasets`` / ``lars`` / ``recipes`` (parts) -> ``config``
(``DeepConfig`` and the builders) -> ``flags`` (deep-train's flags, generated from it), ``schedules``,
``ranks``, ``sharding``, ``step`` (one ``TrainingStep``), ``monitor``, ``checkpoint``, ``evaluate``,
``userdata`` -> ``loop`` (the training loop) -> ``cli_train`` / ``cli_eval`` / ``cli_recipes`` /
``cli_export`` / ``cli_headline`` (faces). docs/theory.md §6 describes the recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from linssl.deep.config import DeepConfig
    from linssl.deep.loop import TrainResult

__all__ = ["train"]


def train(
    config: DeepConfig | Mapping[str, Any],
    backbone: nn.Module | None = None,
    dataset: Any = None,
    *,
    feature_dim: int | None = None,
    resume: bool = False,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train (or resume) a siamese network with a DirectCopy / DirectPred / DirectSet / trained predictor.

    Args:
        config: a ``linssl.deep.config.DeepConfig`` or a mapping of its fields (the ``deep-train`` flags
            with underscores: ``{"dataset": "digits", "out": "runs/x", "predictor": "directcopy", ...}``).
        backbone: your own encoder (an ``nn.Module`` mapping a batch of images to (batch, features));
            the projector and predictor are built on top of it. Default: the network ``config.arch`` names.
        dataset: your own images instead of ``config.dataset``: ``(images, labels)`` with uint8
            N×C×H×W images, ``(images, labels, test_images, test_labels)``, a torch ``Dataset`` of
            ``(uint8 image, label)`` items, or a ``(train, test)`` pair of them (see
            ``linssl.deep.userdata.image_data``; without a test split, a seeded 20 % is held out).
        feature_dim: the backbone's output size (default: its ``feature_dim`` attribute, else measured).
        resume: continue the run in ``config.out`` from its checkpoint (with the same backbone/data).
        stop_after_epochs: end this session after that many epochs (checkpointed; resume continues).

    Returns:
        ``linssl.deep.loop.TrainResult``: ``online`` (backbone, projector, predictor), ``target``,
        ``metrics`` (one dict per epoch: loss, kNN top-1, eigenvalues of F̂ and of W_p, effective rank,
        normalised std, images/s), ``summary`` (linear-probe and kNN top-1 after the last epoch; None if
        stopped early), ``epoch``, ``step``. The run folder holds the same as after ``deep-train``.
    """
    from linssl.deep.config import CUSTOM, DeepConfig, config_from_dict
    from linssl.deep.loop import train as train_loop
    from linssl.deep.userdata import feature_dim_of, image_data

    cfg = config if isinstance(config, DeepConfig) else config_from_dict(dict(config), "config")
    data = None
    if dataset is not None:
        data = image_data(dataset, cfg.seed)
        cfg = dataclasses.replace(cfg, dataset=CUSTOM)
    if backbone is not None:
        if data is None and not cfg.dataset:
            raise TypeError("give config.dataset or dataset=")
        if data is None:
            from linssl.deep.datasets import get_spec

            spec = get_spec(cfg.dataset)
        else:
            spec = data.spec
        feature_dim = feature_dim_of(backbone, spec, feature_dim)
        cfg = dataclasses.replace(cfg, arch=CUSTOM)
    return train_loop(cfg, resume, stop_after_epochs, backbone=backbone, feature_dim=feature_dim, data=data)
