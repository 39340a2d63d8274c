"""The result type of a theory check, the runner and the shared helpers.

A check is a function ``check_xxx(quick: bool = False, **overrides) -> CheckResult``: it states what
the theory predicts, runs the simulator, compares the two with a stated tolerance and says whether
they agree. The overrides replace a prediction by a deliberately wrong one (e.g. ``gain_scale=1.05``)
so that tests can show a check reports FAIL; the simulation itself never depends on them, so the
expensive part is cached per ``quick`` and shared between a normal and an overridden call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from linssl.errors import LinsslError
from linssl.linear.data import DTYPE
from linssl.linear.dynamics import Problem, State
from linssl.runtime import one_thread


@dataclass
class CheckResult:
    """One verified prediction.

    predicted / measured: one scalar each for the table (the headline quantity); error: the scalar
    that is compared with ``tolerance`` (usually the worst relative error over every case the check
    ran); passed also requires every qualitative condition (listed in ``failures`` when it does not
    hold); details: per-case numbers for the JSON report.
    """

    name: str
    claim: str
    predicted: float
    measured: float
    error: float
    tolerance: float
    passed: bool
    failures: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "claim": self.claim,
            "predicted": finite_or_none(self.predicted),
            "measured": finite_or_none(self.measured),
            "error": finite_or_none(self.error),
            "tolerance": self.tolerance,
            "passed": bool(self.passed),
            "failures": list(self.failures),
            "details": jsonable(self.details),
            "seconds": self.seconds,
        }


def make_result(
    name: str,
    claim: str,
    predicted: float,
    measured: float,
    error: float,
    tolerance: float,
    failures: Iterable[str] = (),
    details: dict | None = None,
) -> CheckResult:
    """A result that passes iff ``error <= tolerance`` (NaN fails) and no qualitative failure is listed."""
    failures = list(failures)
    error = float(error)
    if not error <= tolerance:
        failures.insert(0, f"error {error:.3g} > tolerance {tolerance:.3g}")
    return CheckResult(name, claim, float(predicted), float(measured), error, float(tolerance), not failures,
                       failures, details or {})


def finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable(obj):
    """Nested containers of numbers with NaN/inf replaced by None (the JSON writer forbids NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray | torch.Tensor):
        return jsonable(np.asarray(obj).tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return finite_or_none(obj)
    return obj


def relative_error(measured, predicted) -> np.ndarray:
    """|measured − predicted| / |predicted| elementwise."""
    measured, predicted = np.asarray(measured, dtype=float), np.asarray(predicted, dtype=float)
    return np.abs(measured - predicted) / np.abs(predicted)


def max_or_zero(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.max()) if values.size else 0.0


def aligned_state(basis: torch.Tensor, gain_sq: np.ndarray, problem: Problem) -> State:
    """A state aligned with the data basis: W_b = diag(w_b) Uᵀ with w_b = sqrt(gain_sq[b]) (B, d).

    Then ‖W u_i‖² = gain_sq[b, i] exactly and the features evolve independently (commuting case).
    An EMA target starts as an exact copy; a trained predictor as W_p = diag(w) (balanced).
    """
    w = torch.as_tensor(np.sqrt(np.asarray(gain_sq, dtype=float)), dtype=DTYPE)
    if w.ndim != 2 or w.shape[0] != problem.batch:
        raise LinsslError(f"aligned_state needs gains of shape ({problem.batch}, d), got {tuple(w.shape)}")
    W = torch.diag_embed(w) @ basis.mT
    Wp = torch.diag_embed(w).clone() if problem.config.rule.kind == "trainable" else None
    Wa = W.clone() if problem.config.target == "ema" else None
    return State(W, Wp, Wa)


def timed(check: Callable[..., CheckResult], quick: bool, **overrides) -> CheckResult:
    """Run one check on one thread and record its wall time."""
    start = time.perf_counter()
    with one_thread():
        result = check(quick=quick, **overrides)
    result.seconds = time.perf_counter() - start
    return result


def run_checks(names: Iterable[str] | None = None, quick: bool = False) -> list[CheckResult]:
    """Run the named checks (default: all, in registry order)."""
    from theory_checks import CHECKS

    selected = list(CHECKS) if names is None else list(names)
    unknown = [n for n in selected if n not in CHECKS]
    if unknown:
        raise LinsslError(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    return [timed(CHECKS[name], quick) for name in selected]


def format_table(results: list[CheckResult]) -> str:
    """One row per check (name, predicted, measured, error, tolerance, PASS/FAIL, seconds), then the
    reasons of every failure and a summary line."""
    header = f"{'check':<14} {'predicted':>12} {'measured':>12} {'error':>10} {'tolerance':>10} {'result':>6} {'s':>6}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(f"{r.name:<14} {r.predicted:>12.6g} {r.measured:>12.6g} {r.error:>10.2e} {r.tolerance:>10.1e} "
                     f"{'PASS' if r.passed else 'FAIL':>6} {r.seconds:>6.1f}")
    for r in results:
        if not r.passed:
            lines.append(f"FAIL {r.name}: {r.claim}")
            lines.extend(f"    - {reason}" for reason in r.failures)
    n_pass = sum(r.passed for r in results)
    lines.append(f"{n_pass} of {len(results)} checks passed")
    return "\n".join(lines)


def report(results: list[CheckResult]) -> dict:
    """The ``--json`` document: ``{"checks": [...], "passed": bool}``."""
    return {"checks": [r.to_json() for r in results], "passed": all(r.passed for r in results)}
