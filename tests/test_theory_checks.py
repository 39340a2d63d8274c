"""The theory checks: `linssl check --quick` passes and writes its JSON, and every check reports FAIL
when fed a deliberately wrong prediction (through the real check, on the same cached simulation)."""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import theory_checks
from linssl import theory
from linssl.cli import main as linssl_main
from linssl.linear.data import commuting_model
from linssl.linear.dynamics import DynamicsConfig, Problem
from linssl.linear.records import gains_along
from linssl.predictors import make_rule
from theory_checks.base import CheckResult, format_table, jsonable, make_result, report


def _gains_5_percent_high(*args, **kwargs):
    return 1.05 * np.asarray(theory.predicted_gain_sq(*args, **kwargs))


ISSUE_CLAIMS = ("threshold", "gains", "alignment", "basin", "rate", "ema", "balancing", "subspace", "downstream")


def test_registry_covers_every_claim_in_order():
    names = list(theory_checks.CHECKS)
    assert names[: len(ISSUE_CLAIMS)] == list(ISSUE_CLAIMS)
    assert {"modes", "symbolic"} <= set(names)


@pytest.mark.slow
def test_quick_cli_passes_prints_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "out" / "checks.json"
    assert linssl_main(["check", "--quick", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    doc = json.loads(path.read_text())
    assert doc["passed"] is True
    assert [c["name"] for c in doc["checks"]] == list(theory_checks.CHECKS)
    for c in doc["checks"]:
        assert {"name", "predicted", "measured", "tolerance", "passed"} <= set(c)
        assert c["passed"] is True and c["error"] <= c["tolerance"]
        assert f"{c['name']}" in out
    assert out.count("PASS") == len(theory_checks.CHECKS)
    assert f"{len(theory_checks.CHECKS)} of {len(theory_checks.CHECKS)} checks passed" in out


# Each override puts a wrong prediction into the real check; the simulation is the cached one.
WRONG_PREDICTIONS = [
    ("threshold", {"threshold_scale": 1.1}),  # threshold 10% too high
    ("threshold", {"threshold_scale": 0.9}),  # and 10% too low
    ("gains", {"gain_scale": 1.05}),  # gains 5% too high
    ("gains", {"gain_scale": 0.95}),
    ("alignment", {"predicted_offdiag": 0.01}),
    ("basin", {"basin_scale": 1.1}),
    ("rate", {"rate_scale": 1.05}),
    ("ema", {"tau_predicted": 1.0}),  # ignoring τ moves the threshold from 2.2 to 4
    ("ema", {"gain_scale": 1.05}),
    ("balancing", {"rate_scale": 1.01}),
    ("subspace", {"kept_predicted": ((0, 1, 2, 3), (0, 1, 2, 3))}),  # one kept feature forgotten at η = 0.05
    ("downstream", {"risk_scale": 1.3}),
    ("modes", {"gain_scale": 1.1}),
    ("symbolic", {"numeric": {"predicted_gain_sq": _gains_5_percent_high}}),
]
WRONG_IDS = [f"{name}-{next(iter(overrides))}" for name, overrides in WRONG_PREDICTIONS]


@pytest.mark.parametrize(("name", "overrides"), WRONG_PREDICTIONS, ids=WRONG_IDS)
def test_check_reports_fail_for_a_wrong_prediction(name, overrides):
    result = theory_checks.CHECKS[name](quick=True, **overrides)
    assert isinstance(result, CheckResult)
    assert not result.passed, f"{name} did not notice {overrides}: error {result.error} tol {result.tolerance}"
    assert result.failures


def test_threshold_fail_reports_the_misclassified_features():
    result = theory_checks.CHECKS["threshold"](quick=True, threshold_scale=1.1)
    assert result.error > result.tolerance
    assert any("classified differently" in f for f in result.failures)
    correct = theory_checks.CHECKS["threshold"](quick=True)
    assert correct.passed and correct.error < 0.1 / 3  # the resolution is far below the 10% error


def test_gains_error_scales_with_the_wrong_prediction():
    wrong = theory_checks.CHECKS["gains"](quick=True, gain_scale=1.05)
    # measured ≈ true gain, so |true − 1.05 true| / (1.05 true) = 0.05/1.05
    assert wrong.error == pytest.approx(0.05 / 1.05, rel=1e-3)


def test_cli_exits_1_when_a_check_fails(tmp_path, capsys, monkeypatch):
    wrong = functools.partial(theory_checks.CHECKS["gains"], gain_scale=1.05)
    monkeypatch.setitem(theory_checks.CHECKS, "gains", wrong)
    path = tmp_path / "fail.json"
    assert linssl_main(["check", "--quick", "--only", "gains,symbolic", "--json", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 of 2 checks passed" in out
    doc = json.loads(path.read_text())
    assert doc["passed"] is False
    assert [c["passed"] for c in doc["checks"]] == [False, True]


@pytest.mark.parametrize("argv", [["--only", "nosuch"], ["--only", ","], ["--bogus"]])
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse errors exit from the parser
        code = linssl_main(["check", *argv])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_list_names_every_check(capsys):
    assert linssl_main(["check", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in theory_checks.CHECKS)


def test_python_m_theory_checks(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "theory_checks", "--list"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "threshold" in proc.stdout  # bad --only: test_bad_flags_exit_2_with_one_line


def test_make_result_fails_on_nan_and_on_listed_failures():
    assert not make_result("x", "c", 1.0, float("nan"), float("nan"), 1.0).passed
    assert not make_result("x", "c", 1.0, 1.0, 0.0, 1.0, ["feature 3 differs"]).passed
    ok = make_result("x", "c", 1.0, 1.0, 0.5, 1.0)
    assert ok.passed and ok.failures == []


def test_json_report_has_no_nan_and_the_table_names_failures():
    bad = make_result("broken", "claim text", 1.0, float("nan"), 2.0, 1.0, details={"v": [1.0, float("inf")]})
    doc = report([bad])
    assert doc["passed"] is False and doc["checks"][0]["measured"] is None
    assert doc["checks"][0]["details"]["v"] == [1.0, None]
    json.dumps(doc, allow_nan=False)
    table = format_table([bad])
    assert "FAIL broken: claim text" in table and "error 2 > tolerance 1" in table
    assert jsonable({"a": np.float64(math.nan), "b": np.bool_(True), "c": torch.tensor([1.0])}) == {
        "a": None, "b": True, "c": [1.0]}


def test_aligned_state_sets_the_gains_exactly():
    from theory_checks.base import aligned_state

    model = commuting_model(1.0, (0.1, 0.5, 2.0), seed=3)
    problem = Problem.from_models(model, DynamicsConfig(make_rule("trainable"), 0.05, target="ema"), 2)
    gain_sq = np.array([[0.2, 0.3, 0.4], [1.0, 0.5, 0.25]])
    state = aligned_state(model.basis, gain_sq, problem)
    assert torch.allclose(gains_along(state.W, model.basis), torch.as_tensor(gain_sq, dtype=torch.float64))
    assert torch.equal(state.Wa, state.W)
    # balanced trained predictor: W_pᵀW_p = WWᵀ
    assert torch.allclose(state.Wp.mT @ state.Wp, state.W @ state.W.mT)
