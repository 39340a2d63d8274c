"""Symbolic derivation (sympy) of the per-feature theory, and its comparison with linssl.theory.

Starting from the model itself — one aligned feature with scalar weights w (online), p (predictor),
w_a (target), views x1 = x + ξ1, x2 = x + ξ2 with E[x²] = λ, E[ξ²] = σ² and everything else
independent with mean 0 — the loss

    J = ½ E[(p w x1 − w_a x2)²] + (η/2) w²

is expanded and its moments taken symbolically. Then:

- the flow is dw/dt = −∂J/∂w with the target stopped (w_a = τw after differentiating) and p held fixed
  (a directly set predictor, p = (c w²)^α): dw/dt = w[τλp − (λ + σ²)p² − η];
- its non-zero fixed points are the roots p± of the quadratic, real iff the discriminant
  Δ = τ²λ² − 4η(λ + σ²) ≥ 0 — which gives the threshold in σ² and in η, free of α;
- the gains w² = p^(1/α)/c, the local rate −d(dw/dt)/dw at w₊ (by differentiating the flow in w), the
  trained-predictor fixed point (dp/dt = −∂J/∂p − η_p p) and the balancing law d(p² − w²)/dt = −2η(p² − w²).

:func:`compare_with_numeric` evaluates every symbolic result at seeded random points in safe ranges
and reports the worst relative difference from the numeric code in :mod:`linssl.theory`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from linssl import theory
from theory_checks.base import CheckResult, make_result

w, p, w_a = sp.symbols("w p w_a", positive=True)
lam, s2, eta, tau, alpha, eta_p = sp.symbols("lambda sigma2 eta tau alpha eta_p", positive=True)
x, xi1, xi2 = sp.symbols("x xi1 xi2", real=True)
c = sp.Symbol("c", positive=True)  # the predictor scale: λ + σ² (F source aug) or λ (clean)


@dataclass(frozen=True)
class Derivation:
    """The symbolic results (sympy expressions in the module's symbols)."""

    loss: sp.Expr  # J(w, p, w_a)
    rhs: sp.Expr  # dw/dt with p free
    growth: sp.Expr  # g(p) = (dw/dt)/w
    discriminant: sp.Expr  # Δ
    p_plus: sp.Expr
    p_minus: sp.Expr
    threshold_aug_var: sp.Expr  # σ²*: Δ = 0 solved for σ²
    threshold_wd: sp.Expr  # η*: Δ = 0 solved for η
    gain_sq_from_p: sp.Expr  # w² = p^(1/α)/c
    rate_from_derivative: sp.Expr  # −d(dw/dt)/dw as a function of w (p = (c w²)^α substituted)
    rate_closed_form: sp.Expr  # −2αp₊ g'(p₊), simplified
    trained_gain_sq: sp.Expr  # w² at the trained-predictor fixed point, as a function of p₊
    balancing: sp.Expr  # d(p² − w²)/dt + 2η(p² − w²) for α_p = 1, η_p = η (must be 0)


def expectation(expr: sp.Expr) -> sp.Expr:
    """E[·] of a polynomial in x, ξ1, ξ2: independent, mean 0, E[x²] = λ, E[ξ²] = σ², degree ≤ 2 per variable."""
    poly = sp.Poly(sp.expand(expr), x, xi1, xi2)
    second = {0: sp.Integer(1), 1: sp.Integer(0), 2: None}
    total = sp.Integer(0)
    for (dx, d1, d2), coeff in poly.terms():
        if max(dx, d1, d2) > 2:
            raise ValueError("only moments up to order 2 per variable are modelled")
        factor = sp.Integer(1)
        for degree, variance in ((dx, lam), (d1, s2), (d2, s2)):
            factor *= variance if degree == 2 else second[degree]
        total += coeff * factor
    return sp.expand(total)


@lru_cache(maxsize=1)
def derive() -> Derivation:
    """Derive every per-feature result from the loss (see the module docstring)."""
    x1, x2 = x + xi1, x + xi2
    loss = sp.Rational(1, 2) * expectation((p * w * x1 - w_a * x2) ** 2) + eta / 2 * w**2
    rhs = sp.expand((-sp.diff(loss, w)).subs(w_a, tau * w))
    growth = sp.expand(sp.cancel(rhs / w))
    quadratic = sp.Poly(growth, p)
    disc = sp.expand(sp.discriminant(quadratic.as_expr(), p))
    roots = sp.solve(sp.Eq(growth, 0), p)
    probe = {lam: 1, s2: sp.Rational(1, 2), eta: sp.Rational(1, 10), tau: 1}
    p_minus, p_plus = sorted(roots, key=lambda r: float(r.subs(probe)))
    gain_sq = p ** (1 / alpha) / c
    # dw/dt with the predictor set from w: p = (c w²)^α (c = λ + σ² for F source aug).
    rhs_w = rhs.subs(p, (c * w**2) ** alpha)
    rate_derivative = -sp.diff(rhs_w, w)
    rate_closed = sp.simplify(-2 * alpha * p_plus * sp.diff(growth, p).subs(p, p_plus))
    # Trained predictor: dp/dt = −∂J/∂p − η_p p (α_p = 1), same target.
    rhs_p = sp.expand((-sp.diff(loss, p)).subs(w_a, tau * w) - eta_p * p)
    W2 = sp.Symbol("W2", positive=True)
    trained = sp.solve(sp.Eq(sp.expand(rhs_p.subs(w**2, W2)), 0), W2)[0]  # w² from dp/dt = 0, at given p
    balancing = sp.simplify((2 * p * rhs_p - 2 * w * rhs).subs(eta_p, eta) + 2 * eta * (p**2 - w**2))
    return Derivation(
        loss=loss, rhs=rhs, growth=growth, discriminant=disc, p_plus=p_plus, p_minus=p_minus,
        threshold_aug_var=sp.solve(sp.Eq(disc, 0), s2)[0], threshold_wd=sp.solve(sp.Eq(disc, 0), eta)[0],
        gain_sq_from_p=gain_sq, rate_from_derivative=rate_derivative, rate_closed_form=rate_closed,
        trained_gain_sq=trained, balancing=balancing,
    )


def structural_facts() -> dict[str, bool]:
    """Facts that hold as identities: the ODE's form, α-free threshold, the rate law, balancing."""
    d = derive()
    expected_rhs = w * (tau * lam * p - (lam + s2) * p**2 - eta)
    delta = tau**2 * lam**2 - 4 * eta * (lam + s2)
    rate_expected = 2 * alpha * d.p_plus * sp.sqrt(delta)
    # On the fixed point the growth vanishes, so the rate equation for w² gives w² = (η_p/η)p² there.
    trained_at_fixed = sp.simplify(d.trained_gain_sq.subs(tau * lam, (lam + s2) * p + eta / p) - eta_p / eta * p**2)
    return {
        "rhs is w[τλp − (λ+σ²)p² − η]": sp.simplify(d.rhs - expected_rhs) == 0,
        "discriminant is τ²λ² − 4η(λ+σ²)": sp.simplify(d.discriminant - delta) == 0,
        "threshold is free of α": alpha not in d.threshold_aug_var.free_symbols | d.threshold_wd.free_symbols,
        "rate is 2αp₊ sqrt(Δ)": sp.simplify(d.rate_closed_form - rate_expected) == 0,
        "trained fixed point w² = (η_p/η) p²": trained_at_fixed == 0,
        "balancing: d(p² − w²)/dt = −2η(p² − w²)": d.balancing == 0,
    }


def _lambdify(expr: sp.Expr, *args: sp.Symbol) -> Callable:
    return sp.lambdify(args, expr, modules="numpy")


def random_points(n: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded parameters: λ ∈ [0.5, 2], η ∈ [0.01, 0.2], τ ∈ [0.7, 1], α ∈ [0.25, 2], σ² kept with a margin
    (σ² ∈ [0.02, 0.9] σ²*, so Δ > 0), w ∈ [0.1, 1.5], η_p ∈ [0.01, 0.3]; σ²_any ∈ [0.02, 2] σ²* for
    classification."""
    rng = np.random.default_rng(seed)
    L = rng.uniform(0.5, 2.0, n)
    E = rng.uniform(0.01, 0.2, n)
    T = rng.uniform(0.7, 1.0, n)
    star = T**2 * L**2 / (4 * E) - L
    ok = star > 0.05
    L, E, T, star = L[ok], E[ok], T[ok], star[ok]
    m = L.size
    return {"lam": L, "eta": E, "tau": T, "alpha": rng.uniform(0.25, 2.0, m),
            "s2": rng.uniform(0.02, 0.9, m) * star, "s2_any": rng.uniform(0.02, 2.0, m) * star,
            "w": rng.uniform(0.1, 1.5, m), "eta_p": rng.uniform(0.01, 0.3, m)}


def numeric_functions() -> dict[str, Callable]:
    """The linssl.theory implementations under test, keyed by the comparison that uses them."""
    return {
        "feature_rhs": theory.feature_rhs,
        "discriminant": theory.discriminant,
        "fixed_points": theory.fixed_points,
        "threshold_aug_var": theory.threshold_aug_var,
        "threshold_wd": theory.threshold_wd,
        "predicted_gain_sq": theory.predicted_gain_sq,
        "basin_gain_sq": theory.basin_gain_sq,
        "local_rate": theory.local_rate,
        "predicted_gain_sq_trained": theory.predicted_gain_sq_trained,
        "is_kept": theory.is_kept,
    }


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def compare_with_numeric(n: int = 200, seed: int = 0, numeric: dict[str, Callable] | None = None) -> dict[str, float]:
    """Worst relative difference between each symbolic result and its numeric implementation.

    ``numeric`` overrides implementations by name (to show that a wrong formula is caught); is_kept
    reports the fraction of misclassified points.
    """
    d = derive()
    f = numeric_functions() | (numeric or {})
    P = random_points(n, seed)
    L, S, E, T, A, Wg, Ep = P["lam"], P["s2"], P["eta"], P["tau"], P["alpha"], P["w"], P["eta_p"]
    C = L + S  # F source aug
    pp = _lambdify(d.p_plus, lam, s2, eta, tau)(L, S, E, T)
    pm = _lambdify(d.p_minus, lam, s2, eta, tau)(L, S, E, T)
    gain = _lambdify(d.gain_sq_from_p, p, alpha, c)
    rhs_w = _lambdify(d.rhs.subs(p, (c * w**2) ** alpha), w, lam, s2, eta, tau, alpha, c)
    rate = _lambdify(d.rate_from_derivative, w, lam, s2, eta, tau, alpha, c)
    trained = _lambdify(d.trained_gain_sq, p, lam, s2, eta_p, tau)
    num_pp, num_pm = f["fixed_points"](L, S, E, T)
    disc = _lambdify(d.discriminant, lam, s2, eta, tau)
    kept_sym = disc(L, P["s2_any"], E, T) >= 0
    w_plus = np.sqrt(gain(pp, A, C))
    return {
        "feature_rhs": _rel(f["feature_rhs"](Wg, L, S, E, A, "aug", T), rhs_w(Wg, L, S, E, T, A, C)),
        "feature_rhs (clean)": _rel(f["feature_rhs"](Wg, L, S, E, A, "clean", T), rhs_w(Wg, L, S, E, T, A, L)),
        "discriminant": _rel(f["discriminant"](L, S, E, T), disc(L, S, E, T)),
        "p_plus": _rel(num_pp, pp),
        "p_minus": _rel(num_pm, pm),
        "threshold_aug_var": _rel(f["threshold_aug_var"](E, L, T),
                                  _lambdify(d.threshold_aug_var, lam, eta, tau)(L, E, T)),
        "threshold_wd": _rel(f["threshold_wd"](L, S, T), _lambdify(d.threshold_wd, lam, s2, tau)(L, S, T)),
        "predicted_gain_sq": _rel(f["predicted_gain_sq"](L, S, E, A, "aug", T), gain(pp, A, C)),
        "predicted_gain_sq (clean)": _rel(f["predicted_gain_sq"](L, S, E, A, "clean", T), gain(pp, A, L)),
        "basin_gain_sq": _rel(f["basin_gain_sq"](L, S, E, A, "aug", T), gain(pm, A, C)),
        "local_rate": _rel(f["local_rate"](L, S, E, A, T), rate(w_plus, L, S, E, T, A, C)),
        "predicted_gain_sq_trained": _rel(f["predicted_gain_sq_trained"](L, S, E, Ep, T), trained(pp, L, S, Ep, T)),
        "is_kept": float(np.mean(np.asarray(f["is_kept"](L, P["s2_any"], E, T)) != kept_sym)),
    }


#: The numeric code evaluates the same closed forms as the symbolic results in a different
#: arrangement: float64 rounding gives ~1e-14 relative (p₋ cancels at most ~1e-13 in these ranges).
TOLERANCE = 1e-9


def check_symbolic(quick: bool = False, *, numeric: dict[str, Callable] | None = None) -> CheckResult:
    """Symbolic identities hold and linssl.theory matches the symbolic results at random points."""
    facts = structural_facts()
    diffs = compare_with_numeric(100 if quick else 1000, seed=0, numeric=numeric)
    failures = [f"identity fails: {name}" for name, ok in facts.items() if not ok]
    failures += [f"{name}: numeric differs from symbolic by {v:.3g}" for name, v in diffs.items() if not v <= TOLERANCE]
    d = derive()
    claim = "the per-feature ODE, fixed points, threshold and rate derived by sympy from the loss = the closed forms"
    return make_result("symbolic", claim, float(theory.threshold_aug_var(0.1)),
                       float(d.threshold_aug_var.subs({lam: 1, eta: sp.Rational(1, 10), tau: 1})),
                       max(diffs.values()), TOLERANCE, failures,
                       {"identities": facts, "max_rel_difference": diffs,
                        "derived": {k: str(v) for k, v in d.__dict__.items() if k != "rate_from_derivative"},
                        "headline": "threshold σ²* at η = 0.1, λ = 1: numeric code vs sympy"})
