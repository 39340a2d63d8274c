"""Dynamics: flow, GD and SGD against the closed forms and against each other."""

import numpy as np
import pytest
import torch

from linssl import theory
from linssl.errors import DivergenceError, LinsslError
from linssl.linear.data import commuting_model
from linssl.linear.dynamics import DynamicsConfig, Problem, State, initial_state, integrate_flow, integrate_gd
from linssl.linear.records import alignment_offdiag, gains_along
from linssl.linear.sgd import SGDConfig, integrate_sgd, sampled_gradients
from linssl.predictors import make_rule

AUG = (0.2, 0.8, 2.0, 6.0)  # at wd 0.05 (threshold 4): three kept, one discarded, all ≥ 50% from it


def setup(rule="directpred", batch=1, target="stopgrad", wd=0.05, **rule_kwargs):
    model = commuting_model(1.0, AUG, seed=1)
    problem = Problem.from_models(model, DynamicsConfig(make_rule(rule, **rule_kwargs), wd, target), batch)
    return model, problem


def test_sampled_gradient_is_unbiased():
    """E[sampled gradient] = expected-gradient field: average many independent batches."""
    model, problem = setup("trainable", target="ema")
    state = initial_state(problem, 4, 0.7, seed=0)
    from linssl.linear.data import ViewSampler

    sampler = ViewSampler(model, seed=0)
    _, x1, x2 = sampler(200_000, (1,))
    v, _, _ = sampled_gradients(problem, state, state.Wp, x1, x2)
    exact = problem.velocity(state)
    # Monte-Carlo error ~ scale / sqrt(n) ≈ 3 / 450 ≈ 7e-3 per entry; 0.05 is a safe bound
    for got, want in zip(v.tensors(), exact.tensors(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0.05)


def test_loss_decreases_along_the_trained_predictor_flow():
    """With a trained predictor and stop-gradient target the flow is not a gradient flow of J, but
    with the EMA target frozen it is; check J is finite and the state reaches a fixed point."""
    _, problem = setup("trainable")
    traj = integrate_flow(problem, initial_state(problem, 4, 0.5, 0))
    assert traj.converged
    assert np.isfinite(problem.loss(traj.final).numpy()).all()


@pytest.mark.slow
def test_gd_small_lr_matches_flow():
    model, problem = setup("directcopy")
    s0 = initial_state(problem, 4, 0.5, 0)
    flow = integrate_flow(problem, s0)
    gd = integrate_gd(problem, s0, lr=0.005, steps=200_000)
    g_flow = gains_along(flow.final.W, model.basis)
    g_gd = gains_along(gd.final.W, model.basis)
    # Euler has the same fixed points as the flow: both converge to them (tolerance: convergence level)
    torch.testing.assert_close(g_gd, g_flow, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_sgd_agrees_with_flow_across_seeds():
    """Three seeds as one batch; SGD gains averaged over the last fifth of the run."""
    model, problem = setup("directpred", batch=3)
    s0 = initial_state(problem, 4, 0.5, seed=0)
    traj = integrate_sgd(problem, s0, model, SGDConfig(lr=0.01, steps=20_000, batch_size=256, rho=0.9, seed=0))
    tail = torch.stack([gains_along(s.W, model.basis) for s in traj.snapshots[-40:]]).mean(0)  # (3, d)
    predicted = torch.as_tensor(theory.predicted_gain_sq(1.0, np.array(AUG), 0.05, 0.5))
    kept = predicted > 0
    # stationary SGD noise at lr 0.01, batch 256 moves gains by a few percent; 10% is ~3 sd
    torch.testing.assert_close(tail[:, kept], predicted[kept].expand(3, -1), rtol=0.1, atol=0)
    assert (tail[:, ~kept] < 1e-4).all()


@pytest.mark.parametrize("rule", ["directcopy", "directpred"])
def test_sgd_predictor_is_held_between_resets(rule):
    """--freq 10: W_p is set from F̂ at steps 0, 10, 20 and held in between, also for DirectCopy with
    norm none and ε = 0, whose W_p is F̂ itself (an in-place F̂ update once moved it every step)."""
    model, problem = setup(rule)
    s0 = initial_state(problem, 4, 0.5, seed=0)
    traj = integrate_sgd(problem, s0, model, SGDConfig(lr=0.01, steps=30, batch_size=16, rho=0.5, freq=10, seed=0),
                         n_records=31)
    wps = traj.predictors[:30]  # one per step: the predictor each step used
    for start in (0, 10, 20):
        for k in range(start + 1, start + 10):
            assert torch.equal(wps[k], wps[start]), k
        if start:
            assert not torch.equal(wps[start], wps[start - 1])


def test_batch_runs_are_independent():
    """A batched flow equals the same runs integrated one at a time."""
    model = commuting_model(1.0, AUG, seed=1)
    rule = make_rule("directpred")
    wds = (0.03, 0.08)
    batched = Problem.from_models(model, DynamicsConfig(rule, wds), 2)
    s0 = initial_state(batched, 4, 0.5, 0)
    out = integrate_flow(batched, s0).final.W
    for k, wd in enumerate(wds):
        single = Problem.from_models(model, DynamicsConfig(rule, wd))
        alone = integrate_flow(single, State(s0.W[k : k + 1].clone())).final.W[0]
        # both converge to the same fixed point; integration tolerances bound the difference
        torch.testing.assert_close(out[k], alone, rtol=0, atol=1e-6)


def test_alignment_emerges_from_rotation_init():
    model, problem = setup("directpred")
    s0 = initial_state(problem, 4, 0.5, 3)
    assert alignment_offdiag(s0.W, model.basis) > 0.05  # not aligned at the start
    assert alignment_offdiag(integrate_flow(problem, s0).final.W, model.basis) < 1e-6


def test_gd_divergence_is_reported():
    _, problem = setup("directcopy")
    with pytest.raises(DivergenceError, match="lr"):
        integrate_gd(problem, initial_state(problem, 4, 2.0, 0), lr=1.0, steps=1000)


def test_bad_configs():
    with pytest.raises(LinsslError):
        DynamicsConfig(make_rule("directpred"), wd=-0.1)
    with pytest.raises(LinsslError):
        DynamicsConfig(make_rule("directpred"), target="momentum")
    with pytest.raises(LinsslError):
        SGDConfig(lr=0)
    _, problem = setup()
    with pytest.raises(LinsslError):
        initial_state(problem, 5, 0.5, 0)  # m > d


def test_fitted_rotation_recovers_a_pure_rotation_and_leaves_the_rest():
    """V = ΩZ for an antisymmetric Ω: the fit returns Ω and the non-rotational speed is 0; a radial part
    (V = ΩZ − ηZ) is left whole."""
    from linssl.linear.rotation import fitted_rotation, non_rotational_speed

    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    Om = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64)
    Om = Om - Om.mT
    torch.testing.assert_close(fitted_rotation(Z, Om @ Z), Om, rtol=0, atol=1e-12)  # float64, O(1) entries
    assert float(non_rotational_speed(Z, Om @ Z).max()) < 1e-12
    radial = non_rotational_speed(Z, Om @ Z - 0.1 * Z)
    torch.testing.assert_close(radial, (0.1 * Z).abs().flatten(1).amax(-1), rtol=1e-9, atol=0)
