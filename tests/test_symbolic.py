"""The sympy derivation: it reproduces the closed forms of docs/theory.md from the loss, and the comparison with
linssl.theory catches a wrong numeric formula."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from linssl import theory
from theory_checks import symbolic as S


def test_expectation_of_the_view_moments():
    x1, x2 = S.x + S.xi1, S.x + S.xi2
    assert S.expectation(x1 * x2) == S.lam  # E[x1 x2ᵀ] = X
    assert sp.simplify(S.expectation(x1**2) - (S.lam + S.s2)) == 0  # E[x1 x1ᵀ] = X + X'
    assert S.expectation(S.x * S.xi1) == 0
    with pytest.raises(ValueError):
        S.expectation(S.x**3)


def test_every_structural_identity_holds():
    facts = S.structural_facts()
    assert facts and all(facts.values()), facts


def test_derived_threshold_matches_the_worked_numbers():
    d = S.derive()
    star = d.threshold_aug_var.subs({S.lam: 1, S.tau: 1})
    assert star.subs(S.eta, sp.Rational(1, 20)) == 4  # η = 0.05 → σ² ≤ 4
    assert star.subs(S.eta, sp.Rational(1, 10)) == sp.Rational(3, 2)  # η = 0.1 → σ² ≤ 1.5
    assert S.alpha not in d.threshold_aug_var.free_symbols


SPEC_EXAMPLE = [(0.5, "aug", 0.5741), (0.5, "clean", 0.6315), (1.0, "aug", 0.7225)]  # λ = 1, η = 0.1, σ² = 0.1


@pytest.mark.parametrize(("alpha", "source", "expected"), SPEC_EXAMPLE)
def test_derived_gain_matches_the_worked_example(alpha, source, expected):
    d = S.derive()
    at = {S.lam: 1, S.s2: sp.Rational(1, 10), S.eta: sp.Rational(1, 10), S.tau: 1}
    p_plus = d.p_plus.subs(at)
    c = 1.1 if source == "aug" else 1.0
    gain = float(d.gain_sq_from_p.subs({S.p: p_plus, S.alpha: alpha, S.c: c}))
    assert gain == pytest.approx(expected, abs=5e-5)  # docs/theory.md quotes 4 decimals


def test_numeric_code_equals_the_symbolic_results():
    diffs = S.compare_with_numeric(n=300, seed=1)
    # Same formulas, different float64 arrangement: ~1e-14 (see symbolic.TOLERANCE).
    assert max(diffs.values()) <= S.TOLERANCE, diffs
    assert diffs["is_kept"] == 0.0


def test_random_points_are_in_the_documented_ranges():
    P = S.random_points(200, seed=2)
    star = P["tau"] ** 2 * P["lam"] ** 2 / (4 * P["eta"]) - P["lam"]
    assert np.all(P["s2"] < star) and np.all(P["s2"] > 0)
    assert np.any(P["s2_any"] > star) and np.any(P["s2_any"] < star)  # both sides of the threshold


def _scaled(func, factor):
    return lambda *a, **k: factor * np.asarray(func(*a, **k))


@pytest.mark.parametrize(("name", "wrong"), [
    ("predicted_gain_sq", _scaled(theory.predicted_gain_sq, 1.05)),  # gains off by 5%
    ("threshold_aug_var", _scaled(theory.threshold_aug_var, 1.1)),  # threshold off by 10%
    ("local_rate", lambda lam, s2, eta, alpha, tau: np.asarray(theory.local_rate(lam, s2, eta, 1.0, tau))),  # α dropped
    ("feature_rhs", lambda w, lam, s2, eta, alpha, src, tau: np.asarray(theory.feature_rhs(w, lam, s2, eta, alpha, src,
                                                                                          tau)) + 1e-3 * w),
])
def test_a_wrong_numeric_formula_is_caught(name, wrong):
    diffs = S.compare_with_numeric(n=100, seed=3, numeric={name: wrong})
    assert diffs[name] > 1e-3
    result = S.check_symbolic(quick=True, numeric={name: wrong})
    assert not result.passed and any(name in f for f in result.failures)


def test_a_wrong_kept_rule_is_caught():
    def kept_with_wrong_threshold(lam, s2, eta, tau=1.0):
        return np.asarray(theory.discriminant(lam, s2, 1.1 * eta, tau)) >= 0

    diffs = S.compare_with_numeric(n=300, seed=4, numeric={"is_kept": kept_with_wrong_threshold})
    assert diffs["is_kept"] > 0


def test_check_symbolic_passes():
    result = S.check_symbolic(quick=True)
    assert result.passed, result.failures
    assert result.predicted == pytest.approx(1.5) and result.measured == pytest.approx(1.5)
