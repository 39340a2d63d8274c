"""Claim 4: w = 0 is stable too — an aligned feature starting below the basin boundary collapses.

The unstable fixed point p₋ = [λ − sqrt(λ² − 4η(λ + σ²))] / (2(λ + σ²)) is the basin boundary: a
kept feature whose initial predictor eigenvalue p₀ = (c w₀²)^α is below p₋ decays to 0, one above it
converges to p₊ (p₋ ≈ η for small η). Each run starts aligned (W = diag(w₀) Uᵀ, so features evolve
independently) with every feature at the same p₀ from a fixed geometric ladder around η (chosen
without looking at the prediction); the measured boundary of a feature is the geometric midpoint
between the largest collapsing and the smallest surviving p₀.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from linssl import theory
from linssl.linear.data import commuting_model
from linssl.linear.dynamics import DynamicsConfig, Problem, Trajectory, integrate_flow
from linssl.linear.records import KEPT_TOL, gains_along
from linssl.predictors import make_rule
from theory_checks.base import CheckResult, aligned_state, make_result, max_or_zero

CLAIM = "an aligned kept feature collapses iff its initial p < p₋ (p₋ ≈ η), else it converges to p₊"
AUG_VAR = (0.1, 0.5, 1.0, 2.0)
#: Survivors must end at the stable gain: flow accuracy ~1e-9 (see the gains check), bar 1e-3.
SURVIVOR_RTOL = 1e-3


def ladder(quick: bool, wd: float) -> np.ndarray:
    """Initial predictor eigenvalues p₀: geometric from 0.6η to 2.5η."""
    return np.geomspace(0.6 * wd, 2.5 * wd, 24 if quick else 48)


def tolerance(quick: bool) -> float:
    """Resolution of a bracket of adjacent ladder points: sqrt(ratio) − 1."""
    grid = ladder(quick, 1.0)
    return float(np.sqrt(grid[1] / grid[0]) - 1)


def cases(quick: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(α values, weight decays)."""
    return ((0.5, 1.0), (0.05,)) if quick else ((0.5, 1.0, 2.0), (0.05, 0.1))


@lru_cache(maxsize=4)
def simulate(quick: bool) -> tuple[tuple[float, float, np.ndarray, np.ndarray, Trajectory], ...]:
    """Per (α, η): the ladder p₀ and the final gains² (runs × features) of one batched aligned flow."""
    model = commuting_model(1.0, AUG_VAR, seed=23)
    c = (model.data_var + model.aug_var).numpy()
    alphas, wds = cases(quick)
    out = []
    for wd in wds:
        p0 = ladder(quick, wd)
        for alpha in alphas:
            problem = Problem.from_models(model, DynamicsConfig(make_rule("directset", alpha=alpha), wd), len(p0))
            gain_sq = p0[:, None] ** (1 / alpha) / c[None, :]  # p = (c w²)^α, the rule's definition of p
            traj = integrate_flow(problem, aligned_state(model.basis, gain_sq, problem))
            out.append((alpha, wd, p0, gains_along(traj.final.W, model.basis).numpy(), traj))
    return tuple(out)


def check_basin(quick: bool = False, *, basin_scale: float = 1.0) -> CheckResult:
    """Measured basin boundary in p against p₋ (× ``basin_scale``, to show FAIL)."""
    failures, runs, errors = [], [], []
    for alpha, wd, p0, final, traj in simulate(quick):
        p_minus = np.asarray(theory.fixed_points(1.0, np.asarray(AUG_VAR), wd)[1])
        gain_plus = np.asarray(theory.predicted_gain_sq(1.0, np.asarray(AUG_VAR), wd, alpha))
        for i, s2 in enumerate(AUG_VAR):
            if not theory.is_kept(1.0, s2, wd):
                continue
            survived = final[:, i] > KEPT_TOL
            lo = float(p0[~survived].max()) if (~survived).any() else 0.0
            hi = float(p0[survived].min()) if survived.any() else float("inf")
            if not lo < hi:
                failures.append(f"α={alpha:g}, η={wd:g}, σ²={s2:g}: survival is not monotone in p₀")
            measured = float(np.sqrt(lo * hi))
            predicted = basin_scale * float(p_minus[i])
            errors.append(abs(measured - predicted) / predicted)
            off = np.abs(final[survived, i] - gain_plus[i]) / gain_plus[i]
            if off.size and off.max() > SURVIVOR_RTOL:
                failures.append(f"α={alpha:g}, η={wd:g}, σ²={s2:g}: a survivor ended off w₊² by {off.max():.2g}")
            runs.append({"alpha": alpha, "wd": wd, "aug_var": s2, "predicted_p_minus": predicted,
                         "bracket": [lo, hi], "measured_p_minus": measured, "error": errors[-1],
                         "basin_gain_sq": float(theory.basin_gain_sq(1.0, s2, wd, alpha))})
        if not traj.converged:
            failures.append(f"α={alpha:g}, η={wd:g}: the flow did not converge")
    head = runs[0]
    return make_result("basin", CLAIM, head["predicted_p_minus"], head["measured_p_minus"], max_or_zero(errors),
                       tolerance(quick), failures,
                       {"runs": runs, "headline": f"p₋ at α = ½, η = 0.05, σ² = {AUG_VAR[0]:g}"})
