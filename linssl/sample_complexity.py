"""Downstream sample complexity: least squares on the learned representation Wx versus the raw input x.

Prints measured excess risk (mean and 95% CI of the mean over seeds) beside the closed form
bias + (σ_ν² + bias) p / (n − p − 1) on a grid of n, the n each representation needs to reach a
target risk, and their ratio (≈ d/r). ``--json`` and ``--plot`` write the curves atomically. Called as a
function, ``linssl.sample_complexity(dim=50, ...)`` is ``linssl.api.sample_complexity``.
"""

from __future__ import annotations

import argparse

from linssl.errors import LinsslError
from linssl.io import parse_list
from linssl.linear.downstream import REPRESENTATIONS, SampleComplexityConfig, SampleComplexityResult


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dim", type=int, default=50, help="input dimension d (default 50)")
    parser.add_argument("--rank", type=int, default=5, help="kept dimension r: features below the wd threshold (5)")
    parser.add_argument("--noise", type=float, default=0.5, help="label noise standard deviation σ_ν (0.5)")
    parser.add_argument("--n", default=None, metavar="N1,N2,...",
                        help="training sizes, comma list, all > dim + 1 (default 20 log-spaced from 1.5·dim to 30·dim)")
    parser.add_argument("--seeds", type=int, default=200, help="independent training sets per size (200)")
    parser.add_argument("--wd", type=float, default=0.05, help="weight decay of the simulator run (0.05)")
    parser.add_argument("--outside", type=float, default=0.0,
                        help="share of ‖β*‖² on a discarded direction (misspecified task; 0)")
    parser.add_argument("--target-risk", type=float, default=None, help="target excess risk (default 0.04·noise²)")
    parser.add_argument("--representation", choices=REPRESENTATIONS, default="simulated",
                        help="learned W from a DirectPred flow run (simulated) or the ideal projection (ideal)")
    parser.add_argument("--no-ridge", action="store_true", help="skip ridge regression (penalty by GCV)")
    parser.add_argument("--classification", action="store_true",
                        help="also run the classification task (logistic regression; a few times slower)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data model, β*, the run and the samples")
    parser.add_argument("--json", default=None, metavar="PATH", help="write every curve as JSON")
    parser.add_argument("--plot", default=None, metavar="PATH", help="log-log plot of risk versus n (png/pdf/svg)")


def parse_sizes(text: str | None) -> tuple[int, ...] | None:
    """'100,200,400' -> (100, 200, 400); a clear error for anything that is not a positive integer."""
    if text is None:
        return None
    sizes = parse_list(text, "--n", int)
    bad = next((n for n in sizes if n < 1), None)
    if bad is not None:
        raise LinsslError(f"--n must be a comma list of positive integers, got {bad} in {text!r}")
    return sizes


def config_from_args(args: argparse.Namespace) -> SampleComplexityConfig:
    return SampleComplexityConfig(
        dim=args.dim,
        rank=args.rank,
        noise=args.noise,
        n_grid=parse_sizes(args.n),
        seeds=args.seeds,
        wd=args.wd,
        outside=args.outside,
        target_risk=args.target_risk,
        representation=args.representation,
        ridge=not args.no_ridge,
        classification=args.classification,
        seed=args.seed,
    )


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "never" if value is None else format(value, spec)


def format_table(result: SampleComplexityResult) -> str:
    """n, raw mean [lo, hi], raw predicted, learned mean [lo, hi], learned predicted; then n-to-target lines."""
    raw, learned = result.curves["raw"], result.curves["learned"]
    cfg, info = result.config, result.representation
    lines = [
        f"least squares, d = {cfg.dim}, r = {cfg.rank}, noise σ = {cfg.noise:g}, {cfg.seeds} seeds; "
        f"learned: {info['source']}, rank {learned.features}"
        + (f", irreducible bias {learned.bias:.4g}" if cfg.outside > 0 else ""),
        f"excess risk (b̂ − β*)ᵀΣ(b̂ − β*), mean [{result.interval}]",
        f"{'n':>7}  {'raw mean [lo, hi]':>30} {'predicted':>10}  {'learned mean [lo, hi]':>30} {'predicted':>10}",
    ]
    for k, n in enumerate(raw.n):
        cells = []
        for c in (raw, learned):
            cells.append(f"{c.risk_mean[k]:>10.4g} [{c.risk_lo[k]:.4g}, {c.risk_hi[k]:.4g}]".rjust(30))
            cells.append(f"{c.risk_predicted[k]:>10.4g}")
        lines.append(f"{n:>7}  {cells[0]} {cells[1]}  {cells[2]} {cells[3]}")
    lines.append(f"target risk {result.target_risk:.4g}:")
    for name, c in (("raw", raw), ("learned", learned)):
        lines.append(
            f"  {name:>7}: n on grid {_fmt(c.n_to_target)}, interpolated {_fmt(c.n_to_target_interp, '.1f')}, "
            f"closed form {_fmt(c.n_to_target_predicted, '.1f')}"
        )
    lines.append(
        f"  ratio raw/learned: on grid {_fmt(result.n_to_target_ratio, '.3g')}, "
        f"interpolated {_fmt(result.n_to_target_ratio_interp, '.3g')}, "
        f"closed form {_fmt(result.n_to_target_ratio_predicted, '.3g')}, d/r = {result.dim_over_rank:.3g}"
    )
    extra = {}
    if result.ridge:
        extra["ridge raw"], extra["ridge learned"] = result.ridge["raw"], result.ridge["learned"]
    if result.classification:
        extra["logit raw"], extra["logit learned"] = result.classification["raw"], result.classification["learned"]
    if extra:
        lines.append("mean excess risk of ridge (penalty by GCV); mean excess 0-1 error of logistic regression "
                     f"(Bayes error {result.bayes_error:.4f})" if result.classification else
                     "mean excess risk of ridge (penalty by GCV)")
        lines.append(f"{'n':>7}  " + " ".join(f"{name:>14}" for name in extra))
        for k, n in enumerate(raw.n):
            lines.append(f"{n:>7}  " + " ".join(f"{c.risk_mean[k]:>14.4g}" for c in extra.values()))
    return "\n".join(lines)


def plot_curves(result: SampleComplexityResult, path: str) -> None:
    """Log-log risk versus n: measured mean with its 95% CI band and the 5–95% spread, closed form dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from linssl.io import save_figure

    panels = 2 if result.classification else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 4.6), squeeze=False)
    ax = axes[0, 0]
    colours = {"raw": "tab:red", "learned": "tab:blue"}
    for name, c in result.curves.items():
        col = colours[name]
        ax.fill_between(c.n, c.risk_p05, c.risk_p95, color=col, alpha=0.12, lw=0)
        ax.fill_between(c.n, c.risk_lo, c.risk_hi, color=col, alpha=0.35, lw=0)
        ax.plot(c.n, c.risk_mean, "o-", color=col, ms=3, label=f"{name} (p = {c.features}), least squares")
        ax.plot(c.n, c.risk_predicted, "--", color="k" if name == "raw" else "0.4", lw=1,
                label=f"{name}: closed form")
        if result.ridge:
            ax.plot(c.n, result.ridge[name].risk_mean, ":", color=col, label=f"{name}, ridge (GCV)")
    ax.axhline(result.target_risk, color="0.5", lw=0.8, label="target risk")
    ax.set(xscale="log", yscale="log", xlabel="labelled samples n", ylabel="excess risk",
           title=f"d = {result.config.dim}, r = {result.config.rank}, σ = {result.config.noise:g}")
    ax.legend(fontsize=7)
    if result.classification:
        ax2 = axes[0, 1]
        for name, c in result.classification.items():
            col = colours[name]
            ax2.fill_between(c.n, c.risk_lo, c.risk_hi, color=col, alpha=0.35, lw=0)
            ax2.plot(c.n, c.risk_mean, "o-", color=col, ms=3, label=f"{name}, logistic")
        ax2.set(xscale="log", yscale="log", xlabel="labelled samples n", ylabel="excess 0-1 error",
                title=f"classification (Bayes error {result.bayes_error:.3f})")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from linssl.io import check_distinct_outputs, check_output_path
    from linssl.linear.downstream import sample_complexity_curves
    from linssl.memory import check_fits, sample_complexity_bytes

    config = config_from_args(args)
    if args.json is not None:
        check_output_path(args.json, flag="--json")
    if args.plot is not None:
        check_output_path(args.plot, figure=True, flag="--plot")
    check_distinct_outputs({"--json": args.json, "--plot": args.plot})
    check_fits(sample_complexity_bytes(config.dim, config.seeds, config.sizes[-1], config.classification),
               f"--dim {config.dim}, --seeds {config.seeds} and n up to {config.sizes[-1]}",
               "lower --dim, --seeds or the largest --n")
    result = sample_complexity_curves(config)
    print(format_table(result))
    if args.json is not None:
        from linssl.io import write_json

        write_json(args.json, result.to_json())
        print(f"wrote {args.json}")
    if args.plot is not None:
        plot_curves(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


# ``linssl.sample_complexity(...)`` calls the API function (linssl/_callable.py says why the module is callable)
from linssl._callable import make_callable  # noqa: E402
from linssl.api import sample_complexity as _sample_complexity  # noqa: E402

make_callable(__name__, _sample_complexity)


if __name__ == "__main__":
    from linssl.cli import command_main

    raise SystemExit(command_main("linssl.sample_complexity", "linssl sample-complexity"))
