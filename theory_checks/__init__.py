"""Numerical verification of every prediction of the linear theory (docs/theory.md §1, §4–§5).

``CHECKS`` is the registry: an ordered mapping from check name to a function
``check(quick: bool = False, **overrides) -> CheckResult`` (see :mod:`theory_checks.base`). To add a
check, write a module with such a function and add one line here; ``linssl check`` runs them in this
order.
"""

from __future__ import annotations

from collections.abc import Callable

from theory_checks.alignment import check_alignment
from theory_checks.balancing import check_balancing
from theory_checks.base import CheckResult, format_table, report, run_checks
from theory_checks.basin import check_basin
from theory_checks.downstream import check_downstream
from theory_checks.ema import check_ema
from theory_checks.gains import check_gains
from theory_checks.modes import check_modes
from theory_checks.rate import check_rate
from theory_checks.subspace import check_subspace
from theory_checks.symbolic import check_symbolic
from theory_checks.threshold import check_threshold

CHECKS: dict[str, Callable[..., CheckResult]] = {
    "threshold": check_threshold,  # 1. kept iff λ² >= 4η(λ + σ²), for every α
    "gains": check_gains,  # 2. stable gains p₊^(1/α)/c
    "alignment": check_alignment,  # 3. W aligns with U from a random rotation
    "basin": check_basin,  # 4. collapse below p₋, survival above
    "rate": check_rate,  # 5. local rate, slowing down, GD step limit
    "ema": check_ema,  # 6. EMA target: same fixed points; τ-scaled target: τ² >= 4η(1 + σ²)
    "balancing": check_balancing,  # 7. trained predictor: W_pᵀW_p − WWᵀ ∝ e^{−2ηt}
    "subspace": check_subspace,  # 8. DirectPred / DirectCopy / DirectSet(α) learn the same subspace
    "downstream": check_downstream,  # 9. downstream excess risk σ²p/(n − p − 1), p = d vs r
    "modes": check_modes,  # docs/theory.md §3: GD and SGD reach the flow's fixed points
    "symbolic": check_symbolic,  # sympy derivation = numeric closed forms
}

__all__ = ["CHECKS", "CheckResult", "format_table", "report", "run_checks"]
