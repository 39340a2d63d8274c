"""Closed forms (docs/theory.md §4–§5): the worked numbers, and self-consistency of the formulas."""

import numpy as np
import pytest

from linssl import theory
from linssl.errors import LinsslError


def test_threshold_worked_numbers():
    assert theory.threshold_aug_var(0.05) == pytest.approx(4.0)
    assert theory.threshold_aug_var(0.1) == pytest.approx(1.5)
    assert theory.is_kept(1.0, 4.0, 0.05) and not theory.is_kept(1.0, 4.01, 0.05)
    assert theory.threshold_wd(1.0, 4.0) == pytest.approx(0.05)


@pytest.mark.parametrize(
    "alpha, source, expected", [(0.5, "aug", 0.5741), (0.5, "clean", 0.6315), (1.0, "aug", 0.7225)]
)
def test_gain_worked_numbers(alpha, source, expected):
    # docs/theory.md §4 gives four significant digits
    assert theory.predicted_gain_sq(1.0, 0.1, 0.1, alpha, source) == pytest.approx(expected, abs=6e-5)


def test_fixed_points_solve_the_quadratic_and_rhs_vanishes():
    lam, s2, eta = np.array([1.0, 2.0, 0.5]), np.array([0.3, 1.0, 0.1]), 0.05
    p_plus, p_minus = theory.fixed_points(lam, s2, eta)
    for p in (p_plus, p_minus):
        np.testing.assert_allclose((lam + s2) * p**2 - lam * p + eta, 0, atol=1e-14)
    for alpha in (0.5, 1.0, 2.0):
        w = np.sqrt(theory.predicted_gain_sq(lam, s2, eta, alpha))
        np.testing.assert_allclose(theory.feature_rhs(w, lam, s2, eta, alpha), 0, atol=1e-14)


def test_discarded_feature_has_no_fixed_point_and_zero_gain():
    p_plus, p_minus = theory.fixed_points(1.0, 6.0, 0.05)
    assert np.isnan(p_plus) and np.isnan(p_minus)
    assert theory.predicted_gain_sq(1.0, 6.0, 0.05, 0.5) == 0.0


def test_basin_boundary_separates_collapse_from_growth():
    lam, s2, eta, alpha = 1.0, 1.0, 0.05, 1.0
    w_basin = np.sqrt(theory.basin_gain_sq(lam, s2, eta, alpha))
    w_stable = np.sqrt(theory.predicted_gain_sq(lam, s2, eta, alpha))
    assert theory.feature_rhs(0.99 * w_basin, lam, s2, eta, alpha) < 0  # falls to 0
    assert theory.feature_rhs(1.01 * w_basin, lam, s2, eta, alpha) > 0  # grows to the stable gain
    assert theory.feature_rhs(1.01 * w_stable, lam, s2, eta, alpha) < 0


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_local_rate_is_minus_the_jacobian(alpha):
    lam, s2, eta = 1.0, 0.5, 0.07
    w = np.sqrt(theory.predicted_gain_sq(lam, s2, eta, alpha))
    h = 1e-6 * w
    jac = (theory.feature_rhs(w + h, lam, s2, eta, alpha) - theory.feature_rhs(w - h, lam, s2, eta, alpha)) / (2 * h)
    # central difference: error O(h²) relative ≈ 1e-12; 1e-6 allows for cancellation
    assert -jac == pytest.approx(theory.local_rate(lam, s2, eta, alpha), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_local_rate_with_eps_is_minus_the_jacobian(alpha):
    """ε shifts p: the rate is 2α(p₊ − ε)sqrt(Δ), slower than at ε = 0."""
    lam, s2, eta, eps = 1.0, 0.5, 0.07, 0.1
    w = np.sqrt(theory.predicted_gain_sq(lam, s2, eta, alpha, eps=eps))
    h = 1e-6 * w
    rhs = [theory.feature_rhs(w + sign * h, lam, s2, eta, alpha, eps=eps) for sign in (1, -1)]
    jac = (rhs[0] - rhs[1]) / (2 * h)
    rate = theory.local_rate(lam, s2, eta, alpha, eps=eps)
    assert -jac == pytest.approx(rate, rel=1e-6)  # central difference, as above
    assert rate < theory.local_rate(lam, s2, eta, alpha)
    p_plus, _ = theory.fixed_points(lam, s2, eta)
    assert np.isnan(theory.local_rate(lam, s2, eta, alpha, eps=p_plus + 0.01))  # ε ≥ p₊: nothing to converge to


def test_rate_vanishes_at_threshold():
    assert theory.local_rate(1.0, 4.0, 0.05, 0.5) == pytest.approx(0.0, abs=1e-12)


def test_target_scale_condition():
    # τ² ≥ 4η(1+σ²): τ = 0.9, η = 0.05 → σ² ≤ 0.81/0.2 − 1 = 3.05
    assert theory.threshold_aug_var(0.05, 1.0, tau=0.9) == pytest.approx(3.05)
    assert theory.is_kept(1.0, 3.0, 0.05, tau=0.9) and not theory.is_kept(1.0, 3.1, 0.05, tau=0.9)


def test_trained_predictor_gain_is_balanced():
    p_plus, _ = theory.fixed_points(1.0, 0.5, 0.05)
    assert theory.predicted_gain_sq_trained(1.0, 0.5, 0.05) == pytest.approx(p_plus**2)
    assert theory.predicted_gain_sq_trained(1.0, 0.5, 0.05, pred_wd=0.1) == pytest.approx(2 * p_plus**2)


def test_ols_excess_risk_worked_numbers():
    assert theory.ols_excess_risk(0.25, 50, 100) == pytest.approx(0.2551, abs=5e-5)
    assert theory.ols_excess_risk(0.25, 5, 100) == pytest.approx(0.0133, abs=5e-5)
    n = theory.ols_samples_for_risk(0.25, 5, 0.0133)
    assert theory.ols_excess_risk(0.25, 5, n) == pytest.approx(0.0133)
    with pytest.raises(LinsslError):
        theory.ols_excess_risk(0.25, 50, 51)


def test_balancing_residual_decays():
    assert theory.balancing_residual(2.0, 0.05, 10.0) == pytest.approx(2.0 * np.exp(-1.0))


def test_eps_shifts_the_gain_not_the_threshold():
    # p = (c w²)^α + ε at the fixed point p₊: w² = (p₊ − ε)^(1/α)/c; kept only while p₊ > ε
    p_plus, _ = theory.fixed_points(1.0, 0.1, 0.1)
    assert theory.predicted_gain_sq(1.0, 0.1, 0.1, 0.5, eps=0.05) == pytest.approx((p_plus - 0.05) ** 2 / 1.1)
    assert theory.predicted_gain_sq(1.0, 0.1, 0.1, 0.5, eps=p_plus + 0.01) == 0.0


def test_trained_gain_scales_with_pred_lr_and_pred_wd():
    p_plus, _ = theory.fixed_points(1.0, 0.5, 0.05)
    assert theory.predicted_gain_sq_trained(1.0, 0.5, 0.05, pred_wd=0.1, pred_lr=0.5) == pytest.approx(4 * p_plus**2)


def test_normalised_rules_have_no_closed_form():
    from linssl.predictors import make_rule

    assert not theory.has_closed_form(make_rule("directpred", norm="spectral"))
    with pytest.raises(LinsslError):
        theory.predicted_gain_sq_for_rule(make_rule("directcopy", norm="frobenius"), 1.0, 0.5, 0.05)


def test_no_weight_decay_limit_and_relative_discriminant():
    """η → 0: σ²* = ∞ and p₊ → λ/(λ + σ²), p₋ → 0; the distance to the threshold 1 − η/η* = Δ/λ² is defined
    for every feature, also where σ²* < 0 (λ < 4η)."""
    assert theory.threshold_aug_var(0.0) == np.inf
    with pytest.raises(LinsslError):
        theory.threshold_aug_var(-0.1)
    p_plus, p_minus = theory.fixed_points(2.0, 3.0, 0.0)
    assert p_plus == pytest.approx(2.0 / 5.0) and p_minus == pytest.approx(0.0)
    assert theory.relative_discriminant(0.2, 0.0, 0.052) == pytest.approx(1 - 0.052 / 0.05)
    assert theory.relative_discriminant(1.0, 4.0, 0.05) == pytest.approx(0.0)
    assert theory.relative_discriminant(1.0, 4.0, 0.0) == 1.0


def test_trained_predictor_has_no_closed_form_without_weight_decay():
    from linssl.predictors import make_rule

    assert theory.has_closed_form(make_rule("trainable"), 0.05)
    assert not theory.has_closed_form(make_rule("trainable"), 0.0)
    assert theory.has_closed_form(make_rule("directpred"), 0.0)
