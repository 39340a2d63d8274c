"""Exponential Runge–Kutta for the commuting linear flow: the stiff, linear part is integrated exactly.

Why: after the transient, the flow's Jacobian has eigenvalues down to about −(p_max² v_max) ≈ −10
(a kept feature's predictor eigenvalue against a high-variance direction) while the solution moves
at rates of order η, and a kept feature relaxes at 2αp₊√Δ ≈ 0.7 while the slowest one, near its
threshold, needs thousands of time units. An explicit method is held to h ≈ 0.6 by stability alone.

For a commuting model, in its basis U (X = U diag(x) Uᵀ, Σ₁ = X + X' = U diag(v) Uᵀ) and in the
eigenbasis P of the predictor in force at the start of a step (W_p = P diag(p) Pᵀ), Ŵ = Pᵀ W U Π
(Π a column permutation putting each row's own direction on the diagonal). The step takes the linear
part L of the flow there — ``linear="jacobian"`` (default): the exact diagonal of the Jacobian and the
2×2 blocks coupling (i, k) with (k, i), made diagonal by ``linssl.linear.etd.PairBasis`` (coordinates
z = T⁻¹Ŵ, rates Λ); ``linear="frozen"``: μ_ij = −p_i² v_j + τ p_i x_j − η, the flow with the predictor
frozen — and integrates u' = f(u) as u' = f_n + Λ(u − u_n) + R(u), R(u_n) = 0, exactly in its linear
part (exponential time differencing): with φ(c) = (e^{chΛ} − 1)/Λ,

    z_s     = z_n + φ(c_s) f_n + e^{c_s hΛ} ⊙ h Σ_j a_sj K_j,
    K_j     = e^{−c_j hΛ} ⊙ (T⁻¹f(T z_j) − f_n − Λ ⊙ (z_j − z_n))          (K_0 = 0)
    z_{n+1} = z_n + φ(1) f_n + e^{hΛ} ⊙ h Σ_j b_j K_j,          error  e^{hΛ} ⊙ h Σ_j E_j K_j

with an explicit pair's tableau (scipy's DOP853 or RK45) on what L misses, K. The scheme is exact
for any linear f with constant forcing, keeps every fixed point, and a better L only lengthens the
steps: late in a run L is nearly the whole Jacobian (``linssl.linear.etd``), so steps grow until the
exponentials' range (``EXP_LIMIT``) or the accuracy of the slow drift bounds them.

The error is measured in the caller's coordinates W = P T z Πᵀ Uᵀ with scipy's norm and controller
(``linssl.linear.batched_ode``), so ``rtol``/``atol`` mean what they mean for ``solve_ivp``. The field is
left-orthogonally equivariant (f(QŴ) = Q f(Ŵ)), so stages are evaluated in the frame itself; after
an accepted step the frame moves to the eigenbasis of W_p at the new state (the eigendecomposition the
field made anyway for α ≠ 1, one eigh per step for DirectCopy), the columns are re-matched and L is
recomputed (one eigh-free pass: two m×m×d products).

Applies to direct predictors with a stop-gradient target on commuting models, except DirectCopy with
the spectral norm (its power iteration is not exactly equivariant): :func:`applies`. Normalised rules
use the frozen rates (their Jacobian goes through the normalisation too).
"""

from __future__ import annotations

import math

import torch

from linssl.errors import LinsslError
from linssl.linear.batched_ode import RungeKuttaStep, integrate_flow_batched, scaled_error
from linssl.linear.data import DataModel
from linssl.linear.dynamics import DIVERGENCE_LIMIT, FlowOptions, Problem, State, Trajectory
from linssl.linear.etd import PairBasis, dominant_permutation, eigh, jacobian_parts
from linssl.predictors import direct_set_spectrum

#: e^{h|Λ|} must stay finite: steps are capped at EXP_LIMIT / max|Λ|.
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


LINEAR_PARTS = ("jacobian", "frozen")
#: the local error of entry k is held to atol + rtol·|W_k| ("entry", scipy's) or atol + rtol·max_k|Ŵ_k|
#: ("max", Ŵ = W in the step's frame, where it is nearly a permuted diagonal: small entries — a
#: collapsing direction, the off-diagonal of an aligning W — to absolute accuracy; where they end is
#: decided by the stop test, and a single run takes ~1.7× fewer steps)
ERROR_SCALES = ("entry", "max")


class ExponentialStep(RungeKuttaStep):
    """One exponential step per run for ``solve_batched`` (module docstring). User coordinates: W flattened.
    One instance serves one integration (it holds per-run frames and evaluation counts).

    Per run it keeps the frame P (accumulated rotations, (B, m, m)), the predictor eigenvalues p in that
    frame, the column order Π of the model basis (``basis``, ``x``, ``v`` are stored permuted) and, for the
    step to come, the linear part: ``pairs`` (a ``PairBasis``; identity coordinates for ``frozen``).
    Internal coordinates between steps are Ŵ = Pᵀ W U Π.
    """

    def __init__(self, problem: Problem, basis: torch.Tensor, data_var: torch.Tensor, view_var: torch.Tensor,
                 out_dim: int, method: str = "DOP853", linear: str = "jacobian", error_scale: str = "entry") -> None:
        super().__init__(None, method, basis.dtype)
        if linear not in LINEAR_PARTS:
            raise LinsslError(f"linear part must be one of {', '.join(LINEAR_PARTS)}, got {linear!r}")
        if error_scale not in ERROR_SCALES:
            raise LinsslError(f"error scale must be one of {', '.join(ERROR_SCALES)}, got {error_scale!r}")
        self.error_scale = error_scale
        B, d = problem.batch, basis.shape[-1]
        self.rule, self.tau = problem.config.rule, problem.config.target_scale
        self.jacobian = linear == "jacobian" and self.rule.norm == "none"
        self.shape = (out_dim, d)
        self.basis = basis.expand(B, d, d).clone()
        self.x = data_var.expand(B, d).unsqueeze(-2).clone()  # (B, 1, d): columns of Ŵ are model directions
        self.v = view_var.expand(B, d).unsqueeze(-2).clone()
        self.wd = problem.wd.reshape(B, 1, 1)
        self.frame: torch.Tensor  # (B, m, m) and (B, m): set by ``start`` from the first predictor
        self.p: torch.Tensor
        self.pairs: PairBasis  # per run, set by ``_prepare``
        self._pending: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | torch.Tensor] | None = None

    @property
    def corr_var(self) -> torch.Tensor:
        return self.v if self.rule.f_source == "aug" else self.x

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
            p, Q = direct_set_spectrum(F, rule.alpha, rule.norm, rule.eps, eigh=eigh)
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
        return aux if isinstance(aux, tuple) else eigh(aux)

    def _prepare(self, W: torch.Tensor, f: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For runs ``idx`` at a new frame: re-match the columns (jacobian) and set the linear part."""
        m, d = self.shape
        matched = None
        if self.jacobian:
            perm, matched = dominant_permutation(W, self.corr_var[idx])
            cols = perm.unsqueeze(-2)
            W, f = torch.gather(W, -1, cols.expand_as(W)), torch.gather(f, -1, cols.expand_as(f))
            self.basis[idx] = torch.gather(self.basis[idx], -1, cols.expand(-1, d, -1))
            self.x[idx] = torch.gather(self.x[idx], -1, cols)
            self.v[idx] = torch.gather(self.v[idx], -1, cols)
            lam, B = jacobian_parts(W, self.p[idx], self.corr_var[idx], self.v[idx], self.x[idx], self.tau,
                                    self.wd[idx], self.rule.alpha)
        else:
            p = self.p[idx].unsqueeze(-1)
            lam = -(p * p) * self.v[idx] + self.tau * p * self.x[idx] - self.wd[idx]
            B = W.new_zeros((*W.shape[:-1], m))
        pairs = PairBasis(lam, B, matched)
        if idx.numel() == self.frame.shape[0]:
            self.pairs = pairs
        else:  # write the accepted runs' rows into the per-run arrays
            for name in ("to_p", "to_q", "from_p", "from_q", "pair", "lower", "rates"):
                getattr(self.pairs, name)[idx] = getattr(pairs, name)
        return W, f

    # -- the RungeKuttaStep interface ------------------------------------------------------------
    def start(self, y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(y0.shape[0])
        W = y0.reshape(-1, *self.shape) @ self.basis
        f, aux = self.velocity(W, idx)
        self.p, Q = self._spectrum(aux)
        self.frame = Q.clone()
        W, f = self._prepare(Q.mT @ W, Q.mT @ f, idx)
        return W.reshape(y0.shape), f.reshape(y0.shape)

    def max_step(self, idx: torch.Tensor) -> torch.Tensor:
        return EXP_LIMIT / self.pairs.rates[idx].abs().amax((-2, -1)).clamp_min(1e-300)

    def attempt(self, y, fy, step, idx, rtol, atol):
        tab, shape = self.tab, (-1, *self.shape)
        pairs = _Rows(self.pairs, idx)
        z0, f0 = pairs.to_pair(y.reshape(shape)), pairs.to_pair(fy.reshape(shape))
        lam = pairs.rates
        h = step[:, None, None]
        safe = torch.where(lam == 0, torch.ones_like(lam), lam)

        def phi(c: float) -> torch.Tensor:  # (e^{chΛ} − 1)/Λ, ch where Λ = 0
            return torch.where(lam == 0, c * h, torch.expm1(c * h * lam) / safe)

        def remainder(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
            W = pairs.from_pair(z)
            f, aux = self.velocity(W, idx)
            return W, pairs.to_pair(f) - f0 - lam * (z - z0), (f, aux)

        K = z0.new_zeros((tab.stages + 1, *z0.shape))  # K_0 = R(z_n) = 0
        for s in range(1, tab.stages):
            c = float(tab.C[s])
            zs = z0 + phi(c) * f0 + torch.exp(c * h * lam) * (h * torch.tensordot(tab.A[s, : s], K[:s], dims=1))
            K[s] = torch.exp(-c * h * lam) * remainder(zs)[1]
        full = torch.exp(h * lam)
        z_new = z0 + phi(1.0) * f0 + full * (h * torch.tensordot(tab.B, K[: tab.stages], dims=1))
        W_new, R_new, (f_new, aux) = remainder(z_new)
        K[-1] = R_new / full
        if self.error_scale == "entry":  # scipy's norm, entry by entry in the caller's coordinates
            user = lambda Z: (self.frame[idx] @ pairs.from_pair(Z) @ self.basis[idx].mT).flatten(1)  # noqa: E731
            size = torch.maximum(user(z0).abs(), user(z_new).abs())
        else:  # one scale per run: the RMS of the error is the same in the frame (P, U orthogonal) — no products
            user = lambda Z: pairs.from_pair(Z).flatten(1)  # noqa: E731
            size = torch.maximum(y.abs().amax(-1), W_new.flatten(1).abs().amax(-1)).unsqueeze(-1)
        e5 = user(full * torch.tensordot(tab.E, K, dims=1))
        e3 = None if tab.E3 is None else user(full * torch.tensordot(tab.E3, K, dims=1))
        err = scaled_error(e5, e3, step, atol + size * rtol)
        self._pending = (idx, aux)
        return W_new.reshape(y.shape), f_new.reshape(y.shape), err

    def commit(self, acc, y, fy):
        """Move the accepted runs to the eigenbasis of their new predictor (Ŵ ← Qᵀ Ŵ, P ← P Q), then
        re-match their columns and set their linear part for the next step."""
        if acc.numel() == 0:
            return y, fy
        idx, aux = self._pending
        rows = torch.searchsorted(idx, acc)
        aux = tuple(a[rows] for a in aux) if isinstance(aux, tuple) else aux[rows]
        p, Q = self._spectrum(aux)
        self.p[acc] = p
        self.frame[acc] = self.frame[acc] @ Q
        shape = (-1, *self.shape)
        W, f = self._prepare(Q.mT @ y.reshape(shape), Q.mT @ fy.reshape(shape), acc)
        return W.reshape(y.shape), f.reshape(fy.shape)

    def to_user(self, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (self.frame[idx] @ y.reshape(-1, *self.shape) @ self.basis[idx].mT).reshape(y.shape)

    def speed(self, fy: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.to_user(fy, idx).abs().amax(-1)


#: the former name (Lawson steps, ``linear="frozen"`` in integrating-factor form)
LawsonStep = ExponentialStep


class _Rows:
    """The rows ``idx`` of a per-run ``PairBasis``, with the same methods."""

    def __init__(self, pairs: PairBasis, idx: torch.Tensor) -> None:
        self.__dict__.update({k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in vars(pairs).items()})

    _map = staticmethod(PairBasis._map)
    to_pair = PairBasis.to_pair
    from_pair = PairBasis.from_pair


def integrate_flow_exponential(
    problem: Problem,
    state: State,
    models: DataModel | list[DataModel],
    options: FlowOptions | None = None,
    *,
    linear: str = "jacobian",
    error_scale: str = "entry",
    **keywords,
) -> Trajectory:
    """The flow of every run of ``problem`` by exponential steps (module docstring); ``models``: one
    commuting data model for all runs or one per run; ``linear``: LINEAR_PARTS, ``error_scale``:
    ERROR_SCALES. Same records, stop test and result as
    :func:`linssl.linear.batched_ode.integrate_flow_batched`, to which it passes ``options`` and the other
    ``keywords`` (``FlowOptions`` fields, ``coarse_rtol``/``coarse_until``, ``land_on_records``, ``progress``)."""
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
    flow_fields = {k: keywords.pop(k) for k in list(keywords) if k in FlowOptions.__dataclass_fields__}
    opts = FlowOptions.of(options, **flow_fields)
    method = opts.method
    stepper = ExponentialStep(problem, stack("basis"), stack("data_var"), view_var, state.W.shape[-2], method, linear,
                              error_scale)
    traj = integrate_flow_batched(problem, state, opts, stepper=stepper, **keywords)
    traj.info["integrator"] = f"exponential-{method}"
    return traj
