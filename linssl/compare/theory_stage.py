"""Stage 2: the linear theory's prediction on the measured two-view model (docs/theory.md §8).

For each weight decay η the simulator's gradient flow (``linssl.linear``: the general, non-commuting model
X, X'; the predictor rule without normalisation, ε = 0, stop-gradient target) runs from the same initial W
as the linear network of stage 3, all η in one batch. The general model's W keeps rotating on its output
side after WᵀW has settled, so settlement is judged on the spectrum of F = W(X+X')Wᵀ over the last half of
the time (``measures.settled``), not on dW/dt. Beside it, the commuting approximation: per eigendirection
u of X + X', keep iff λ² ≥ 4η(λ + σ²) with λ = uᵀXu, σ² = uᵀX'u.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from linssl.compare import measures
from linssl.linear.data import general_model
from linssl.linear.dynamics import DynamicsConfig, Problem, State, integrate_flow
from linssl.predictors import make_rule
from linssl.runtime import one_thread


@dataclass
class TheoryRun:
    wd: float
    W: np.ndarray  # (m, d) at the end of the flow
    F_eigs: np.ndarray  # eigenvalues of W(X+X')Wᵀ, descending
    gains_sq: np.ndarray  # eigenvalues of WᵀW of the kept directions, descending
    kept: int | None  # None when the run did not settle
    kept_at_end: int
    settled: bool
    t_final: float
    commuting_kept: int  # the commuting approximation's count
    aug_share: np.ndarray  # σ²/(λ+σ²) along the right singular vectors of W (descending singular values)


def theory_runs(data_cov: np.ndarray, aug_cov: np.ndarray, wds: tuple[float, ...], W0: np.ndarray,
                predictor: str = "directpred", t_max: float = 2000.0) -> list[TheoryRun]:
    """The flow for every η from ``W0`` (m, d), to ``t_max`` (or until max|dW/dt| < 1e-8 in every run)."""
    model = general_model(data_cov, aug_cov)
    rule = make_rule(predictor, norm="none", eps=0.0, f_source="aug")
    batch = len(wds)
    problem = Problem.from_models(model, DynamicsConfig(rule, wd=tuple(float(w) for w in wds)), batch)
    W = torch.as_tensor(W0, dtype=torch.float64).expand(batch, -1, -1).clone()
    with one_thread():
        traj = integrate_flow(problem, State(W, None, None), t_max=t_max, rtol=1e-7, atol=1e-10, conv_tol=1e-8)
    times = np.asarray(traj.times)
    half = int(np.argmin(np.abs(times - 0.5 * times[-1])))
    view_cov = data_cov + aug_cov
    approx = measures.commuting_threshold(data_cov, aug_cov)
    runs = []
    for b, wd in enumerate(wds):
        Wb = traj.final.W[b].numpy()
        eigs = measures.output_spectrum(Wb, view_cov)
        before = measures.output_spectrum(traj.snapshots[half].W[b].numpy(), view_cov)
        ok = bool(traj.converged) or measures.settled(before, eigs)
        count = measures.kept_count(eigs)
        gains = measures.sym_eigh_desc(Wb.T @ Wb)[0][:count]
        vt = measures.top_right_singular(Wb, Wb.shape[0])
        runs.append(TheoryRun(float(wd), Wb, eigs, gains, count if ok else None, count, ok, float(times[-1]),
                              int((approx["eta_star"] >= wd).sum()),
                              measures.direction_shares(vt, aug_cov, view_cov)))
    return runs
