"""Dynamics of the linear siamese network (docs/theory.md §2–§3), batched over runs.

State: online W (B, m, d); a trained predictor W_p (B, m, m) for the ``trainable`` rule; an EMA
target W_a (B, m, d) for ``target="ema"``. With Σ₁ = X + X' (views), X = E[x1 x2ᵀ], the target
scale τ and weight decay η (per run):

    dW/dt   = −W_pᵀ (W_p W Σ₁ − τ W_a X) − η W                       (W_a = W for stop-gradient)
    dW_p/dt = α_p (−W_p W Σ₁ Wᵀ + τ W_a X Wᵀ) − η_p W_p             (trainable predictor)
    dW_a/dt = β (W − W_a)                                            (EMA target)

and for direct rules W_p = rule(F) with F = W Σ₁ Wᵀ (``aug``) or W X Wᵀ (``clean``).

Three integrators share this vector field: ``flow`` (scipy ``solve_ivp``, stopped by a
convergence test max|dstate/dt| < tol), ``gd`` (Euler steps of size lr — the same field, so the
discrete EMA momentum is m = 1 − lr β) and ``sgd`` (sampled views, symmetrised loss, the running
F̂ estimate with EMA ρ and a predictor reset every ``freq`` steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.integrate import solve_ivp

from linssl.errors import DivergenceError, LinsslError
from linssl.linear.data import DTYPE, DataModel, haar_rotation
from linssl.linear.rotation import non_rotational_speed
from linssl.predictors import PredictorRule

TARGETS = ("stopgrad", "ema")
DIVERGENCE_LIMIT = 1e6


@dataclass(frozen=True)
class DynamicsConfig:
    """What is integrated. ``wd`` may be a float or one value per run (a batch sweep).

    ema_rate β: dW_a/dt = β (W − W_a) (discrete momentum m = 1 − lr β); target_scale τ;
    pred_lr α_p and pred_wd η_p (default η) for the trainable predictor.
    """

    rule: PredictorRule
    wd: float | tuple[float, ...] = 0.05
    target: str = "stopgrad"
    ema_rate: float = 1.0
    target_scale: float = 1.0
    pred_lr: float = 1.0
    pred_wd: float | None = None

    def __post_init__(self) -> None:
        wds = self.wd if isinstance(self.wd, tuple) else (self.wd,)
        if any(not (math.isfinite(w) and w >= 0) for w in wds):
            raise LinsslError(f"weight decay must be a non-negative number, got {self.wd}")
        if self.target not in TARGETS:
            raise LinsslError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if not (self.ema_rate > 0 and math.isfinite(self.ema_rate)):
            raise LinsslError(f"ema rate must be positive, got {self.ema_rate}")

    def wd_tensor(self, batch: int) -> torch.Tensor:
        wd = torch.as_tensor(self.wd, dtype=DTYPE).reshape(-1)
        if wd.numel() not in (1, batch):
            raise LinsslError(f"{wd.numel()} weight decays for a batch of {batch} runs")
        return wd.expand(batch).reshape(batch, 1, 1)


@dataclass
class State:
    """Batched network state; ``Wp``/``Wa`` are ``None`` when derived (direct rule / stop-gradient)."""

    W: torch.Tensor
    Wp: torch.Tensor | None = None
    Wa: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.W, self.Wp, self.Wa) if t is not None]

    def step(self, velocity: State, lr: float) -> State:
        """Euler step: each present tensor t ← t + lr · dt."""
        pairs = zip((self.W, self.Wp, self.Wa), (velocity.W, velocity.Wp, velocity.Wa), strict=True)
        return State(*(None if t is None else t + lr * dt for t, dt in pairs))

    def pack_runs(self) -> torch.Tensor:
        """One flat row per run, (B, n): the run's W, then W_p and W_a where present — the state layout of
        every integrator (``pack`` is the same rows, end to end)."""
        B = self.W.shape[0]
        return torch.cat([t.reshape(B, -1) for t in self.tensors()], dim=1)

    def unpack_runs(self, flat: torch.Tensor) -> State:
        """The state of the rows ``flat`` (b, n) of ``pack_runs``, shaped like this one (b runs, b ≤ B)."""
        out, start, b = [], 0, flat.shape[0]
        for t in (self.W, self.Wp, self.Wa):
            if t is None:
                out.append(None)
                continue
            size = t[0].numel()
            out.append(flat[:, start : start + size].reshape(b, *t.shape[1:]))
            start += size
        return State(*out)

    def pack(self) -> np.ndarray:
        """``pack_runs`` as one numpy vector (``solve_ivp``'s state)."""
        return self.pack_runs().reshape(-1).numpy()

    def unpack(self, flat: np.ndarray) -> State:
        return self.unpack_runs(torch.from_numpy(flat).reshape(self.W.shape[0], -1))

    def clone(self) -> State:
        return State(*(None if t is None else t.clone() for t in (self.W, self.Wp, self.Wa)))

    def max_abs(self) -> float:
        return max(float(t.abs().max()) for t in self.tensors())

    def speed(self, velocity: State, invariant: bool = False) -> float:
        """max |velocity| — or, ``invariant``, of the velocity less its output-rotation part
        (``linssl.linear.rotation``): what the convergence tests compare with conv_tol."""
        if not invariant:
            return velocity.max_abs()
        return float(non_rotational_speed(self.W, velocity.W, self.Wp, velocity.Wp, self.Wa, velocity.Wa).max())


@dataclass
class Problem:
    """A batch of runs: population moments (broadcast to (B, d, d)) and the dynamics config."""

    data_cov: torch.Tensor
    view_cov: torch.Tensor
    config: DynamicsConfig
    batch: int

    @classmethod
    def from_models(cls, models: DataModel | list[DataModel], config: DynamicsConfig, batch: int = 1) -> Problem:
        models = [models] if isinstance(models, DataModel) else list(models)
        X = torch.stack([m.data_cov for m in models])
        V = torch.stack([m.view_cov for m in models])
        if len(models) not in (1, batch):
            raise LinsslError(f"{len(models)} data models for a batch of {batch} runs")
        return cls(X.expand(batch, -1, -1), V.expand(batch, -1, -1), config, batch)

    @property
    def wd(self) -> torch.Tensor:
        return self.config.wd_tensor(self.batch)

    def correlation(self, W: torch.Tensor) -> torch.Tensor:
        """F = W Σ₁ Wᵀ (aug) or W X Wᵀ (clean)."""
        C = self.view_cov if self.config.rule.f_source == "aug" else self.data_cov
        return W @ C @ W.mT

    def predictor(self, state: State) -> torch.Tensor:
        """The W_p in force: the trained one, or the direct rule applied to the population F."""
        if state.Wp is not None:
            return state.Wp
        return self.config.rule(self.correlation(state.W))

    def target(self, state: State) -> torch.Tensor:
        """τ W_a (W_a = W for stop-gradient)."""
        Wa = state.W if state.Wa is None else state.Wa
        return self.config.target_scale * Wa

    def velocity(self, state: State, Wp: torch.Tensor | None = None) -> State:
        """The expected-gradient vector field d(state)/dt (module docstring)."""
        cfg = self.config
        W, X, V = state.W, self.data_cov, self.view_cov
        Wp = self.predictor(state) if Wp is None else Wp
        target = self.target(state)
        residual = Wp @ W @ V - target @ X  # E[(W_p W x1 − τW_a x2) x1ᵀ]
        dW = -Wp.mT @ residual - self.wd * W
        dWp = dWa = None
        if state.Wp is not None:
            pred_wd = self.wd if cfg.pred_wd is None else cfg.pred_wd
            dWp = -cfg.pred_lr * (residual @ W.mT) - pred_wd * Wp
        if state.Wa is not None:
            dWa = cfg.ema_rate * (W - state.Wa)
        return State(dW, dWp, dWa)

    def loss(self, state: State, Wp: torch.Tensor | None = None) -> torch.Tensor:
        """J = ½ E‖W_p W x1 − τ W_a x2‖² + (η/2)‖W‖²_F, per run (B,), with the W_p given or in force."""
        W, T = state.W, self.target(state)
        Wp = self.predictor(state) if Wp is None else Wp
        A = Wp @ W
        quad = _inner(A @ self.view_cov, A) - 2 * _inner(A @ self.data_cov, T) + _inner(T @ self.view_cov, T)
        return 0.5 * quad + 0.5 * self.wd.reshape(-1) * (W**2).sum((-2, -1))


def _inner(M: torch.Tensor, N: torch.Tensor) -> torch.Tensor:
    """tr(M Nᵀ) = Σ M ⊙ N, without forming the product."""
    return (M * N).sum((-2, -1))


INIT_SPREAD = (0.75, 1.25)


def initial_state(problem: Problem, out_dim: int, init_scale: float, seed: int, init: str = "rotation") -> State:
    """Seeded initial state (one independent draw per run in the batch).

    ``rotation`` (default): W = init_scale · R diag(s) Q with R (m×m), Q (d×d) Haar rotations (first m
    rows of Q) and singular values s ~ U(0.75, 1.25): well conditioned, not aligned with the data
    basis, so alignment must emerge. ``gaussian``: entries N(0, init_scale²/d) — its small singular
    values can start inside the collapse basin (w = 0 is stable), which is physics, not a bug.
    Trained predictor: W_p = init_scale · I. EMA target: W_a = W (an exact copy).
    """
    if not (init_scale > 0 and math.isfinite(init_scale)):
        raise LinsslError(f"init scale must be positive, got {init_scale}")
    B, d = problem.batch, problem.data_cov.shape[-1]
    if not 1 <= out_dim <= d:
        raise LinsslError(f"output dimension must be between 1 and d = {d}, got {out_dim}")
    gen = torch.Generator().manual_seed(int(seed))
    if init == "rotation":
        R = haar_rotation(out_dim, gen, (B,))
        Q = haar_rotation(d, gen, (B,))[:, :out_dim, :]
        low, high = INIT_SPREAD
        s = low + (high - low) * torch.rand(B, out_dim, generator=gen, dtype=DTYPE)
        W = init_scale * (R * s.unsqueeze(-2)) @ Q
    elif init == "gaussian":
        W = init_scale * torch.randn(B, out_dim, d, generator=gen, dtype=DTYPE) / math.sqrt(d)
    else:
        raise LinsslError(f"init must be rotation or gaussian, got {init!r}")
    Wp = None
    if problem.config.rule.kind == "trainable":
        Wp = init_scale * torch.eye(out_dim, dtype=DTYPE).expand(B, -1, -1).clone()
    Wa = W.clone() if problem.config.target == "ema" else None
    return State(W, Wp, Wa)


def stable_lr(problem: Problem, state: State, cap: float = 0.01) -> float:
    """A step size below the initial curvature limit: min(cap, 1 / (‖W_p‖₂² ‖X + X'‖₂)).

    Explicit steps diverge above ≈ 2 / curvature (docs/theory.md §3); the curvature is largest at the start,
    when the predictor is largest, and falls as W shrinks onto its fixed point.
    """
    Wp = problem.predictor(state)
    curvature = torch.linalg.matrix_norm(Wp, ord=2) ** 2 * torch.linalg.matrix_norm(problem.view_cov, ord=2)
    return float(min(cap, 1.0 / float(curvature.max())))


@dataclass
class Trajectory:
    """Snapshots of a run: times (T,), states stacked along a leading time axis, the final state."""

    times: np.ndarray
    snapshots: list[State]
    final: State
    converged: bool
    steps: int
    info: dict = field(default_factory=dict)
    predictors: list[torch.Tensor] | None = None  # the W_p in force at each snapshot (SGD: from F̂)


def _check_finite(state: State, where: str, hint: str) -> None:
    if not state.max_abs() <= DIVERGENCE_LIMIT:  # also catches NaN
        raise DivergenceError(f"the run diverged at {where} ({hint})")


@dataclass(frozen=True)
class FlowOptions:
    """How a flow is integrated, the same for every flow integrator (``integrate_flow``,
    ``batched_ode.integrate_flow_batched``, ``exponential.integrate_flow_exponential``, ``sweep.sweep_flow``):
    the horizon ``t_max``, the tolerances ``rtol`` / ``atol``, the stop test max|d(state)/dt| < ``conv_tol``
    (0 disables it), ``n_records`` recorded times (t = 0 and log-spaced from 0.01 to t_max) and the
    Runge–Kutta ``method``. Each integrator takes ``options`` and/or these fields as keywords."""

    t_max: float = 5000.0
    rtol: float = 1e-9
    atol: float = 1e-12
    conv_tol: float = 1e-8
    n_records: int = 200
    method: str = "DOP853"

    @classmethod
    def of(cls, options: FlowOptions | None = None, **changes) -> FlowOptions:
        """``options`` (default: the defaults) with the fields in ``changes`` replaced (unknown: TypeError)."""
        return replace(options if options is not None else cls(), **changes)


def integrate_flow(
    problem: Problem,
    state: State,
    options: FlowOptions | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    invariant: bool = False,
    **changes,
) -> Trajectory:
    """Gradient flow with ``solve_ivp`` under ``FlowOptions.of(options, **changes)``; stops once
    max|d(state)/dt| < conv_tol (``invariant``: the speed
    less its output-rotation part, ``State.speed`` — for non-commuting models, which can turn along an
    orbit of fixed points for ever), or once every entry of the state is below ``atol`` — collapsed to
    the fixed point 0 as far as the integrator resolves, which at a large η can come long before the
    speed η|W| falls under conv_tol — or at t_max."""
    opts = FlowOptions.of(options, **changes)
    t_max, rtol, atol, conv_tol, n_records, method = (opts.t_max, opts.rtol, opts.atol, opts.conv_tol,
                                                      opts.n_records, opts.method)
    if not (t_max > 0 and math.isfinite(t_max)):
        raise LinsslError(f"time must be positive, got {t_max}")
    template = state.clone()
    counter = {"evals": 0}

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        counter["evals"] += 1
        s = template.unpack(y)
        if progress is not None and counter["evals"] % 200 == 0:
            progress(t)
        v = problem.velocity(s)
        return v.pack()

    def speed_at(t: float, y: np.ndarray) -> float:
        if not invariant:
            return float(np.max(np.abs(rhs(t, y))))
        s = template.unpack(y)
        return s.speed(problem.velocity(s), invariant=True)

    def settled(t: float, y: np.ndarray) -> float:
        return min(speed_at(t, y) - conv_tol, float(np.max(np.abs(y))) - atol)

    settled.terminal = True  # type: ignore[attr-defined]
    settled.direction = -1  # type: ignore[attr-defined]

    y0 = state.pack()
    speed0 = speed_at(0.0, y0)
    if speed0 < conv_tol:  # settled already (the event only fires on a downward crossing)
        start = state.clone()
        return Trajectory(np.asarray([0.0]), [start], start, True, counter["evals"],
                          {"t_final": 0.0, "max_speed": speed0})
    t_eval = np.unique(np.concatenate([[0.0], np.geomspace(min(1e-2, t_max), t_max, max(n_records - 1, 2))]))
    with np.errstate(all="ignore"):
        sol = solve_ivp(rhs, (0.0, t_max), y0, method=method, t_eval=t_eval, rtol=rtol, atol=atol, events=settled)
    if sol.status == -1:
        raise DivergenceError(f"the flow integration failed: {sol.message}")
    times, ys = list(sol.t), [sol.y[:, k] for k in range(sol.y.shape[1])]
    if sol.t_events[0].size:
        times.append(float(sol.t_events[0][0]))
        ys.append(sol.y_events[0][0])
    snaps = [template.unpack(np.ascontiguousarray(y)).clone() for y in ys]
    final = snaps[-1]
    _check_finite(final, f"t = {times[-1]:.3g}", "try a smaller --init-scale")
    speed = final.speed(problem.velocity(final), invariant)
    collapsed = bool(sol.t_events[0].size) and final.max_abs() <= 10 * atol  # stopped on the way down to 0
    return Trajectory(np.asarray(times), snaps, final, speed < 10 * conv_tol or collapsed, counter["evals"],
                      {"t_final": times[-1], "max_speed": speed, "integrator": f"solve_ivp-{method}"})


def _record_steps(steps: int, n_records: int) -> set[int]:
    return set(np.unique(np.linspace(0, steps, n_records).round().astype(int)).tolist())


def integrate_gd(
    problem: Problem,
    state: State,
    lr: float = 0.01,
    steps: int = 20000,
    conv_tol: float = 1e-10,
    n_records: int = 200,
    progress: Callable[[int], None] | None = None,
    invariant: bool = False,
) -> Trajectory:
    """Discrete GD on the expected loss: state ← state + lr · velocity(state) (EMA m = 1 − lr β).

    Stops early once max|velocity| < conv_tol (``invariant``: less its output-rotation part, as
    ``integrate_flow``); the final state is always the last snapshot."""
    _check_lr_steps(lr, steps)
    _check_ema_momentum(problem, state, lr)
    record_at = _record_steps(steps, n_records)
    times, snaps = [], []
    s = state.clone()
    hint = f"lr {lr} is too large; try a smaller --lr"
    k = 0
    while True:
        v = problem.velocity(s)
        speed = s.speed(v, invariant)
        if k == steps or speed < conv_tol:
            break
        if k in record_at:
            times.append(k * lr)
            snaps.append(s.clone())
        s = s.step(v, lr)
        k += 1
        _check_finite(s, f"step {k}", hint)
        if progress is not None and k % 100 == 0:
            progress(k)
    times.append(k * lr)
    snaps.append(s.clone())
    return Trajectory(np.asarray(times), snaps, s, speed < 10 * conv_tol, k, {"t_final": k * lr, "max_speed": speed})


def _check_ema_momentum(problem: Problem, state: State, lr: float) -> None:
    """The discrete EMA momentum m = 1 − lr β must lie in [0, 1)."""
    if state.Wa is not None and lr * problem.config.ema_rate > 1:
        raise LinsslError(f"lr × ema rate = {lr * problem.config.ema_rate:g} > 1 gives a negative EMA momentum; "
                          "lower --lr or --ema")


#: most GD/SGD steps of one run (days at d = 8; beyond it, a step count from a vanishing lr is a typo)
MAX_STEPS = 10**9


def _check_lr_steps(lr: float, steps: int) -> None:
    if not (lr > 0 and math.isfinite(lr)):
        raise LinsslError(f"lr must be a positive number, got {lr}")
    if not 1 <= steps <= MAX_STEPS:
        shown = f"{steps:.3g}" if steps < 1e300 else "more than 1e300"
        raise LinsslError(f"steps must be between 1 and {MAX_STEPS:.0e}, got {shown} (lr = {lr:g}); "
                          "raise --lr or lower --steps")
