"""Downstream sample complexity (docs/theory.md §5): a linear task on the raw input x versus on the learned Wx.

Data: the commuting model with unit data variance (Σ = E[xxᵀ] = I), r "kept" features whose
augmentation variance lies well below the weight-decay threshold σ²* = 1/(4η) − 1 and d − r
"discarded" ones well above it. Task: y = β*ᵀx + ν, ν ~ N(0, σ_ν²), ‖β*‖_Σ = 1 with a share
``outside`` of β*'s squared norm on a discarded direction (0: β* lies in the kept subspace).

A representation is a d×p matrix M, features z = Mᵀx (raw: M = I; ideal: M = U_K, the kept basis;
simulated: M = V_k diag(s_k) from the SVD W = U diag(s) Vᵀ of a simulator run, i.e. z = U_kᵀWx,
the non-zero part of Wx in its own principal axes). An estimate γ̂ acts on x as b̂ = Mγ̂.

- Excess risk (regression): (b̂ − β*)ᵀ Σ (b̂ − β*) — exact for the Gaussian design, no test sample.
- Closed form, least squares on p Gaussian features: bias + (σ_ν² + bias) p / (n − p − 1), where
  bias = rᵀΣr for the part r = β* − Mγ* of β* the representation cannot express (γ* its best
  population fit). rᵀx is independent of z, so it acts as extra noise; bias = 0 for raw x.
- Ridge: penalty nλ‖γ‖² chosen per training set by generalised cross-validation on that set.
- Classification: labels sign(β*ᵀx + ν), L2-penalised logistic regression (Newton); reported as
  excess 0-1 error arccos(ρ̂)/π − arccos(ρ*)/π with ρ̂ = corr(b̂ᵀx, β*ᵀx + ν) and ρ* that of the
  Bayes classifier sign(β*ᵀx) — exact for the Gaussian design.

Every seed is an independent training set; all seeds of a grid point are drawn at once and solved
as a batch over a leading seed axis (least squares and ridge from the sufficient statistics ZᵀZ,
Zᵀy by batched Cholesky / eigh; logistic regression by batched Newton).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from linssl.errors import LinsslError, check_seed
from linssl.linear.data import DTYPE, DataModel, commuting_model
from linssl.linear.regression import (
    LOGISTIC_L2,
    Moments,
    bayes_error,
    classification_error,
    excess_risk,
    logistic_fit,
    ols_fit,
    ridge_gcv_fit,
)
from linssl.runtime import one_thread
from linssl.theory import ols_excess_risk, ols_samples_for_risk, threshold_aug_var

REPRESENTATIONS = ("ideal", "simulated")
INTERVAL = "95% CI of the mean"
SPREAD = "5th-95th percentile over seeds"
CLASSIFICATION_METRIC = "excess 0-1 error: arccos(corr)/pi minus the Bayes error, exact for Gaussian x"
#: z of the two-sided 95% interval of the mean: mean ± 1.96 sd / sqrt(seeds)
Z95 = 1.959963984540054
#: a direction of W counts as kept when its singular value exceeds this fraction of the largest
#: (kept gains are O(0.1–1), discarded ones decay to ~1e-6 at the flow's convergence test)
RANK_CUTOFF = 1e-3
#: smallest label noise σ_ν and weight decay η a sample-complexity experiment takes (see the config's checks)
MIN_NOISE = 1e-4
MIN_WD = 1e-6
#: largest seeds × n × dim drawn at once (float64): one grid point's training sets must fit in memory
MAX_SAMPLE_FLOATS = 400_000_000


@dataclass(frozen=True)
class SampleComplexityConfig:
    """One sample-complexity experiment.

    dim d, rank r (kept features), noise σ_ν, n_grid (training sizes; ``None``: 20 log-spaced
    sizes from 1.5 d to 30 d), seeds (independent training sets per size), wd η of the simulator,
    outside (share of ‖β*‖² on a discarded direction), target_risk (``None``: 0.04 σ_ν²),
    representation ``simulated`` (W from a DirectPred gradient-flow run) or ``ideal`` (U_K).
    """

    dim: int = 50
    rank: int = 5
    noise: float = 0.5
    n_grid: tuple[int, ...] | None = None
    seeds: int = 200
    wd: float = 0.05
    outside: float = 0.0
    target_risk: float | None = None
    representation: str = "simulated"
    ridge: bool = True
    classification: bool = False
    seed: int = 0
    sim_t_max: float = 5000.0
    sim_conv_tol: float = 1e-8

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise LinsslError(f"dim must be >= 1, got {self.dim}")
        if not 1 <= self.rank <= self.dim:
            raise LinsslError(f"rank must be between 1 and dim = {self.dim}, got {self.rank}")
        if self.seeds < 2:
            raise LinsslError(f"seeds must be >= 2 for an interval, got {self.seeds}")
        # risks are in units of σ² against β*ᵀΣβ* = 1: below σ = 1e-4 the simulated representation's residual
        # bias (~1e-19) and float64 rounding of the fits would no longer be negligible against σ² p / n
        if not (math.isfinite(self.noise) and MIN_NOISE <= self.noise <= 1e150):
            raise LinsslError(f"noise must be a number in [{MIN_NOISE:g}, 1e150], got {self.noise}")
        check_seed("--seed", self.seed)
        # below η = 1e-6 the task's augmentation variances (~1/η) make the flow's eigendecompositions fail
        if not (math.isfinite(self.wd) and MIN_WD <= self.wd < 0.25):
            raise LinsslError(f"wd must be in [{MIN_WD:g}, 0.25) so that some feature is kept and the flow stays "
                              f"well conditioned, got {self.wd}")
        if not 0 <= self.outside < 1:
            raise LinsslError(f"outside must be in [0, 1), got {self.outside}")
        if self.outside > 0 and self.rank == self.dim:
            raise LinsslError("outside > 0 needs a discarded direction: choose rank < dim")
        if self.target_risk is not None and not (math.isfinite(self.target_risk)
                                                 and self.target_risk >= 1e-12 * self.noise**2):
            raise LinsslError(f"target risk must be at least 1e-12 × noise² = {1e-12 * self.noise**2:.3g} "
                              f"(n beyond 10¹² samples), got {self.target_risk}")
        if self.representation not in REPRESENTATIONS:
            choices = ", ".join(REPRESENTATIONS)
            raise LinsslError(f"representation must be one of {choices}, got {self.representation!r}")
        grid = self.sizes
        if not grid:
            raise LinsslError("the n grid is empty")
        if self.seeds * grid[-1] * self.dim > MAX_SAMPLE_FLOATS:
            raise LinsslError(
                f"seeds × n × dim = {self.seeds} × {grid[-1]} × {self.dim} exceeds {MAX_SAMPLE_FLOATS:.0e} numbers "
                f"({8 * MAX_SAMPLE_FLOATS / 2**30:.0f} GiB at once); lower --seeds or the largest n"
            )
        if grid[0] <= self.dim + 1:
            raise LinsslError(
                f"least squares on the raw input needs n > dim + 1 = {self.dim + 1}, got n = {grid[0]}; "
                "drop the small sizes from --n or lower --dim"
            )

    @property
    def sizes(self) -> tuple[int, ...]:
        """The sorted, de-duplicated training sizes."""
        if self.n_grid is None:
            return default_n_grid(self.dim)
        return tuple(sorted({int(n) for n in self.n_grid}))

    @property
    def target(self) -> float:
        """Target excess risk: the given one or 0.04 σ_ν² (4% of the noise variance)."""
        return 0.04 * self.noise**2 if self.target_risk is None else float(self.target_risk)


def default_n_grid(dim: int, points: int = 20) -> tuple[int, ...]:
    """``points`` log-spaced integer sizes from ⌈1.5 d⌉ + 1 to 30 d (all > d + 1)."""
    lo = math.ceil(1.5 * dim) + 1
    return tuple(sorted({int(round(n)) for n in np.geomspace(lo, max(30 * dim, lo + 1), points)}))


def task_aug_var(dim: int, rank: int, wd: float) -> np.ndarray:
    """Augmentation variances: r kept ones linspace(0.1, 0.5) σ²*, d − r discarded ones linspace(2, 3) σ²*.

    σ²* = 1/(4η) − 1 is the threshold at unit data variance; the margins keep the flow fast (no
    feature sits near the threshold, where convergence slows down).
    """
    threshold = float(threshold_aug_var(wd))
    return np.concatenate([np.linspace(0.1, 0.5, rank), np.linspace(2.0, 3.0, dim - rank)]) * threshold


def task_model(dim: int, rank: int, wd: float, seed: int = 0) -> DataModel:
    """The commuting model of :func:`task_aug_var` (unit data variance, seeded random basis)."""
    return commuting_model(1.0, task_aug_var(dim, rank, wd), seed=seed)


def true_coefficients(model: DataModel, rank: int, outside: float, seed: int = 0) -> torch.Tensor:
    """β* = sqrt(1 − f) U_K g + sqrt(f) u_{r+1}: g a seeded random unit vector, f = ``outside``.

    The basis is Σ-orthonormal (unit data variance), so β*ᵀΣβ* = 1 and the discarded direction
    carries the share f of it.
    """
    gen = torch.Generator().manual_seed((int(seed) + 7919) % 2**63)  # derived seeds stay in range
    g = torch.randn(rank, generator=gen, dtype=DTYPE)
    beta = math.sqrt(1 - outside) * (model.basis[:, :rank] @ (g / g.norm()))
    if outside > 0:
        beta = beta + math.sqrt(outside) * model.basis[:, rank]
    return beta


@dataclass(frozen=True)
class Representation:
    """Features z = Mᵀx with M = ``matrix`` (d × p); ``info`` says where M came from."""

    name: str
    matrix: torch.Tensor
    info: dict = field(default_factory=dict)

    @property
    def features(self) -> int:
        return self.matrix.shape[1]


def raw_representation(dim: int) -> Representation:
    """z = x (M = I)."""
    return Representation("raw", torch.eye(dim, dtype=DTYPE), {"source": "raw input"})


def ideal_representation(model: DataModel, rank: int) -> Representation:
    """z = U_Kᵀx, the coordinates of the kept subspace (the projection the theory predicts)."""
    return Representation("learned", model.basis[:, :rank].clone(), {"source": "ideal projection U_K", "rank": rank})


def simulated_representation(
    model: DataModel,
    wd: float,
    seed: int = 0,
    cutoff: float = RANK_CUTOFF,
    t_max: float = 5000.0,
    conv_tol: float = 1e-8,
) -> Representation:
    """W from DirectPred gradient flow (stop-gradient target, W m×d with m = d, init scale 1).

    W = U diag(s) Vᵀ; the kept directions are those with s_k > cutoff · s_max, and the features
    z = U_kᵀWx = diag(s_k) V_kᵀx (M = V_k diag(s_k)): Wx rotated to its principal axes, gains kept.
    """
    from linssl.linear.dynamics import DynamicsConfig, Problem, initial_state, integrate_flow
    from linssl.predictors import make_rule

    start = time.perf_counter()
    problem = Problem.from_models(model, DynamicsConfig(make_rule("directpred"), wd=wd))
    trajectory = integrate_flow(problem, initial_state(problem, model.dim, 1.0, seed), t_max=t_max, conv_tol=conv_tol)
    W = trajectory.final.W[0]
    _, s, Vh = torch.linalg.svd(W)
    if not s[0] > 0:
        raise LinsslError("the simulated network collapsed (W = 0); lower --wd")
    keep = s > cutoff * s[0]
    matrix = Vh[keep].mT * s[keep]
    info = {
        "source": "simulated: DirectPred gradient flow",
        "rank": int(keep.sum()),
        "rank_cutoff": cutoff,
        "singular_values": s.tolist(),
        "converged": bool(trajectory.converged),
        "t_final": float(trajectory.info["t_final"]),
        "seconds": time.perf_counter() - start,
    }
    return Representation("learned", matrix, info)


def subspace_sine(matrix: torch.Tensor, basis: torch.Tensor) -> float:
    """sin of the largest principal angle between span(matrix) and span(basis) (equal dimension)."""
    Q, _ = torch.linalg.qr(matrix)
    B, _ = torch.linalg.qr(basis)
    residual = Q - B @ (B.mT @ Q)
    return float(torch.linalg.matrix_norm(residual, ord=2))


def representation_bias(matrix: torch.Tensor, cov: torch.Tensor, beta: torch.Tensor) -> float:
    """rᵀΣr with r = β* − Mγ*, γ* = (MᵀΣM)⁻¹MᵀΣβ* (the part of β* the features cannot express)."""
    gamma = torch.linalg.solve(matrix.mT @ cov @ matrix, matrix.mT @ cov @ beta)
    r = beta - matrix @ gamma
    return float(r @ cov @ r)


def predicted_excess_risk(noise_var: float, features: int, n, bias: float = 0.0):
    """bias + (σ_ν² + bias) p / (n − p − 1): least squares on p Gaussian features (needs n > p + 1)."""
    return bias + np.asarray(ols_excess_risk(noise_var + bias, features, n))


def predicted_samples_for_risk(noise_var: float, features: int, target: float, bias: float = 0.0) -> float | None:
    """Smallest real n with bias + (σ_ν² + bias) p/(n − p − 1) ≤ target; ``None`` if target ≤ bias."""
    if target <= bias:
        return None
    return float(ols_samples_for_risk(noise_var + bias, features, target - bias))


# --- curves ----------------------------------------------------------------------------------------


@dataclass
class Curve:
    """Measured risk versus n for one representation and estimator.

    risk_lo/risk_hi: 95% CI of the mean (mean ± 1.96 sd/√seeds); risk_p05/risk_p95: spread over
    seeds; risk_predicted: the closed form (``None`` where there is none). n_to_target: smallest
    grid n with mean ≤ target (``None`` if never; only an upper bound when it is the first grid
    point); n_to_target_interp: log-log interpolation of the
    mean between the bracketing grid points (``None`` if the target is not reached, or already at
    the first point); n_to_target_predicted: real-valued closed-form n.
    """

    n: list[int]
    risk_mean: list[float]
    risk_lo: list[float]
    risk_hi: list[float]
    risk_p05: list[float]
    risk_p95: list[float]
    risk_predicted: list[float] | None
    n_to_target: int | None
    n_to_target_interp: float | None
    n_to_target_predicted: float | None
    features: int
    bias: float
    extra: dict = field(default_factory=dict)


@dataclass
class SampleComplexityResult:
    """Everything ``linssl sample-complexity --json`` writes (``to_json``)."""

    config: SampleComplexityConfig
    target_risk: float
    curves: dict[str, Curve]
    ridge: dict[str, Curve] | None
    classification: dict[str, Curve] | None
    bayes_error: float
    representation: dict
    n_to_target_ratio: float | None
    n_to_target_ratio_interp: float | None
    n_to_target_ratio_predicted: float | None
    seconds: float
    interval: str = INTERVAL
    spread: str = SPREAD
    classification_metric: str = CLASSIFICATION_METRIC

    @property
    def dim_over_rank(self) -> float:
        return self.config.dim / self.config.rank

    def to_json(self) -> dict:
        import dataclasses

        out = dataclasses.asdict(self)
        out["config"]["n_grid"] = list(self.config.sizes)
        out["config"]["target_risk"] = self.target_risk
        out["dim_over_rank"] = self.dim_over_rank
        return out


def summarise(values: torch.Tensor) -> tuple[float, float, float, float, float]:
    """(mean, mean − 1.96 se, mean + 1.96 se, 5th percentile, 95th percentile) over the seed axis."""
    v = values.double()
    mean, se = float(v.mean()), float(v.std(correction=1)) / math.sqrt(v.numel())
    p05, p95 = (float(q) for q in torch.quantile(v, torch.tensor([0.05, 0.95], dtype=v.dtype)))
    return mean, mean - Z95 * se, mean + Z95 * se, p05, p95


def samples_to_target(n: list[int], mean: list[float], target: float) -> tuple[int | None, float | None]:
    """(smallest grid n with mean ≤ target, log-log interpolated crossing); ``None`` where undefined."""
    below = [k for k, m in enumerate(mean) if m <= target]
    if not below:
        return None, None
    k = below[0]
    if k == 0:
        return n[0], None
    x0, x1, y0, y1 = math.log(n[k - 1]), math.log(n[k]), math.log(mean[k - 1]), math.log(mean[k])
    return n[k], math.exp(x0 + (math.log(target) - y0) * (x1 - x0) / (y1 - y0))


def _curve(n_grid, risks, target, predicted, n_pred, features, bias, extra=None) -> Curve:
    stats = [summarise(r) for r in risks]
    mean = [s[0] for s in stats]
    n_grid = list(n_grid)
    on_grid, interp = samples_to_target(n_grid, mean, target) if target is not None else (None, None)
    return Curve(n_grid, mean, [s[1] for s in stats], [s[2] for s in stats], [s[3] for s in stats],
                 [s[4] for s in stats], predicted, on_grid, interp, n_pred, features, bias, extra or {})


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def sample_complexity_curves(config: SampleComplexityConfig) -> SampleComplexityResult:
    """Risk versus n for the raw input and the learned representation, all seeds batched per n.

    Runs torch on one thread (:func:`one_thread`): the work is many small batched problems, and
    on a shared machine thread contention costs far more than threads gain.
    """
    with one_thread():
        return _curves(config)


def _curves(config: SampleComplexityConfig) -> SampleComplexityResult:
    start = time.perf_counter()
    model = task_model(config.dim, config.rank, config.wd, config.seed)
    cov, noise_var, target = model.data_cov, config.noise**2, config.target
    beta = true_coefficients(model, config.rank, config.outside, config.seed)
    if config.representation == "ideal":
        learned = ideal_representation(model, config.rank)
    else:
        learned = simulated_representation(model, config.wd, config.seed, t_max=config.sim_t_max,
                                           conv_tol=config.sim_conv_tol)
    learned.info["subspace_sine_to_kept"] = (
        subspace_sine(learned.matrix, model.basis[:, : config.rank]) if learned.features == config.rank else None
    )
    reps = {"raw": raw_representation(config.dim), "learned": learned}
    sizes = config.sizes
    for rep in reps.values():
        if sizes[0] <= rep.features + 1:
            raise LinsslError(f"least squares on {rep.features} {rep.name} features needs n > {rep.features + 1}")
    bias = {name: (representation_bias(rep.matrix, cov, beta) if name != "raw" else 0.0) for name, rep in reps.items()}

    ols = {name: [] for name in reps}
    ridge = {name: [] for name in reps}
    penalty = {name: [] for name in reps}
    cls = {name: [] for name in reps}
    newton_grad = 0.0
    identity = torch.allclose(cov, torch.eye(config.dim, dtype=DTYPE), atol=1e-12)
    root = None if identity else torch.linalg.cholesky(cov).mT  # rows of g @ root have covariance Σ
    for n in sizes:
        gen = torch.Generator().manual_seed((config.seed * 1_000_003 + n) % 2**63)
        x = torch.randn(config.seeds, n, config.dim, generator=gen, dtype=DTYPE)
        x = x if root is None else x @ root
        y = x @ beta + config.noise * torch.randn(config.seeds, n, generator=gen, dtype=DTYPE)
        raw_moments = Moments.from_samples(x, y)
        for name, rep in reps.items():
            moments = raw_moments if name == "raw" else raw_moments.project(rep.matrix)
            ols[name].append(excess_risk(ols_fit(moments) @ rep.matrix.mT, beta, cov))
            if config.ridge:
                coef, lam = ridge_gcv_fit(moments)
                ridge[name].append(excess_risk(coef @ rep.matrix.mT, beta, cov))
                penalty[name].append(float(lam.median()))
            if config.classification:
                Z = x if name == "raw" else x @ rep.matrix
                coef, grad = logistic_fit(Z, torch.where(y > 0, 1.0, -1.0).to(DTYPE))
                newton_grad = max(newton_grad, grad)
                cls[name].append(classification_error(coef @ rep.matrix.mT, beta, cov, noise_var))

    error_bayes = bayes_error(beta, cov, noise_var)
    curves, ridge_curves, cls_curves = {}, {}, {}
    for name, rep in reps.items():
        p, b = rep.features, bias[name]
        predicted = [float(v) for v in predicted_excess_risk(noise_var, p, list(sizes), b)]
        n_pred = predicted_samples_for_risk(noise_var, p, target, b)
        curves[name] = _curve(sizes, ols[name], target, predicted, n_pred, p, b)
        if config.ridge:
            ridge_curves[name] = _curve(sizes, ridge[name], target, None, None, p, b, {"penalty_median": penalty[name]})
        if config.classification:
            excess = [e - error_bayes for e in cls[name]]
            cls_curves[name] = _curve(sizes, excess, None, None, None, p, b,
                                      {"logistic_l2": LOGISTIC_L2, "newton_max_grad": newton_grad})
    raw, lrn = curves["raw"], curves["learned"]
    return SampleComplexityResult(
        config=config,
        target_risk=target,
        curves=curves,
        ridge=ridge_curves or None,
        classification=cls_curves or None,
        bayes_error=error_bayes,
        representation=learned.info,
        n_to_target_ratio=_ratio(raw.n_to_target, lrn.n_to_target),
        n_to_target_ratio_interp=_ratio(raw.n_to_target_interp, lrn.n_to_target_interp),
        n_to_target_ratio_predicted=_ratio(raw.n_to_target_predicted, lrn.n_to_target_predicted),
        seconds=time.perf_counter() - start,
    )
