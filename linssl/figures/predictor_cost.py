"""Figure 8: measured cost of one predictor update against the output dimension d.

DirectPred needs an eigendecomposition of F̂ (O(d³)); DirectCopy only normalises F̂ — by its
Frobenius norm (O(d²)) or by λ_max from a few power-iteration steps (O(k d²)). Times are medians
of repeated calls of :func:`linssl.predictors.direct_pred` / :func:`~linssl.predictors.direct_copy`
with torch on one CPU thread (float32, F̂ a random PSD matrix). This is a measurement of this
machine, not a closed form.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from linssl.figures.style import styled, subplots
from linssl.predictors import direct_copy, direct_pred
from linssl.runtime import one_thread

#: method label -> predictor update (ε = 0.01 as in the deep recipe)
METHODS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "DirectPred (eigh)": lambda F: direct_pred(F, "spectral", 0.01),
    "DirectCopy, spectral (30 power-iteration steps)": lambda F: direct_copy(F, "spectral", 0.01, 30),
    "DirectCopy, Frobenius": lambda F: direct_copy(F, "frobenius", 0.01),
}


@dataclass
class CostData:
    dims: np.ndarray  # (D,)
    seconds: dict[str, np.ndarray]  # method -> (D,) median seconds per update
    repeats: int
    machine: str


def random_correlation(dim: int, seed: int = 0) -> torch.Tensor:
    """A random PSD F̂ = AAᵀ/d (float32), like a correlation of network outputs."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=gen)
    return A @ A.T / dim


def median_seconds(func: Callable[[torch.Tensor], torch.Tensor], F: torch.Tensor, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    func(F)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func(F)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compute_cost(quick: bool = False) -> CostData:
    """d = 64 … 512 (quick) or 64 … 2048, one torch thread (restored afterwards)."""
    dims = np.array([64, 128, 256, 512] if quick else [64, 128, 256, 512, 1024, 2048])
    repeats = 3 if quick else 7
    with one_thread():
        seconds = {name: np.array([median_seconds(f, random_correlation(int(d)), repeats) for d in dims])
                   for name, f in METHODS.items()}
    return CostData(dims, seconds, repeats, f"{platform.processor() or platform.machine()}, torch {torch.__version__}")


@styled
def plot_cost(data: CostData):
    fig, ax = subplots(width=6.8, height=4.5)
    for k, (name, secs) in enumerate(data.seconds.items()):
        ax.plot(data.dims, secs * 1e3, "o-", color=f"C{k}", label=name)
    pred, copy = data.seconds["DirectPred (eigh)"], data.seconds["DirectCopy, Frobenius"]
    ax.set(xscale="log", yscale="log", xlabel="output dimension d (F̂ is d × d)",
           ylabel="time per predictor update (ms)",
           title=f"Measured on 1 CPU thread (median of {data.repeats}, float32)\n"
                 f"d = {data.dims[-1]}: DirectPred takes {pred[-1] / copy[-1]:.0f}× DirectCopy (Frobenius)")
    ax.set_xticks(data.dims, [str(d) for d in data.dims])
    ax.minorticks_off()
    ax.legend(loc="upper left")
    return fig
