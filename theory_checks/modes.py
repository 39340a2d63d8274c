"""docs/theory.md §3: the three integrators agree where they should — discrete GD and minibatch SGD reach the
flow's fixed points (the closed-form gains), exactly for GD and within sampling noise for SGD.

GD follows the same vector field with Euler steps, so its fixed points are the flow's. SGD samples
views (symmetrised loss) and sets the predictor from the running estimate F̂; its gains fluctuate
around the closed form and are averaged over the last 20% of the run (``run_simulation`` does this).
"""

from __future__ import annotations

from functools import lru_cache

from linssl.linear.simulation import SimConfig, SimulationResult, run_simulation
from theory_checks.base import CheckResult, make_result

CLAIM = "discrete GD and minibatch SGD converge to the flow's kept set and gains (GD exactly, SGD within noise)"
WD = 0.1
#: Threshold 1.5 at η = 0.1: two kept, two discarded features, none within 50% of it.
AUG_VAR = (0.1, 0.5, 3.0, 6.0)
#: GD has the flow's fixed points and stops at max|dW/dt| < 1e-8: it matches the closed form to ~1e-9.
GD_TOLERANCE = 1e-3
#: SGD (lr 0.02, batch 256): the stationary gains fluctuate by ~1% (measured spread over seeds 0.1–0.7%)
#: after averaging the last 20% of the run; 5% is the bar for "within noise" and catches a 10% error.
SGD_TOLERANCE = 0.05
PREDICTORS = ("directpred", "directcopy")


def runs(quick: bool) -> tuple[tuple[str, tuple[str, ...], dict], ...]:
    """(mode, predictors, SimConfig keyword arguments).

    Quick: one short SGD run, time 80 — long enough for the discarded gains² to fall below KEPT_TOL
    (at 50 the σ² = 3 feature is still at ~1e-4).
    """
    gd = ("gd", PREDICTORS, {"lr": 0.05, "steps": 20000})
    if quick:
        return gd, ("sgd", ("directpred",), {"lr": 0.02, "steps": 4000, "batch": 256, "seed": 0})
    return (gd, *(("sgd", PREDICTORS, {"lr": 0.02, "steps": 10000, "batch": 256, "seed": s}) for s in (0, 1, 2)))


@lru_cache(maxsize=4)
def simulate(quick: bool) -> tuple[tuple[str, str, dict, SimulationResult], ...]:
    out = []
    for mode, predictors, kwargs in runs(quick):
        for name in predictors:
            config = SimConfig(wd=WD, aug_var=AUG_VAR, predictor=name, mode=mode, **kwargs)
            out.append((mode, name, kwargs, run_simulation(config)))
    return tuple(out)


def check_modes(quick: bool = False, *, gain_scale: float = 1.0) -> CheckResult:
    """GD and SGD gains against the closed form (× ``gain_scale``, to show FAIL), kept sets equal."""
    failures, details, errors = [], [], []
    for mode, name, kwargs, result in simulate(quick):
        tol = GD_TOLERANCE if mode == "gd" else SGD_TOLERANCE
        rel = [abs(f.gain_sq_simulated - gain_scale * f.gain_sq_predicted) / (gain_scale * f.gain_sq_predicted)
               for f in result.features if f.kept_predicted]
        worst = max(rel)
        errors.append(worst / tol)  # in units of the mode's tolerance
        wrong = [f.aug_var for f in result.features if f.kept_predicted != f.kept_simulated]
        if wrong:
            failures.append(f"{mode} {name}: features σ² = {wrong} classified differently")
        if worst > tol:
            failures.append(f"{mode} {name}: gain² off the closed form by {worst:.3g} > {tol:g}")
        if mode == "gd" and not result.converged:
            failures.append(f"gd {name}: did not converge")
        details.append({"mode": mode, "predictor": name, "settings": kwargs, "tolerance": tol, "max_rel_error": worst,
                        "gain_sq_predicted": [gain_scale * f.gain_sq_predicted for f in result.features],
                        "gain_sq_simulated": [f.gain_sq_simulated for f in result.features],
                        "projection_error": result.projection_error})
    head = next(d for d in details if d["mode"] == "sgd")
    return make_result("modes", CLAIM, head["gain_sq_predicted"][0], head["gain_sq_simulated"][0], max(errors), 1.0,
                       failures, {"runs": details, "wd": WD, "aug_var": AUG_VAR,
                                  "headline": "SGD gain² of σ² = 0.1 (DirectPred); error: worst relative gain error "
                                              "in units of its mode's tolerance (GD 1e-3, SGD 0.05)"})
