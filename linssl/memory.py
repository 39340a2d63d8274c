"""Memory a run will allocate, estimated from its sizes before it allocates anything, and the refusal of a
run that cannot fit: one line naming the flags and the estimate, never a traceback or a swap storm.

Each command has a small pure estimate (bytes, formula in its docstring); ``check_fits`` compares it
with the memory the machine has available now (``MemAvailable`` of /proc/meminfo, else physical memory)
or, for a CUDA run, the GPU's memory. The estimates count only the large arrays (they are for refusing
what clearly cannot fit, not for planning), so a run they pass may still need somewhat more.
"""

from __future__ import annotations

import os
from typing import Any

from linssl.errors import LinsslError

GIB = 2**30
FLOAT64 = 8
FLOAT32 = 4


def available_memory_bytes() -> int:
    """Memory a new allocation can get now: ``MemAvailable`` (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: nothing to compare with
        return 2**62


def check_fits(estimate: float, what: str, fix: str, available: float | None = None, where: str = "memory") -> None:
    """A one-line ``LinsslError`` (``what`` would need about X GiB ...; ``fix``) when ``estimate`` bytes exceed
    ``available`` (default: the machine's available memory)."""
    available = available_memory_bytes() if available is None else available
    if not estimate <= available:  # also refuses an estimate that overflowed to inf or nan
        need = "more than 10⁹ GiB" if not estimate < 1e9 * GIB else f"about {estimate / GIB:.3g} GiB"
        raise LinsslError(f"{what} would need {need} of {where}, more than the {available / GIB:.3g} GiB "
                          f"available; {fix}")


def simulation_bytes(dim: int, out_dim: int, mode: str, batch: int) -> float:
    """The simulator (``linssl simulate``), one run: 8 bytes × [50 d² (covariances, rotations, roots, the
    flow's stages and records) + for SGD batch × (6 d + 8 m) (three views and their draws, outputs and
    residuals of a minibatch)]. Measured at d = m = 8, SGD batch 10⁶: peak 750 MB above the interpreter's
    (estimate 855 MiB)."""
    per_sample = 6 * dim + 8 * out_dim if mode == "sgd" else 0
    return float(FLOAT64) * (50.0 * dim * dim + float(batch) * per_sample)


def sample_complexity_bytes(dim: int, seeds: int, n_max: int, classification: bool) -> float:
    """``linssl sample-complexity`` at its largest training size n: 8 bytes × [2 S n d (the samples and their
    colouring; 4 with the logistic fits' temporaries) + 6 S d² (Gram matrices and their eigendecompositions
    per seed) + 20 d² (the model and the simulated run)]. Measured at d = 200, S = 20, n = 5000 (identity
    covariance, so no colouring copy): peak 160 MB above the interpreter's (estimate 348 MiB), 350 MB with
    ``--classification`` (estimate 653 MiB)."""
    copies = 4 if classification else 2
    return float(FLOAT64) * (copies * float(seeds) * n_max * dim + 6.0 * seeds * dim * dim + 20.0 * dim * dim)


def deep_training_bytes(cfg: Any, channels: int, image_size: int) -> float:
    """A lower bound on a deep-train step's memory (float32), so that only what clearly cannot fit is refused:
    4 bytes × [4 P (weights, gradients, momentum, the target copy; P counted exactly on a network built on
    torch's ``meta`` device, which allocates nothing) + 2 B × (C H W + 2 hidden + 2 m) (two views of the
    batch B and their projector activations)]. The backbone's own activations are not counted."""
    params = network_parameters(cfg, channels, image_size)
    per_image = channels * image_size * image_size + 2 * int(cfg.proj_hidden) + 2 * int(cfg.proj_dim)
    return float(FLOAT32) * (4.0 * params + 2.0 * cfg.batch_size * per_image)


def network_parameters(cfg: Any, channels: int, image_size: int | None = None) -> float:
    """Parameters and buffers of the online network of a resolved DeepConfig, counted without allocating.

    An overflowing size (a width of 10¹²) counts as infinite."""
    import torch
    from torch.overrides import TorchFunctionMode

    from linssl.deep.config import build_online

    class SkipInPlace(TorchFunctionMode):
        """In-place fills (the initialisers' normal_, uniform_, zero_) are skipped and ``eye`` is an empty tensor:
        meta tensors hold no values, and torch's meta path for those imports torch._dynamo (seconds)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name.endswith("_") and not name.startswith("_") and args and isinstance(args[0], torch.Tensor):
                return args[0]
            if func is torch.eye:
                return torch.empty(args[0], args[1] if len(args) > 1 else args[0])
            return func(*args, **(kwargs or {}))

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), SkipInPlace():
            net = build_online(cfg, channels, image_size=image_size)
    except (RuntimeError, ValueError, OverflowError):
        return float("inf")
    return float(sum(t.numel() for t in (*net.parameters(), *net.buffers())))


def deep_memory_available(device: Any) -> tuple[float, str]:
    """(bytes, what) to compare a deep run's estimate with: the GPU's total memory on CUDA, else RAM available."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return float(torch.cuda.get_device_properties(device).total_memory), "GPU memory"
    return float(available_memory_bytes()), "memory"
