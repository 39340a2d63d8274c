"""Downstream sample complexity (docs/theory.md §5): estimators, closed forms, curves, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import norm

from linssl.cli import command_main
from linssl.errors import LinsslError
from linssl.linear.downstream import (
    Z95,
    SampleComplexityConfig,
    default_n_grid,
    predicted_excess_risk,
    predicted_samples_for_risk,
    sample_complexity_curves,
    task_aug_var,
)
from linssl.linear.regression import Moments, logistic_fit, ols_fit, ridge_gcv_fit
from linssl.runtime import one_thread
from linssl.sample_complexity import parse_sizes
from linssl.theory import threshold_aug_var

DTYPE = torch.float64


def _z_scores(curve) -> np.ndarray:
    """(measured mean − closed form) / standard error, the se read back from the 95% CI of the mean."""
    mean, pred = np.array(curve.risk_mean), np.array(curve.risk_predicted)
    se = (np.array(curve.risk_hi) - np.array(curve.risk_lo)) / (2 * Z95)
    return (mean - pred) / se


def _bonferroni_z(comparisons: int) -> float:
    """z that keeps the family-wise two-sided level at 95% over ``comparisons`` independent checks."""
    return float(norm.ppf(1 - 0.025 / comparisons))


@pytest.fixture(scope="module")
def default_curve():
    """The default experiment's grid (20 sizes, 200 seeds, d = 50, r = 5, σ = 0.5), ideal projection."""
    return sample_complexity_curves(SampleComplexityConfig(representation="ideal", ridge=False))


def test_closed_form_worked_numbers():
    # docs/theory.md §5: d = 50, r = 5, σ_ν = 0.5, n = 100 -> raw 0.2551, learned 0.0133 (4 significant digits)
    assert predicted_excess_risk(0.25, 50, 100) == pytest.approx(0.2551, abs=5e-5)
    assert predicted_excess_risk(0.25, 5, 100) == pytest.approx(0.0133, abs=5e-5)
    result = sample_complexity_curves(
        SampleComplexityConfig(n_grid=(100,), seeds=2, representation="ideal", ridge=False)
    )
    assert result.curves["raw"].risk_predicted[0] == pytest.approx(0.25 * 50 / 49, rel=1e-12)
    assert result.curves["learned"].risk_predicted[0] == pytest.approx(0.25 * 5 / 94, rel=1e-12)
    # n to reach 0.01 = 0.04 σ²: p + 1 + σ² p / t -> 51 + 1250 = 1301 and 6 + 125 = 131
    assert result.target_risk == pytest.approx(0.01)
    assert result.curves["raw"].n_to_target_predicted == pytest.approx(1301.0)
    assert result.curves["learned"].n_to_target_predicted == pytest.approx(131.0)
    assert result.n_to_target_ratio_predicted == pytest.approx(1301 / 131)


def test_bias_adds_to_the_closed_form():
    # misspecified: bias + (σ² + bias) p / (n − p − 1); σ² = 0.25, bias 0.2, p = 4, n = 30 -> 0.2 + 0.45·4/25
    assert predicted_excess_risk(0.25, 4, 30, bias=0.2) == pytest.approx(0.2 + 0.45 * 4 / 25)
    assert predicted_samples_for_risk(0.25, 4, 0.1, bias=0.2) is None
    assert predicted_samples_for_risk(0.25, 4, 0.3, bias=0.2) == pytest.approx(5 + 0.45 * 4 / 0.1)


def test_task_features_straddle_the_threshold():
    aug = task_aug_var(10, 3, 0.05)
    threshold = threshold_aug_var(0.05)  # 4 at unit data variance
    assert np.all(aug[:3] <= 0.5 * threshold) and np.all(aug[3:] >= 2 * threshold)


def test_default_grid_is_valid_for_raw_least_squares():
    grid = default_n_grid(50)
    assert len(grid) == 20 and grid[0] == 76 and grid[-1] == 1500
    assert list(grid) == sorted(set(grid)) and grid[0] > 51


def test_ols_from_moments_matches_lstsq():
    gen = torch.Generator().manual_seed(1)
    Z = torch.randn(4, 30, 6, generator=gen, dtype=DTYPE)
    y = torch.randn(4, 30, generator=gen, dtype=DTYPE)
    with one_thread():
        expected = torch.linalg.lstsq(Z, y.unsqueeze(-1)).solution.squeeze(-1)
    torch.testing.assert_close(ols_fit(Moments.from_samples(Z, y)), expected, rtol=1e-10, atol=1e-12)


def test_ridge_gcv_matches_brute_force():
    gen = torch.Generator().manual_seed(2)
    S, n, p = 3, 25, 8
    Z = torch.randn(S, n, p, generator=gen, dtype=DTYPE)
    y = Z[..., 0] + 2.0 * torch.randn(S, n, generator=gen, dtype=DTYPE)  # noisy: GCV picks a real penalty
    grid = tuple(np.logspace(-4, 2, 13))
    coef, lam = ridge_gcv_fit(Moments.from_samples(Z, y), grid)
    with one_thread():  # tiny LAPACK calls: threads only add contention
        _check_ridge_against_hat_matrix(Z, y, grid, coef, lam)


def _check_ridge_against_hat_matrix(Z, y, grid, coef, lam):
    """GCV(λ) = n‖(I − H)y‖²/(n − tr H)² with the explicit hat matrix H = Z(ZᵀZ + nλI)⁻¹Zᵀ."""
    S, n, p = Z.shape
    for s in range(S):
        scale = float(torch.linalg.svdvals(Z[s]).pow(2).mean()) / n
        scores, fits = [], []
        for g in grid:
            A = Z[s].T @ Z[s] + n * g * scale * torch.eye(p, dtype=DTYPE)
            H = Z[s] @ torch.linalg.solve(A, Z[s].T)
            scores.append(float(n * ((y[s] - H @ y[s]) ** 2).sum() / (n - torch.trace(H)) ** 2))
            fits.append(torch.linalg.solve(A, Z[s].T @ y[s]))
        best = int(np.argmin(scores))
        assert float(lam[s]) == pytest.approx(grid[best] * scale, rel=1e-9)
        torch.testing.assert_close(coef[s], fits[best], rtol=1e-8, atol=1e-10)


def test_logistic_newton_reaches_the_optimum():
    gen = torch.Generator().manual_seed(3)
    Z = torch.randn(2, 40, 5, generator=gen, dtype=DTYPE) * torch.tensor([0.2, 1.0, 3.0, 1.0, 0.5], dtype=DTYPE)
    signs = torch.sign(Z[..., 1] + Z[..., 2] + torch.randn(2, 40, generator=gen, dtype=DTYPE))
    coef, grad = logistic_fit(Z, signs, l2=0.05)
    assert grad < 1e-8
    for s in range(2):
        z, t = Z[s].numpy(), signs[s].numpy()
        weight = 0.05 * (z**2).mean(0)

        def objective(w, z=z, t=t, weight=weight):
            return np.logaddexp(0, -t * (z @ w)).mean() + 0.5 * (weight * w**2).sum()

        ref = minimize(objective, np.zeros(5), method="BFGS", options={"gtol": 1e-10}).x
        np.testing.assert_allclose(coef[s].numpy(), ref, rtol=1e-4, atol=1e-5)  # BFGS' own accuracy


def test_measured_risk_agrees_with_closed_form(default_curve):
    # 40 comparisons (2 representations × 20 sizes), each mean ~ normal with the reported se:
    # a Bonferroni z keeps the chance of a false failure at 5% in all. Raw points with n < 2d are
    # skipped: the inverse-Wishart risk is heavy-tailed close to n = p + 1 (its variance is finite
    # only for n > p + 3), so the normal interval is not trustworthy there.
    raw, learned = default_curve.curves["raw"], default_curve.curves["learned"]
    z_limit = _bonferroni_z(40)
    raw_ok = np.array(raw.n) >= 2 * 50
    assert np.all(np.abs(_z_scores(raw)[raw_ok]) < z_limit)
    assert np.all(np.abs(_z_scores(learned)) < z_limit)
    # most intervals cover the closed form (95% each: of 20, at least 15 leaves a wide margin)
    predicted = np.array(learned.risk_predicted)
    covered = (np.array(learned.risk_lo) <= predicted) & (predicted <= np.array(learned.risk_hi))
    assert covered.sum() >= 15
    assert default_curve.interval == "95% CI of the mean"


def test_samples_to_target_ratio_is_close_to_dim_over_rank(default_curve):
    # the closed-form ratio (d + 1 + σ²d/t)/(r + 1 + σ²r/t) = 9.93 differs from d/r = 10 by 1%;
    # the measured ones add the seeds' noise and the grid's spacing (~17% per step) -> 20%.
    d_over_r = default_curve.dim_over_rank
    assert default_curve.n_to_target_ratio_interp == pytest.approx(d_over_r, rel=0.2)
    assert default_curve.n_to_target_ratio == pytest.approx(d_over_r, rel=0.2)
    assert default_curve.n_to_target_ratio_predicted == pytest.approx(d_over_r, rel=0.02)
    for name in ("raw", "learned"):
        c = default_curve.curves[name]
        assert c.n_to_target_interp == pytest.approx(c.n_to_target_predicted, rel=0.1)


def test_learned_features_need_fewer_samples(default_curve):
    raw, learned = default_curve.curves["raw"], default_curve.curves["learned"]
    assert all(b < a for a, b in zip(raw.risk_hi, learned.risk_lo, strict=True))


def test_misspecified_task_plateaus_at_the_bias():
    # β* puts 20% of its squared norm on a discarded direction: with Σ = I the learned features
    # miss exactly that part, bias = 0.2; raw x has no bias.
    result = sample_complexity_curves(SampleComplexityConfig(
        dim=20, rank=4, outside=0.2, n_grid=(30, 60, 150, 400, 2000), seeds=300, representation="ideal", ridge=False,
    ))
    raw, learned = result.curves["raw"], result.curves["learned"]
    assert learned.bias == pytest.approx(0.2, abs=1e-12) and raw.bias == 0.0
    z_limit = _bonferroni_z(10)  # 2 representations × 5 sizes, family-wise 95%
    assert np.all(np.abs(_z_scores(learned)) < z_limit)
    assert np.all(np.abs(_z_scores(raw)[np.array(raw.n) >= 40]) < z_limit)  # heavy tails below 2d (see above)
    # the plateau: at n = 2000 the variance term is (0.25 + 0.2)·4/1995 ≈ 0.0009, so the mean sits
    # within 2% of the bias and never below it by more than its interval
    assert learned.risk_mean[-1] == pytest.approx(0.2, rel=0.02)
    assert learned.risk_hi[-1] >= 0.2
    assert learned.n_to_target is None and learned.n_to_target_predicted is None  # target 0.01 < bias
    assert raw.risk_mean[-1] < learned.risk_mean[-1]  # raw x overtakes the biased representation


def test_classification_learned_beats_raw_at_small_n():
    result = sample_complexity_curves(SampleComplexityConfig(
        n_grid=(60, 80), seeds=100, representation="ideal", ridge=False, classification=True,
    ))
    raw, learned = result.classification["raw"], result.classification["learned"]
    # Bayes error for σ² = 0.25, unit signal: arccos(1/sqrt(1.25))/π
    assert result.bayes_error == pytest.approx(math.acos(1 / math.sqrt(1.25)) / math.pi, rel=1e-12)
    assert all(lo_raw > hi_learned for lo_raw, hi_learned in zip(raw.risk_lo, learned.risk_hi, strict=True))
    # the Bayes classifier is optimal: no seed's excess error is negative
    assert min(raw.risk_p05 + learned.risk_p05) >= -1e-12
    assert learned.extra["newton_max_grad"] < 1e-6


def test_simulated_representation_matches_the_ideal_one():
    # The flow keeps exactly the r low-augmentation-variance directions; least squares is invariant
    # to an invertible map of the features, so on the same samples the learned W (with its own
    # per-feature gains) gives the ideal projection's risks up to the flow's tiny subspace error.
    common = dict(dim=12, rank=3, n_grid=(20, 40, 80), seeds=50, ridge=False)
    sim = sample_complexity_curves(SampleComplexityConfig(representation="simulated", **common))
    ideal = sample_complexity_curves(SampleComplexityConfig(representation="ideal", **common))
    info = sim.representation
    assert info["rank"] == 3 and info["converged"]
    assert info["subspace_sine_to_kept"] < 1e-6
    s = info["singular_values"]
    assert s[3] < 1e-4 * s[0]  # a clean gap at the cut-off
    np.testing.assert_allclose(sim.curves["learned"].risk_mean, ideal.curves["learned"].risk_mean, rtol=1e-6)
    np.testing.assert_allclose(sim.curves["raw"].risk_mean, ideal.curves["raw"].risk_mean, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rank=60), "rank"),
        (dict(rank=0), "rank"),
        (dict(seeds=1), "seeds"),
        (dict(noise=0.0), "noise"),
        (dict(n_grid=(40, 100)), "n > dim"),
        (dict(n_grid=(51, 100)), "n > dim"),
        (dict(rank=50, outside=0.1), "outside"),
        (dict(wd=0.3), "wd"),
        (dict(target_risk=-1.0), "target"),
        (dict(seeds=100_000), "lower --seeds"),
        (dict(noise=1e300), "noise"),  # σ² would overflow
        (dict(seed=2**64), "--seed"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(LinsslError, match=message):
        SampleComplexityConfig(**kwargs)


def test_size_list_parsing():
    assert parse_sizes("100, 200,400") == (100, 200, 400)
    for bad in ("100,abc", "100,2.5", "100,-3", "100,"):
        with pytest.raises(LinsslError, match="--n"):
            parse_sizes(bad)


def test_cli_writes_json_and_plot(tmp_path, capsys):
    out, fig = tmp_path / "sc.json", tmp_path / "sc.png"
    rc = command_main("linssl.sample_complexity", "linssl sample-complexity", [
        "--dim", "10", "--rank", "2", "--n", "20,40", "--seeds", "10", "--representation", "ideal",
        "--classification", "--json", str(out), "--plot", str(fig),
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "target risk" in printed and "ratio raw/learned" in printed
    data = json.loads(out.read_text())
    assert data["interval"] == "95% CI of the mean"
    for section in ("curves", "ridge", "classification"):
        assert set(data[section]) == {"raw", "learned"}
    for curve in data["curves"].values():
        assert {"n", "risk_mean", "risk_lo", "risk_hi", "risk_predicted", "n_to_target"} <= set(curve)
        assert curve["n"] == [20, 40] and len(curve["risk_predicted"]) == 2
    assert {"n_to_target_ratio", "n_to_target_ratio_predicted", "dim_over_rank", "representation"} <= set(data)
    assert fig.stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [(["--dim", "10", "--n", "5,20"], "n > dim + 1"),
                                            (["--dim", "10", "--rank", "11"], "rank"),
                                            (["--plot", "curves.xyz"], "cannot save a figure as '.xyz'")])
def test_cli_bad_input_exits_2_with_one_line(argv, message):
    proc = subprocess.run([sys.executable, "-m", "linssl.sample_complexity", *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_the_largest_seed_runs():
    """Seeds derived from --seed (seed × 1000003 + n) stay within the generator's range."""
    from linssl.linear.downstream import sample_complexity_curves

    result = sample_complexity_curves(SampleComplexityConfig(dim=6, rank=2, seeds=3, n_grid=(12,), seed=2**63 - 1,
                                                             representation="ideal"))
    assert all(np.isfinite(c.risk_mean).all() for c in result.curves.values())
