"""linssl compare: the two-view estimator, the measures, theory vs the trainer's linear SGD on a known model,
bad input, and the command end to end on digits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from linssl import theory
from linssl.cli import main
from linssl.compare import estimate, measures, theory_stage, train_stages
from linssl.linear.data import commuting_model
from linssl.predictors import make_rule


def _synthetic_views(X: np.ndarray, Xa: np.ndarray, n: int, k: int, seed: int) -> np.ndarray:
    """views v_ik = x_i + ξ_ik, x ~ N(0, X), ξ ~ N(0, X') independent: the model the estimator assumes."""
    rng = np.random.default_rng(seed)
    d = X.shape[0]
    x = rng.multivariate_normal(np.zeros(d), X, size=n)
    xi = rng.multivariate_normal(np.zeros(d), Xa, size=(n, k))
    return x[:, None, :] + xi + 3.0  # an offset: the estimator centres by the global mean


def test_estimator_recovers_data_and_augmentation_covariance_within_its_stated_error():
    model = commuting_model((2.0, 1.0, 0.5, 0.25, 0.1), (4.0, 4.0, 4.0, 4.0, 4.0), seed=3)
    X, Xa = model.data_cov.numpy(), model.aug_cov.numpy()
    k = 4
    views = _synthetic_views(X, Xa, n=6000, k=k, seed=0)
    est = estimate.estimate_two_view(views)
    stated = estimate.half_split_error(views)
    err_x = np.linalg.norm(est.data_cov - X) / np.linalg.norm(X)
    err_a = np.linalg.norm(est.aug_cov - Xa) / np.linalg.norm(Xa)
    # two half estimates differ by ≈ 2× the full estimate's error (each half has √2× its error, independent):
    # the full error stays below the stated half-split difference except with small probability (fixed seed)
    assert err_x <= stated["data_cov"]
    assert err_a <= stated["aug_cov"]
    # the X'/K correction matters: without it the bias X'/K = I is far above the error
    biased = est.data_cov + est.aug_cov / k
    assert np.linalg.norm(biased - X) / np.linalg.norm(X) > 5 * stated["data_cov"]
    assert est.images == 6000 and est.views == k and est.dim == 5


def test_estimator_refuses_fewer_than_two_views():
    from linssl.errors import LinsslError

    with pytest.raises(LinsslError, match="2 views"):
        estimate.estimate_two_view(np.zeros((10, 1, 3)))


def test_psd_part_clips_and_reports():
    M = np.diag([2.0, 1.0, -0.1])
    clipped, count, share = estimate.psd_part(M)
    assert count == 1 and math.isclose(share, 0.1 / 3.0)
    np.testing.assert_allclose(clipped, np.diag([2.0, 1.0, 0.0]), atol=1e-12)


def test_commutator_norm_hand_made():
    assert estimate.commutator_norm(np.diag([1.0, 2.0]), np.diag([3.0, 0.5])) == 0.0
    # X = diag(1, 0), X' = [[0, 1], [1, 0]]: XX' − X'X = [[0, 1], [−1, 0]], norm √2; ‖X‖ = 1, ‖X'‖ = √2
    X, Xa = np.diag([1.0, 0.0]), np.array([[0.0, 1.0], [1.0, 0.0]])
    assert math.isclose(estimate.commutator_norm(X, Xa), 1.0)


def test_principal_angles_hand_made():
    theta = 30.0
    c, s = math.cos(math.radians(theta)), math.sin(math.radians(theta))
    A = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    B = np.array([[2.0, 0.0, 0.0], [0.0, 3 * c, 3 * s]])  # rows not unit: only the row space counts
    np.testing.assert_allclose(measures.principal_angles_deg(A, B), [0.0, theta], atol=1e-9)
    np.testing.assert_allclose(measures.principal_angles_deg(A, np.array([[0.0, 0.0, 1.0]])), [90.0], atol=1e-9)
    # the same plane spanned by other rows: every angle 0
    np.testing.assert_allclose(measures.principal_angles_deg(A, np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0]])),
                               [0.0, 0.0], atol=1e-6)


def test_kept_count_and_settled():
    assert measures.kept_count(np.array([1.0, 0.5, 2e-2, 5e-3, 0.0])) == 3
    assert measures.kept_count(np.zeros(4)) == 0
    assert measures.settled(np.array([1.0, 0.5, 0.0]), np.array([1.01, 0.49, 0.0]))
    # a small eigenvalue still decaying: the count is the same, but it moved by half itself
    assert not measures.settled(np.array([1.0, 0.5, 0.04]), np.array([1.0, 0.5, 0.02]))
    assert not measures.settled(np.array([1.0, 0.5, 0.1]), np.array([1.0, 0.5, 0.0]))


def test_shares_are_sigma_over_total_on_a_commuting_model():
    model = commuting_model((1.0, 1.0, 1.0), (0.5, 1.0, 3.0), seed=1)
    U = model.basis.numpy()
    shares = measures.direction_shares(U.T, model.aug_cov.numpy(), model.view_cov.numpy())
    np.testing.assert_allclose(shares, [0.5 / 1.5, 0.5, 0.75], rtol=1e-12)
    approx = measures.commuting_threshold(model.data_cov.numpy(), model.aug_cov.numpy())
    np.testing.assert_allclose(np.sort(approx["eta_star"]), np.sort([1 / (4 * 1.5), 1 / 8, 1 / 16]), rtol=1e-9)


@pytest.fixture(scope="module")
def synthetic_pair():
    """Theory flow and the trainer's linear SGD on the same Gaussian two-view model and the same W₀."""
    lam, s2, wd = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0), (0.1, 0.3, 1.0, 8.0, 10.0, 12.0), 0.05
    model = commuting_model(lam, s2, seed=2)
    X, Xa = model.data_cov.numpy(), model.aug_cov.numpy()
    W0 = 0.35 * torch.nn.init.orthogonal_(torch.empty(6, 6, dtype=torch.float64),
                                         generator=torch.Generator().manual_seed(0)).numpy()
    (run,) = theory_stage.theory_runs(X, Xa, (wd,), W0, "directpred", t_max=300.0)
    gram = train_stages.sgd_on_model(X, Xa, wd, W0, "directpred", lr=0.04, steps=1000, batch_size=256)
    return model, wd, run, gram


@pytest.mark.slow  # the shared fixture: 1000 trainer steps and a flow, ~15 s on a loaded 2-core machine
def test_theory_stage_matches_the_closed_form_on_a_commuting_model(synthetic_pair):
    model, wd, run, _ = synthetic_pair
    lam, s2 = model.data_var.numpy(), model.aug_var.numpy()
    pred = np.asarray(theory.predicted_gain_sq_for_rule(make_rule("directpred"), lam, s2, wd))
    assert run.settled and run.kept == int((pred > 0).sum()) == 3
    np.testing.assert_allclose(run.gains_sq, np.sort(pred[pred > 0])[::-1], rtol=1e-3)  # flow tolerance


@pytest.mark.slow
def test_linear_sgd_agrees_with_the_theory_stage(synthetic_pair):
    model, _, run, gram = synthetic_pair
    view_cov = model.view_cov.numpy()
    eigs, vecs = measures.sym_eigh_desc(gram)
    root = np.linalg.cholesky(view_cov)
    F_eigs = np.sort(np.linalg.eigvalsh(root.T @ gram @ root))[::-1]  # eig of Σ^½ WᵀW Σ^½ = eig of WΣWᵀ
    assert measures.kept_count(F_eigs) == run.kept
    # SGD noise (batch 256, lr 0.04) leaves a few % on the gains: the simulator's SGD tolerance is 10 %
    np.testing.assert_allclose(eigs[:run.kept], run.gains_sq, rtol=0.1)
    angles = measures.principal_angles_deg(measures.top_right_singular(run.W, run.kept), vecs[:, :run.kept].T)
    assert angles.max() < 10.0


def _bad(args, tmp_path, capsys):
    code = main(["compare", *args])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("args, message", [
    (["--wd", ""], "at least one"),
    (["--wd", "0.1,-0.01"], ">= 0"),
    (["--dataset", "mnist"], "unknown dataset"),
    (["--space", "fourier"], "--space"),
    (["--space", "pca:0"], "--space"),
    (["--views", "1"], "--views"),
    (["--images", "10"], "fewer than the 64 dimensions"),
    (["--predictor", "mlp"], "--predictor"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(args, message, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, err = _bad(["--out", str(out), *args], tmp_path, capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_output_folder_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("keep me")
    code, err = _bad(["--out", str(out)], tmp_path, capsys)
    assert code == 2 and "is a file" in err and err.count("\n") == 1
    assert out.read_text() == "keep me"


def _check_document(out, doc, wds):
    for key in ("dataset", "space", "dim", "images", "views_per_image", "data_cov", "aug_cov",
                "commutator_norm", "kept_rule", "runs"):
        assert key in doc
    assert np.load(out / doc["data_cov"], allow_pickle=False).shape == (doc["dim"], doc["dim"])
    assert [r["wd"] for r in doc["runs"]] == list(wds)
    for r in doc["runs"]:
        assert set(r["theory"]) >= {"kept", "W", "gains_sq"}
        assert set(r["linear"]) >= {"kept", "W", "principal_angles_deg", "linear_top1"}
        assert set(r["deep"]) >= {"effective_rank", "kept", "aug_share_kept", "aug_share_discarded", "linear_top1"}
        assert np.load(out / r["theory"]["W"], allow_pickle=False).shape[1] == doc["dim"]
        assert 0.0 <= r["linear"]["linear_top1"] <= 1.0 and 0.0 <= r["deep"]["linear_top1"] <= 1.0
    assert (out / "compare.png").is_file() and (out / "compare.pdf").is_file()


@pytest.mark.slow
def test_small_end_to_end_run_resume_and_redraw(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["--out", str(out), "--space", "pca:6", "--images", "120", "--views", "3", "--wd", "0.01,0.3",
            "--theory-time", "5", "--deep-epochs", "1", "--no-progress"]
    assert main(["compare", *args]) == 0
    printed = capsys.readouterr().out
    assert "kept" in printed and "rule:" in printed
    doc = json.loads((out / "compare.json").read_text())
    _check_document(out, doc, (0.01, 0.3))
    assert doc["space"] == "pca:6" and doc["dim"] == 6 and doc["views_per_image"] == 3
    # --resume skips every finished stage and gives the same document
    first = (out / "theory.json").stat().st_mtime_ns
    assert main(["compare", *args, "--resume"]) == 0
    assert (out / "theory.json").stat().st_mtime_ns == first
    assert json.loads((out / "compare.json").read_text())["runs"] == doc["runs"]
    # without --resume a used folder is refused; with other settings --resume is refused
    assert main(["compare", *args]) == 2
    assert main(["compare", *args[:-1], "--seed", "1", "--resume"]) == 2
    (out / "compare.png").unlink()
    assert main(["figures", "--compare", str(out)]) == 0
    assert (out / "compare.png").is_file()


@pytest.mark.slow
def test_quick_run_on_digits_end_to_end(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["compare", "--quick", "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "compare.json").read_text())
    _check_document(out, doc, (0.003, 0.01, 0.03, 0.1, 0.3))
    assert doc["dim"] == 64 and doc["images"] == 1437
    # the commuting approximation's count can only fall as η grows
    counts = [r["theory"]["commuting_kept"] for r in doc["runs"]]
    assert counts == sorted(counts, reverse=True)


def test_l2_loss_gradient_is_the_simulators_sampled_gradient():
    from linssl.deep.models import symmetric_l2_loss
    from linssl.linear.data import general_model
    from linssl.linear.dynamics import DynamicsConfig, Problem, State
    from linssl.linear.sgd import sampled_gradients

    gen = torch.Generator().manual_seed(0)
    W = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    Wp = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    x1, x2 = torch.randn(2, 16, 4, generator=gen, dtype=torch.float64)
    Wt = W.clone().requires_grad_(True)
    z1, z2 = x1 @ Wt.T, x2 @ Wt.T
    symmetric_l2_loss(z1 @ Wp.T, z2 @ Wp.T, z1, z2).backward()
    problem = Problem.from_models(general_model(torch.eye(4), torch.eye(4)),
                                  DynamicsConfig(make_rule("directpred"), wd=0.0))
    velocity, _, _ = sampled_gradients(problem, State(W[None], None, None), Wp[None], x1[None], x2[None])
    # float32 inside the loss: agreement to its precision
    np.testing.assert_allclose(Wt.grad.numpy(), -velocity.W[0].numpy(), rtol=1e-5, atol=1e-6)


def test_linear_arch_centres_its_input_and_has_no_projector():
    from linssl.deep.config import DeepConfig, build_online
    from linssl.deep.models import LinearBackbone
    from linssl.errors import LinsslError

    net = LinearBackbone(4, 3)
    x = torch.randn(32, 1, 2, 2) + 5.0
    out = net(x)
    assert out.shape == (32, 3) and torch.allclose(out.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(net.running_mean, 0.01 * x.flatten(1).mean(0))  # one lerp step from 0
    net.eval()
    assert torch.allclose(net(x), (x.flatten(1) - net.running_mean) @ net.linear.weight.T)
    cfg = DeepConfig(dataset="digits", out="unused", arch="linear", width=64, loss="l2").resolve()
    assert cfg.proj_dim == 64
    online = build_online(cfg, 1)
    assert isinstance(online.projector, torch.nn.Identity) and online.backbone.linear.weight.shape == (64, 64)
    with pytest.raises(LinsslError, match="no projector"):
        DeepConfig(dataset="digits", out="unused", arch="linear", width=64, proj_dim=32).resolve()
    with pytest.raises(LinsslError, match="--loss"):
        DeepConfig(dataset="digits", out="unused", loss="hinge").resolve()
