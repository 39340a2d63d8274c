"""The exponential (Lawson) integrator: same flow, same answers, fewer steps where the flow is stiff."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from linssl.errors import LinsslError
from linssl.linear.batched_ode import integrate_flow_batched, scaled_error
from linssl.linear.data import DEFAULT_AUG_VAR, commuting_model, general_model
from linssl.linear.dynamics import DynamicsConfig, Problem, State, initial_state
from linssl.linear.exponential import LawsonStep, applies, integrate_flow_exponential
from linssl.linear.sweep import sweep_flow
from linssl.predictors import make_rule

RULES = {
    "directpred": make_rule("directpred"),
    "directcopy": make_rule("directcopy"),
    "directset(0.25)": make_rule("directset", alpha=0.25),
    "directpred-spectral-eps": make_rule("directpred", norm="spectral", eps=0.05),
    "directcopy-frobenius-eps": make_rule("directcopy", norm="frobenius", eps=0.1),
    "directpred-clean": make_rule("directpred", f_source="clean"),
}


def _stepper(rule, model, wds, target_scale=1.0):
    problem = Problem.from_models(model, DynamicsConfig(rule, wds, target_scale=target_scale), len(wds))
    view_var = model.data_var + model.aug_var
    return problem, LawsonStep(problem, model.basis, model.data_var, view_var, model.dim)


@pytest.mark.parametrize("name", sorted(RULES))
def test_velocity_is_the_flow_in_the_model_basis_and_equivariant(name):
    """LawsonStep.velocity(W U) = Problem.velocity(W) U, and f(QŴ) = Q f(Ŵ) for a rotation Q."""
    model = commuting_model(1.0, DEFAULT_AUG_VAR[:6], seed=3)
    problem, stepper = _stepper(RULES[name], model, (0.03, 0.2), target_scale=0.7)
    W = initial_state(problem, 6, 0.8, seed=1).W
    idx = torch.arange(2)
    f_model, _ = stepper.velocity(W @ model.basis, idx)
    torch.testing.assert_close(f_model, problem.velocity(State(W)).W @ model.basis, rtol=0, atol=1e-12)
    Q = torch.linalg.qr(torch.randn(2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    f_rot, _ = stepper.velocity(Q @ W @ model.basis, idx)
    # float64 products of O(1) matrices: equal to rounding
    torch.testing.assert_close(f_rot, Q @ f_model, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(RULES))
def test_same_answers_as_the_explicit_integrator(name):
    model = commuting_model(1.0, DEFAULT_AUG_VAR, seed=0)
    problem = Problem.from_models(model, DynamicsConfig(RULES[name], (0.01, 0.05, 0.12, 0.3)), 4)
    state = initial_state(problem, model.dim, 0.8, seed=2)
    kw = dict(t_max=80.0, conv_tol=0.0, rtol=1e-9, atol=1e-12, n_records=6)
    explicit = integrate_flow_batched(problem, state, **kw)
    lawson = integrate_flow_exponential(problem, state, model, **kw)
    assert lawson.info["integrator"] == "exponential-DOP853"
    # both control the local error to rtol 1e-9 on O(1) entries; over t = 80 they agree to 1e-6
    # (measured: ~1e-9)
    np.testing.assert_allclose(lawson.times, explicit.times)
    for a, b in zip(lawson.snapshots, explicit.snapshots, strict=True):
        torch.testing.assert_close(a.W, b.W, rtol=0, atol=1e-6)
    torch.testing.assert_close(lawson.final.W, explicit.final.W, rtol=0, atol=1e-6)
    torch.testing.assert_close(lawson.snapshots[0].W, state.W)


def test_far_fewer_steps_on_a_stiff_sweep():
    """σ² up to 12: the explicit pair is held to h ≈ 0.6 by stability; Lawson steps are not."""
    model = commuting_model(1.0, np.geomspace(0.05, 12.0, 12), seed=0)
    wds = (0.02, 0.1)
    kw = dict(t_max=200.0, conv_tol=0.0, rtol=1e-8, atol=1e-10, n_records=3, init_scale=0.5)
    explicit = sweep_flow(model, wds, make_rule("directpred"), integrator="batched", **kw)
    lawson = sweep_flow(model, wds, make_rule("directpred"), integrator="exponential", **kw)
    np.testing.assert_allclose(lawson.gain_sq, explicit.gain_sq, rtol=0, atol=1e-6)  # as above, rtol 1e-8
    # measured: about 5× fewer right-hand-side evaluations
    assert lawson.trajectory.info["run_evaluations"] * 3 < explicit.trajectory.info["run_evaluations"]


def test_per_run_models_and_convergence_stop():
    models = [commuting_model(1.0, DEFAULT_AUG_VAR, seed=s) for s in (0, 1, 2)]
    kw = dict(t_max=3000.0, conv_tol=1e-8, rtol=1e-9, atol=1e-12, n_records=4)
    explicit = sweep_flow(models, (0.05, 0.05, 0.1), make_rule("directpred"), integrator="batched", **kw)
    lawson = sweep_flow(models, (0.05, 0.05, 0.1), make_rule("directpred"), integrator="exponential", **kw)
    info = lawson.trajectory.info
    assert lawson.trajectory.converged
    # the stop test is max|dW/dt| < conv_tol in the caller's coordinates, per run; the final speed is
    # recomputed from the state, so it is of the same order (the explicit path's bound: 10 × tol)
    assert (info["max_speed_per_run"] < 10 * kw["conv_tol"]).all()
    assert (info["t_final_per_run"] < kw["t_max"]).all()
    # converged runs of both integrators sit at the same fixed point (to the stop tolerance)
    np.testing.assert_allclose(lawson.gain_sq, explicit.gain_sq, rtol=0, atol=1e-6)
    np.testing.assert_allclose(lawson.gain_sq, lawson.gain_sq_predicted, rtol=0, atol=1e-6)


def test_where_it_does_not_apply():
    model = commuting_model(1.0, DEFAULT_AUG_VAR[:4], seed=0)
    tilted = general_model(torch.diag(torch.arange(1.0, 5.0)), torch.ones(4, 4) + torch.eye(4))  # X X' ≠ X' X
    cases = {
        "trained predictor": (make_rule("trainable"), "stopgrad", model),
        "EMA target": (make_rule("directpred"), "ema", model),
        "rotation-equivariant": (make_rule("directcopy", norm="spectral"), "stopgrad", model),
        "not commuting": (make_rule("directpred"), "stopgrad", tilted),
    }
    for rule, target, m in cases.values():
        problem = Problem.from_models(m, DynamicsConfig(rule, (0.05,), target), 1)
        assert applies(problem, [m]) is not None
        with pytest.raises(LinsslError, match="does not apply"):
            integrate_flow_exponential(problem, initial_state(problem, 4, 0.5, 0), m, t_max=1.0)
    # auto falls back to the explicit integrator
    res = sweep_flow(model, (0.05,), make_rule("directpred"), target="ema", t_max=5.0, conv_tol=0.0, n_records=2)
    assert res.trajectory.info["integrator"] == "batched-DOP853"
    res = sweep_flow(model, (0.05,), make_rule("directpred"), t_max=5.0, conv_tol=0.0, n_records=2)
    assert res.trajectory.info["integrator"] == "exponential-DOP853"


def test_a_blown_up_run_gives_nan_and_a_rejected_step_not_a_zero_error():
    """A run whose W left the divergence limit yields NaN (not an eigh failure for the batch), and NaN
    stages make an infinite error, so the step is rejected; a run that keeps failing ends in
    DivergenceError (the step size falls below rounding: tested for solve_batched)."""
    model = commuting_model(1.0, DEFAULT_AUG_VAR[:4], seed=0)
    problem, stepper = _stepper(make_rule("directpred"), model, (0.05, 0.05))
    W = initial_state(problem, 4, 0.5, seed=0).W @ model.basis
    W[1] *= 1e8
    f, _ = stepper.velocity(W, torch.arange(2))
    assert torch.isfinite(f[0]).all() and torch.isnan(f[1]).all()
    e = torch.tensor([[1.0, float("nan")], [1e-12, 1e-12]], dtype=torch.float64)
    err = scaled_error(e, e, torch.ones(2, dtype=torch.float64), torch.ones_like(e))
    assert torch.isnan(err[0]) and err[1] < 1


def test_a_run_collapsing_to_zero_ends_at_zero():
    """Lawson steps damp a collapsing run exactly, so W falls far below where a plain Frobenius norm of F
    underflows (entries < 1e-162); the normalised rule must stay finite there (wd = 3 keeps nothing)."""
    model = commuting_model(1.0, DEFAULT_AUG_VAR, seed=0)
    for rule in (make_rule("directcopy", norm="frobenius", eps=0.1), make_rule("directpred", norm="frobenius")):
        problem = Problem.from_models(model, DynamicsConfig(rule, (3.0,)), 1)
        traj = integrate_flow_exponential(problem, initial_state(problem, 8, 0.5, 0), model, t_max=500.0,
                                          conv_tol=0.0, n_records=3)
        assert float(traj.final.W.abs().max()) < 1e-12  # the explicit path ends near 1e-12 (its atol floor)


def test_models_must_be_those_of_the_problem():
    model = commuting_model(1.0, DEFAULT_AUG_VAR[:4], seed=0)
    other = commuting_model(1.0, DEFAULT_AUG_VAR[:4], seed=1)
    problem = Problem.from_models(model, DynamicsConfig(make_rule("directpred"), (0.05,)), 1)
    with pytest.raises(LinsslError, match="data model"):
        integrate_flow_exponential(problem, initial_state(problem, 4, 0.5, 0), other, t_max=1.0)


@pytest.mark.parametrize("name", ["directpred", "directcopy", "directset(0.25)", "directpred-clean"])
def test_linear_part_is_the_jacobian_diagonal_and_the_transposed_pairs(name):
    """etd.jacobian_parts against central differences of the field, in the frame of a stepper that has
    started (W_p diagonal, columns matched): Λ_ij = ∂f_ij/∂Ŵ_ij and B_ik = ∂f_ik/∂Ŵ_ki."""
    from linssl.linear.etd import jacobian_parts

    model = commuting_model(1.0, DEFAULT_AUG_VAR[:5], seed=3)
    problem, stepper = _stepper(RULES[name], model, (0.05,), target_scale=0.8)
    y, _ = stepper.start(initial_state(problem, 5, 0.7, seed=1).W.reshape(1, -1))
    W, idx = y.reshape(1, 5, 5), torch.arange(1)
    lam, B = jacobian_parts(W, stepper.p, stepper.corr_var, stepper.v, stepper.x, 0.8, stepper.wd,
                            RULES[name].alpha)
    h, diag, cross = 1e-6, torch.zeros(5, 5, dtype=torch.float64), torch.zeros(5, 5, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            E = torch.zeros_like(W)
            E[0, i, j] = h
            df = (stepper.velocity(W + E, idx)[0] - stepper.velocity(W - E, idx)[0])[0] / (2 * h)
            diag[i, j], cross[j, i] = df[i, j], df[j, i] if i != j else 0.0
    # central differences with h = 1e-6 on O(1) entries: truncation ~1e-12, rounding ~1e-10
    torch.testing.assert_close(lam[0], diag, rtol=0, atol=1e-7)
    torch.testing.assert_close(B[0], cross, rtol=0, atol=1e-7)


def test_pair_coordinates_diagonalise_the_linear_part():
    """PairBasis: to_pair and from_pair are inverse, and L (Λ on each entry, B coupling (i, k) with (k, i)
    on the pairs it takes: real, well-separated eigenvalues) acts on the pair coordinates as ``rates``."""
    from linssl.linear.etd import PairBasis

    gen = torch.Generator().manual_seed(0)
    lam = -3 * torch.rand(2, 4, 6, generator=gen, dtype=torch.float64)
    B = 0.3 * torch.randn(2, 4, 4, generator=gen, dtype=torch.float64)
    B = B - torch.diag_embed(torch.diagonal(B, dim1=-2, dim2=-1))
    basis = PairBasis(lam, B, None)
    assert basis.pair.any()
    Z = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64)
    X = basis.from_pair(Z)
    torch.testing.assert_close(basis.to_pair(X), Z, rtol=0, atol=1e-12)  # 2×2 inverses of O(1) matrices
    LX = lam * X  # the couplings B of the pairs it diagonalises; the others are left out of L
    LX[..., :4] += torch.where(basis.pair | basis.lower, B, 0.0) * X[..., :4].mT
    torch.testing.assert_close(basis.to_pair(LX), basis.rates * Z, rtol=0, atol=1e-12)


def test_the_jacobian_linear_part_takes_fewer_steps_to_the_same_fixed_point():
    """To convergence, the Jacobian-and-pairs linear part (default) against the frozen predictor: the same
    fixed point (to the stop tolerance), at least 1.5× fewer evaluations (measured at d = 16: ~2×)."""
    model = commuting_model(1.0, np.geomspace(0.1, 10.0, 16), seed=0)
    problem = Problem.from_models(model, DynamicsConfig(make_rule("directpred"), (0.05,)), 1)
    state = initial_state(problem, 16, 0.5, seed=0)
    runs = {linear: integrate_flow_exponential(problem, state, model, linear=linear, n_records=3)
            for linear in ("jacobian", "frozen")}
    assert all(r.converged for r in runs.values())
    torch.testing.assert_close(runs["jacobian"].final.W.mT @ runs["jacobian"].final.W,
                               runs["frozen"].final.W.mT @ runs["frozen"].final.W, rtol=0, atol=1e-6)
    evals = {k: r.info["run_evaluations"] for k, r in runs.items()}
    assert evals["jacobian"] * 1.5 < evals["frozen"], evals


def test_coarse_transient_and_records_at_step_times():
    """coarse_rtol: the transient at a looser tolerance, then rtol; the fixed point is the same (to the stop
    tolerance). land_on_records=False: each record holds the state of the first step at or after its time,
    at that step's time, once."""
    model = commuting_model(1.0, DEFAULT_AUG_VAR, seed=0)
    problem = Problem.from_models(model, DynamicsConfig(make_rule("directpred"), (0.05,)), 1)
    state = initial_state(problem, 8, 0.5, seed=0)
    plain = integrate_flow_exponential(problem, state, model)
    fast = integrate_flow_exponential(problem, state, model, coarse_rtol=1e-6, coarse_until=1e-4,
                                      land_on_records=False)
    assert plain.converged and fast.converged
    # both stop at max|dW/dt| < 1e-8, within ~1e-8 / rate of the fixed point: gains agree to 1e-6
    torch.testing.assert_close(fast.final.W.mT @ fast.final.W, plain.final.W.mT @ plain.final.W, rtol=0, atol=1e-6)
    assert fast.info["run_evaluations"] < plain.info["run_evaluations"]
    times = fast.times
    assert times[0] == 0.0 and times[-1] == fast.info["t_final"] and np.all(np.diff(times) > 0)
    assert len(fast.snapshots) == times.size
    torch.testing.assert_close(fast.snapshots[-1].W, fast.final.W)
    with pytest.raises(LinsslError, match="one run"):
        sweep_problem = Problem.from_models(model, DynamicsConfig(make_rule("directpred"), (0.05, 0.1)), 2)
        integrate_flow_batched(sweep_problem, initial_state(sweep_problem, 8, 0.5, 0), land_on_records=False)


def test_large_eigendecompositions_go_through_scipy_and_agree_with_torch():
    """etd.eigh takes scipy's dsyevd from SCIPY_EIGH_FROM on (faster on CPU): the same spectrum and the
    same matrix function as torch.linalg.eigh."""
    from linssl.linear.etd import SCIPY_EIGH_FROM, eigh

    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, SCIPY_EIGH_FROM, SCIPY_EIGH_FROM, generator=gen, dtype=torch.float64)
    F = A @ A.mT / SCIPY_EIGH_FROM
    s, U = eigh(F)
    s_ref, U_ref = torch.linalg.eigh(F)
    # eigenvalues of O(1) to LAPACK accuracy; eigenvectors differ by signs, so compare F^½
    torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-12)
    root = lambda s, U: (U * s.clamp_min(0).sqrt().unsqueeze(-2)) @ U.mT  # noqa: E731
    torch.testing.assert_close(root(s, U), root(s_ref, U_ref), rtol=0, atol=1e-10)
