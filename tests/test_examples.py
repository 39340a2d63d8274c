"""Every script in examples/ runs, and what it prints is what the theory says (the public API in use)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    tested = {"simulate_threshold", "sweep_rules", "theory_checks_quick", "downstream_samples", "own_backbone"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_simulate_threshold_keeps_what_theory_keeps(capsys):
    rows = load("simulate_threshold").main()
    assert [(wd, theory) for wd, _, theory in rows] == [(0.02, 8), (0.05, 5), (0.1, 4)]  # σ²* = 11.5, 4, 1.5
    assert all(sim == theory for _, sim, theory in rows)
    assert capsys.readouterr().out.count("AGREES") == 3


def test_sweep_rules_keep_the_same_subspace():
    kept = load("sweep_rules").main()
    assert np.array_equal(kept["directpred"], kept["directcopy"]) and np.array_equal(kept["directpred"],
                                                                                      kept["directset"])
    assert kept["directpred"].sum(1).tolist() == [4, 3, 2]  # σ²* = 7.33, 3.17, 1.08 against 0.1, 1, 3, 6


def test_downstream_example_learned_needs_fewer_samples():
    result = load("downstream_samples").main()
    raw, learned = result.curves["raw"], result.curves["learned"]
    assert learned.n_to_target < raw.n_to_target
    # closed forms: raw n = σ²d/target + d + 1 = 188, learned σ²r/target + r + 1 = 38 → ratio ≈ 5 = d/r
    assert 3 < result.n_to_target_ratio < 8


@pytest.mark.slow
def test_theory_checks_example_passes():
    assert load("theory_checks_quick").main()


@pytest.mark.slow
def test_own_backbone_example_trains_and_beats_chance(tmp_path):
    result = load("own_backbone").main(str(tmp_path / "run"), epochs=2)
    assert result.summary["config"]["arch"] == "custom" and result.summary["dataset"] == "custom"
    assert result.summary["linear_top1"] > 0.5  # ten classes: chance is 0.1
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
