"""Figure 7: downstream excess risk against the number of labelled samples n (docs/theory.md §5).

Least squares on the raw input x (p = d features) and on the representation learned by a
DirectPred gradient-flow run (p = r kept features), measured over many seeds beside the closed
form bias + (σ_ν² + bias) p / (n − p − 1) (:func:`linssl.linear.downstream.sample_complexity_curves`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from linssl.figures.style import styled, subplots
from linssl.linear.downstream import (
    SampleComplexityConfig,
    SampleComplexityResult,
    default_n_grid,
    sample_complexity_curves,
)


@dataclass
class DownstreamData:
    result: SampleComplexityResult


def downstream_config(quick: bool = False) -> SampleComplexityConfig:
    """d = 50, r = 5, 200 seeds, 20 sizes (full); d = 20, r = 4, 40 seeds, 8 sizes (quick)."""
    if quick:
        return SampleComplexityConfig(dim=20, rank=4, seeds=40, n_grid=default_n_grid(20, 8), ridge=False)
    return SampleComplexityConfig(dim=50, rank=5, seeds=200, ridge=False)


def compute_downstream(quick: bool = False) -> DownstreamData:
    return DownstreamData(sample_complexity_curves(downstream_config(quick)))


LABELS = {"raw": "raw input x", "learned": "learned Wx"}


@styled
def plot_downstream(data: DownstreamData):
    res = data.result
    cfg = res.config
    fig, ax = subplots(width=7.0, height=5.6)
    for k, (name, curve) in enumerate(res.curves.items()):
        n = np.asarray(curve.n)
        color = f"C{k}"
        label = f"{LABELS.get(name, name)} (p = {curve.features})"
        ax.fill_between(n, curve.risk_p05, curve.risk_p95, color=color, alpha=0.15, lw=0)
        ax.errorbar(n, curve.risk_mean, yerr=[np.subtract(curve.risk_mean, curve.risk_lo),
                                              np.subtract(curve.risk_hi, curve.risk_mean)],
                    fmt="o", ms=4, color=color, capsize=2, label=f"{label}: measured mean")
        if curve.risk_predicted is not None:
            ax.plot(n, curve.risk_predicted, "--", color=color, lw=1.2, label=f"{label}: closed form")
        if curve.n_to_target_predicted is not None:
            ax.axvline(curve.n_to_target_predicted, color=color, ls=":", lw=1.0)
    ax.axhline(res.target_risk, color="k", ls=":", lw=1.0, label=f"target risk {res.target_risk:.3g}")
    ax.fill_between([], [], [], color="0.5", alpha=0.15, label="5th–95th percentile over seeds")
    ratio = res.n_to_target_ratio_predicted
    title = f"Downstream least squares, d = {cfg.dim}, r = {cfg.rank}, σ_ν = {cfg.noise:g}, {cfg.seeds} seeds"
    if ratio is not None:
        title += f"\nn to reach the target (dotted): raw / learned = {ratio:.1f} (closed form)"
    ax.set(xscale="log", yscale="log", xlabel="labelled samples n", ylabel="excess risk (β̂ − β*)ᵀΣ(β̂ − β*)",
           title=title)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    fig.legend(loc="outside lower center", ncol=2)
    return fig
