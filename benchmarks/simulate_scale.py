"""One simulation run against its size d: `python -m linssl.simulate --wd 0.05 --dim d`, and solve_ivp.

The problem is the CLI's default at size d: DirectPred (α = ½, F aug, norm none, ε = 0), stop-gradient,
λ = 1, σ² geometric from 0.1 to 10 (``linssl.simulate.default_aug_var``), η = 0.05, m = d, a seeded
random rotation as initial W, integrated to convergence (max|dW/dt| < 1e-8) with the defaults of
``linssl.linear.simulation.run_simulation``: exponential steps (``linssl.linear.exponential``) with
RK45's tableau, the transient at rtol 1e-6, then rtol 1e-9, atol 1e-12. Each row is timed from
``SimConfig`` to the verdict (integration and records).

Beside it, where it finishes within ``--loop-budget`` seconds, the former path: one
``scipy.integrate.solve_ivp`` (DOP853, the same tolerances, stop test and horizon) on
``Problem.velocity`` from the same initial W (``linssl.linear.dynamics.integrate_flow``), and the
largest difference of the final squared gains. The fitted exponent is the least-squares slope of
log(seconds) against log(d) over the rows with d ≥ 128 (below, fixed costs dominate).

    .venv/bin/python benchmarks/simulate_scale.py                 # d = 32 … 1024 (~10 min on one core)
    .venv/bin/python benchmarks/simulate_scale.py --quick         # d = 8, 12; loop at both

Last line: {"seconds_d512": …, "seconds_d1024": …, "exponent": …, "all_agree": …, "max_abs_diff_loop": …}
(null where a size was not run; all_agree: every run's verdict is AGREES).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from _common import emit, machine, print_table

from linssl.linear.dynamics import Problem, initial_state, integrate_flow
from linssl.linear.records import gains_along
from linssl.linear.simulation import SimConfig, run_simulation
from linssl.simulate import default_aug_var


class OverBudget(Exception):
    pass


def loop_run(config: SimConfig, budget: float) -> tuple[np.ndarray | None, float, int]:
    """(final gain², seconds, evaluations) of solve_ivp on the same problem; gains None past the budget."""
    model = config.model()
    run = config.settings(model)
    problem = Problem.from_models(model, config.dynamics(run))
    state = initial_state(problem, model.dim, run.init_scale, config.seed)
    t0 = time.perf_counter()

    def watch(_t: float) -> None:
        if time.perf_counter() - t0 > budget:
            raise OverBudget

    try:
        traj = integrate_flow(problem, state, t_max=run.time, rtol=config.rtol, atol=run.atol, conv_tol=run.conv_tol,
                              progress=watch)
    except OverBudget:
        return None, time.perf_counter() - t0, 0
    return gains_along(traj.final.W, model.basis)[0].numpy(), time.perf_counter() - t0, traj.steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 8, 12")
    parser.add_argument("--dims", default="32,64,128,256,512,1024")
    parser.add_argument("--loop-budget", type=float, default=120.0,
                        help="seconds a solve_ivp run may take before it is given up (default 120)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    args = parser.parse_args(argv)
    dims = (8, 12) if args.quick else tuple(int(d) for d in args.dims.split(","))
    torch.set_num_threads(args.threads)
    print("machine:", machine())
    print(f"wd 0.05, DirectPred, flow to max|dW/dt| < 1e-8, threads {args.threads}, "
          f"solve_ivp budget {args.loop_budget:g} s")
    rows, seconds, agree, worst = [], {}, True, 0.0
    loop_alive = True
    for d in dims:
        config = SimConfig(wd=0.05, aug_var=default_aug_var(d))
        t0 = time.perf_counter()
        result = run_simulation(config)
        seconds[d] = time.perf_counter() - t0
        info = result.trajectory.info
        agree &= result.passed
        loop_s, diff = "-", float("nan")
        if loop_alive:
            gains, spent, _ = loop_run(config, args.loop_budget)
            if gains is None:
                loop_s, loop_alive = f"> {spent:.0f}", False  # larger d only take longer
            else:
                diff = float(np.abs(gains - np.array([f.gain_sq_simulated for f in result.features])).max())
                worst = max(worst, diff)
                loop_s = spent
        speedup = loop_s / seconds[d] if isinstance(loop_s, float) else "-"
        rows.append([d, seconds[d], int(info.get("run_evaluations", result.trajectory.steps)),
                     int(np.asarray(info.get("accepted_steps", 0)).sum()), info["t_final"],
                     result.max_gain_rel_error, "AGREES" if result.passed else "DISAGREES", loop_s, speedup, diff])
    print_table(["d", "linssl s", "evaluations", "steps", "t_final", "max rel gain err", "verdict", "solve_ivp s",
                 "speedup", "max\\|Δg²\\|"], rows)
    big = [d for d in seconds if d >= 128]
    exponent = None
    if len(big) >= 2:
        exponent = round(float(np.polyfit(np.log(big), np.log([seconds[d] for d in big]), 1)[0]), 3)
    print(f"fitted exponent (seconds ∝ d^k, d ≥ 128): {exponent}")
    headline = {"seconds_d512": _rounded(seconds.get(512)), "seconds_d1024": _rounded(seconds.get(1024)),
                "exponent": exponent, "all_agree": bool(agree), "max_abs_diff_loop": worst}
    emit(headline)
    return headline


def _rounded(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 2)


if __name__ == "__main__":
    main()
