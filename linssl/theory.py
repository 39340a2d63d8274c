"""Closed-form predictions of the linear theory (docs/theory.md §4–§5), commuting case.

Per feature i (direction u_i with data variance λ, augmentation variance σ², weight decay η),
w is the gain of W along u_i and p the predictor eigenvalue. With F source ``aug`` the predictor
sees c = λ + σ², with ``clean`` c = λ: p = (c w²)^α. Target scale τ (τ = 1: stop-gradient or EMA).

    dw/dt = w [τ λ p − (λ + σ²) p² − η]

All functions are vectorised over numpy-broadcastable arguments and return float64 arrays (or
Python floats for scalar input). "Not kept" is encoded by a gain of 0 and p± = NaN.
"""

from __future__ import annotations

import numpy as np

from linssl.errors import LinsslError


def _f(x):
    return np.asarray(x, dtype=np.float64)


def _out(x):
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x


def discriminant(data_var, aug_var, wd, tau=1.0):
    """Δ = τ²λ² − 4η(λ + σ²): non-zero fixed points exist iff Δ ≥ 0."""
    lam, s2, eta, tau = _f(data_var), _f(aug_var), _f(wd), _f(tau)
    return _out(tau**2 * lam**2 - 4 * eta * (lam + s2))


def is_kept(data_var, aug_var, wd, tau=1.0):
    """Kept iff τ²λ² ≥ 4η(λ + σ²); independent of α and of the F source."""
    return _out(np.asarray(discriminant(data_var, aug_var, wd, tau)) >= 0)


def threshold_aug_var(wd, data_var=1.0, tau=1.0):
    """Largest kept augmentation variance: σ²* = τ²λ²/(4η) − λ (λ = 1, τ = 1: 1/(4η) − 1); +inf at η = 0
    (no weight decay keeps every feature). Negative when τ²λ < 4η: no σ² ≥ 0 is kept."""
    eta, lam, tau = _f(wd), _f(data_var), _f(tau)
    if np.any(eta < 0):
        raise LinsslError("weight decay must be non-negative")
    with np.errstate(divide="ignore"):
        return _out(np.where(eta > 0, tau**2 * lam**2 / np.where(eta > 0, 4 * eta, 1.0) - lam, np.inf))


def threshold_wd(data_var, aug_var, tau=1.0):
    """Largest weight decay that keeps the feature: η* = τ²λ² / (4(λ + σ²))."""
    lam, s2, tau = _f(data_var), _f(aug_var), _f(tau)
    return _out(tau**2 * lam**2 / (4 * (lam + s2)))


def relative_discriminant(data_var, aug_var, wd, tau=1.0):
    """Δ / (τλ)² = 1 − 4η(λ + σ²)/(τλ)² = 1 − η/η*: how far a feature is from its threshold, in units of
    its own threshold weight decay η* (``threshold_wd``). Defined for every λ > 0, σ² ≥ 0, η ≥ 0 (1 at
    η = 0), unlike the distance in σ², whose threshold σ²* is negative when τ²λ < 4η."""
    lam, s2, eta, tau = _f(data_var), _f(aug_var), _f(wd), _f(tau)
    return _out(1 - 4 * eta * (lam + s2) / (tau * lam) ** 2)


def fixed_points(data_var, aug_var, wd, tau=1.0):
    """Predictor eigenvalues p± = [τλ ± sqrt(Δ)] / (2(λ + σ²)); NaN where Δ < 0.

    p₊ is the stable non-zero fixed point, p₋ the unstable one (the basin boundary).
    """
    lam, s2, tau = _f(data_var), _f(aug_var), _f(tau)
    disc = _f(discriminant(lam, s2, wd, tau))
    root = np.sqrt(np.where(disc >= 0, disc, np.nan))
    denom = 2 * (lam + s2)
    return _out((tau * lam + root) / denom), _out((tau * lam - root) / denom)


def predictor_scale(data_var, aug_var, f_source="aug"):
    """c in p = (c w²)^α: λ + σ² for F source ``aug``, λ for ``clean``."""
    if f_source == "aug":
        return _out(_f(data_var) + _f(aug_var))
    if f_source == "clean":
        return _out(_f(data_var) + 0 * _f(aug_var))
    raise LinsslError(f"f-source must be aug or clean, got {f_source!r}")


def predictor_eigenvalue(gain_sq, data_var, aug_var, alpha, f_source="aug"):
    """p = (c w²)^α."""
    return _out((_f(predictor_scale(data_var, aug_var, f_source)) * _f(gain_sq)) ** _f(alpha))


def gain_sq_from_p(p, data_var, aug_var, alpha, f_source="aug", eps=0.0):
    """w² = (p − ε)^(1/α) / c — the inverse of p = (c w²)^α + ε (0 where p ≤ ε)."""
    base = np.maximum(_f(p) - _f(eps), 0.0)
    return _out(base ** (1 / _f(alpha)) / _f(predictor_scale(data_var, aug_var, f_source)))


def predicted_gain_sq(data_var, aug_var, wd, alpha, f_source="aug", tau=1.0, eps=0.0):
    """Stable gain w² = (p₊ − ε)^(1/α) / c for kept features (p₊ exists and exceeds ε), else 0.

    ε shifts the predictor but not the fixed points p± (dw/dt depends on w only through p).
    Example (λ = 1, η = 0.1, σ² = 0.1, ε = 0): 0.5741 (α = ½, aug), 0.6315 (α = ½, clean), 0.7225 (α = 1, aug).
    """
    p_plus, _ = fixed_points(data_var, aug_var, wd, tau)
    gain = _f(gain_sq_from_p(np.nan_to_num(_f(p_plus), nan=0.0), data_var, aug_var, alpha, f_source, eps))
    return _out(np.where(np.isnan(_f(p_plus)), 0.0, gain))


def predicted_gain_sq_trained(data_var, aug_var, wd, pred_wd=None, tau=1.0, pred_lr=1.0):
    """Trained linear predictor (rate α_p, weight decay η_p): w² = η_p p₊² / (α_p η), 0 if discarded.

    At a fixed point the W_p equation gives α_p w²(τλ − (λ+σ²)p) = η_p p and the W equation
    p(τλ − (λ+σ²)p) = η, so w² = η_p p² / (α_p η); with α_p = 1, η_p = η this is the balanced
    W_pᵀW_p = WWᵀ.
    """
    p_plus, _ = fixed_points(data_var, aug_var, wd, tau)
    ratio = _f(wd if pred_wd is None else pred_wd) / (_f(pred_lr) * _f(wd))
    return _out(np.where(np.isnan(_f(p_plus)), 0.0, ratio * np.nan_to_num(_f(p_plus)) ** 2))


def has_closed_form(rule, wd=None) -> bool:
    """The per-feature closed forms hold for unnormalised predictors (docs/theory.md §4: a normalised predictor
    with the Euclidean loss shrinks W to 0 and has no such fixed point), and for the trained predictor
    when η > 0 (given ``wd``): at η = 0 its balance W_pᵀW_p − WWᵀ ∝ e^{−2ηt} is conserved, so where the
    run ends depends on where it starts (w² = η_p p₊²/(α_p η) has no limit)."""
    if rule.kind == "trainable":
        return wd is None or float(np.min(wd)) > 0
    return rule.norm == "none"


def predicted_gain_sq_for_rule(rule, data_var, aug_var, wd, tau=1.0, pred_wd=None, pred_lr=1.0):
    """Dispatch on a :class:`linssl.predictors.PredictorRule`: direct rules (with their ε) or the
    trained predictor. Normalised direct rules have no closed form: a LinsslError."""
    if rule.kind == "trainable":
        return predicted_gain_sq_trained(data_var, aug_var, wd, pred_wd, tau, pred_lr)
    if not has_closed_form(rule):
        raise LinsslError(f"no closed form for the {rule.norm}-normalised predictor (docs/theory.md §4); use norm none")
    return predicted_gain_sq(data_var, aug_var, wd, rule.alpha, rule.f_source, tau, rule.eps)


def basin_gain_sq(data_var, aug_var, wd, alpha, f_source="aug", tau=1.0, eps=0.0):
    """Initial gain² below which an aligned feature collapses to 0: (p₋ − ε)^(1/α) / c (NaN if not kept;
    0 when p₋ ≤ ε < p₊, where w = 0 is no longer stable; for ε ≥ p₊ w = 0 is stable again and the
    feature collapses from anywhere — ``predicted_gain_sq`` is 0 there)."""
    _, p_minus = fixed_points(data_var, aug_var, wd, tau)
    return gain_sq_from_p(p_minus, data_var, aug_var, alpha, f_source, eps)


def feature_rhs(gain, data_var, aug_var, wd, alpha, f_source="aug", tau=1.0, eps=0.0):
    """dw/dt = w [τλp − (λ + σ²)p² − η] with p = (c w²)^α + ε (stop-gradient target)."""
    w, lam, s2 = _f(gain), _f(data_var), _f(aug_var)
    p = _f(predictor_eigenvalue(w**2, lam, s2, alpha, f_source)) + _f(eps)
    return _out(w * (_f(tau) * lam * p - (lam + s2) * p**2 - _f(wd)))


def local_rate(data_var, aug_var, wd, alpha, tau=1.0, eps=0.0):
    """Convergence rate of w near p₊: 2α (p₊ − ε) sqrt(Δ) (λ = 1, ε = 0: 2αp₊ sqrt(1 − 4η(1 + σ²))).

    −(dw/dt)' at p₊ = −w (τλ − 2(λ + σ²)p₊) dp/dw = sqrt(Δ) · 2α(p₊ − ε), since dp/dw = 2α(p − ε)/w.
    It vanishes at the threshold (critical slowing down); NaN for discarded features (also p₊ ≤ ε).
    """
    p_plus, _ = fixed_points(data_var, aug_var, wd, tau)
    disc = _f(discriminant(data_var, aug_var, wd, tau))
    shifted = _f(p_plus) - _f(eps)
    rate = 2 * _f(alpha) * shifted * np.sqrt(np.where(disc >= 0, disc, np.nan))
    return _out(np.where(shifted > 0, rate, np.nan))


def gd_locally_stable(lr, data_var, aug_var, wd, alpha, tau=1.0, eps=0.0):
    """Discrete GD is locally stable at p₊ iff lr × rate < 2."""
    return _out(_f(lr) * _f(local_rate(data_var, aug_var, wd, alpha, tau, eps)) < 2)


def balancing_residual(initial_norm, wd, t):
    """‖W_pᵀW_p − WWᵀ‖(t) = ‖·‖(0) e^{−2ηt} for a trained linear predictor (α_p = 1, η_p = η)."""
    return _out(_f(initial_norm) * np.exp(-2 * _f(wd) * _f(t)))


def ols_excess_risk(noise_var, n_features, n_samples):
    """Expected excess risk of least squares with p Gaussian features: σ_ν² p / (n − p − 1).

    Example: σ_ν = 0.5, n = 100: p = 50 → 0.2551, p = 5 → 0.0133. Needs n > p + 1.
    """
    p, n = _f(n_features), _f(n_samples)
    if np.any(n <= p + 1):
        raise LinsslError(f"the least-squares risk needs n > p + 1 (got n = {np.min(n):g}, p = {np.max(p):g})")
    return _out(_f(noise_var) * p / (n - p - 1))


def ols_samples_for_risk(noise_var, n_features, target_risk):
    """Smallest real n with σ_ν² p / (n − p − 1) ≤ target: n = p + 1 + σ_ν² p / target."""
    p = _f(n_features)
    return _out(p + 1 + _f(noise_var) * p / _f(target_risk))
