"""Figure 2: phase diagram, kept or discarded over (augmentation variance σ², weight decay η).

Every grid point is a feature of a gradient-flow run (DirectPred, random-rotation start, unit data
variance); all weight decays are integrated as one batch (:func:`linssl.linear.sweep.sweep_flow`). A
feature counts as kept when its final squared gain exceeds :data:`PHASE_KEPT_TOL`. The theoretical
boundary σ² = λ²/(4η) − λ is drawn over the simulated points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import LogNorm

from linssl import theory
from linssl.figures.style import styled, subplots
from linssl.linear.data import commuting_model
from linssl.linear.records import CONVERGED_KEPT_TOL
from linssl.linear.sweep import sweep_flow
from linssl.predictors import make_rule

#: Kept iff final gain² > records.CONVERGED_KEPT_TOL (1e-8): the flow stops when max|dW/dt| < 1e-8, so a
#: discarded feature has gain² < (1e-8/η)² ≤ 1e-12 for η ≥ 0.01, while the smallest kept gain² just
#: inside the threshold on this grid is ~5e-5.
PHASE_KEPT_TOL = CONVERGED_KEPT_TOL


@dataclass
class PhaseData:
    aug_var: np.ndarray  # (S,)
    wd: np.ndarray  # (E,)
    gain_sq: np.ndarray  # (E, S) simulated final squared gains
    kept: np.ndarray  # (E, S) simulated decision
    kept_predicted: np.ndarray  # (E, S) closed-form decision
    boundary_wd: np.ndarray  # fine η grid
    boundary_aug_var: np.ndarray  # σ²*(η) = λ²/(4η) − λ on that grid
    t_final: float


def compute_phase(quick: bool = False) -> PhaseData:
    """σ² log-spaced in [0.1, 20] and η in [0.01, 0.2], 18 × 16 points; quick: [0.1, 12] × [0.015, 0.2], 8 × 6."""
    if quick:
        aug_var, wd, t_max = np.geomspace(0.1, 12.0, 8), np.geomspace(0.015, 0.2, 6), 1000.0
    else:
        aug_var, wd, t_max = np.geomspace(0.1, 20.0, 18), np.geomspace(0.01, 0.2, 16), 5000.0
    res = sweep_flow(commuting_model(1.0, aug_var, seed=0), wd, make_rule("directpred"), t_max=t_max, n_records=3)
    fine = np.geomspace(wd[0] * 0.8, wd[-1] * 1.25, 200)
    return PhaseData(aug_var, wd, res.gain_sq, res.gain_sq > PHASE_KEPT_TOL, res.kept_predicted, fine,
                     np.asarray(theory.threshold_aug_var(fine)), float(res.trajectory.info["t_final"]))


@styled
def plot_phase(data: PhaseData):
    fig, ax = subplots(width=7.0, height=5.6)
    S, E = np.meshgrid(data.aug_var, data.wd)
    kept = data.kept
    gains = data.gain_sq[kept]
    sc = ax.scatter(S[kept], E[kept], c=gains, norm=LogNorm(vmin=gains.min(), vmax=gains.max()),
                    cmap="viridis", s=42, marker="o", label="kept (simulated; colour: final gain²)")
    ax.scatter(S[~kept], E[~kept], color="0.55", s=36, marker="x", label="discarded (simulated)")
    wrong = kept != data.kept_predicted
    if wrong.any():
        ax.scatter(S[wrong], E[wrong], facecolors="none", edgecolors="red", s=130, lw=1.4,
                   label=f"disagrees with theory ({int(wrong.sum())})")
    visible = data.boundary_aug_var > 0
    ax.plot(data.boundary_aug_var[visible], data.boundary_wd[visible], "k-", lw=2.0,
            label="theory: σ² = λ²/(4η) − λ")
    ax.set(xscale="log", yscale="log", xlim=(data.aug_var[0] / 1.3, data.aug_var[-1] * 1.3),
           ylim=(data.wd[0] / 1.15, data.wd[-1] * 1.15), xlabel="augmentation variance σ² (λ = 1)",
           ylabel="weight decay η",
           title=f"DirectPred flow (t = {data.t_final:.3g}): {int((~wrong).sum())} of {wrong.size} "
                 "points agree with theory")
    fig.colorbar(sc, ax=ax, label="final squared gain (kept)")
    fig.legend(loc="outside lower center", ncol=2)
    return fig
