"""``python -m linssl.simulate`` (= ``linssl simulate``): the command-line face of one simulation run.

Flags -> ``SimConfig`` -> ``linssl.linear.simulation.run_simulation`` -> a table on stdout (per feature the
predicted and simulated kept/discarded decision and squared gain, the threshold, the alignment, a verdict),
optionally the result as JSON and the gain trajectories as a figure. Called as a function,
``linssl.simulate(wd=0.05, ...)`` is ``linssl.api.simulate``: the flags as keyword arguments.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from linssl.errors import LinsslError
from linssl.io import parse_list, read_matrix
from linssl.linear.data import DEFAULT_AUG_VAR
from linssl.linear.simulation import MAX_DIM, MODES, SimConfig, SimulationResult, run_simulation
from linssl.predictors import F_SOURCES, NORMS, PREDICTOR_NAMES


def default_aug_var(dim: int) -> tuple[float, ...]:
    """``dim`` augmentation variances spread geometrically over the span of the default list."""
    if dim == len(DEFAULT_AUG_VAR):
        return DEFAULT_AUG_VAR
    return tuple(float(v) for v in np.geomspace(DEFAULT_AUG_VAR[0], DEFAULT_AUG_VAR[-1], dim).round(4))


def _load_matrix(path: str, flag: str) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in read_matrix(path, flag, MAX_DIM))


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
    p.add_argument("--ema", type=float,
                   help="EMA rate β: dW_a/dt = β(W − W_a); discrete m = 1 − lr·β (default λ_max: 1 at unit scale)")
    p.add_argument("--target-scale", type=float, default=1.0, help="τ: the target is τ·W_a")
    p.add_argument("--pred-lr", type=float, default=1.0, help="α_p, trained predictor's relative learning rate")
    p.add_argument("--pred-wd", type=float, help="η_p, trained predictor's weight decay (default: --wd)")
    p.add_argument("--mode", choices=MODES, default="flow", help="gradient flow, discrete GD or minibatch SGD")
    p.add_argument("--time", type=float, help="flow: maximal time (stops on convergence; default 5000/λ_min)")
    p.add_argument("--rtol", type=float, default=1e-9, help="flow: relative tolerance (default 1e-9)")
    p.add_argument("--atol", type=float, help="flow: absolute tolerance on W (default 1e-12/√λ_max)")
    p.add_argument("--conv-tol", type=float,
                   help="flow/gd: converged (and stopped) once max|dW/dt| < CONV_TOL (default 1e-8·√λ_max)")
    p.add_argument("--no-rotate", dest="rotate", action="store_false",
                   help="model basis U = identity (default: a seeded random rotation)")
    p.add_argument("--steps", type=int, help="gd/sgd steps (default: time 600/λ_min for gd, 300/λ_min for sgd, "
                                              "over lr)")
    p.add_argument("--lr", type=float, help="gd/sgd learning rate (default: min(0.01/λ_max, 1/initial curvature))")
    p.add_argument("--batch", type=int, default=128, help="sgd batch size")
    p.add_argument("--rho", type=float, default=0.9, help="sgd: EMA ρ of the F̂ estimate")
    p.add_argument("--freq", type=int, default=1, help="sgd: reset the predictor from F̂ every FREQ steps")
    p.add_argument("--init-scale", type=float,
                   help="scale of the initial W (default 0.5/√λ_max; trained predictor 0.5, W_p = scale·I)")
    p.add_argument("--init", choices=("rotation", "gaussian"), default="rotation",
                   help="W = scale·R diag(s) Q, s ~ U(0.75, 1.25) (rotation) or N(0, scale²/d) entries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-cov", help="general model: data covariance X (.npy or text matrix)")
    p.add_argument("--aug-cov", help="general model: augmentation covariance X' (.npy or text matrix)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON (atomically)")
    p.add_argument("--plot", metavar="PATH", help="save the gain trajectories (PNG/PDF by suffix)")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    if args.aug_var is not None:
        aug = parse_list(args.aug_var, "--aug-var")
        if args.dim is not None and args.dim != len(aug):
            raise LinsslError(f"--dim {args.dim} disagrees with the {len(aug)} values of --aug-var")
    else:
        if args.dim is not None and not 1 <= args.dim <= MAX_DIM:
            raise LinsslError(f"--dim must be between 1 and {MAX_DIM} (a d×d eigendecomposition per step), "
                              f"got {args.dim}")
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
        wd=args.wd, aug_var=aug, data_var=parse_list(args.data_var or "1", "--data-var"), out_dim=args.out_dim,
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
        lines.append(_threshold_line(result))
    if result.model.commuting:  # a general model has no basis U to be aligned with
        lines.append(f"alignment (max off-diagonal of UᵀWᵀWU / max diagonal): {result.alignment_offdiag:.2e}"
                     + (" (W collapsed: not meaningful)" if math.isnan(result.alignment_offdiag) else ""))
    if compared:
        lines.append(f"projection error ‖P_learned − P_kept‖_F: {result.projection_error:.2e}")
    lines += [f"converged: {'yes' if result.converged else 'no'} at t = {result.trajectory.info['t_final']:.4g}",
              result.verdict]
    return "\n".join(lines)


def _threshold_line(result: SimulationResult) -> str:
    """The threshold in the form the model allows: σ²* for one shared λ, η* per feature otherwise."""
    rule = "λ² >= 4η(λ + σ²)" if result.config.target_scale == 1 else "τ²λ² >= 4η(λ + σ²)"
    if result.config.wd == 0:
        return f"threshold: none at η = 0, every feature is kept ({rule} for every λ > 0)"
    star = result.threshold_aug_var
    if star is None:
        return f"threshold: feature i is kept iff η <= η*_i = τ²λ_i²/(4(λ_i + σ_i²)) ({rule})"
    lam = result.features[0].data_var
    unit = "unit data var" if lam == 1 else f"data var {lam:g}"
    head = (f"threshold: features with aug var <= {star:.4g} are kept " if star >= 0
            else "threshold: no feature is kept at this weight decay ")
    return head + f"({unit}; {rule})"


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


def check_memory(config: SimConfig) -> None:
    """Refuse, before allocating, a run whose arrays cannot fit in memory (``linssl.memory.simulation_bytes``)."""
    from linssl.memory import check_fits, simulation_bytes

    d = len(config.data_cov) if config.data_cov is not None else len(config.aug_var)
    m = config.out_dim or d
    what = f"--batch {config.batch} with d = {d}, m = {m}" if config.mode == "sgd" else f"d = {d}"
    check_fits(simulation_bytes(d, min(m, d), config.mode, config.batch), what,
               "lower --batch" if config.mode == "sgd" else "lower the dimension")


def run(args: argparse.Namespace) -> int:
    from linssl.io import check_distinct_outputs, check_output_path, write_json

    config = config_from_args(args)
    if args.json is not None:
        check_output_path(args.json, flag="--json")
    if args.plot is not None:
        check_output_path(args.plot, figure=True, flag="--plot")
    check_distinct_outputs({"--json": args.json, "--plot": args.plot})
    check_memory(config)
    result = run_simulation(config, progress=True)
    print(format_table(result))
    if args.json is not None:
        write_json(args.json, result.to_json())
    if args.plot is not None:
        plot_result(result, args.plot)
    return 0


def main(argv=None) -> int:
    from linssl.cli import command_main

    return command_main("linssl.simulate", "python -m linssl.simulate", argv)


# ``linssl.simulate(...)`` calls the API function (linssl/_callable.py says why the module is callable)
from linssl._callable import make_callable  # noqa: E402
from linssl.api import simulate as _simulate  # noqa: E402

make_callable(__name__, _simulate)


if __name__ == "__main__":
    raise SystemExit(main())
