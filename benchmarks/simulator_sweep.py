"""A weight-decay sweep of the linear flow: linssl's batched integrator against a loop of solve_ivp.

The problem (docs/theory.md §2): d-dimensional commuting model (λ = 1, σ² log-spaced 0.05 … 12, random basis),
m = d outputs, stop-gradient target, direct predictors with norm none and ε = 0, the same seeded
initial W for both sides, ``runs`` weight decays log-spaced 0.01 … 0.2, rules DirectPred (α = ½),
DirectCopy (α = 1) and DirectSet(α). Both sides integrate dW/dt = −W_pᵀ(W_p W (X + X') − W X) − ηW
with the same tableau (DOP853: explicit in the loop, as Lawson steps in linssl's default path), the same
tolerances and the same stop rule, by default that of linssl's sweeps: each
run stops once max|dW/dt| < ``--conv-tol`` (1e-8), or at ``--t-max`` (1000; the library's is 5000).
``--conv-tol 0 --t-max 200`` integrates every run to a fixed horizon instead (the same span of time
on both sides, dominated by the initial transient).

- loop: one ``scipy.integrate.solve_ivp`` per run, plain numpy right-hand side
  (``np.linalg.eigh`` for α ≠ 1);
- linssl: ``linssl.linear.sweep.sweep_flow`` with its default integrator (``auto`` → ``exponential``: Lawson
  steps that integrate the stiff frozen-predictor part exactly, per run, ``linssl.linear.exponential``), and,
  for reference, its ``batched`` path (the loop's DOP853 steps, per run, one batched right-hand side)
  and, with ``--shared-step``, its ``solve_ivp`` path (one solve_ivp over the stacked batch, one
  shared step).

The answers are checked: max |Δ gain²| over all runs and features between the loop and each linssl
path (the exponential path takes other steps, so it agrees to the tolerance, not to rounding).

    .venv/bin/python benchmarks/simulator_sweep.py            # d = 32, 64 weight decays × 3 rules
    .venv/bin/python benchmarks/simulator_sweep.py --conv-tol 0 --t-max 200   # fixed horizon
    .venv/bin/python benchmarks/simulator_sweep.py --quick    # d = 8, 8 weight decays, short horizon

Last line: {"speedup": …, "max_abs_diff": …, "speedup_batched_dop853": …, "speedup_vs_shared_step": …}
(speedup = loop / linssl's default; max_abs_diff between them; speedup_vs_shared_step is null unless
``--shared-step``).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch
from _common import emit, machine, print_table
from scipy.integrate import solve_ivp

from linssl.linear.data import DataModel, commuting_model
from linssl.linear.dynamics import DynamicsConfig, Problem, initial_state
from linssl.linear.sweep import sweep_flow
from linssl.predictors import PredictorRule, make_rule


def numpy_rhs(data_cov: np.ndarray, view_cov: np.ndarray, wd: float, alpha: float, d: int):
    """The flow's right-hand side for one run, written plainly in numpy (norm none, ε = 0, F source aug)."""

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        W = y.reshape(d, d)
        F = W @ view_cov @ W.T
        F = 0.5 * (F + F.T)
        if alpha == 1.0:
            Wp = F
        else:
            s, U = np.linalg.eigh(F)
            Wp = (U * np.maximum(s, 0.0) ** alpha) @ U.T
        residual = Wp @ W @ view_cov - W @ data_cov
        return (-Wp.T @ residual - wd * W).ravel()

    return rhs


def loop_sweep(
    model: DataModel, wds: np.ndarray, rule: PredictorRule, W0: torch.Tensor, args: argparse.Namespace
) -> tuple[np.ndarray, int, int]:
    """Final gain² (runs, d), the total number of right-hand-side evaluations, the runs the stop test ended."""
    d = model.dim
    X, V, U = model.data_cov.numpy(), model.view_cov.numpy(), model.basis.numpy()
    gains, evals, settled_runs = [], 0, 0
    for b, wd in enumerate(wds):
        rhs = _remember_last(numpy_rhs(X, V, float(wd), rule.alpha, d))
        events = None
        if args.conv_tol > 0:  # the same per-run stop as linssl's batched integrator: max|dW/dt| < conv_tol
            def settled(t, y, rhs=rhs):  # at an accepted y, DOP853 has just evaluated f(y): reused
                return float(np.max(np.abs(rhs(t, y)))) - args.conv_tol

            settled.terminal, settled.direction = True, -1
            events = settled
        sol = solve_ivp(rhs, (0.0, args.t_max), W0[b].numpy().ravel(), method=args.method, rtol=args.rtol,
                        atol=args.atol, events=events)
        if sol.status not in (0, 1):
            raise RuntimeError(f"solve_ivp failed for wd {wd}: {sol.message}")
        evals += sol.nfev
        settled_runs += int(sol.status == 1)
        W = sol.y[:, -1].reshape(d, d)
        gains.append(((W @ U) ** 2).sum(0))
    return np.asarray(gains), evals, settled_runs


def _remember_last(rhs):
    """rhs that returns its last value again when called at the same state (the stop test evaluates f at
    the state the step has just evaluated it at: no extra evaluation for the loop)."""
    last: dict = {}

    def wrapped(t: float, y: np.ndarray) -> np.ndarray:
        if "y" in last and np.array_equal(last["y"], y):
            return last["f"]
        last["y"], last["f"] = y.copy(), rhs(t, y)
        return last["f"]

    return wrapped


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def blas_threads(n: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 8, 8 weight decays, t_max = 20")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--runs", type=int, default=64, help="number of weight decays")
    parser.add_argument("--t-max", type=float, default=1000.0)
    parser.add_argument("--rtol", type=float, default=1e-8)
    parser.add_argument("--atol", type=float, default=1e-10)
    parser.add_argument("--method", choices=("RK45", "DOP853"), default="DOP853")
    parser.add_argument("--alpha", type=float, default=0.25, help="α of the DirectSet(α) rule")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads for both sides")
    parser.add_argument("--conv-tol", type=float, default=1e-8,
                        help="stop a run once max|dW/dt| < conv-tol (linssl's default; 0: fixed horizon)")
    parser.add_argument("--shared-step", action="store_true",
                        help="also time sweep_flow's solve_ivp path (one shared step for the batch)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.dim, args.runs, args.t_max = 8, 8, 20.0
    torch.set_num_threads(args.threads)
    model = commuting_model(1.0, np.geomspace(0.05, 12.0, args.dim), seed=args.seed)
    wds = np.geomspace(0.01, 0.2, args.runs)
    rules = [make_rule("directpred"), make_rule("directcopy"), make_rule("directset", alpha=args.alpha)]
    print("machine:", machine())
    print(f"d {args.dim}, {args.runs} weight decays, t_max {args.t_max}, {args.method}, rtol {args.rtol}, "
          f"atol {args.atol}, threads {args.threads}, "
          + (f"convergence stop max|dW/dt| < {args.conv_tol}" if args.conv_tol > 0 else "no convergence stop"))
    paths = ("auto", "batched", "solve_ivp") if args.shared_step else ("auto", "batched")  # default first
    totals = dict.fromkeys(("loop", *paths), 0.0)
    worst = dict.fromkeys(paths, 0.0)
    rows = []
    sweep_kw = dict(init_scale=0.5, seed=args.seed, t_max=args.t_max, conv_tol=args.conv_tol, rtol=args.rtol,
                    atol=args.atol, n_records=3, method=args.method)  # records at 0, 0.01, t_max
    with blas_threads(args.threads):
        for rule in rules:
            problem = Problem.from_models(model, DynamicsConfig(rule, tuple(wds)), args.runs)
            W0 = initial_state(problem, args.dim, 0.5, args.seed).W  # what sweep_flow starts from
            (loop_gains, loop_evals, loop_settled), t_loop = timed(
                lambda rule=rule, W0=W0: loop_sweep(model, wds, rule, W0, args))
            totals["loop"] += t_loop
            row_t, row_d, row_e, row_c = {}, {}, {}, {}
            for path in paths:
                res, row_t[path] = timed(lambda rule=rule, path=path: sweep_flow(model, wds, rule, integrator=path,
                                                                               **sweep_kw))
                info = res.trajectory.info
                row_d[path] = float(np.abs(res.gain_sq - loop_gains).max())
                row_e[path] = info.get("run_evaluations", res.trajectory.steps)
                row_c[path] = int((np.broadcast_to(info.get("t_final_per_run", info["t_final"]), wds.shape)
                                   < args.t_max).sum())
                totals[path] += row_t[path]
                worst[path] = max(worst[path], row_d[path])
            label = rule.name if rule.name != "directset" else f"directset({rule.alpha:g})"
            shared = row_t.get("solve_ivp", "-")
            rows.append([label, t_loop, loop_evals, loop_settled, row_t["auto"], row_e["auto"], row_c["auto"],
                         row_t["batched"], row_e["batched"], shared, t_loop / row_t["auto"],
                         t_loop / row_t["batched"], row_d["auto"], row_d["batched"]])
    rows.append(["total", totals["loop"], "", "", totals["auto"], "", "", totals["batched"], "",
                 totals.get("solve_ivp", "-"), totals["loop"] / totals["auto"], totals["loop"] / totals["batched"],
                 worst["auto"], worst["batched"]])
    print_table(["rule", "loop s", "loop evals", "loop stopped", "linssl s", "linssl run-evals", "linssl stopped",
                 "batched-DOP853 s", "batched run-evals", "solve_ivp-batch s", "speedup", "speedup batched-DOP853",
                 "max\\|Δg²\\| linssl", "max\\|Δg²\\| batched"], rows)
    print(f"stopped: runs whose max|dW/dt| fell below {args.conv_tol:g} before t_max = {args.t_max:g}")
    headline = {"speedup": round(totals["loop"] / totals["auto"], 3), "max_abs_diff": worst["auto"],
                "speedup_batched_dop853": round(totals["loop"] / totals["batched"], 3),
                "speedup_vs_shared_step": (round(totals["solve_ivp"] / totals["auto"], 3) if args.shared_step
                                           else None)}
    emit(headline)
    return headline


if __name__ == "__main__":
    main()
