"""Claim 1: weight decay is a threshold — a feature is kept iff λ² ≥ 4η(λ + σ²), for every α.

Equivalently a feature of augmentation variance σ² is kept iff η ≤ η* = λ² / (4(λ + σ²)) (at λ = 1 the
largest kept σ² is σ²* = 1/(4η) − 1). One batched flow per α runs a fixed geometric grid of weight
decays (chosen without looking at the prediction) on a model with a few features; the measured η*
of a feature is the geometric midpoint of the bracket [largest η that keeps it, smallest η that
discards it], whose half-width is the resolution. All α must give the same brackets.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from linssl import theory
from linssl.linear.data import commuting_model
from linssl.linear.sweep import SweepResult, sweep_flow
from linssl.predictors import make_rule
from theory_checks.base import CheckResult, make_result, max_or_zero

CLAIM = "a feature is kept iff λ² >= 4η(λ + σ²) (σ²* = 1/(4η) − 1 at λ = 1), the same threshold for every α"
AUG_VAR = (0.3, 1.0, 1.5, 3.0)


def wd_grid(quick: bool) -> np.ndarray:
    """Weight decays from 0.03 to 0.3 (thresholds of σ² from 0.3 to 3 lie in 0.06–0.19)."""
    return np.geomspace(0.03, 0.3, 40 if quick else 96)


def tolerance(quick: bool) -> float:
    """Resolution of a bracket of adjacent grid points: |midpoint − truth|/truth ≤ sqrt(ratio) − 1."""
    grid = wd_grid(quick)
    return float(np.sqrt(grid[1] / grid[0]) - 1)


def cases(quick: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(α values, data variances λ)."""
    return ((0.5, 1.0), (1.0,)) if quick else ((0.5, 1.0, 2.0), (1.0, 2.0))


@lru_cache(maxsize=4)
def simulate(quick: bool) -> tuple[tuple[float, float, SweepResult], ...]:
    """One batched flow per (α, λ) over the whole weight-decay grid."""
    alphas, data_vars = cases(quick)
    out = []
    for lam in data_vars:
        # λ = 2 doubles η* (η* = λ²/(4(λ+σ²))): scale σ² by λ so the thresholds stay inside the grid.
        model = commuting_model(lam, np.asarray(AUG_VAR) * lam, seed=7)
        grid = wd_grid(quick) * lam
        for alpha in alphas:
            # Init scale 1 (not the simulator's 0.5) keeps every kept feature out of the collapse basin,
            # which grows towards p₊ close to the threshold (at scale 0.5, α = 1 loses σ² = 0.3 there).
            out.append((alpha, lam, sweep_flow(model, grid, make_rule("directset", alpha=alpha), init_scale=1.0)))
    return tuple(out)


def check_threshold(quick: bool = False, *, threshold_scale: float = 1.0) -> CheckResult:
    """Measured weight-decay threshold η* per feature against λ²/(4(λ + σ²)) (× ``threshold_scale``)."""
    errors, runs, failures, brackets = [], [], [], {}
    for alpha, lam, sweep in simulate(quick):
        s2 = sweep.aug_var[0]
        for i in range(len(s2)):
            kept = sweep.kept[:, i]
            predicted = threshold_scale * float(theory.threshold_wd(lam, s2[i]))
            kept_by_prediction = sweep.wd <= predicted
            lo = float(sweep.wd[kept].max()) if kept.any() else 0.0
            hi = float(sweep.wd[~kept].min()) if (~kept).any() else float("inf")
            measured = float(np.sqrt(lo * hi))
            errors.append(abs(measured - predicted) / predicted)
            wrong = sweep.wd[kept != kept_by_prediction]
            if not lo < hi:
                failures.append(f"α={alpha:g}, λ={lam:g}, σ²={s2[i]:g}: keeping is not monotone in η")
            if wrong.size:
                failures.append(f"α={alpha:g}, λ={lam:g}, σ²={s2[i]:g}: classified differently at η = "
                                f"{np.round(wrong, 4).tolist()}")
            brackets.setdefault((lam, float(s2[i])), set()).add((lo, hi))
            runs.append({"alpha": alpha, "data_var": lam, "aug_var": float(s2[i]), "predicted_wd": predicted,
                         "bracket": [lo, hi], "measured_wd": measured, "error": errors[-1],
                         "predicted_aug_var_threshold_at_measured_wd": float(theory.threshold_aug_var(measured, lam))})
        if not sweep.trajectory.converged:
            failures.append(f"α={alpha:g}, λ={lam:g}: the flow did not converge")
    for (lam, s2), found in brackets.items():
        if len(found) > 1:
            failures.append(f"λ={lam:g}, σ²={s2:g}: the threshold depends on α ({sorted(found)})")
    head = next(r for r in runs if r["aug_var"] == 1.5 and r["data_var"] == 1.0)
    return make_result("threshold", CLAIM, head["predicted_wd"], head["measured_wd"], max_or_zero(errors),
                       tolerance(quick), failures,
                       {"runs": runs, "headline": "weight-decay threshold η* of σ² = 1.5 at λ = 1, α = ½ (0.1)"})
