"""Explicit Runge–Kutta for a batch of independent ODE runs, each with its own adaptive step.

One call advances B runs y_b' = f_b(y_b) together: every stage is one batched evaluation of the
right-hand side on the runs still active, but each run keeps its own time t_b, step h_b and error
test, so a stiff run no longer sets the step of all the others (as a single ``solve_ivp`` over the
stacked vector does). Finished runs (t_b = t_max, or converged) leave the batch.

The tableaux (Dormand–Prince 5(4) ``RK45`` and Hairer's ``DOP853``) and the step controller are
those of ``scipy.integrate.solve_ivp``, applied per run:

    scale = atol + rtol · max(|y|, |y_new|)
    err   = ‖h Σ_s E_s K_s / scale‖_rms                    (RK45; DOP853 combines its 5th/3rd-order
                                                           estimates: |h| e5² / sqrt(n (e5² + 0.01 e3²)))
    accept iff err < 1;  h ← h · clip(0.9 err^(−1/(q+1)), 0.2, 10)   (no growth right after a rejection)

so a run of the batch takes the same steps as ``solve_ivp`` on that run alone, up to rounding.
Steps are shortened to land exactly on the record times (unless ``land_on_records=False``); a run stops
early when max|f(y)| < conv_tol.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.integrate
import torch

from linssl.errors import DivergenceError, LinsslError
from linssl.linear.dynamics import FlowOptions, Problem, State, Trajectory, _check_finite

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0
METHODS = ("RK45", "DOP853")


@dataclass(frozen=True)
class Tableau:
    """Butcher tableau of an embedded explicit pair (scipy's coefficients)."""

    name: str
    A: torch.Tensor  # (S, S)
    B: torch.Tensor  # (S,)
    C: torch.Tensor  # (S,)
    E: torch.Tensor  # (S + 1,) error weights (RK45), or E5 for DOP853
    E3: torch.Tensor | None  # DOP853 third-order error weights
    error_order: int

    @property
    def stages(self) -> int:
        return self.B.numel()


def tableau(method: str, dtype: torch.dtype = torch.float64) -> Tableau:
    """The ``RK45`` or ``DOP853`` tableau of ``scipy.integrate``."""
    if method not in METHODS:
        raise LinsslError(f"batched integrator method must be one of {', '.join(METHODS)}, got {method!r}")
    cls = getattr(scipy.integrate, method)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
    if method == "RK45":
        return Tableau(method, t(cls.A), t(cls.B), t(cls.C), t(cls.E), None, cls.error_estimator_order)
    return Tableau(method, t(cls.A), t(cls.B), t(cls.C), t(cls.E5), t(cls.E3), cls.error_estimator_order)


@dataclass
class BatchedSolution:
    """Per-run results: final state, records at ``record_times`` (a run that stopped early holds its
    final state at later record times), time reached, accepted/rejected steps, convergence."""

    y_final: torch.Tensor  # (B, n)
    record_times: np.ndarray  # (T,)
    records: torch.Tensor  # (T, B, n)
    record_reached: np.ndarray  # (T, B): the time each record holds (NaN: passed within a step, not held)
    t_final: np.ndarray  # (B,)
    accepted: np.ndarray  # (B,)
    rejected: np.ndarray  # (B,)
    converged: np.ndarray  # (B,)
    evaluations: int  # batched right-hand-side calls
    run_evaluations: int  # Σ over calls of the number of runs evaluated


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1).sqrt()


class RungeKuttaStep:
    """How ``solve_batched`` attempts one step per run: an explicit embedded pair (scipy's tableau and
    error norm) on ``fun(y, idx)``. Subclasses change the coordinates or the scheme (``linssl.linear.exponential``);
    the step-size controller, records and bookkeeping stay in ``solve_batched``.

    ``field`` counts evaluations; ``start``/``commit`` may move runs to other internal coordinates,
    ``to_user``/``speed`` bring states and |f| back to the caller's.
    """

    def __init__(self, fun: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], method: str,
                 dtype: torch.dtype = torch.float64) -> None:
        self.fun, self.tab = fun, tableau(method, dtype)
        self.evaluations = self.run_evaluations = 0

    def field(self, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        self.run_evaluations += idx.numel()
        return self.fun(y, idx)

    def start(self, y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y0.clone(), self.field(y0, torch.arange(y0.shape[0]))

    def max_step(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.full((idx.numel(),), math.inf, dtype=self.tab.B.dtype)

    def attempt(self, y: torch.Tensor, fy: torch.Tensor, step: torch.Tensor, idx: torch.Tensor, rtol: float,
                atol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(y_new, f(y_new), scaled error norm) of one step of size ``step`` (per run) from y."""
        tab = self.tab
        K = y.new_empty((tab.stages + 1, *y.shape))
        K[0] = fy
        for s in range(1, tab.stages):
            K[s] = self.field(y + torch.tensordot(tab.A[s, :s], K[:s], dims=1) * step[:, None], idx)
        y_new = y + torch.tensordot(tab.B, K[:-1], dims=1) * step[:, None]
        K[-1] = f_new = self.field(y_new, idx)
        scale = atol + torch.maximum(y.abs(), y_new.abs()) * rtol
        return y_new, f_new, _error_norm(tab, K, step, scale)

    def commit(self, acc: torch.Tensor, y: torch.Tensor, fy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The accepted states of runs ``acc`` as they are stored for their next step."""
        return y, fy

    def to_user(self, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return y

    def speed(self, fy: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """max |dy/dt| per run, in the caller's coordinates."""
        return fy.abs().amax(-1)


def solve_batched(
    fun: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    y0: torch.Tensor,
    t_max: float,
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    method: str = "DOP853",
    record_times: np.ndarray | None = None,
    conv_tol: float = 0.0,
    max_iterations: int = 1_000_000,
    stepper: RungeKuttaStep | None = None,
    coarse_rtol: float | None = None,
    coarse_until: float = 0.0,
    land_on_records: bool = True,
    progress: Callable[[float], None] | None = None,
) -> BatchedSolution:
    """Integrate y_b' = fun(y, idx)_b from t = 0 to ``t_max`` for every row b of ``y0`` (B, n).

    ``fun(y, idx)`` gets the states of the active runs ``idx`` (a LongTensor) and returns their
    derivatives; it must treat rows independently. ``conv_tol`` > 0 stops a run once max|f| < conv_tol.
    ``stepper`` replaces the explicit step on ``fun`` (e.g. ``linssl.linear.exponential.ExponentialStep``).
    ``coarse_rtol``: a run starts at this looser relative tolerance and changes to ``rtol`` for good once
    max|f| < ``coarse_until`` (the transient, whose errors the flow forgets on its way to an attracting
    fixed point, in fewer steps). ``land_on_records=False``: steps
    are not shortened to land on the record times; the first accepted state at or after a record time is
    recorded, with its own time (``record_reached``). ``progress(t)``: called with the least time reached.
    """
    if not (t_max > 0 and math.isfinite(t_max)):
        raise LinsslError(f"time must be positive, got {t_max}")
    stepper = RungeKuttaStep(fun, method, y0.dtype) if stepper is None else stepper
    B = y0.shape[0]
    rec_t = np.asarray([t_max] if record_times is None else record_times, dtype=np.float64)
    rec_t = np.unique(np.clip(rec_t, 0.0, t_max))
    records = y0.new_zeros((rec_t.size, *y0.shape))
    rec_next = torch.zeros(B, dtype=torch.long)
    if rec_t[0] == 0.0:
        records[0] = y0
        rec_next += 1
    reached = np.full((rec_t.size, B), np.nan)
    reached[0] = rec_t[0]
    rec_tensor = torch.as_tensor(np.append(rec_t, np.inf), dtype=y0.dtype)
    exponent = -1.0 / (stepper.tab.error_order + 1)

    all_idx = torch.arange(B)
    y, fy = stepper.start(y0)
    t = torch.zeros(B, dtype=y0.dtype)
    fine = torch.full((B,), coarse_rtol is None)
    if coarse_rtol is not None:
        fine = stepper.speed(fy, all_idx) < coarse_until
    tols = torch.tensor([max(rtol, coarse_rtol or rtol), rtol], dtype=y0.dtype)
    run_rtol = lambda idx: tols[fine[idx].long()][:, None]  # noqa: E731
    rejected_last = torch.zeros(B, dtype=torch.bool)
    accepted = torch.zeros(B, dtype=torch.long)
    rejected = torch.zeros(B, dtype=torch.long)
    converged = torch.zeros(B, dtype=torch.bool)
    failed = torch.zeros(B, dtype=torch.bool)
    active = torch.ones(B, dtype=torch.bool)
    if conv_tol > 0:  # settled already: no step taken (a state's speed is exact, however it was reached)
        converged = stepper.speed(fy, all_idx) < conv_tol
        active &= ~converged
    h = (_initial_step(stepper.field, y, fy, all_idx, stepper.tab.error_order, run_rtol(all_idx), atol, t_max)
         if active.any() else torch.zeros(B, dtype=y0.dtype))
    for _ in range(max_iterations):
        idx = active.nonzero().squeeze(-1)
        if idx.numel() == 0:
            break
        ta = t[idx]
        if progress is not None:
            progress(float(ta.min()))
        bound = rec_tensor[rec_next[idx]].clamp(max=t_max) if land_on_records else torch.full_like(ta, t_max)
        min_step = 10 * (torch.nextafter(ta, torch.full_like(ta, math.inf)) - ta)
        h[idx] = torch.maximum(torch.minimum(h[idx], stepper.max_step(idx)), min_step)
        step = torch.minimum(h[idx], bound - ta)
        clipped = step < h[idx]
        y_new, f_new, err = stepper.attempt(y[idx], fy[idx], step, idx, run_rtol(idx), atol)
        err = torch.where(torch.isnan(err), torch.full_like(err, math.inf), err)
        ok = err < 1
        grow = torch.where(err == 0, torch.full_like(err, MAX_FACTOR),
                           (SAFETY * err.pow(exponent)).clamp(max=MAX_FACTOR))
        grow = torch.where(rejected_last[idx], grow.clamp(max=1.0), grow)
        shrink = (SAFETY * err.pow(exponent)).nan_to_num(nan=MIN_FACTOR).clamp(min=MIN_FACTOR)
        # a step shortened to hit a record time does not shrink the next one
        base = torch.where(ok & clipped, torch.maximum(h[idx], step * grow), step * grow)
        h[idx] = torch.where(ok, base, step * shrink)
        too_small = ~ok & ~(step * shrink >= min_step)  # NaN (a non-finite rate or state) fails too
        failed[idx[too_small]] = True
        active[idx[too_small]] = False
        rejected_last[idx] = ~ok
        acc = idx[ok]
        rejected[idx[~ok]] += 1
        accepted[acc] += 1
        t_acc = torch.where(clipped, bound, ta + step)[ok]
        t[acc] = t_acc
        y[acc], fy[acc] = stepper.commit(acc, y_new[ok], f_new[ok])
        hit = t_acc >= rec_tensor[rec_next[acc]]
        if hit.any():
            user = stepper.to_user(y[acc[hit]], acc[hit])
            for row, b, k, tk in zip(user, acc[hit].tolist(), rec_next[acc[hit]].tolist(), t_acc[hit].tolist(),
                                     strict=True):
                if k < rec_t.size:
                    records[k, b] = row
                    reached[k, b] = tk
        # every record time this step passed is behind the run (more than one when steps do not land)
        rec_next[acc] = torch.searchsorted(rec_tensor, t_acc, right=True).clamp(min=rec_next[acc])
        done = t_acc >= t_max
        if conv_tol > 0 or coarse_rtol is not None:
            speed = stepper.speed(fy[acc], acc)
            settled = speed < conv_tol
            fine[acc[speed < coarse_until]] = True
            converged[acc[settled]] = True
            done |= settled
        active[acc[done]] = False
    else:
        raise DivergenceError(f"the batched integration did not finish in {max_iterations} iterations")
    if failed.any():
        raise DivergenceError(f"the step size fell below the rounding limit in {int(failed.sum())} run(s) "
                              "(the run diverges or is too stiff for an explicit method)")
    y_user = stepper.to_user(y, all_idx)
    for b in range(B):  # runs that stopped early keep their final state at later record times
        k = int(rec_next[b])
        if k < rec_t.size:
            records[k:, b] = y_user[b]
            reached[k:, b] = float(t[b])
    return BatchedSolution(y_user, rec_t, records, reached, t.numpy(), accepted.numpy(), rejected.numpy(),
                           converged.numpy(), stepper.evaluations, stepper.run_evaluations)


def _error_norm(tab: Tableau, K: torch.Tensor, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-run scaled error norm of scipy's RK45 / DOP853 (module docstring) from the stages K."""
    e3 = None if tab.E3 is None else torch.tensordot(tab.E3, K, dims=1)
    return scaled_error(torch.tensordot(tab.E, K, dims=1), e3, h, scale)


def scaled_error(e5: torch.Tensor, e3: torch.Tensor | None, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """scipy's error norm from the embedded error vectors Σ_s E_s K_s (B, n) (``e3``: DOP853 only).

    NaN stays NaN (a non-finite stage must not pass as a zero error)."""
    if e3 is None:
        return _rms(e5 * h[:, None] / scale)
    e5n = (e5 / scale).pow(2).sum(-1)
    e3n = (e3 / scale).pow(2).sum(-1)
    denom = (e5n + 0.01 * e3n) * e5.shape[-1]
    return torch.where(denom == 0, torch.zeros_like(e5n), h.abs() * e5n / denom.sqrt())


def _initial_step(f, y: torch.Tensor, fy: torch.Tensor, idx: torch.Tensor, order: int, rtol: float, atol: float,
                  t_max: float) -> torch.Tensor:
    """scipy's ``select_initial_step`` per run (Hairer, Nørsett & Wanner, II.4)."""
    scale = atol + y.abs() * rtol
    d0, d1 = _rms(y / scale), _rms(fy / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1).clamp(max=t_max)
    f1 = f(y + h0[:, None] * fy, idx)
    d2 = _rms((f1 - fy) / scale) / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(big <= 1e-15, (h0 * 1e-3).clamp(min=1e-6), (0.01 / big).pow(1.0 / (order + 1)))
    return torch.minimum(100 * h0, torch.minimum(h1, torch.full_like(h1, t_max)))


# ------------------------------------------------------------------ the linear dynamics on top


def sub_problem(problem: Problem, idx: torch.Tensor) -> Problem:
    """The runs ``idx`` of a batched problem, as a problem of their own (moments and weight decays)."""
    wd = problem.wd.reshape(-1)[idx]
    config = dataclasses.replace(problem.config, wd=tuple(float(w) for w in wd))
    return Problem(problem.data_cov[idx], problem.view_cov[idx], config, idx.numel())


def integrate_flow_batched(
    problem: Problem,
    state: State,
    options: FlowOptions | None = None,
    stepper: RungeKuttaStep | None = None,
    *,
    coarse_rtol: float | None = None,
    coarse_until: float = 0.0,
    land_on_records: bool = True,
    progress: Callable[[float], None] | None = None,
    **changes,
) -> Trajectory:
    """The gradient flow of every run of ``problem`` with per-run steps (``solve_batched``; ``stepper``
    replaces its explicit step, e.g. ``linssl.linear.exponential.ExponentialStep``), under
    ``FlowOptions.of(options, **changes)``.

    Records at t = 0, ``n_records − 1`` log-spaced times from 0.01 and ``t_max`` (as ``integrate_flow``);
    each run stops on its own once max|d(state)/dt| < conv_tol (0 disables the test). ``coarse_rtol``,
    ``coarse_until``, ``land_on_records`` and ``progress`` as ``solve_batched``; records that do not land
    (one run only) are kept at the times the steps reached, once each.
    """
    opts = FlowOptions.of(options, **changes)
    t_max, rtol, atol, conv_tol, n_records, method = (opts.t_max, opts.rtol, opts.atol, opts.conv_tol,
                                                      opts.n_records, opts.method)
    if not land_on_records and problem.batch != 1:
        raise LinsslError("records at the steps' own times are per run: land_on_records=False takes one run")
    _check_finite(state, "t = 0", "try a smaller --init-scale")
    template = state.clone()
    cache: dict[int, tuple[torch.Tensor, Problem]] = {}

    def fun(y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        key = idx.numel()
        if key not in cache or not torch.equal(cache[key][0], idx):
            cache.clear()
            cache[key] = (idx.clone(), problem if key == problem.batch else sub_problem(problem, idx))
        return cache[key][1].velocity(template.unpack_runs(y)).pack_runs()

    log_spaced = np.geomspace(min(1e-2, t_max), t_max, max(n_records - 1, 1))
    record_times = np.unique(np.concatenate([[0.0], log_spaced, [t_max]]))
    sol = solve_batched(fun, state.pack_runs(), t_max, rtol=rtol, atol=atol, method=method,
                        record_times=record_times, conv_tol=conv_tol, stepper=stepper, coarse_rtol=coarse_rtol,
                        coarse_until=coarse_until, land_on_records=land_on_records, progress=progress)
    reached = float(sol.t_final.max())
    if land_on_records:
        keep = np.flatnonzero(sol.record_times <= reached)
        times = sol.record_times[keep]
    else:  # the times the step reached, each once (a step past several record times records once)
        held = sol.record_reached[:, 0]
        keep = np.flatnonzero(np.isfinite(held) & (held <= reached))
        keep = keep[np.unique(held[keep], return_index=True)[1]]
        times = held[keep]
    snaps = [template.unpack_runs(sol.records[k]).clone() for k in keep]
    final = template.unpack_runs(sol.y_final).clone()
    _check_finite(final, f"t = {reached:.3g}", "try a smaller --init-scale")
    speed = problem.velocity(final)
    speeds = speed.pack_runs().abs().amax(-1).numpy()
    info = {"t_final": reached, "t_final_per_run": sol.t_final, "max_speed": float(speeds.max()),
            "max_speed_per_run": speeds, "accepted_steps": sol.accepted, "rejected_steps": sol.rejected,
            "run_evaluations": sol.run_evaluations, "integrator": f"batched-{method}"}
    if times[-1] < reached:  # the last run stopped (converged) between two record times
        times = np.append(times, reached)
        snaps.append(final)
    converged = bool(speeds.max() < 10 * conv_tol)
    return Trajectory(times, snaps, final, converged, sol.evaluations, info)
