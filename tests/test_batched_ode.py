"""The per-run adaptive batched integrator against closed forms, scipy's solve_ivp, and the
solve_ivp path of sweep_flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from linssl.errors import DivergenceError, LinsslError
from linssl.linear.batched_ode import integrate_flow_batched, solve_batched
from linssl.linear.data import DEFAULT_AUG_VAR, commuting_model
from linssl.linear.dynamics import DynamicsConfig, Problem, initial_state, integrate_flow
from linssl.linear.sweep import sweep_flow
from linssl.predictors import make_rule

RATES = torch.tensor([0.1, 1.0, 50.0], dtype=torch.float64)


def decay(y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """y_b' = −k_b y_b (k_b = RATES[b]): independent runs of very different stiffness."""
    return -RATES[idx, None] * y


@pytest.mark.parametrize("method", ["RK45", "DOP853"])
def test_linear_decay_matches_closed_form_with_per_run_steps(method):
    y0 = torch.ones(3, 2, dtype=torch.float64)
    times = np.array([0.0, 0.5, 1.0, 2.0])
    sol = solve_batched(decay, y0, 2.0, rtol=1e-9, atol=1e-12, method=method, record_times=times)
    exact = np.exp(-np.outer(times, RATES.numpy()))  # (T, B)
    # local error per step ≤ rtol|y| + atol; over a few hundred steps the global error stays < 1e-8
    np.testing.assert_allclose(sol.records[:, :, 0].numpy(), exact, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(sol.t_final, 2.0)
    # each run chooses its own steps: the stiff run (k = 50) needs many more than the slow one
    assert sol.accepted[2] > 5 * sol.accepted[0]
    # finished runs leave the batch: total run-evaluations < calls × batch size
    assert sol.run_evaluations < sol.evaluations * 3


@pytest.mark.parametrize("method", ["RK45", "DOP853"])
def test_each_run_takes_scipy_steps(method):
    """Same tableau and controller as solve_ivp: per-run step counts and answers agree."""
    y0 = torch.tensor([[0.1], [0.5], [2.0]], dtype=torch.float64)

    def logistic(y, idx):
        return RATES[idx, None] * y * (1 - y)

    sol = solve_batched(logistic, y0, 5.0, rtol=1e-8, atol=1e-10, method=method)
    for b in range(3):
        k = float(RATES[b])
        ref = solve_ivp(lambda t, y, k=k: k * y * (1 - y), (0, 5.0), y0[b].numpy(), method=method,
                        rtol=1e-8, atol=1e-10)
        assert abs(int(sol.accepted[b]) - (ref.t.size - 1)) <= 1  # rounding may flip one accept/reject
        # both at rtol 1e-8: answers of O(1) agree to a few 1e-8
        assert abs(float(sol.y_final[b, 0]) - ref.y[0, -1]) < 1e-7


def test_convergence_stop_is_per_run():
    y0 = torch.ones(3, 1, dtype=torch.float64)
    sol = solve_batched(decay, y0, 1000.0, rtol=1e-9, atol=1e-14, conv_tol=1e-6)
    assert sol.converged.all()
    # |y'| = k e^{−kt} falls below 1e-6 at t = ln(k / 1e-6) / k: the fast runs stop much earlier
    assert sol.t_final[2] < sol.t_final[1] < sol.t_final[0] < 1000.0
    assert (decay(sol.y_final, torch.arange(3)).abs() < 1e-6).all()


def test_errors():
    y0 = torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(LinsslError):
        solve_batched(decay, y0, 1.0, method="Euler")
    with pytest.raises(LinsslError):
        solve_batched(decay, y0, -1.0)
    with pytest.raises(DivergenceError):  # y' = y², y(0) = 1 blows up at t = 1
        solve_batched(lambda y, idx: y**2, y0, 2.0, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["directpred", "directcopy"])
def test_sweep_batched_agrees_with_solve_ivp_path(name):
    model = commuting_model(1.0, DEFAULT_AUG_VAR, seed=0)
    wds = (0.03, 0.08, 0.15)
    kw = dict(t_max=60.0, conv_tol=0.0, rtol=1e-9, atol=1e-12, n_records=5)
    batched = sweep_flow(model, wds, make_rule(name), integrator="batched", **kw)
    shared = sweep_flow(model, wds, make_rule(name), integrator="solve_ivp", **kw)
    # the same flow at rtol 1e-9 over t = 60: gains of O(1) agree to 1e-6 (measured: ~1e-9)
    np.testing.assert_allclose(batched.gain_sq, shared.gain_sq, atol=1e-6)
    np.testing.assert_allclose(batched.trajectory.times, shared.trajectory.times)
    assert len(batched.trajectory.snapshots) == batched.trajectory.times.size
    with pytest.raises(LinsslError):
        sweep_flow(model, wds, make_rule(name), integrator="euler", **kw)


def test_flow_records_start_and_end():
    model = commuting_model(1.0, DEFAULT_AUG_VAR[:4], seed=1)
    problem = Problem.from_models(model, DynamicsConfig(make_rule("directpred"), (0.05, 0.1)), 2)
    state = initial_state(problem, 4, 0.5, 0)
    traj = integrate_flow_batched(problem, state, t_max=30.0, conv_tol=0.0, n_records=2)
    assert traj.times[0] == 0.0 and traj.times[-1] == 30.0
    torch.testing.assert_close(traj.snapshots[0].W, state.W)
    torch.testing.assert_close(traj.snapshots[-1].W, traj.final.W)
    np.testing.assert_allclose(traj.info["t_final_per_run"], 30.0)


def test_trained_predictor_and_ema_target_states_agree_with_solve_ivp():
    """States with W_p (trainable rule) and W_a (EMA target) are packed per run like W."""
    model = commuting_model(1.0, DEFAULT_AUG_VAR[:4], seed=2)
    config = DynamicsConfig(make_rule("trainable"), (0.05, 0.1), target="ema", ema_rate=0.5)
    problem = Problem.from_models(model, config, 2)
    state = initial_state(problem, 4, 0.5, 0)
    assert state.Wp is not None and state.Wa is not None
    kw = dict(t_max=40.0, rtol=1e-9, atol=1e-12, conv_tol=0.0, n_records=4)
    batched = integrate_flow_batched(problem, state, **kw)
    shared = integrate_flow(problem, state, **kw)
    # rtol 1e-9 over t = 40 on O(1) entries: the two integrations agree to 1e-6
    for a, b in zip(batched.final.tensors(), shared.final.tensors(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
