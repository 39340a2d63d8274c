"""Batched parameter sweeps: many runs of the flow integrated as one batch.

A sweep over weight decays (and, optionally, one data model per run) stacks all runs along the
batch axis of :class:`linssl.linear.dynamics.Problem` and evaluates one vectorised right-hand side for all
of them. All runs share the predictor rule and the target. Integrators:

- ``exponential``: ``linssl.linear.exponential`` — Lawson steps that integrate the stiff, frozen-predictor
  part of the flow exactly, per run (direct predictors, stop-gradient; not the spectral DirectCopy);
- ``batched``: ``linssl.linear.batched_ode`` — scipy's RK45/DOP853 tableau and step controller applied per
  run, so each run keeps its own step size and stops on its own convergence test;
- ``solve_ivp``: one ``solve_ivp`` over the stacked vector (one shared step size, set by the
  stiffest run; the batch stops when every run has converged, or at ``t_max``);
- ``auto`` (default): ``exponential`` where it applies, else ``batched``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from linssl import theory
from linssl.errors import LinsslError
from linssl.linear import exponential
from linssl.linear.batched_ode import integrate_flow_batched
from linssl.linear.data import DataModel
from linssl.linear.dynamics import DynamicsConfig, FlowOptions, Problem, Trajectory, initial_state, integrate_flow
from linssl.linear.records import CONVERGED_KEPT_TOL, gains_along
from linssl.predictors import PredictorRule

INTEGRATORS = ("auto", "exponential", "batched", "solve_ivp")
#: a sweep's default flow: the defaults, 50 records (the final state is what a sweep compares)
SWEEP_OPTIONS = FlowOptions(n_records=50)


@dataclass
class SweepResult:
    """Final per-feature squared gains of every run, beside the closed form."""

    wd: np.ndarray  # (B,)
    data_var: np.ndarray  # (B, d)
    aug_var: np.ndarray  # (B, d)
    gain_sq: np.ndarray  # (B, d) simulated
    gain_sq_predicted: np.ndarray  # (B, d)
    trajectory: Trajectory

    @property
    def kept(self) -> np.ndarray:
        return self.gain_sq > CONVERGED_KEPT_TOL

    @property
    def kept_predicted(self) -> np.ndarray:
        return self.gain_sq_predicted > 0


def sweep_flow(
    models: DataModel | Sequence[DataModel],
    wds: Sequence[float],
    rule: PredictorRule,
    *,
    target: str = "stopgrad",
    init_scale: float = 0.5,
    seed: int = 0,
    options: FlowOptions | None = None,
    integrator: str = "auto",
    **changes,
) -> SweepResult:
    """Integrate the flow for every (model, wd) pair as one batch; ``models`` is one model for all
    runs or one per run (all commuting, same d). ``integrator``: auto, exponential, batched or
    solve_ivp (module docstring); ``FlowOptions.of(options, **changes)`` (a sweep records 50 times by
    default; ``method``: RK45 or DOP853)."""
    opts = FlowOptions.of(options if options is not None else SWEEP_OPTIONS, **changes)
    wds = tuple(float(w) for w in wds)
    model_list = [models] if isinstance(models, DataModel) else list(models)
    if not wds:
        raise LinsslError("a sweep needs at least one weight decay")
    if integrator not in INTEGRATORS:
        raise LinsslError(f"integrator must be one of {', '.join(INTEGRATORS)}, got {integrator!r}")
    if any(not m.commuting for m in model_list):
        raise LinsslError("sweeps compare with the closed forms: use commuting data models")
    batch = len(wds)
    problem = Problem.from_models(model_list, DynamicsConfig(rule, wds, target), batch)
    state = initial_state(problem, model_list[0].dim, init_scale, seed)
    if integrator == "auto":
        integrator = "exponential" if exponential.applies(problem, model_list) is None else "batched"
    if integrator == "exponential":
        traj = exponential.integrate_flow_exponential(problem, state, model_list, opts)
    else:
        traj = (integrate_flow_batched if integrator == "batched" else integrate_flow)(problem, state, opts)
    basis = torch.stack([m.basis for m in model_list]).expand(batch, -1, -1)
    lam = torch.stack([m.data_var for m in model_list]).expand(batch, -1).numpy()
    s2 = torch.stack([m.aug_var for m in model_list]).expand(batch, -1).numpy()
    wd_col = np.asarray(wds)[:, None]
    predicted = np.asarray(theory.predicted_gain_sq_for_rule(rule, lam, s2, wd_col))
    gains = gains_along(traj.final.W, basis).numpy()
    return SweepResult(np.asarray(wds), lam, s2, gains, predicted, traj)
