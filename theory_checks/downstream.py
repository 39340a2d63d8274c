"""Claim 9 (docs/theory.md §5): the learned representation cuts the downstream sample complexity from ~d to ~r.

Least squares on p Gaussian features has expected excess risk bias + (σ_ν² + bias) p / (n − p − 1)
(bias = 0 for the raw input and, up to the flow's accuracy, for a representation spanning the kept
subspace that contains β*). :func:`linssl.linear.downstream.sample_complexity_curves` fits it on many
independent training sets per n for the raw input (p = d) and for the W of a DirectPred flow
(p = r); each mean is compared with the closed form in units of its standard error, and the ratio of
the n each needs to reach the target risk (≈ d/r) with its closed form.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from linssl.linear.downstream import Z95, SampleComplexityConfig, SampleComplexityResult, sample_complexity_curves
from theory_checks.base import CheckResult, make_result

CLAIM = "least-squares excess risk is σ²p/(n − p − 1): p = d on raw x, p = r on the learned Wx (n ratio ≈ d/r)"
#: Each mean over S seeds is compared with the closed form in standard errors: a 4σ deviation has
#: probability ~6e-5 per point under the theory (the seeds are fixed, so the check is deterministic).
TOLERANCE = 4.0
#: The n-to-target ratio is log-log interpolated between grid points (ratio ≈ 1.5) on means with a
#: few % error: 10% is the bar.
RATIO_TOLERANCE = 0.1


def config(quick: bool) -> SampleComplexityConfig:
    grid = (30, 45, 70, 110, 170, 260, 400, 600, 900)
    if quick:
        return SampleComplexityConfig(dim=20, rank=4, noise=0.5, n_grid=grid, seeds=400, wd=0.05, ridge=False)
    return SampleComplexityConfig(dim=40, rank=5, noise=0.5, n_grid=(60,) + tuple(2 * n for n in grid[1:]) + (2600,),
                                  seeds=2000, wd=0.05, ridge=False)


@lru_cache(maxsize=4)
def simulate(quick: bool) -> SampleComplexityResult:
    return sample_complexity_curves(config(quick))


def check_downstream(quick: bool = False, *, risk_scale: float = 1.0) -> CheckResult:
    """Measured mean risks against the closed form (× ``risk_scale``, to show FAIL) and the n ratio."""
    result = simulate(quick)
    failures, curves, worst = [], {}, 0.0
    for name, curve in result.curves.items():
        mean = np.asarray(curve.risk_mean)
        predicted = risk_scale * np.asarray(curve.risk_predicted)
        stderr = (np.asarray(curve.risk_hi) - mean) / Z95
        z = np.abs(mean - predicted) / stderr
        worst = max(worst, float(z.max()))
        curves[name] = {"n": curve.n, "features": curve.features, "bias": curve.bias, "mean": mean,
                        "predicted": predicted, "stderr": stderr, "z": z,
                        "rel_error": np.abs(mean - predicted) / predicted}
    predicted_ratio = result.n_to_target_ratio_predicted
    measured_ratio = result.n_to_target_ratio_interp
    if predicted_ratio is None or measured_ratio is None:
        failures.append("a curve never reaches the target risk on the n grid")
        predicted_ratio = predicted_ratio or float("nan")
        measured_ratio = measured_ratio or float("nan")
    elif abs(measured_ratio - predicted_ratio) / predicted_ratio > RATIO_TOLERANCE:
        failures.append(f"n-to-target ratio {measured_ratio:.3g} is off the closed form {predicted_ratio:.3g} "
                        f"by more than {RATIO_TOLERANCE:.0%}")
    rank = result.representation.get("rank")
    if rank != result.config.rank:
        failures.append(f"the simulated representation has rank {rank}, not the kept dimension {result.config.rank}")
    cfg = result.config
    return make_result("downstream", CLAIM, predicted_ratio, measured_ratio, worst, TOLERANCE, failures,
                       {"dim": cfg.dim, "rank": cfg.rank, "noise": cfg.noise, "seeds": cfg.seeds,
                        "target_risk": result.target_risk, "curves": curves,
                        "representation": result.representation,
                        "headline": "predicted/measured: n_raw/n_learned to reach the target risk; "
                                    "error: worst |mean − closed form| in standard errors"})
