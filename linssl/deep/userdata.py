"""The user's own images and backbone for ``linssl.deep.train`` (the Python API; the CLI reads the
registered datasets of ``linssl.deep.datasets``).

Images are uint8 N×C×H×W (square, H = W) with integer labels; the augmentation preset is chosen by
the image side (``linssl.deep.augment.preset_for``); mean and std per channel are measured on the
pretraining images (an evenly strided sample of at most ``STATS_SAMPLE``). Without a test split, a seeded
fifth of the images is held out for the probe and the kNN monitor (pretraining sees every image, as
with STL-10's unlabeled split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from linssl.deep.config import CUSTOM
from linssl.deep.datasets import DatasetSpec, TensorImageDataset
from linssl.errors import LinsslError

#: most images whose mean/std are measured (an evenly strided sample of the pretraining images)
STATS_SAMPLE = 2048
TEST_FRACTION = 0.2


@dataclass
class ImageData:
    """Pretraining, probe-training and test splits with the facts the trainer needs (``spec``)."""

    spec: DatasetSpec
    pretrain: Any
    train: Any
    test: Any


def image_data(dataset: Any, seed: int = 0) -> ImageData:
    """``ImageData`` from what a user has.

    Args:
        dataset: an ``ImageData``; a pair ``(images, labels)`` or a 4-tuple ``(images, labels,
            test_images, test_labels)`` of tensors (uint8 N×C×H×W, int labels); or a torch ``Dataset``
            whose items are ``(uint8 C×H×W tensor, int label)`` (or a pair of such Datasets, train and
            test). Without a test split, a seeded 20 % of the images is the test split.
        seed: the seed of that split.
    """
    if isinstance(dataset, ImageData):
        return dataset
    if isinstance(dataset, (tuple, list)) and len(dataset) in (2, 4) and all(torch.is_tensor(t) for t in dataset):
        return _from_tensors(*dataset, seed=seed)
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2 and all(_is_dataset(d) for d in dataset):
        return _from_datasets(dataset[0], dataset[1], seed)
    if _is_dataset(dataset):
        return _from_datasets(dataset, None, seed)
    raise LinsslError("dataset must be (images, labels), (images, labels, test_images, test_labels), a torch "
                      f"Dataset of (uint8 image, label) items, or a (train, test) pair of them; got {type(dataset)}")


def _is_dataset(obj: Any) -> bool:
    return isinstance(obj, torch.utils.data.Dataset) and hasattr(obj, "__len__")


def _check_images(images: torch.Tensor, what: str) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise LinsslError(f"{what} must be square uint8 images N×C×H×W, got {images.dtype} {tuple(images.shape)}")


def _spec(images, num_classes: int) -> DatasetSpec:
    """Side, channels, classes, and per-channel mean/std in [0, 1] of a strided sample of ``images`` (a uint8
    N×C×H×W tensor, or a Dataset of (uint8 C×H×W, label) items)."""
    step = max(1, len(images) // STATS_SAMPLE)
    sample = images[::step] if torch.is_tensor(images) else torch.stack([images[i][0]
                                                                        for i in range(0, len(images), step)])
    x = sample.double() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)  # a constant channel is left unscaled, not divided by 0
    return DatasetSpec(CUSTOM, int(sample.shape[-1]), int(sample.shape[1]), num_classes,
                       tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std))


def _num_classes(*labels: torch.Tensor) -> int:
    top = max(int(lab.max()) for lab in labels if lab.numel())
    if min(int(lab.min()) for lab in labels if lab.numel()) < 0:
        raise LinsslError("labels must be 0, 1, ..., classes − 1")
    return top + 1


def _from_tensors(images, labels, test_images=None, test_labels=None, *, seed: int) -> ImageData:
    _check_images(images, "images")
    if labels.shape != (images.shape[0],):
        raise LinsslError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if test_images is None:
        order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
        cut = max(1, round(TEST_FRACTION * images.shape[0]))
        test_images, test_labels = images[order[:cut]], labels[order[:cut]]
        train_images, train_labels = images[order[cut:]], labels[order[cut:]]
    else:
        _check_images(test_images, "test_images")
        if test_images.shape[1:] != images.shape[1:]:
            raise LinsslError(f"test_images are {tuple(test_images.shape[1:])}, images {tuple(images.shape[1:])}")
        train_images, train_labels = images, labels
    classes = _num_classes(labels, test_labels)
    make = lambda x, y: TensorImageDataset(x, y.to(torch.int64), classes)  # noqa: E731
    return ImageData(_spec(images, classes), make(images, labels), make(train_images, train_labels),
                     make(test_images, test_labels))


def _from_datasets(train, test, seed: int) -> ImageData:
    n = len(train)
    if n == 0:
        raise LinsslError("the dataset is empty")
    first, _ = train[0]
    if not torch.is_tensor(first):
        raise LinsslError(f"dataset items must be (uint8 C×H×W tensor, label), got {type(first)}")
    _check_images(first.unsqueeze(0), "dataset images")
    test_given = test
    if test is None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        cut = max(1, round(TEST_FRACTION * n))
        test, probe_train = torch.utils.data.Subset(train, order[:cut]), torch.utils.data.Subset(train, order[cut:])
    else:
        probe_train = train
    held_out = [] if test_given is None else [_labels(test_given)]  # a split of train has train's labels
    classes = int(getattr(train, "num_classes", 0)) or _num_classes(_labels(train), *held_out)
    return ImageData(_spec(train, classes), train, probe_train, test)


def _labels(dataset) -> torch.Tensor:
    """A Dataset's labels: its ``labels`` tensor where it has one, else read item by item (which loads every
    image: give the Dataset ``num_classes`` or ``labels`` to spare that)."""
    labels = getattr(dataset, "labels", None)
    if torch.is_tensor(labels):
        return labels
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])


def feature_dim_of(backbone: nn.Module, spec: DatasetSpec, feature_dim: int | None = None) -> int:
    """The size of the backbone's output: given, its ``feature_dim`` attribute, or measured by one
    forward pass of two blank images (in eval mode, without gradients)."""
    if feature_dim is not None:
        return int(feature_dim)
    if isinstance(getattr(backbone, "feature_dim", None), int):
        return backbone.feature_dim
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(2, spec.channels, spec.image_size, spec.image_size))
    backbone.train(was_training)
    if out.ndim != 2:
        raise LinsslError(f"the backbone must return (batch, features), returned shape {tuple(out.shape)}")
    return int(out.shape[1])
