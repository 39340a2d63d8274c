"""Minibatch SGD on sampled view pairs (docs/theory.md §3): the bridge from the flow to the deep trainer.

Each step draws a batch of two-view samples from the data model, updates the F̂ estimate (EMA ρ, as the
deep trainer's ``CorrelationEMA``), resets the predictor from it every ``freq`` steps, and takes a step
along the symmetrised sampled gradient, whose expectation is the flow's ``Problem.velocity``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from linssl.errors import LinsslError
from linssl.linear.data import DataModel, ViewSampler
from linssl.linear.dynamics import (
    Problem,
    State,
    Trajectory,
    _check_ema_momentum,
    _check_finite,
    _check_lr_steps,
    _record_steps,
)
from linssl.predictors import CorrelationEMA


@dataclass(frozen=True)
class SGDConfig:
    """Minibatch SGD: batch size, lr, steps, F̂ EMA ρ, predictor reset every ``freq`` steps."""

    lr: float = 0.01
    steps: int = 30000
    batch_size: int = 128
    rho: float = 0.9
    freq: int = 1
    seed: int = 0
    settle_rate: float = 0.0  # 0: SGD_SETTLE_RATE (unit problem); the simulator passes it in its units

    def __post_init__(self) -> None:
        _check_lr_steps(self.lr, self.steps)
        if self.batch_size < 1:
            raise LinsslError(f"batch size must be >= 1, got {self.batch_size}")
        if self.freq < 1:
            raise LinsslError(f"freq must be >= 1, got {self.freq}")
        if not 0 <= self.rho < 1:
            raise LinsslError(f"rho must be in [0, 1), got {self.rho}")


def sampled_gradients(
    problem: Problem, state: State, Wp: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor
) -> tuple[State, torch.Tensor, torch.Tensor]:
    """Negative gradients of the symmetrised sampled loss ¼ Σ_(a,b) mean‖W_p W x_a − τW_a x_b‖².

    Returns (velocity-like State, online outputs z1, z2); its expectation is ``problem.velocity``.
    """
    cfg = problem.config
    W, n = state.W, x1.shape[-2]
    T = problem.target(state)
    z1, z2 = x1 @ W.mT, x2 @ W.mT
    r12 = z1 @ Wp.mT - x2 @ T.mT  # (B, n, m)
    r21 = z2 @ Wp.mT - x1 @ T.mT
    grad_A = 0.5 * (r12.mT @ x1 + r21.mT @ x2) / n  # d/d(W_p W) of the loss
    dW = -Wp.mT @ grad_A - problem.wd * W
    dWp = dWa = None
    if state.Wp is not None:
        pred_wd = problem.wd if cfg.pred_wd is None else cfg.pred_wd
        dWp = -cfg.pred_lr * 0.5 * (r12.mT @ z1 + r21.mT @ z2) / n - pred_wd * state.Wp
    if state.Wa is not None:
        dWa = cfg.ema_rate * (W - state.Wa)
    return State(dW, dWp, dWa), z1, z2


#: SGD counts as settled when the mean WᵀW over the last 10% of the run differs from the mean over the
#: 10% before by less than this per unit of time (relative Frobenius norm / window length): a drift
#: still in progress scales with the window, stationary noise does not (~1% at the default lr and batch,
#: over windows of 30 time units).
SGD_SETTLE_RATE = 1e-3


def integrate_sgd(
    problem: Problem,
    state: State,
    model: DataModel,
    sgd: SGDConfig,
    n_records: int = 200,
    progress: Callable[[int], None] | None = None,
) -> Trajectory:
    """Minibatch SGD on sampled views; direct rules use the running estimate F̂ (module docstring).

    ``converged`` is the settle test of ``sgd.settle_rate`` (default :data:`SGD_SETTLE_RATE`) on the
    recorded snapshots."""
    rule = problem.config.rule
    _check_ema_momentum(problem, state, sgd.lr)
    sampler = ViewSampler(model, sgd.seed)
    record_at = _record_steps(sgd.steps, n_records)
    estimate = CorrelationEMA(sgd.rho)
    s, Wp = state.clone(), None
    times, snaps, wps = [], [], []
    hint = f"lr {sgd.lr} is too large; try a smaller --lr"
    if sgd.freq > 1 and rule.kind == "direct":  # a predictor held for many steps can drive W away too
        hint = f"lr {sgd.lr} is too large or the predictor is held too long (--freq {sgd.freq}); lower either"
    for k in range(sgd.steps):
        x, x1, x2 = sampler(sgd.batch_size, (problem.batch,))
        if rule.kind == "direct":
            outputs = torch.cat([x1, x2], -2) @ s.W.mT if rule.f_source == "aug" else x @ s.W.mT
            F_hat = estimate.update(outputs)
            if Wp is None or k % sgd.freq == 0:
                Wp = rule(F_hat)
        else:
            Wp = s.Wp
        if k in record_at:
            times.append(k * sgd.lr)
            snaps.append(s.clone())
            wps.append(Wp.clone())
        v, _, _ = sampled_gradients(problem, s, Wp, x1, x2)
        s = s.step(v, sgd.lr)
        _check_finite(s, f"step {k + 1}", hint)
        if progress is not None and k % 100 == 0:
            progress(k)
    times.append(sgd.steps * sgd.lr)  # the final state, with the predictor last in force
    snaps.append(s.clone())
    wps.append(s.Wp.clone() if s.Wp is not None else Wp.clone())
    drift = _sgd_drift_rate(np.asarray(times), snaps)
    info = {"t_final": sgd.steps * sgd.lr, "max_speed": problem.velocity(s).max_abs(), "F_hat": estimate.value,
            "drift_rate": drift}
    return Trajectory(np.asarray(times), snaps, s, drift < (sgd.settle_rate or SGD_SETTLE_RATE), sgd.steps, info, wps)


def _sgd_drift_rate(times: np.ndarray, snaps: list[State]) -> float:
    """Largest (over runs) relative change of mean WᵀW between the last two tenths of the snapshots,
    divided by the time between the two windows' centres."""
    window = len(snaps) // 10
    if window < 1:
        return float("inf")
    gram = torch.stack([s.W.mT @ s.W for s in snaps])
    last, before = gram[-window:].mean(0), gram[-2 * window : -window].mean(0)
    rel = torch.linalg.matrix_norm(last - before) / torch.linalg.matrix_norm(last).clamp_min(1e-300)
    elapsed = times[-window:].mean() - times[-2 * window : -window].mean()
    return float(rel.max()) / max(float(elapsed), 1e-300)
