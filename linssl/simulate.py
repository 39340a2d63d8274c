"""Simulate a linear siamese network with weight decay and compare it with the closed forms.

``python -m linssl.simulate --wd 0.05`` (same as ``linssl simulate``): integrate the dynamics
(flow, GD or SGD) from a random Gaussian W, then print per feature the predicted and simulated
kept/discarded decision and squared gain, the threshold, the alignment and a verdict.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from linssl import theory
from linssl.data import DEFAULT_AUG_VAR, DataModel, commuting_model, general_model
from linssl.dynamics import (
    DynamicsConfig,
    Problem,
    SGDConfig,
    Trajectory,
    initial_state,
    integrate_flow,
    integrate_gd,
    integrate_sgd,
    stable_lr,
)
from linssl.errors import DivergenceError, LinsslError, check_number, check_seed
from linssl.predictors import F_SOURCES, NORMS, PREDICTOR_NAMES, PredictorRule, make_rule
from linssl.records import CONVERGED_KEPT_TOL, KEPT_TOL, RunRecord, record
from linssl.runtime import one_thread

MODES = ("flow", "gd", "sgd")
#: Relative gain tolerance of the verdict: flow and GD share the exact fixed points; SGD is noisy.
GAIN_RTOL = {"flow": 1e-3, "gd": 1e-3, "sgd": 0.1}
#: Features whose augmentation variance is within this fraction of the threshold are not judged
#: (critical slowing down makes their convergence arbitrarily slow).
NEAR_THRESHOLD = 0.1

#: largest input dimension d: every step of the flow eigendecomposes a d×d matrix
MAX_DIM = 1024

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
    ema: float = 1.0  # β of dW_a/dt = β(W − W_a)
    target_scale: float = 1.0
    pred_lr: float = 1.0
    pred_wd: float | None = None
    mode: str = "flow"
    time: float = 5000.0  # flow: maximum time (stops earlier on convergence)
    steps: int | None = None  # gd/sgd; default: time 600 (gd) / 300 (sgd) divided by lr
    lr: float | None = None  # gd/sgd; default: stable_lr (≤ 0.01, below the initial curvature limit)
    batch: int = 128
    rho: float = 0.9
    freq: int = 1
    init_scale: float = 0.5
    init: str = "rotation"
    seed: int = 0
    rotate: bool = True
    conv_tol: float = 1e-8
    rtol: float = 1e-9
    atol: float = 1e-12
    data_cov: tuple[tuple[float, ...], ...] | None = None  # general (non-commuting) model
    aug_cov: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise LinsslError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_number("--rtol", self.rtol, low=MIN_RTOL, inclusive=True)
        positive = {"--wd": self.wd, "--target-scale": self.target_scale,
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

    @property
    def kept_tol(self) -> float:
        """Gain² above which a feature counts as kept: the SGD noise level, or a converged run's."""
        return KEPT_TOL if self.mode == "sgd" else CONVERGED_KEPT_TOL

    def resolved_steps(self, lr: float) -> int:
        """Explicit --steps, else enough steps to reach time 600 (gd; stops on convergence) / 300 (sgd)."""
        return self.steps if self.steps is not None else math.ceil((600.0 if self.mode == "gd" else 300.0) / lr)

    def rule(self) -> PredictorRule:
        return make_rule(self.predictor, alpha=self.alpha, norm=self.norm, eps=self.eps, f_source=self.f_source)

    def dynamics(self) -> DynamicsConfig:
        return DynamicsConfig(self.rule(), self.wd, self.target, self.ema, self.target_scale, self.pred_lr,
                              self.pred_wd)

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


@dataclass
class SimulationResult:
    config: SimConfig
    model: DataModel
    trajectory: Trajectory
    record: RunRecord
    features: list[FeatureResult]
    threshold_aug_var: float
    alignment_offdiag: float
    projection_error: float
    converged: bool
    max_gain_rel_error: float
    passed: bool
    verdict: str
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The ``--json`` document (see the CLI contract)."""
        rec = self.record
        return {
            "config": asdict(self.config),
            "threshold_aug_var": self.threshold_aug_var,
            "features": [asdict(f) for f in self.features],
            "alignment_offdiag": None if math.isnan(self.alignment_offdiag) else self.alignment_offdiag,
            "projection_error": None if math.isnan(self.projection_error) else self.projection_error,
            "converged": self.converged,
            "max_gain_rel_error": None if math.isnan(self.max_gain_rel_error) else self.max_gain_rel_error,
            "passed": self.passed,
            "verdict": self.verdict,
            "t_final": self.trajectory.info["t_final"],
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
    """Closed-form squared gains per feature (SPEC §4)."""
    return np.asarray(theory.predicted_gain_sq_for_rule(
        config.rule(), model.data_var.numpy(), model.aug_var.numpy(), config.wd, config.target_scale, config.pred_wd,
        config.pred_lr))


def _near_threshold(config: SimConfig, lam: np.ndarray, s2: np.ndarray) -> np.ndarray:
    star = np.asarray(theory.threshold_aug_var(config.wd, lam, config.target_scale))
    return np.abs(s2 - star) <= NEAR_THRESHOLD * np.maximum(star, 0)


def integrate(config: SimConfig, problem: Problem, model: DataModel, progress: bool = False) -> Trajectory:
    """Run the configured integrator from the seeded initial state.

    Under the Frobenius-normalised direct predictor every p_i < 1 whatever the scale of W, so a feature
    with τλp − (λ + σ²)p² > η grows exponentially for ever: a divergence of the flow there is the flow's,
    and is reported as such instead of with a step-size hint (GD and SGD keep their lr hint)."""
    try:
        return _integrate(config, problem, model, progress)
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


def _integrate(config: SimConfig, problem: Problem, model: DataModel, progress: bool) -> Trajectory:
    state = initial_state(problem, config.out_dim or model.dim, config.init_scale, config.seed, config.init)
    if config.mode == "flow":
        bar = _progress_bar(progress, config.time, "t")
        with bar:
            return integrate_flow(problem, state, config.time, config.rtol, config.atol, config.conv_tol,
                                  progress=lambda t: bar.update(t - bar.n))
    lr = config.lr if config.lr is not None else stable_lr(problem, state)
    steps = config.resolved_steps(lr)
    bar = _progress_bar(progress, steps, "step")
    with bar:
        if config.mode == "gd":
            return integrate_gd(problem, state, lr, steps, config.conv_tol, progress=lambda k: bar.update(k - bar.n))
        sgd = SGDConfig(lr, steps, config.batch, config.rho, config.freq, config.seed)
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
    problem = Problem.from_models(model, config.dynamics())
    with one_thread():  # small matrices: threads only add contention
        traj = integrate(config, problem, model, progress)
    if not model.commuting or not theory.has_closed_form(config.rule()):
        return _uncompared_result(config, model, problem, traj)
    lam, s2 = model.data_var.numpy(), model.aug_var.numpy()
    gain_pred = predicted_gains(config, model)
    kept_pred = gain_pred > 0
    kept_tol = config.kept_tol
    rec = record(problem, traj, model.basis, torch.as_tensor(kept_pred), kept_tol)
    tail = max(1, len(rec.times) // 5) if config.mode == "sgd" else 1  # SGD: average the last 20%
    gain_sim = rec.gains[-tail:, 0, :].mean(0)
    kept_sim = gain_sim > kept_tol
    near = _near_threshold(config, lam, s2)
    judged = kept_pred & ~near
    rel = np.abs(gain_sim - gain_pred) / np.where(gain_pred > 0, gain_pred, 1.0)
    max_rel = float(rel[judged].max()) if judged.any() else 0.0
    features = [FeatureResult(float(lam[i]), float(s2[i]), bool(kept_pred[i]), bool(kept_sim[i]),
                              float(gain_pred[i]), float(gain_sim[i]), bool(near[i])) for i in range(model.dim)]
    # with every feature discarded W ≈ 0 and the off-diagonal/diagonal ratio is round-off: not reported
    alignment = float(rec.alignment[-1, 0]) if kept_sim.any() else float("nan")
    proj_err = float(rec.projection_error[-1, 0])
    wrong = [i for i in range(model.dim) if not near[i] and kept_pred[i] != kept_sim[i]]
    converged = bool(traj.converged)
    rtol = GAIN_RTOL[config.mode]
    capacity_ok = int(kept_pred.sum()) <= m
    passed = not wrong and max_rel <= rtol and capacity_ok and converged
    verdict = _verdict(passed, kept_pred, kept_sim, max_rel, rtol, alignment, wrong, converged, capacity_ok, m,
                       config.mode)
    return SimulationResult(config, model, traj, rec, features,
                            float(theory.threshold_aug_var(config.wd, 1.0, config.target_scale)),
                            alignment, proj_err, converged, max_rel, passed, verdict)


def _verdict(passed, kept_pred, kept_sim, max_rel, rtol, alignment, wrong, converged, capacity_ok, m,
             mode: str = "flow") -> str:
    counts = f"{int(kept_sim.sum())} of {kept_pred.size} features kept (theory: {int(kept_pred.sum())})"
    if passed:
        align = "W collapsed to 0" if math.isnan(alignment) else f"alignment {alignment:.1e}"
        return f"AGREES with theory: {counts}; max relative gain error {max_rel:.1e} (tolerance {rtol:g}); {align}"
    reasons = []
    if wrong:
        reasons.append(f"features {wrong} classified differently")
        if capacity_ok and any(kept_pred[i] and not kept_sim[i] for i in wrong):
            # SGD (SPEC §3): F̂ lags W, and from a large init the predictor overshoots while it lags
            fix = ("try a smaller --rho or --lr (F̂ lags W), or a smaller --init-scale" if mode == "sgd"
                   else "try a larger --init-scale")
            reasons.append(f"a kept feature fell into the collapse basin (w = 0 is stable too): {fix}")
    if max_rel > rtol:
        reasons.append(f"max relative gain error {max_rel:.1e} > {rtol:g}")
    if not converged:
        reasons.append("not converged (raise --time/--steps)")
    if not capacity_ok:
        reasons.append(f"theory keeps {int(kept_pred.sum())} features but the network has only m = {m} outputs")
    return f"DISAGREES with theory: {counts}; " + "; ".join(reasons)


def _uncompared_result(config: SimConfig, model: DataModel, problem: Problem, traj: Trajectory) -> SimulationResult:
    """No per-feature closed form — a non-commuting X, X' (rows: eigendirections of the learned WᵀW) or a
    normalised predictor (rows: the features u_i, gains along them): report what was learned."""
    kept_tol = config.kept_tol
    rec = record(problem, traj, model.basis, kept_tol=kept_tol)
    gains = rec.gains[-1, 0, :]
    if model.commuting:
        lam, s2 = model.data_var.tolist(), model.aug_var.tolist()
        scale = ("‖W‖ shrinks towards 0, SPEC §4" if config.norm == "spectral"
                 else "every p_i < 1: ‖W‖ grows or shrinks without a fixed point")
        why = f"no closed form for the {config.norm}-normalised predictor ({scale})"
    else:
        lam = s2 = [None] * model.dim
        why = "general (non-commuting) model: no closed form to compare with"
    features = [FeatureResult(lam[i], s2[i], None, bool(g > kept_tol), None, float(g), False)
                for i, g in enumerate(gains)]
    verdict = f"{why}; learned rank {int((gains > kept_tol).sum())} of {model.dim}"
    return SimulationResult(config, model, traj, rec, features, float(theory.threshold_aug_var(config.wd)),
                            float(rec.alignment[-1, 0]), float("nan"), bool(traj.converged), float("nan"),
                            bool(traj.converged), verdict)


# ----------------------------------------------------------------------------------------- CLI


def parse_float_list(text: str, name: str) -> tuple[float, ...]:
    """'0.1,0.5, 2' -> (0.1, 0.5, 2.0); a one-line LinsslError for anything else."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip() != "")
    except ValueError:
        raise LinsslError(f"{name} must be a comma-separated list of numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise LinsslError(f"{name} must be a comma-separated list of finite numbers, got {text!r}")
    return values


def default_aug_var(dim: int) -> tuple[float, ...]:
    """``dim`` augmentation variances spread geometrically over the span of the default list."""
    if dim == len(DEFAULT_AUG_VAR):
        return DEFAULT_AUG_VAR
    return tuple(float(v) for v in np.geomspace(DEFAULT_AUG_VAR[0], DEFAULT_AUG_VAR[-1], dim).round(4))


def _load_matrix(path: str, name: str) -> tuple[tuple[float, ...], ...]:
    try:
        mat = np.load(path) if path.endswith(".npy") else np.loadtxt(path, delimiter=None, ndmin=2)
    except (OSError, ValueError) as exc:
        raise LinsslError(f"cannot read {name} from {path}: {exc}") from None
    return tuple(tuple(float(v) for v in row) for row in np.atleast_2d(mat))


def configure(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--wd", type=float, default=0.05, help="weight decay η (default 0.05)")
    p.add_argument("--dim", type=int, help="input dimension d (default: length of --aug-var, else 8)")
    p.add_argument("--aug-var", help="comma list of augmentation variances σ²; its length sets d")
    p.add_argument("--data-var", help="comma list (or one value) of data variances λ (default 1)")
    p.add_argument("--out-dim", type=int, help="output dimension m <= d (default d)")
    p.add_argument("--predictor", choices=PREDICTOR_NAMES, default="directpred")
    p.add_argument("--alpha", type=float, help="DirectSet exponent α (directset only)")
    p.add_argument("--f-source", choices=F_SOURCES, default="aug", help="F = W(X+X')Wᵀ (aug) or W X Wᵀ (clean)")
    p.add_argument("--norm", choices=NORMS, default="none", help="normalisation of F (theory runs: none)")
    p.add_argument("--eps", type=float, default=0.0, help="ε added to the predictor diagonal")
    p.add_argument("--target", choices=("stopgrad", "ema"), default="stopgrad")
    p.add_argument("--ema", type=float, default=1.0, help="EMA rate β: dW_a/dt = β(W − W_a); discrete m = 1 − lr·β")
    p.add_argument("--target-scale", type=float, default=1.0, help="τ: the target is τ·W_a")
    p.add_argument("--pred-lr", type=float, default=1.0, help="α_p, trained predictor's relative learning rate")
    p.add_argument("--pred-wd", type=float, help="η_p, trained predictor's weight decay (default: --wd)")
    p.add_argument("--mode", choices=MODES, default="flow", help="gradient flow, discrete GD or minibatch SGD")
    p.add_argument("--time", type=float, default=5000.0, help="flow: maximal time (stops on convergence)")
    p.add_argument("--rtol", type=float, default=1e-9, help="flow: solve_ivp relative tolerance (default 1e-9)")
    p.add_argument("--atol", type=float, default=1e-12, help="flow: solve_ivp absolute tolerance (default 1e-12)")
    p.add_argument("--conv-tol", type=float, default=1e-8,
                   help="flow/gd: converged (and stopped) once max|dW/dt| < CONV_TOL (default 1e-8)")
    p.add_argument("--no-rotate", dest="rotate", action="store_false",
                   help="model basis U = identity (default: a seeded random rotation)")
    p.add_argument("--steps", type=int, help="gd/sgd steps (default: time 600 for gd, 300 for sgd, over lr)")
    p.add_argument("--lr", type=float, help="gd/sgd learning rate (default: min(0.01, 1/initial curvature))")
    p.add_argument("--batch", type=int, default=128, help="sgd batch size")
    p.add_argument("--rho", type=float, default=0.9, help="sgd: EMA ρ of the F̂ estimate")
    p.add_argument("--freq", type=int, default=1, help="sgd: reset the predictor from F̂ every FREQ steps")
    p.add_argument("--init-scale", type=float, default=0.5, help="scale of the initial W (default 0.5)")
    p.add_argument("--init", choices=("rotation", "gaussian"), default="rotation",
                   help="W = scale·R diag(s) Q, s ~ U(0.75, 1.25) (rotation) or N(0, scale²/d) entries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-cov", help="general model: data covariance X (.npy or text matrix)")
    p.add_argument("--aug-cov", help="general model: augmentation covariance X' (.npy or text matrix)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON (atomically)")
    p.add_argument("--plot", metavar="PATH", help="save the gain trajectories (PNG/PDF by suffix)")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    if args.aug_var is not None:
        aug = parse_float_list(args.aug_var, "--aug-var")
        if args.dim is not None and args.dim != len(aug):
            raise LinsslError(f"--dim {args.dim} disagrees with the {len(aug)} values of --aug-var")
    else:
        if args.dim is not None and args.dim < 1:
            raise LinsslError(f"--dim must be >= 1, got {args.dim}")
        aug = default_aug_var(args.dim or len(DEFAULT_AUG_VAR))
    data_cov = aug_cov = None
    if args.data_cov or args.aug_cov:
        if not (args.data_cov and args.aug_cov):
            raise LinsslError("give both --data-cov and --aug-cov, or neither")
        given = [flag for flag, value in (("--dim", args.dim), ("--aug-var", args.aug_var),
                                          ("--data-var", args.data_var)) if value is not None]
        if given:
            raise LinsslError(f"{' and '.join(given)} cannot be combined with --data-cov/--aug-cov "
                              "(the matrices set d and the variances)")
        data_cov, aug_cov = _load_matrix(args.data_cov, "--data-cov"), _load_matrix(args.aug_cov, "--aug-cov")
    return SimConfig(
        wd=args.wd, aug_var=aug, data_var=parse_float_list(args.data_var or "1", "--data-var"), out_dim=args.out_dim,
        predictor=args.predictor, alpha=args.alpha, f_source=args.f_source, norm=args.norm, eps=args.eps,
        target=args.target, ema=args.ema, target_scale=args.target_scale, pred_lr=args.pred_lr,
        pred_wd=args.pred_wd, mode=args.mode, time=args.time, steps=args.steps, lr=args.lr, batch=args.batch,
        rho=args.rho, freq=args.freq, init_scale=args.init_scale, init=args.init, seed=args.seed,
        rotate=args.rotate, conv_tol=args.conv_tol, rtol=args.rtol, atol=args.atol, data_cov=data_cov, aug_cov=aug_cov,
    )


def format_table(result: SimulationResult) -> str:
    """The human-readable report: one row per feature, then threshold, alignment, verdict."""
    cfg = result.config
    rule = cfg.rule()
    lines = [f"linssl simulate: {cfg.predictor} (α = {rule.alpha:g}, F {cfg.f_source}, norm {cfg.norm}, "
             f"ε = {cfg.eps:g}), target {cfg.target}, wd = {cfg.wd:g}, mode {cfg.mode}, d = {result.model.dim}",
             "",
             f"{'feature':>7} {'data var':>9} {'aug var':>9} {'kept (theory)':>14} {'kept (sim)':>11} "
             f"{'gain² (theory)':>15} {'gain² (sim)':>12}"]
    for i, f in enumerate(result.features):
        flag = "  ~threshold" if f.near_threshold else ""
        lines.append(f"{i:>7} {_num(f.data_var):>9} {_num(f.aug_var):>9} {_yn(f.kept_predicted):>14} "
                     f"{_yn(f.kept_simulated):>11} {_num(f.gain_sq_predicted, 6):>15} "
                     f"{f.gain_sq_simulated:>12.6g}{flag}")
    compared = any(f.gain_sq_predicted is not None for f in result.features)  # else: no closed form applies
    lines.append("")
    if compared:
        lines.append((f"threshold: features with aug var <= {result.threshold_aug_var:.4g} are kept "
                      if result.threshold_aug_var >= 0 else "threshold: no feature is kept at this weight decay ")
                     + "(unit data var; λ² >= 4η(λ + σ²))")
    lines.append(f"alignment (max off-diagonal of UᵀWᵀWU / max diagonal): {result.alignment_offdiag:.2e}"
                 + (" (W collapsed: not meaningful)" if math.isnan(result.alignment_offdiag) else ""))
    if compared:
        lines.append(f"projection error ‖P_learned − P_kept‖_F: {result.projection_error:.2e}")
    lines += [f"converged: {'yes' if result.converged else 'no'} at t = {result.trajectory.info['t_final']:.4g}",
              result.verdict]
    return "\n".join(lines)


def _yn(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def plot_result(result: SimulationResult, path: str) -> None:
    """Gain trajectories (log-log), closed-form gains dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from linssl.io import save_figure

    rec = result.record
    t = np.maximum(rec.times, rec.times[rec.times > 0].min() / 2 if (rec.times > 0).any() else 1e-3)
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(result.features)))
    for i, (f, c) in enumerate(zip(result.features, colors, strict=True)):
        label = f"σ² = {f.aug_var:g}" if f.aug_var is not None else f"direction {i}"
        ax.plot(t, np.maximum(rec.gains[:, 0, i], 1e-12), color=c, label=label)
        if f.gain_sq_predicted:
            ax.axhline(f.gain_sq_predicted, color=c, ls="--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="time (lr × step)", ylabel="squared gain uᵢᵀWᵀWuᵢ",
           title=f"{result.config.predictor}, wd = {result.config.wd:g} (dashed: closed form)")
    ax.set_ylim(1e-8, None)
    ax.legend(fontsize=8, ncol=2)
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from linssl.io import check_output_path, write_json

    config = config_from_args(args)
    if args.json:
        check_output_path(args.json)
    if args.plot:
        check_output_path(args.plot, figure=True)
    result = run_simulation(config, progress=True)
    print(format_table(result))
    if args.json:
        write_json(args.json, result.to_json())
    if args.plot:
        plot_result(result, args.plot)
    return 0


def main(argv=None) -> int:
    from linssl.cli import command_main

    return command_main("linssl.simulate", "python -m linssl.simulate", argv)


if __name__ == "__main__":
    raise SystemExit(main())
