"""Slow end-to-end runs (CI job 2): every theory check in full mode, every figure in full mode, and the
faces working from a plain (non-editable) install."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_full_theory_checks_pass(tmp_path):
    out = tmp_path / "checks.json"
    proc = subprocess.run([sys.executable, "-m", "linssl.cli", "check", "--json", str(out)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["passed"] and len(report["checks"]) >= 9
    assert all(c["passed"] for c in report["checks"])


@pytest.mark.slow
def test_full_figures(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "linssl.cli", "figures", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) >= 8 and all((tmp_path / p).stat().st_size > 5000 for p in pngs)
    assert len(list(tmp_path.glob("*.pdf"))) == len(pngs)


@pytest.mark.slow
def test_non_editable_install_runs_check_and_simulate(tmp_path):
    """`pip install .` (no editable link) must ship theory_checks and the recipe files too: run the faces from
    another folder."""
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    for args in (["check", "--quick", "--only", "threshold,symbolic"], ["simulate", "--aug-var", "0.2,6"]):
        proc = subprocess.run([sys.executable, "-c", "import sys; from linssl.cli import main; sys.exit(main())",
                               *args], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    # the recipes are package data: listed, and one resolved, from the installed copy
    run = [sys.executable, "-c", "import sys; from linssl.cli import main; sys.exit(main())"]
    listing = subprocess.run([*run, "recipes"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert listing.returncode == 0 and "directpred-stl10" in listing.stdout, listing.stderr[-2000:]
    printed = subprocess.run([*run, "deep-train", "--recipe", "byol-imagenet", "--print-config"], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path, env=env)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert json.loads(printed.stdout)["blur_p"] == [1.0, 0.1]
    probe = subprocess.run([sys.executable, "-c", "import theory_checks, linssl; print(theory_checks.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert str(target) in probe.stdout
