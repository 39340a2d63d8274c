"""linssl figures: quick mode writes every figure; the figure data agree with the closed forms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from linssl import theory
from linssl.cli import main
from linssl.figures import FIGURES
from linssl.figures.cli import figure_data
from linssl.figures.deep_run import compute_deep_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_fake_run(run_dir, epochs: int = 4, m: int = 6, finished: bool = True) -> None:
    """A run folder in the format of linssl/deep/train.py: metrics.jsonl (end_of_epoch) + summary.json (finish)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for epoch in range(1, epochs + 1):
        eigs = [float(2.0 ** (-k) * (1 + 0.1 * epoch)) for k in range(m)]
        eigs[-1] = 1e-3 / epoch  # a direction being discarded
        lines.append({
            "epoch": epoch, "step": 10 * epoch, "loss": 2.0 - 0.3 * epoch, "lr": 0.03,
            "knn_top1": None if epoch % 2 else 0.2 + 0.1 * epoch,  # kNN only every other epoch
            "F_eigenvalues": eigs, "effective_rank": 3.0 + 0.1 * epoch,
            "predictor_spectrum": [math.sqrt(e / eigs[0]) + 0.01 for e in eigs], "predictor_spectrum_kind": "eigen",
            "normalised_std": 0.3, "healthy_std": 1 / math.sqrt(m), "images_per_second": 100.0,
            "epoch_seconds": 1.0, "wall_seconds": float(epoch),
        })
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if finished:
        (run_dir / "summary.json").write_text(json.dumps({
            "dataset": "digits", "predictor": "directcopy", "arch": "small", "epochs": epochs, "linear_top1": 0.71,
            "linear_train_top1": 0.8, "probe_weight_decay": 1e-4, "knn_top1": 0.6, "wall_seconds": 4.0,
        }))


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    """One quick-mode run of every figure (no --run), its printed lines and exit code."""
    out = tmp_path_factory.mktemp("figures")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["figures", "--quick", "--out", str(out)])
    return out, buf.getvalue(), rc


def _check_files(out, stem: str) -> None:
    png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


@pytest.mark.slow
def test_quick_mode_writes_every_linear_figure_and_skips_the_deep_one(quick_out):
    out, printed, rc = quick_out
    assert rc == 0
    for fig in FIGURES.values():
        if fig.needs_run:
            assert f"{fig.stem}: skipped" in printed
            assert not (out / f"{fig.stem}.png").exists()
        else:
            _check_files(out, fig.stem)
            assert f"{fig.stem}: {out / fig.stem}.png" in printed
    assert not list(out.glob(".*tmp*")), "atomic writes leave no temporary files"


def test_deep_run_figure_from_a_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    write_fake_run(run_dir)
    assert main(["figures", "--only", "deep_run", "--run", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    _check_files(tmp_path / "out", FIGURES["deep_run"].stem)
    assert "09_deep_run" in capsys.readouterr().out


def test_deep_run_data_read_back(tmp_path):
    run_dir = tmp_path / "run"
    write_fake_run(run_dir, epochs=5, m=4, finished=False)
    data = compute_deep_run(run_dir)
    assert data.epochs.tolist() == [1, 2, 3, 4, 5]
    assert data.F_eigs.shape == (5, 4) and data.F_eigs[2, 3] == pytest.approx(1e-3 / 3)
    assert data.knn_epochs.tolist() == [2, 4]  # null kNN values are skipped, not zero
    assert data.summary is None


@pytest.mark.parametrize("make_bad, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "no metrics.jsonl"),
    (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("{not json\n")), "not JSON"),
    (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"epoch": 1, "loss": 1.0}\n')), "no F_eigenvalues"),
])
def test_bad_run_dir_is_a_one_line_error(tmp_path, capsys, make_bad, message):
    run_dir = tmp_path / "bad"
    make_bad(run_dir)
    assert main(["figures", "--run", str(run_dir), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists(), "a bad run folder fails before any figure is computed"


def test_only_rejects_unknown_names_and_deep_run_needs_run(tmp_path, capsys):
    assert main(["figures", "--only", "gains,nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["figures", "--only", "deep_run", "--out", str(tmp_path)]) == 2
    assert "--run" in capsys.readouterr().err


# The figure data, checked against the closed forms (cached: the quick run above computed them).


@pytest.mark.slow
def test_phase_diagram_agrees_with_the_threshold(quick_out):
    data = figure_data("phase", True)
    assert data.kept.any() and (~data.kept).any()
    np.testing.assert_array_equal(data.kept, data.kept_predicted)
    # the drawn boundary is σ² = 1/(4η) − 1 (λ = 1)
    np.testing.assert_allclose(data.boundary_aug_var, 1 / (4 * data.boundary_wd) - 1, rtol=1e-12)


@pytest.mark.slow
def test_basin_final_gains(quick_out):
    data = figure_data("basin", True)
    for i in range(len(data.aug_var)):
        final = data.final[:, i]
        if data.stable[i] == 0:
            assert final.max() < 1e-8  # discarded: collapses from every start
            continue
        above = data.initial > data.boundary[i] * 1.05  # 5% margin: starts near p₋ leave it slowly
        below = data.initial < data.boundary[i] / 1.05
        assert above.any() and below.any()
        # converged flow (|dW/dt| < 1e-8) reproduces the closed form to far better than 1e-4
        np.testing.assert_allclose(final[above], data.stable[i], rtol=1e-4)
        assert final[below].max() < 1e-8


@pytest.mark.slow
def test_directset_gains_match_closed_form_for_every_alpha(quick_out):
    data = figure_data("directset", True)
    assert 0.5 in data.alphas and 1.0 in data.alphas
    for alpha in data.alphas:
        kept = data.predicted[alpha] > 0
        np.testing.assert_allclose(data.final[alpha][kept], data.predicted[alpha][kept], rtol=1e-4)
        assert data.final[alpha][~kept].max() < 1e-8
        # the threshold does not depend on α: the same features are kept
        np.testing.assert_array_equal(kept, data.aug_var <= theory.threshold_aug_var(data.wd))


@pytest.mark.slow
def test_gain_and_spectrum_figures_end_on_the_closed_form(quick_out):
    gains = figure_data("gains", True)
    np.testing.assert_allclose(gains.gains[-1], gains.predicted, rtol=1e-4, atol=1e-10)
    spectra = figure_data("spectra", True)
    k = len(spectra.F_predicted)
    np.testing.assert_allclose(spectra.F_eigs[-1, :k], np.sort(spectra.F_predicted)[::-1], rtol=1e-4)
    np.testing.assert_allclose(spectra.Wp_eigs[-1, :k], np.sort(spectra.Wp_predicted)[::-1], rtol=1e-4)
    assert np.abs(spectra.F_eigs[-1, k:]).max() < 1e-8


@pytest.mark.slow
def test_alignment_decays_from_a_random_rotation(quick_out):
    data = figure_data("alignment", True)
    for curves in data.alignment.values():
        for curve in curves:
            assert curve[0] > 1e-2 and curve[-1] < 1e-6  # starts misaligned, ends diagonal in U


@pytest.mark.slow
def test_downstream_and_cost_data(quick_out):
    res = figure_data("downstream", True).result
    assert res.curves["learned"].features == res.config.rank
    cost = figure_data("predictor_cost", True)
    assert cost.dims.max() <= 512  # quick grid
    assert all(np.all(s > 0) for s in cost.seconds.values())
