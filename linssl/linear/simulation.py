"""One simulation run of the linear siamese network, compared with the closed forms.

``SimConfig`` holds every parameter (the ``linssl simulate`` flags, one to one); ``run_simulation``
integrates the dynamics (flow, GD or SGD) from the seeded initial W (a random rotation by default,
``init="gaussian"`` for a Gaussian one) and returns a ``SimulationResult``: per feature the predicted and
simulated kept/discarded decision and squared gain, the threshold, the alignment and a verdict.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from linssl import theory
from linssl.errors import DivergenceError, LinsslError, check_number, check_seed
from linssl.linear import exponential, hints
from linssl.linear.data import DEFAULT_AUG_VAR, DataModel, commuting_model, general_model
from linssl.linear.dynamics import (
    DynamicsConfig,
    FlowOptions,
    Problem,
    Trajectory,
    initial_state,
    integrate_flow,
    integrate_gd,
    stable_lr,
)
from linssl.linear.records import RunRecord, record
from linssl.linear.scales import COARSE_RTOL, Scales, Settings, settings
from linssl.linear.sgd import SGDConfig, integrate_sgd
from linssl.predictors import PredictorRule, make_rule
from linssl.runtime import one_thread

MODES = ("flow", "gd", "sgd")
#: Relative gain tolerance of the verdict: flow and GD share the exact fixed points; SGD is noisy.
GAIN_RTOL = {"flow": 1e-3, "gd": 1e-3, "sgd": 0.1}
#: Features within this fraction of their threshold weight decay, |1 − η/η*| = |Δ|/(τλ)² ≤ 0.1 with
#: η* = τ²λ²/(4(λ + σ²)), are not judged (critical slowing down makes their convergence arbitrarily slow).
#: Measured in η, which is defined for every feature; a window in σ² is empty when σ²* < 0 (τ²λ < 4η).
NEAR_THRESHOLD = 0.1

#: largest input dimension d: every step of the flow eigendecomposes a d×d matrix
MAX_DIM = 1024

#: where the exponential steps do not apply (trained predictor, EMA target, spectral DirectCopy, general
#: model), a state of at most this many entries is integrated by LSODA, which turns to BDF with a dense
#: finite-difference Jacobian (this many evaluations, ≤ 8 MB) once the flow is stiff — one strongly
#: discarded direction (σ² ≫ λ) makes it so; larger states keep DOP853, explicit.
STIFF_MAX_STATE = 1024

#: smallest --rtol: scipy's solve_ivp raises anything below 100 × float64 epsilon to it, with a warning
MIN_RTOL = 100 * float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class SimConfig:
    """Every parameter of a simulation run (the CLI flags, one to one)."""

    wd: float = 0.05
    aug_var: tuple[float, ...] = DEFAULT_AUG_VAR
    data_var: tuple[float, ...] = (1.0,)
    out_dim: int | None = None  # m; default d
    predictor: str = "directpred"
    alpha: float | None = None
    f_source: str = "aug"
    norm: str = "none"
    eps: float = 0.0
    target: str = "stopgrad"
    ema: float | None = None  # β of dW_a/dt = β(W − W_a); default λ_max (1 at unit scale), a rate like λ
    target_scale: float = 1.0
    pred_lr: float = 1.0
    pred_wd: float | None = None
    mode: str = "flow"
    # None: the default in the problem's own units (linear/scales.py), so that a problem scaled by c
    # gives the same verdict: horizon 5000/λ_min, init 0.5/√λ_max, conv 1e-8·√λ_max, atol 1e-12/√λ_max
    time: float | None = None  # flow: maximum time (stops earlier on convergence)
    steps: int | None = None  # gd/sgd; default: time 600 (gd) / 300 (sgd) over λ_min, divided by lr
    lr: float | None = None  # gd/sgd; default: stable_lr (≤ 0.01/λ_max, below the initial curvature limit)
    batch: int = 128
    rho: float = 0.9
    freq: int = 1
    init_scale: float | None = None
    init: str = "rotation"
    seed: int = 0
    rotate: bool = True
    conv_tol: float | None = None
    rtol: float = 1e-9
    atol: float | None = None
    data_cov: tuple[tuple[float, ...], ...] | None = None  # general (non-commuting) model
    aug_cov: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise LinsslError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_number("--rtol", self.rtol, low=MIN_RTOL, inclusive=True)
        check_number("--wd", self.wd, inclusive=True)  # η = 0: no weight decay, every feature kept
        positive = {"--target-scale": self.target_scale,
                    "--conv-tol": self.conv_tol, "--init-scale": self.init_scale, "--ema": self.ema,
                    "--pred-lr": self.pred_lr, "--lr": self.lr, "--time": self.time}
        for flag, value in positive.items():
            check_number(flag, value)
        for flag, value in {"--atol": self.atol, "--eps": self.eps, "--pred-wd": self.pred_wd}.items():
            check_number(flag, value, inclusive=True)
        check_seed("--seed", self.seed)
        if self.steps is not None and self.steps < 1:
            raise LinsslError(f"--steps must be >= 1, got {self.steps}")
        if len(self.aug_var) > MAX_DIM or (self.data_cov is not None and len(self.data_cov) > MAX_DIM):
            raise LinsslError(f"the simulator takes d <= {MAX_DIM} (a d×d eigendecomposition per step); "
                              f"got d = {max(len(self.aug_var), len(self.data_cov or ()))}")
        if self.out_dim is not None and self.out_dim < 1:
            raise LinsslError(f"--out-dim must be >= 1, got {self.out_dim}")
        if (self.data_cov is None) != (self.aug_cov is None):
            raise LinsslError("give both --data-cov and --aug-cov, or neither")

    def settings(self, model: DataModel) -> Settings:
        """The flags given, and the defaults in ``model``'s units for the others (``linear.scales``);
        ``kept_tol`` is the gain² above which a feature counts as kept (a converged run's level, or SGD's)."""
        scales = Scales.of(model, self.wd, trainable=self.predictor == "trainable")
        return settings(scales, time=self.time, init_scale=self.init_scale, conv_tol=self.conv_tol,
                        atol=self.atol, ema=self.ema, sgd=self.mode == "sgd")

    def resolved_steps(self, lr: float, run: Settings) -> int:
        """Explicit --steps, else enough steps to reach time 600 (gd; stops on convergence) / 300 (sgd),
        in units of 1/λ_min."""
        if self.steps is not None:
            return self.steps
        horizon = (run.gd_time if self.mode == "gd" else run.sgd_time) / lr
        if not math.isfinite(horizon):
            raise LinsslError(f"lr = {lr:g} is too small to reach time {horizon * lr:g} in finitely many steps; "
                              "raise --lr")
        return math.ceil(horizon)

    def rule(self) -> PredictorRule:
        return make_rule(self.predictor, alpha=self.alpha, norm=self.norm, eps=self.eps, f_source=self.f_source)

    def dynamics(self, run: Settings | None = None) -> DynamicsConfig:
        """The vector field's parameters; ``run`` (``settings``) supplies the default EMA rate."""
        ema = self.ema if self.ema is not None else (run.ema_rate if run is not None else 1.0)
        return DynamicsConfig(self.rule(), self.wd, self.target, ema, self.target_scale, self.pred_lr, self.pred_wd)

    def model(self) -> DataModel:
        if self.data_cov is not None:
            return general_model(self.data_cov, self.aug_cov)
        return commuting_model(self.data_var, self.aug_var, self.seed, self.rotate)


@dataclass
class FeatureResult:
    """One row of the report. For a general (non-commuting) model the rows are the eigendirections of
    the learned WᵀW and the per-feature variances and predictions are ``None`` (no closed form)."""

    data_var: float | None
    aug_var: float | None
    kept_predicted: bool | None
    kept_simulated: bool
    gain_sq_predicted: float | None
    gain_sq_simulated: float
    near_threshold: bool
    threshold_wd: float | None = None  # η* = τ²λ²/(4(λ + σ²)): the feature is kept iff η ≤ η*


@dataclass
class SimulationResult:
    config: SimConfig
    model: DataModel
    trajectory: Trajectory
    record: RunRecord
    features: list[FeatureResult]
    threshold_aug_var: float | None  # σ²*(λ) when every λ is the same and η > 0, else None (see threshold_of)
    alignment_offdiag: float
    projection_error: float
    converged: bool
    max_gain_rel_error: float
    passed: bool
    verdict: str
    settings: Settings | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The ``--json`` document (see the CLI contract)."""
        rec = self.record
        return {
            "config": asdict(self.config),
            "settings": None if self.settings is None else self.settings.to_json(),  # the values the run used
            "threshold_aug_var": self.threshold_aug_var,
            "features": [asdict(f) for f in self.features],
            "alignment_offdiag": None if math.isnan(self.alignment_offdiag) else self.alignment_offdiag,
            "projection_error": None if math.isnan(self.projection_error) else self.projection_error,
            "converged": self.converged,
            "max_gain_rel_error": None if math.isnan(self.max_gain_rel_error) else self.max_gain_rel_error,
            "passed": self.passed,
            "verdict": self.verdict,
            "t_final": self.trajectory.info["t_final"],
            "integrator": self.trajectory.info.get("integrator", self.config.mode),
            "trajectory": {
                "time": rec.times,
                "gain_sq": rec.gains[:, 0, :],
                "F_eigs": rec.F_eigs[:, 0, :],
                "Wp_eigs": rec.Wp_eigs[:, 0, :],
                "alignment": rec.alignment[:, 0],
                "loss": rec.loss[:, 0],
            },
        }


def predicted_gains(config: SimConfig, model: DataModel) -> np.ndarray:
    """Closed-form squared gains per feature (docs/theory.md §4)."""
    return np.asarray(theory.predicted_gain_sq_for_rule(
        config.rule(), model.data_var.numpy(), model.aug_var.numpy(), config.wd, config.target_scale, config.pred_wd,
        config.pred_lr))


def _near_threshold(config: SimConfig, lam: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """|1 − η/η*| ≤ NEAR_THRESHOLD per feature (``theory.relative_discriminant``)."""
    return np.abs(np.asarray(theory.relative_discriminant(lam, s2, config.wd, config.target_scale))) <= NEAR_THRESHOLD


def threshold_of(config: SimConfig, model: DataModel) -> float | None:
    """The one threshold σ²* = τ²λ²/(4η) − λ of a commuting model whose features share λ, for η > 0;
    None when it has no single meaning: no λ (general model), several λ (each feature has its own
    η* instead) or η = 0 (every feature is kept: σ²* = ∞)."""
    if not model.commuting or config.wd == 0:
        return None
    lam = model.data_var.numpy()
    if not np.all(lam == lam[0]):
        return None
    return float(theory.threshold_aug_var(config.wd, float(lam[0]), config.target_scale))


def integrate(config: SimConfig, problem: Problem, model: DataModel, progress: bool = False,
              run: Settings | None = None) -> Trajectory:
    """Run the configured integrator from the seeded initial state (``run``: ``config.settings(model)``).

    The flow takes exponential steps (``linear.exponential``: the stiff linear part exact; RK45's tableau,
    whose nodes increase, so no stage propagates a stiff component backwards; local errors against
    atol + rtol·max|W|; the transient at rtol 1e-6 until max|dW/dt| < 1e-4 in the problem's units, then
    ``rtol``) wherever they apply — direct rules,
    stop-gradient, commuting models — and scipy's ``solve_ivp`` otherwise (LSODA up to
    ``STIFF_MAX_STATE`` entries, DOP853 beyond).

    Under the Frobenius-normalised direct predictor every p_i < 1 whatever the scale of W, so a feature
    with τλp − (λ + σ²)p² > η grows exponentially for ever: a divergence of the flow there is the flow's,
    and is reported as such instead of with a step-size hint (GD and SGD keep their lr hint)."""
    run = config.settings(model) if run is None else run
    try:
        return _integrate(config, problem, model, progress, run)
    except torch.linalg.LinAlgError:
        raise DivergenceError("the run diverged: the predictor's eigendecomposition met non-finite values (a flag "
                              "value beyond what float64 can integrate; try values nearer 1)") from None
    except DivergenceError:
        if config.mode == "flow" and config.rule().kind == "direct" and config.norm == "frobenius":
            raise DivergenceError(
                "the run diverged: ‖W‖ grows without bound under the frobenius-normalised predictor: every p_i < 1, "
                "so a feature with τλp − (λ + σ²)p² > η grows exponentially — the flow itself, not the step size; "
                "use --norm spectral (W shrinks) or none (closed forms), or a larger --wd") from None
        raise


def _integrate(config: SimConfig, problem: Problem, model: DataModel, progress: bool, run: Settings) -> Trajectory:
    state = initial_state(problem, config.out_dim or model.dim, run.init_scale, config.seed, config.init)
    if config.mode == "flow":
        options = FlowOptions(t_max=run.time, rtol=config.rtol, atol=run.atol, conv_tol=run.conv_tol)
        bar = _progress_bar(progress, run.time, "t")
        with bar:
            advance = lambda t: bar.update(t - bar.n)  # noqa: E731
            if exponential.applies(problem, [model]) is None:
                return exponential.integrate_flow_exponential(
                    problem, state, model, FlowOptions.of(options, method="RK45", n_records=100), error_scale="max",
                    coarse_rtol=COARSE_RTOL, coarse_until=run.coarse_until, land_on_records=False,
                    progress=advance)  # 100 log-spaced record times: each costs an eigh
            method = "LSODA" if sum(t.numel() for t in state.tensors()) <= STIFF_MAX_STATE else "DOP853"
            return integrate_flow(problem, state, FlowOptions.of(options, method=method), progress=advance,
                                  invariant=not model.commuting)
    lr = config.lr if config.lr is not None else stable_lr(problem, state, cap=run.lr_cap)
    steps = config.resolved_steps(lr, run)
    bar = _progress_bar(progress, steps, "step")
    with bar:
        if config.mode == "gd":
            return integrate_gd(problem, state, lr, steps, run.conv_tol, progress=lambda k: bar.update(k - bar.n),
                                invariant=not model.commuting)
        sgd = SGDConfig(lr, steps, config.batch, config.rho, config.freq, config.seed, run.sgd_settle_rate)
        return integrate_sgd(problem, state, model, sgd, progress=lambda k: bar.update(k - bar.n))


def _progress_bar(enabled: bool, total: float, unit: str):
    """A tqdm bar on stderr (silent when not a terminal or not ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc="simulate", leave=False, disable=None if enabled else True,
                file=sys.stderr)


def run_simulation(config: SimConfig, progress: bool = False) -> SimulationResult:
    """Integrate one run and compare it with the closed forms (commuting model) per feature."""
    model = config.model()
    m = config.out_dim or model.dim
    run = config.settings(model)
    problem = Problem.from_models(model, config.dynamics(run))
    with one_thread():  # small matrices: threads only add contention
        traj = integrate(config, problem, model, progress, run)
    if not model.commuting or not theory.has_closed_form(config.rule(), config.wd):
        return _uncompared_result(config, model, problem, traj, run)
    lam, s2 = model.data_var.numpy(), model.aug_var.numpy()
    gain_pred = predicted_gains(config, model)
    kept_pred = gain_pred > 0
    kept_tol = run.kept_tol
    rec = record(problem, traj, model.basis, torch.as_tensor(kept_pred), kept_tol)
    tail = max(1, len(rec.times) // 5) if config.mode == "sgd" else 1  # SGD: average the last 20%
    gain_sim = rec.gains[-tail:, 0, :].mean(0)
    kept_sim = gain_sim > kept_tol
    near = _near_threshold(config, lam, s2)
    judged = kept_pred & ~near
    rel = np.abs(gain_sim - gain_pred) / np.where(gain_pred > 0, gain_pred, 1.0)
    max_rel = float(rel[judged].max()) if judged.any() else 0.0
    star_wd = np.asarray(theory.threshold_wd(lam, s2, config.target_scale))
    features = [FeatureResult(float(lam[i]), float(s2[i]), bool(kept_pred[i]), bool(kept_sim[i]),
                              float(gain_pred[i]), float(gain_sim[i]), bool(near[i]), float(star_wd[i]))
                for i in range(model.dim)]
    # with every feature discarded W ≈ 0 and the off-diagonal/diagonal ratio is round-off: not reported
    alignment = float(rec.alignment[-1, 0]) if kept_sim.any() else float("nan")
    proj_err = float(rec.projection_error[-1, 0])
    wrong = [i for i in range(model.dim) if not near[i] and kept_pred[i] != kept_sim[i]]
    converged = bool(traj.converged)
    rtol = GAIN_RTOL[config.mode]
    capacity_ok = int(kept_pred.sum()) <= m
    passed = not wrong and max_rel <= rtol and capacity_ok and converged
    verdict = _verdict(passed, kept_pred, kept_sim, max_rel, rtol, alignment, wrong, converged, capacity_ok, m,
                       _collapse_fix(config, run, features, rec.gains[0, 0, :]))
    return SimulationResult(config, model, traj, rec, features, threshold_of(config, model),
                            alignment, proj_err, converged, max_rel, passed, verdict, run)


def _collapse_fix(config: SimConfig, run: Settings, features: list[FeatureResult], initial_gain_sq) -> str:
    """What to try when a kept feature fell into the collapse basin. SGD (docs/theory.md §3): F̂ lags W, and from a
    large init the predictor overshoots while it lags. A trained predictor: the basin of the actual
    (w, p) start (``linear.hints``: W_p starts at the init scale too, so a larger one can make it worse).
    A direct rule: p₀ = (c w₀²)^α grows with the init scale, out of the basin w² < (p₋)^(1/α)/c."""
    if config.mode == "sgd":
        return "try a smaller --rho or --lr (F̂ lags W), or a smaller --init-scale"
    lost = hints.lost_features(features, initial_gain_sq)
    if config.predictor == "trainable" and lost:
        pred_wd = config.wd if config.pred_wd is None else config.pred_wd
        return hints.init_scale_hint(lost, run.init_scale, config.wd, pred_wd, config.pred_lr, config.target_scale)
    return "try a larger --init-scale"


def _verdict(passed, kept_pred, kept_sim, max_rel, rtol, alignment, wrong, converged, capacity_ok, m, fix) -> str:
    counts = f"{int(kept_sim.sum())} of {kept_pred.size} features kept (theory: {int(kept_pred.sum())})"
    if passed:
        align = "W collapsed to 0" if math.isnan(alignment) else f"alignment {alignment:.1e}"
        return f"AGREES with theory: {counts}; max relative gain error {max_rel:.1e} (tolerance {rtol:g}); {align}"
    reasons = []
    if wrong:
        reasons.append(f"features {wrong} classified differently")
        if capacity_ok and any(kept_pred[i] and not kept_sim[i] for i in wrong):
            reasons.append(f"a kept feature fell into the collapse basin (w = 0 is stable too): {fix}")
    if max_rel > rtol:
        reasons.append(f"max relative gain error {max_rel:.1e} > {rtol:g}")
    if not converged:
        reasons.append("not converged (raise --time/--steps)")
    if not capacity_ok:
        reasons.append(f"theory keeps {int(kept_pred.sum())} features but the network has only m = {m} outputs")
    return f"DISAGREES with theory: {counts}; " + "; ".join(reasons)


def _uncompared_result(config: SimConfig, model: DataModel, problem: Problem, traj: Trajectory,
                       run: Settings) -> SimulationResult:
    """No per-feature closed form — a non-commuting X, X' (rows: eigendirections of the learned WᵀW) or a
    normalised predictor (rows: the features u_i, gains along them): report what was learned."""
    kept_tol = run.kept_tol
    rec = record(problem, traj, model.basis, kept_tol=kept_tol)
    gains = rec.gains[-1, 0, :]
    if model.commuting:
        lam, s2 = model.data_var.tolist(), model.aug_var.tolist()
        if config.rule().kind == "trainable":  # η = 0 (has_closed_form)
            why = ("no closed form for the trained predictor at η = 0 (its balance W_pᵀW_p − WWᵀ is conserved: "
                   "where the run ends depends on where it starts)")
        else:
            scale = ("‖W‖ shrinks towards 0, docs/theory.md §4" if config.norm == "spectral"
                     else "every p_i < 1: ‖W‖ grows or shrinks without a fixed point")
            why = f"no closed form for the {config.norm}-normalised predictor ({scale})"
    else:
        lam = s2 = [None] * model.dim
        why = "general (non-commuting) model: no closed form to compare with"
    features = [FeatureResult(lam[i], s2[i], None, bool(g > kept_tol), None, float(g), False)
                for i, g in enumerate(gains)]
    verdict = f"{why}; learned rank {int((gains > kept_tol).sum())} of {model.dim}"
    # alignment is measured in the model basis U; a general model has none (the eigenbasis of the final
    # WᵀW would make it 0 by construction)
    alignment = float(rec.alignment[-1, 0]) if model.commuting else float("nan")
    return SimulationResult(config, model, traj, rec, features, None,
                            alignment, float("nan"), bool(traj.converged), float("nan"),
                            bool(traj.converged), verdict, run)
