"""What to try when a trained-predictor run lost a feature the theory keeps: the basin of its start.

With a trained predictor both W and W_p start at the initial scale (W_p = scale · I), so a larger
--init-scale raises the predictor too, and a predictor above p₊ shrinks w (−(λ + σ²)p² dominates)
while w shrinks p: raising the scale can lose more features, not fewer. The hint therefore follows the
actual start. Aligned with the feature (gain w along u_i, predictor eigenvalue p, stop-gradient), the
flow of docs/theory.md §3 is two-dimensional:

    dw/dt = w (τλp − (λ + σ²)p² − η),        dp/dt = α_p w² (τλ − (λ + σ²)p) − η_p p,

with the kept fixed point (w₊² = η_p p₊²/(α_p η), p₊) and the collapse w = p = 0 both stable.
``init_scale_hint`` integrates it from each lost feature's start (w₀ = its initial gain ‖W₀u_i‖,
p₀ = the initial scale) and from the same start scaled by the factors an --init-scale change would
apply, and names the nearest scale that keeps every lost feature there.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import solve_ivp

from linssl import theory

#: init-scale multipliers tried, nearest to 1 first
FACTORS = (0.5, 2.0, 0.25, 4.0, 0.125, 8.0)


def trained_feature_kept(w0: float, p0: float, lam: float, s2: float, wd: float, pred_wd: float, pred_lr: float,
                         tau: float = 1.0) -> bool:
    """Whether the aligned (w, p) flow (module docstring) from (w0, p0) reaches the kept fixed point
    rather than w = 0: integrated (LSODA: the start can be stiff) over 200 of the slower of its own time
    scales, 1/η and 1/λ, then classified by whether w² is nearer w₊² than 0."""
    v = lam + s2
    target = float(theory.predicted_gain_sq_trained(lam, s2, wd, pred_wd, tau, pred_lr)) if wd > 0 else 0.0
    if target <= 0:
        return False

    def rhs(_t, y):
        w, p = y
        return [w * (tau * lam * p - v * p * p - wd), pred_lr * w * w * (tau * lam - v * p) - pred_wd * p]

    horizon = 200.0 / min(wd, lam)
    sol = solve_ivp(rhs, (0.0, horizon), [w0, p0], method="LSODA", rtol=1e-8, atol=1e-12 * math.sqrt(target))
    return bool(sol.y[0, -1] ** 2 > 0.5 * target)


def init_scale_hint(lost: list[tuple[float, float, float]], init_scale: float, wd: float, pred_wd: float,
                    pred_lr: float, tau: float = 1.0) -> str:
    """The advice for lost features ``lost`` = [(λ, σ², w₀)] of a trained-predictor run started at
    ``init_scale`` (module docstring)."""
    def keeps(k: float) -> bool:
        return all(trained_feature_kept(k * w0, k * init_scale, lam, s2, wd, pred_wd, pred_lr, tau)
                   for lam, s2, w0 in lost)

    where = "in the aligned (w, p) flow this start (W_p = init-scale · I)"
    for k in FACTORS:
        if keeps(k):
            way = "smaller" if k < 1 else "larger"
            return (f"{where} collapses too, and --init-scale {k * init_scale:.3g} keeps them: try a {way} "
                    "--init-scale (it scales W and W_p together)")
    if keeps(1.0):
        return f"{where} keeps them: the collapse came from the misalignment of W₀, try another --seed"
    span = f"{FACTORS[-2] * init_scale:.3g}–{FACTORS[-1] * init_scale:.3g}"
    return f"{where} collapses for every --init-scale in {span}: try another --pred-lr or --pred-wd"


def lost_features(features, initial_gain_sq: np.ndarray) -> list[tuple[float, float, float]]:
    """(λ, σ², w₀) of the features kept by the theory but not by the run (not near the threshold)."""
    return [(f.data_var, f.aug_var, float(np.sqrt(g))) for f, g in zip(features, initial_gain_sq, strict=True)
            if f.kept_predicted and not f.kept_simulated and not f.near_threshold]
