"""Each benchmark's --quick mode runs and ends with one JSON line holding its documented keys.

Timings are never asserted (the machine is shared and noisy); the answers the benchmarks check
themselves (the simulator's agreement with the loop) are.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPTS = {
    "predictor_cost.py": {"ratio_d512", "ratio_d2048"},
    "simulator_sweep.py": {"speedup", "max_abs_diff", "speedup_batched_dop853", "speedup_vs_shared_step"},
    "simulate_scale.py": {"seconds_d512", "seconds_d1024", "exponent", "all_agree", "max_abs_diff_loop"},
    "train_step.py": {"ratio_vs_lightly", "predictor_share"},
    "deep_throughput.py": {"images_per_s", "data_share", "augment_share", "network_share", "device"},
}


def run_quick(script: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 2, "a table must come before the JSON line"
    return json.loads(lines[-1])


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_quick_mode_ends_with_headline_json(script):
    headline = run_quick(script)
    assert set(headline) == SCRIPTS[script]
    if script == "predictor_cost.py":
        assert headline["ratio_d512"] > 0 and headline["ratio_d2048"] is None  # quick mode stops at d = 512
    elif script == "simulator_sweep.py":
        # both sides integrate the same problem at rtol 1e-8 / atol 1e-10 over t = 20: the gains
        # (O(1)) agree to well under 1e-6; a wrong right-hand side or horizon differs by O(0.1)
        assert headline["max_abs_diff"] < 1e-6
        assert headline["speedup"] > 0 and headline["speedup_batched_dop853"] > 0
        assert headline["speedup_vs_shared_step"] is None  # that path runs only with --shared-step
    elif script == "simulate_scale.py":
        # quick: d = 8, 12 only (no d ≥ 128 rows to fit); both sides stop at max|dW/dt| < 1e-8, within
        # ~1e-8 / rate of the same fixed point: gains² agree to ~1e-7, a wrong field differs by O(0.1)
        assert headline["all_agree"] and headline["max_abs_diff_loop"] < 1e-5
        assert headline["seconds_d512"] is None and headline["exponent"] is None
    elif script == "train_step.py":
        assert 0 < headline["predictor_share"] < 1
        ratio = headline["ratio_vs_lightly"]
        assert ratio is None or (math.isfinite(ratio) and ratio > 0)
    else:
        shares = [headline[k] for k in ("data_share", "augment_share", "network_share")]
        assert all(0 <= s <= 1 for s in shares) and math.isclose(sum(shares), 1.0, abs_tol=1e-3)
        assert headline["images_per_s"] > 0 and headline["device"].startswith("cpu")
