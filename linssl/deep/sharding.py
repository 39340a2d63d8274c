"""Feeding the loop: each rank's share of an epoch's permutation, and uint8 image batches on the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from linssl.deep import datasets
from linssl.deep.ranks import Ranks
from linssl.deep.schedules import epoch_seed


def epoch_shard(n: int, batch_size: int, ranks: Ranks, seed: int, epoch: int) -> Tensor:
    """This rank's indices of the epoch's permutation, shaped (steps, batch_size / world).

    The permutation comes from (seed, epoch); step k takes the k-th block of ``batch_size`` indices
    and rank r its r-th slice, so the ranks together see exactly one global batch per step.
    """
    steps = n // batch_size
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch, 0)))
    return perm[: steps * batch_size].view(steps, ranks.world, batch_size // ranks.world)[:, ranks.rank]


#: In-memory datasets up to this size are copied to the GPU once and indexed there.
GPU_RESIDENT_BYTES = 4 << 30


def device_images(dataset, device: torch.device) -> Tensor | None:
    """The uint8 images of an in-memory dataset where batches should be indexed: on the GPU when
    they fit in ``GPU_RESIDENT_BYTES``, else on the CPU; None for a file dataset (DataLoader).

    Moved to the GPU, the dataset holds the GPU copy from then on, so the host copy (2.9 GB for
    STL-10's pretraining split, per DDP process) is freed."""
    images = getattr(dataset, "images", None)
    if images is None:
        return None
    if device.type == "cuda" and images.numel() <= GPU_RESIDENT_BYTES:
        dataset.images = images.to(device)
        return dataset.images
    return images


def iterate_batches(dataset, images: Tensor | None, shard: Tensor, workers: int, device: torch.device):
    """uint8 image batches on ``device``, in the order of ``shard`` (steps, b).

    In-memory datasets are indexed directly (``images`` from ``device_images``); file datasets go
    through a DataLoader with workers. CPU batches bound for CUDA are pinned and copied without blocking.
    """
    pin = device.type == "cuda"
    if images is not None:
        for idx in shard.to(images.device):  # the epoch's indices cross to a GPU once, not once per step
            batch = images[idx]
            if batch.device != device:
                batch = (batch.pin_memory() if pin else batch).to(device, non_blocking=pin)
            yield batch
        return
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=shard.shape[1], sampler=shard.flatten().tolist(), num_workers=workers,
        pin_memory=pin, drop_last=True, persistent_workers=False,
    )
    for images, _labels in datasets.loader_batches(loader):
        yield images.to(device, non_blocking=pin)
