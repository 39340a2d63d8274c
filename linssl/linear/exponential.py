"""Exponential (Lawson) Runge–Kutta for the commuting linear flow: the stiff part is integrated exactly.

Why: after the transient, the flow's Jacobian has eigenvalues down to about −(p_max² v_max) ≈ −10
(a kept feature's predictor eigenvalue against a high-variance direction) while the solution moves
at rates of order η. An explicit method is then held to h ≈ 0.6 by stability alone.

For a commuting model, in its basis U (X = U diag(x) Uᵀ, Σ₁ = X + X' = U diag(v) Uᵀ) and in the
eigenbasis P of the predictor in force at the start of a step (W_p = P diag(p) Pᵀ), the flow with
W_p frozen is diagonal:

    dŴ_ij/dt = μ_ij Ŵ_ij,   μ_ij = −p_i² v_j + τ p_i x_j − η,        Ŵ = Pᵀ W U.

Lawson's method applies an explicit pair (scipy's DOP853 or RK45 tableau) to e^{−(t − t_n)μ} Ŵ, whose
field e^{−(t − t_n)μ} (f(Ŵ) − μ ⊙ Ŵ) keeps only what the frozen predictor misses (spectral radius ≲ 2
late in a run, measured, against ≈ 10 for f):

    Ŵ_s     = e^{c_s hμ} ⊙ (Ŵ_n + h Σ_j a_sj K_j),     K_j = e^{−c_j hμ} ⊙ (f(Ŵ_j) − μ ⊙ Ŵ_j)
    Ŵ_{n+1} = e^{hμ} ⊙ (Ŵ_n + h Σ_j b_j K_j),          error  e^{hμ} ⊙ Σ_j E_j K_j

The error is measured in the caller's coordinates W = P Ŵ Uᵀ with scipy's norm and controller
(``linssl.linear.batched_ode``), so ``rtol``/``atol`` mean what they mean for ``solve_ivp``. The field is
left-orthogonally equivariant (f(QŴ) = Q f(Ŵ)), so stages are evaluated in the frame itself; after
an accepted step the frame moves to the eigenbasis of W_p at the new state (the eigendecomposition the
field made anyway for α ≠ 1, one eigh per step for DirectCopy).

Applies to direct predictors with a stop-gradient target on commuting models, except DirectCopy with
the spectral norm (its power iteration is not exactly equivariant): :func:`applies`.
"""

from __future__ import annotations

import math

import torch

from linssl.errors import LinsslError
from linssl.linear.batched_ode import RungeKuttaStep, integrate_flow_batched, scaled_error
from linssl.linear.data import DataModel
from linssl.linear.dynamics import DIVERGENCE_LIMIT, Problem, State, Trajectory
from linssl.predictors import direct_set_spectrum

#: e^{h|μ|} must stay finite: steps are capped at EXP_LIMIT / max|μ|.
EXP_LIMIT = 600.0


def applies(problem: Problem, models: list[DataModel]) -> str | None:
    """None if the exponential integrator applies to ``problem``, else the reason it does not."""
    rule = problem.config.rule
    if rule.kind != "direct":
        return "a trained predictor is part of the state"
    if problem.config.target != "stopgrad":
        return "an EMA target is part of the state"
    if rule.alpha == 1.0 and rule.norm == "spectral":
        return "the spectral DirectCopy's power iteration is not rotation-equivariant"
    if not all(m.commuting for m in models):
        return "the data model is not commuting"
    return None


class LawsonStep(RungeKuttaStep):
    """One Lawson step per run for ``solve_batched`` (module docstring). User coordinates: W flattened.
    One instance serves one integration (it holds per-run frames and evaluation counts).

    Per run it keeps the frame P (accumulated rotations, (B, m, m)) and the predictor eigenvalues p
    in that frame; internal coordinates are Ŵ = Pᵀ W U.
    """

    def __init__(self, problem: Problem, basis: torch.Tensor, data_var: torch.Tensor, view_var: torch.Tensor,
                 out_dim: int, method: str = "DOP853") -> None:
        super().__init__(None, method, basis.dtype)
        B, d = problem.batch, basis.shape[-1]
        self.rule, self.tau = problem.config.rule, problem.config.target_scale
        self.shape = (out_dim, d)
        self.basis = basis.expand(B, d, d)
        self.x = data_var.expand(B, d).unsqueeze(-2)  # (B, 1, d): columns of Ŵ are model directions
        self.v = view_var.expand(B, d).unsqueeze(-2)
        self.corr_var = self.v if self.rule.f_source == "aug" else self.x
        self.wd = problem.wd.reshape(B, 1, 1)
        self.frame: torch.Tensor  # (B, m, m) and (B, m): set by ``start`` from the first predictor
        self.p: torch.Tensor
        self._pending: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | torch.Tensor] | None = None

    # -- the flow in the model basis, in any row frame --------------------------------------------
    def velocity(self, W: torch.Tensor, idx: torch.Tensor):
        """f(Ŵ) = −W_pᵀ((W_p Ŵ) ⊙ v − τ Ŵ ⊙ x) − η Ŵ with W_p = rule(Ŵ diag(v or x) Ŵᵀ), and W_p's
        spectrum (p, Q) (α ≠ 1) or W_p itself (α = 1). Rows of runs that blew up give NaN."""
        self.evaluations += 1
        self.run_evaluations += idx.numel()
        bad = ~(W.abs().amax((-2, -1)) <= DIVERGENCE_LIMIT)
        if bad.any():
            W = torch.where(bad[:, None, None], torch.zeros_like(W), W)
        x, v, wd = self.x[idx], self.v[idx], self.wd[idx]
        F = (W * self.corr_var[idx]) @ W.mT
        rule = self.rule
        if rule.alpha != 1.0:
            p, Q = direct_set_spectrum(F, rule.alpha, rule.norm, rule.eps)
            A = Q.mT @ W
            f = -Q @ ((p * p).unsqueeze(-1) * A * v - self.tau * p.unsqueeze(-1) * A * x) - wd * W
            aux = (p, Q)
        else:
            Wp = rule(F)
            f = -Wp.mT @ ((Wp @ W) * v - self.tau * W * x) - wd * W
            aux = Wp
        if bad.any():
            f = torch.where(bad[:, None, None], torch.full_like(f, math.nan), f)
        return f, aux

    def field(self, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.velocity(y.reshape(-1, *self.shape), idx)[0].reshape(y.shape)

    @staticmethod
    def _spectrum(aux) -> tuple[torch.Tensor, torch.Tensor]:
        return aux if isinstance(aux, tuple) else torch.linalg.eigh(aux)

    def _rates(self, idx: torch.Tensor) -> torch.Tensor:
        """μ_ij = −p_i² v_j + τ p_i x_j − η for runs ``idx``: (b, m, d)."""
        p = self.p[idx].unsqueeze(-1)
        return -(p * p) * self.v[idx] + self.tau * p * self.x[idx] - self.wd[idx]

    # -- the RungeKuttaStep interface ------------------------------------------------------------
    def start(self, y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(y0.shape[0])
        W = y0.reshape(-1, *self.shape) @ self.basis
        f, aux = self.velocity(W, idx)
        self.p, Q = self._spectrum(aux)
        self.frame = Q.clone()
        return (Q.mT @ W).reshape(y0.shape), (Q.mT @ f).reshape(y0.shape)

    def max_step(self, idx: torch.Tensor) -> torch.Tensor:
        return EXP_LIMIT / self._rates(idx).abs().amax((-2, -1)).clamp_min(1e-300)

    def attempt(self, y, fy, step, idx, rtol, atol):
        tab, shape = self.tab, (-1, *self.shape)
        W0, f0 = y.reshape(shape), fy.reshape(shape)
        mu = self._rates(idx)
        h = step[:, None, None]
        grow = torch.exp(tab.C[:, None, None, None] * (h * mu))  # e^{c_s hμ}, (S, b, m, d)
        decay = grow.reciprocal()
        K = W0.new_empty((tab.stages + 1, *W0.shape))
        K[0] = f0 - mu * W0
        for s in range(1, tab.stages):
            Ws = grow[s] * (W0 + h * torch.tensordot(tab.A[s, :s], K[:s], dims=1))
            K[s] = decay[s] * (self.field(Ws, idx) - mu * Ws)
        full = torch.exp(h * mu)
        W_new = full * (W0 + h * torch.tensordot(tab.B, K[: tab.stages], dims=1))
        f_new, aux = self.velocity(W_new, idx)
        K[-1] = (f_new - mu * W_new) / full
        user = lambda Z: (self.frame[idx] @ Z @ self.basis[idx].mT).flatten(1)  # noqa: E731
        e5 = user(full * torch.tensordot(tab.E, K, dims=1))
        e3 = None if tab.E3 is None else user(full * torch.tensordot(tab.E3, K, dims=1))
        scale = atol + torch.maximum(user(W0).abs(), user(W_new).abs()) * rtol
        err = scaled_error(e5, e3, step, scale)
        self._pending = (idx, aux)
        return W_new.reshape(y.shape), f_new.reshape(y.shape), err

    def commit(self, acc, y, fy):
        """Move the accepted runs to the eigenbasis of their new predictor: Ŵ ← Qᵀ Ŵ, P ← P Q."""
        idx, aux = self._pending
        rows = torch.searchsorted(idx, acc)
        aux = tuple(a[rows] for a in aux) if isinstance(aux, tuple) else aux[rows]
        p, Q = self._spectrum(aux)
        self.p[acc] = p
        self.frame[acc] = self.frame[acc] @ Q
        shape = (-1, *self.shape)
        return (Q.mT @ y.reshape(shape)).reshape(y.shape), (Q.mT @ fy.reshape(shape)).reshape(fy.shape)

    def to_user(self, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (self.frame[idx] @ y.reshape(-1, *self.shape) @ self.basis[idx].mT).reshape(y.shape)

    def speed(self, fy: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.to_user(fy, idx).abs().amax(-1)


def integrate_flow_exponential(
    problem: Problem,
    state: State,
    models: DataModel | list[DataModel],
    t_max: float = 5000.0,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    conv_tol: float = 1e-8,
    n_records: int = 200,
    method: str = "DOP853",
) -> Trajectory:
    """The flow of every run of ``problem`` by Lawson steps (module docstring); ``models``: one commuting
    data model for all runs or one per run. Same records, stop test and result as
    :func:`linssl.linear.batched_ode.integrate_flow_batched`."""
    models = [models] if isinstance(models, DataModel) else list(models)
    reason = applies(problem, models)
    if reason is not None:
        raise LinsslError(f"the exponential integrator does not apply: {reason}")
    stack = lambda attr: torch.stack([getattr(m, attr) for m in models])  # noqa: E731
    B = problem.batch
    if not (torch.allclose(stack("data_cov").expand(B, -1, -1), problem.data_cov)
            and torch.allclose(stack("view_cov").expand(B, -1, -1), problem.view_cov)):
        raise LinsslError("the data models given are not those of the problem")
    view_var = stack("data_var") + stack("aug_var")
    stepper = LawsonStep(problem, stack("basis"), stack("data_var"), view_var, state.W.shape[-2], method)
    traj = integrate_flow_batched(problem, state, t_max, rtol, atol, conv_tol, n_records, method, stepper=stepper)
    traj.info["integrator"] = f"exponential-{method}"
    return traj

