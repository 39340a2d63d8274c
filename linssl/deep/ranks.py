"""Processes and devices: this process's rank under torchrun, the device it trains on, and the
collectives the trainer needs (mean over ranks, barrier).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from linssl.errors import LinsslError

#: how long a collective waits: rank 0 alone runs the kNN monitor and the probe while the others wait
COLLECTIVE_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class Ranks:
    """This process under torchrun (RANK / WORLD_SIZE / LOCAL_RANK) or alone (0 / 1 / 0)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def select_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise LinsslError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_ranks(device_name: str) -> tuple[Ranks, bool]:
    """Join the torchrun process group if WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU).

    Returns (ranks, whether this call created the group and must destroy it).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), False
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_initialized():
        return ranks, False
    device = select_device(device_name, ranks.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # rank 0 alone runs the kNN monitor and the final probe while the others wait at a barrier
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return ranks, True


def all_reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` over all ranks (a new tensor)."""
    out = t.clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()
