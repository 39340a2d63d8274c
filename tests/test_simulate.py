"""The simulator: closed-form agreement across rules/targets/integrators, and the CLI contract."""

import json
import subprocess
import sys

import pytest

from linssl.linear.simulation import SimConfig, run_simulation

# (predictor, alpha, f_source, target, init_scale). DirectSet(2) squares small predictor eigenvalues,
# so it needs a larger initial scale to start outside the collapse basin (docs/theory.md §4).
FLOW_CASES = [
    (pred, alpha, source, target, 1.0 if alpha == 2.0 else 0.5)
    for pred, alpha in [("directpred", None), ("directcopy", None), ("directset", 0.25), ("directset", 2.0)]
    for source in ("aug", "clean")
    for target in ("stopgrad", "ema")
] + [("trainable", None, "aug", "stopgrad", 0.5), ("trainable", None, "aug", "ema", 0.5)]


@pytest.mark.parametrize("pred, alpha, source, target, init_scale", FLOW_CASES)
@pytest.mark.parametrize("wd", [0.05, 0.1])
def test_flow_matches_closed_form(pred, alpha, source, target, init_scale, wd):
    r = run_simulation(SimConfig(wd=wd, predictor=pred, alpha=alpha, f_source=source, target=target,
                                 init_scale=init_scale, seed=1))
    assert r.converged
    for f in r.features:
        if f.near_threshold:
            continue
        assert f.kept_simulated == f.kept_predicted
        if f.kept_predicted:
            # the bar is 1e-3 relative; the flow actually reaches ~1e-9 (rtol 1e-9, conv 1e-8)
            assert f.gain_sq_simulated == pytest.approx(f.gain_sq_predicted, rel=1e-3)
    assert r.alignment_offdiag < 1e-6
    assert r.projection_error < 1e-6
    assert r.passed, r.verdict


def test_default_aug_var_straddles_both_thresholds():
    from linssl import theory
    from linssl.linear.data import DEFAULT_AUG_VAR

    for wd in (0.05, 0.1):
        star = theory.threshold_aug_var(wd)
        kept = [s for s in DEFAULT_AUG_VAR if s <= star]
        assert 0 < len(kept) < len(DEFAULT_AUG_VAR)
        assert all(abs(s - star) > 0.1 * star for s in DEFAULT_AUG_VAR)  # none within 10%


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["gd", "sgd"])
def test_gd_and_sgd_agree_with_theory(mode):
    r = run_simulation(SimConfig(mode=mode, predictor="directcopy", seed=2))
    assert r.passed, r.verdict


def test_gaussian_init_can_start_in_the_collapse_basin():
    """A Gaussian W has small singular directions: with DirectCopy (p ∝ s) one kept feature collapses
    to w = 0 — the second stable fixed point — and the verdict says so instead of hiding it."""
    r = run_simulation(SimConfig(predictor="directcopy", init="gaussian", seed=1))
    assert not r.passed and "DISAGREES" in r.verdict


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "linssl.simulate", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_default_table_json_and_plot(tmp_path):
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    proc = run_cli("--wd", "0.05", "--json", str(out), "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    assert "gain² (theory)" in proc.stdout and "AGREES with theory" in proc.stdout
    data = json.loads(out.read_text())
    for key in ("config", "threshold_aug_var", "features", "alignment_offdiag", "projection_error", "converged"):
        assert key in data
    assert data["threshold_aug_var"] == pytest.approx(4.0)
    assert set(data["features"][0]) >= {"data_var", "aug_var", "kept_predicted", "kept_simulated",
                                        "gain_sq_predicted", "gain_sq_simulated"}
    assert data["config"]["wd"] == 0.05 and data["config"]["predictor"] == "directpred"
    assert plot.stat().st_size > 1000


def test_cli_is_the_same_as_linssl_simulate(capsys):
    a = run_cli("--aug-var", "0.2,6", "--wd", "0.1")  # python -m linssl.simulate, a real process
    from linssl.cli import main as cli_main

    assert cli_main(["simulate", "--aug-var", "0.2,6", "--wd", "0.1"]) == 0  # linssl simulate, in-process
    assert a.returncode == 0 and a.stdout == capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["--wd", "-0.1"],
        ["--wd", "abc"],
        ["--wd", "nan"],
        ["--aug-var", "0.1,0.5", "--data-var", "1,1,1"],
        ["--aug-var", "0.1,-2"],
        ["--aug-var", "0.1,x"],
        ["--dim", "3", "--aug-var", "0.1,0.2"],
        ["--predictor", "directset", "--alpha", "0"],
        ["--predictor", "directset"],
        ["--predictor", "simclr"],
        ["--norm", "l1"],
        ["--mode", "gd", "--lr", "5"],
        ["--mode", "sgd", "--lr", "-1"],
        ["--out-dim", "20"],
        ["--target-scale", "0"],
        ["--rtol", "0"],
        ["--atol", "-1e-12"],
        ["--conv-tol", "nan"],
        ["--aug-var", "0.1,-0.0001"],
        ["--data-var", "0"],
        ["--mode", "gd", "--lr", "0"],
        ["--mode", "gd", "--lr", "nan"],
        ["--predictor", "trainable", "--pred-lr", "0"],
        ["--predictor", "trainable", "--pred-wd", "nan"],
        ["--init-scale", "-1"],
        ["--eps", "-0.1"],
        ["--seed", "-1"],
        ["--seed", str(2**64)],
        ["--dim", "100000"],
        ["--wd", "1e308"],  # float64 overflows inside the eigendecomposition: the divergence error
        ["--init-scale", "1e300"],
        ["--plot", "gains.xyz"],
        ["--data-cov", "X.npy", "--aug-cov", "Xa.npy", "--dim", "5"],  # the matrices set d: refused, not ignored
    ],
)
def test_cli_bad_input_one_line_exit_2_no_output(tmp_path, capsys, args):
    from linssl.cli import command_main

    out = tmp_path / "r.json"
    out.write_text("previous")
    try:
        code = command_main("linssl.simulate", "linssl simulate", [*args, "--json", str(out)])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out.read_text() == "previous"  # nothing written, nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name != "r.json"]


def test_divergence_message_names_the_lr_in_a_real_process():
    proc = run_cli("--mode", "gd", "--lr", "5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "diverged" in proc.stderr and "lr" in proc.stderr


def test_general_model_from_matrix_files(tmp_path):
    """Commuting X, X' given as plain matrices: the learned spectrum of WᵀW equals the closed-form gains;
    a non-commuting pair integrates to a fixed point too."""
    import numpy as np

    from linssl import theory
    from linssl.linear.data import commuting_model

    aug = (0.2, 1.0, 6.0)
    model = commuting_model(1.0, aug, seed=4)
    np.save(tmp_path / "X.npy", model.data_cov.numpy())
    np.savetxt(tmp_path / "Xa.txt", model.aug_cov.numpy())
    from linssl.cli import command_main

    out = tmp_path / "g.json"
    assert command_main("linssl.simulate", "linssl simulate", ["--data-cov", str(tmp_path / "X.npy"), "--aug-cov",
                                                               str(tmp_path / "Xa.txt"), "--json", str(out)]) == 0
    learned = sorted(f["gain_sq_simulated"] for f in json.loads(out.read_text())["features"])
    predicted = sorted(theory.predicted_gain_sq(1.0, np.array(aug), 0.05, 0.5))
    np.testing.assert_allclose(learned, predicted, rtol=1e-6, atol=1e-9)  # converged flow: ~1e-9 agreement

    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3))
    np.save(tmp_path / "Xn.npy", A @ A.T / 3 + 0.5 * np.eye(3))
    code = command_main("linssl.simulate", "linssl simulate", ["--data-cov", str(tmp_path / "Xn.npy"),
                                                               "--aug-cov", str(tmp_path / "Xa.txt")])
    assert code == 0


@pytest.mark.parametrize("kwargs", [{"eps": 0.05, "wd": 0.1}, {"predictor": "trainable", "pred_lr": 0.5, "wd": 0.1},
                                    {"predictor": "trainable", "pred_wd": 0.1}])
def test_closed_form_follows_eps_pred_lr_and_pred_wd(kwargs):
    r = run_simulation(SimConfig(**kwargs))
    assert r.passed, r.verdict


def test_normalised_predictor_is_reported_without_a_closed_form():
    r = run_simulation(SimConfig(norm="spectral"))
    assert "no closed form" in r.verdict and all(f.gain_sq_predicted is None for f in r.features)


def test_short_sgd_run_is_not_called_converged():
    r = run_simulation(SimConfig(mode="sgd", steps=200))
    assert not r.converged and not r.passed and "not converged" in r.verdict


def test_ema_momentum_must_stay_in_range():
    from linssl.errors import LinsslError

    with pytest.raises(LinsslError, match="EMA momentum"):
        run_simulation(SimConfig(mode="gd", target="ema", ema=200.0, lr=0.01))


def test_everything_discarded_reports_collapse_not_alignment():
    r = run_simulation(SimConfig(wd=0.3))  # 1/(4η) − 1 < 0: no feature can be kept
    assert r.passed and not any(f.kept_simulated for f in r.features)
    assert "collapsed" in r.verdict and r.to_json()["alignment_offdiag"] is None


def test_tolerance_and_basis_flags_reach_the_run(tmp_path):
    """--rtol/--atol/--conv-tol/--no-rotate are SimConfig fields one to one; a looser stop ends earlier."""
    from linssl.cli import command_main

    times = {}
    for name, extra in (("tight", []), ("loose", ["--conv-tol", "1e-6", "--rtol", "1e-6", "--atol", "1e-9"])):
        out = tmp_path / f"{name}.json"
        assert command_main("linssl.simulate", "linssl simulate", ["--no-rotate", *extra, "--json", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert doc["passed"] and doc["config"]["rotate"] is False
        times[name] = doc["t_final"]
    assert doc["config"]["conv_tol"] == 1e-6 and doc["config"]["rtol"] == 1e-6 and doc["config"]["atol"] == 1e-9
    assert times["loose"] < times["tight"]


def test_a_feature_without_augmentation_variance_is_kept_at_its_closed_form():
    """σ² = 0: kept iff λ ≥ 4η; w² = p₊² with p₊ = (1 + sqrt(1 − 4η)) / 2 (λ = 1, α = ½)."""
    import math

    r = run_simulation(SimConfig(wd=0.1, aug_var=(0.0, 1.0, 10.0)))
    assert r.passed, r.verdict
    p_plus = (1 + math.sqrt(1 - 4 * 0.1)) / 2
    assert r.features[0].gain_sq_simulated == pytest.approx(p_plus**2, rel=1e-6)  # converged flow: ~1e-9


@pytest.mark.slow
def test_frobenius_growth_is_explained_not_blamed_on_the_step():
    """F/‖F‖_F keeps every p_i < 1, so ‖W‖ grows for ever at this η: the error says so, not "smaller step"."""
    from linssl.errors import DivergenceError

    with pytest.raises(DivergenceError, match="grows without bound under the frobenius") as info:
        run_simulation(SimConfig(norm="frobenius"))
    assert "init-scale" not in str(info.value) and "--lr" not in str(info.value)


@pytest.mark.slow
def test_sgd_collapse_hint_points_at_the_lagging_estimate():
    """docs/theory.md §3's pitfall: η = 0.07, σ² = 1.5 from init scale 1, lr 0.02, ρ 0.99 loses the kept feature
    because F̂ lags W; the hint names ρ and lr, not a larger init (which makes it worse)."""
    r = run_simulation(SimConfig(wd=0.07, aug_var=(0.1, 1.5, 6.0), init_scale=1.0, mode="sgd", lr=0.02, rho=0.99))
    assert not r.passed and "collapse basin" in r.verdict
    assert "--rho" in r.verdict and "larger --init-scale" not in r.verdict


def test_a_large_weight_decay_collapses_and_stops():
    """At η = 1e7 the speed η|W| stays above conv_tol until W is far below atol, where the integrator
    cannot follow it: the run stops as collapsed to 0 once the state is under atol (it once ran for ever)."""
    r = run_simulation(SimConfig(wd=1e7))
    assert r.passed and r.converged and not any(f.kept_simulated for f in r.features)
    assert r.trajectory.info["t_final"] < 1e-3


def test_output_paths_are_checked_before_the_run(tmp_path, capsys):
    """A folder given as --json, or --json under a file: one line before any work, nothing written."""
    from linssl.cli import command_main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (tmp_path, blocker / "r.json"):
        code = command_main("linssl.simulate", "linssl simulate", ["--aug-var", "0.2,6", "--json", str(target)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "cannot write" in err and ".tmp" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_frobenius_gd_with_a_huge_step_keeps_the_lr_hint():
    """Only the flow's divergence under Frobenius normalisation is the flow's; a GD step too large is the lr."""
    from linssl.errors import DivergenceError

    with pytest.raises(DivergenceError, match="smaller --lr"):
        run_simulation(SimConfig(norm="frobenius", wd=0.3, mode="gd", lr=100.0))


def test_a_run_already_slower_than_conv_tol_stops_at_once():
    """The stop event fires on a downward crossing only: a start below --conv-tol is settled at t = 0
    (it once ran to --time, so a looser tolerance took longer)."""
    r = run_simulation(SimConfig(conv_tol=100.0))
    assert r.converged and r.trajectory.info["t_final"] == 0.0 and r.trajectory.steps == 1


@pytest.mark.slow
def test_sgd_divergence_under_a_held_predictor_names_freq():
    """--freq beyond the run: W_p is set once and held, W grows along it; the hint names --freq too."""
    from linssl.errors import DivergenceError

    with pytest.raises(DivergenceError, match="--freq 100000"):
        run_simulation(SimConfig(mode="sgd", freq=100_000))


def test_no_weight_decay_keeps_every_feature_at_its_limit(tmp_path, capsys):
    """η = 0 is a valid run (issue #14): p₊ → λ/(λ + σ²), so every feature is kept, and DirectPred (α = ½,
    F aug) settles at w² = p₊²/(λ + σ²) = λ²/(λ + σ²)³; there is no σ² threshold (σ²* = ∞)."""
    r = run_simulation(SimConfig(wd=0.0, aug_var=(0.1, 1.0, 10.0)))
    assert r.passed, r.verdict
    for f in r.features:
        assert f.kept_predicted and f.kept_simulated
        # the flow stops at max|dW/dt| < 1e-8, within 1e-8 / rate ≈ 1.1e-7 of w₊ = 0.027 (σ² = 10, rate
        # 2αp₊λ = 0.09): w² within ~1e-5 relative
        assert f.gain_sq_simulated == pytest.approx(f.data_var**2 / (f.data_var + f.aug_var) ** 3, rel=1e-4)
    assert r.threshold_aug_var is None and r.to_json()["threshold_aug_var"] is None

    from linssl.cli import command_main

    out = tmp_path / "r.json"
    assert command_main("linssl.simulate", "linssl simulate", ["--wd", "0", "--aug-var", "0.1,10",
                                                               "--json", str(out)]) == 0
    assert "none at η = 0, every feature is kept" in capsys.readouterr().out
    assert json.loads(out.read_text())["passed"]


def test_near_threshold_is_measured_in_weight_decay():
    """Closeness to the threshold is |1 − η/η*| with η* = λ²/(4(λ + σ²)), defined for every feature: at
    λ = 0.2, σ² = 0 the threshold σ²* = λ²/(4η) − λ is negative for η > 0.05, so a window in σ² is empty
    and a feature 4 % from its threshold used to be judged (issue #14)."""
    for wd in (0.048, 0.052):  # 4 % below / above η* = 0.05
        r = run_simulation(SimConfig(wd=wd, data_var=(1.0, 0.2), aug_var=(0.1, 0.0)))
        assert r.features[1].near_threshold and not r.features[0].near_threshold
        assert r.features[1].threshold_wd == pytest.approx(0.05)
        assert r.passed, r.verdict


def test_a_general_model_settles_on_rotation_invariant_quantities(tmp_path):
    """On a non-commuting X, X' the flow reaches a relative equilibrium: W keeps turning, dW/dt = ΩW with Ω
    antisymmetric, while WᵀW is fixed, so a test on max|dW/dt| never fires (issue #14). Convergence is the
    speed less its output-rotation part; the JSON carries no field that needs a λ (threshold, alignment
    to a basis U, per-feature variances)."""
    import numpy as np

    from linssl.linear.dynamics import Problem
    from linssl.linear.rotation import non_rotational_speed

    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    X, Xa = A @ A.T / 4 + 0.5 * np.eye(4), B @ B.T / 4
    config = SimConfig(data_cov=tuple(map(tuple, X)), aug_cov=tuple(map(tuple, Xa)))
    r = run_simulation(config)
    assert r.converged and r.passed, r.verdict
    final = r.trajectory.final
    v = Problem.from_models(r.model, config.dynamics(r.settings)).velocity(final)
    tol = r.settings.conv_tol  # 1e-8·√‖X‖₂
    assert v.max_abs() > 100 * tol  # still turning along the orbit ...
    assert float(non_rotational_speed(final.W, v.W)) < 10 * tol  # ... with nothing else moving
    doc = r.to_json()
    assert doc["threshold_aug_var"] is None and doc["alignment_offdiag"] is None
    assert all(f["data_var"] is None and f["threshold_wd"] is None for f in doc["features"])


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_a_scaled_problem_gives_the_same_verdict_without_flags(c):
    """(λ, σ², η) → c(λ, σ², η) leaves p± unchanged and multiplies squared gains and time by 1/c; the
    defaults (horizon, initial scale, convergence test, kept tolerance) follow, so the verdict does not
    change (issue #14: at λ = 1e-3 an absolute kept tolerance read DISAGREES)."""
    from linssl.linear.data import DEFAULT_AUG_VAR

    unit = run_simulation(SimConfig())
    r = run_simulation(SimConfig(wd=0.05 * c, data_var=(c,), aug_var=tuple(c * a for a in DEFAULT_AUG_VAR)))
    assert unit.passed and r.passed, r.verdict
    assert [f.kept_simulated for f in r.features] == [f.kept_simulated for f in unit.features]
    for f, u in zip(r.features, unit.features, strict=True):
        if u.kept_predicted:  # both converged flows sit within ~1e-9 of the same fixed point, in units
            assert c * f.gain_sq_simulated == pytest.approx(u.gain_sq_simulated, rel=1e-6)
    run = r.settings
    assert run.time * c == pytest.approx(unit.settings.time) and run.kept_tol * c == pytest.approx(1e-8)
    assert run.init_scale * c**0.5 == pytest.approx(0.5) and run.conv_tol / c**0.5 == pytest.approx(1e-8)


@pytest.mark.parametrize("predictor", ["directpred", "trainable"])
def test_a_strongly_discarded_feature_at_a_large_scale_finishes(predictor):
    """λ = 1e3 with σ² up to 1e6: the discarded direction makes the flow stiff (rates ~p²σ² ≈ 1e6 against
    ~1e3), which an explicit integrator never finished (issue #14). Direct rules take exponential steps,
    the trained predictor's small state LSODA."""
    r = run_simulation(SimConfig(wd=50.0, data_var=(1e3,), aug_var=(1e2, 1e3, 1e5, 1e6), predictor=predictor))
    assert r.passed, r.verdict
    assert [f.kept_simulated for f in r.features] == [True, True, False, False]
    assert r.to_json()["integrator"] == ("exponential-RK45" if predictor == "directpred" else "solve_ivp-LSODA")


def test_trained_predictor_collapse_hint_follows_the_basin_of_its_start():
    """A trained predictor starts at W_p = init-scale · I: from 3, above p₊, the σ² = 2.5 feature collapses
    and a larger --init-scale (the former hint) only raises W_p further (issue #14). The hint follows the
    aligned (w, p) flow from the actual start and names a scale that keeps the feature; from a tiny
    start it says larger."""
    import re

    r = run_simulation(SimConfig(predictor="trainable", init_scale=3.0))
    assert not r.passed and "try a smaller --init-scale" in r.verdict and "larger" not in r.verdict
    named = float(re.search(r"--init-scale ([0-9.]+) keeps", r.verdict).group(1))
    assert named < 3.0 and run_simulation(SimConfig(predictor="trainable", init_scale=named)).passed
    low = run_simulation(SimConfig(predictor="trainable", init_scale=0.05))
    assert not low.passed and "try a larger --init-scale" in low.verdict
