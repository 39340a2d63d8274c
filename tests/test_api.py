"""The public API: ``import linssl`` exposes every command as a function with the CLI's flags as keywords."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import linssl
from linssl.errors import LinsslError
from linssl.linear.simulation import SimConfig, run_simulation


def test_import_is_light_and_names_resolve():
    code = "import sys, linssl; assert 'torch' not in sys.modules; print(sorted(linssl.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "simulate" in out and "deep" in out
    with pytest.raises(AttributeError):
        linssl.no_such_name  # noqa: B018


def test_simulate_function_is_the_cli_run():
    result = linssl.simulate(wd=0.1, aug_var=[0.1, 3.0], data_var=1.0, seed=3)
    same = run_simulation(SimConfig(wd=0.1, aug_var=(0.1, 3.0), data_var=(1.0,), seed=3))
    assert [f.gain_sq_simulated for f in result.features] == [f.gain_sq_simulated for f in same.features]
    assert [f.kept_simulated for f in result.features] == [True, False]  # σ²* = 1/(4·0.1) − 1 = 1.5
    import linssl.simulate as module

    assert module is linssl.simulate and callable(module) and hasattr(module, "configure")


def test_simulate_takes_dim_and_matrices_and_refuses_bad_arguments():
    assert len(linssl.simulate(dim=3, wd=0.05).features) == 3
    X, Xp = [[1.0, 0.2], [0.2, 0.5]], [[0.3, 0.0], [0.0, 2.0]]
    general = linssl.simulate(wd=0.05, data_cov=X, aug_cov=Xp, time=20.0)
    assert general.config.data_cov == ((1.0, 0.2), (0.2, 0.5))
    with pytest.raises(TypeError):
        linssl.simulate(no_such_flag=1)
    with pytest.raises(LinsslError, match="--wd"):
        linssl.simulate(wd=-1.0)


def test_sweep_and_theory_agree():
    result = linssl.sweep([0.05, 0.2], aug_var=[0.5, 2.0, 5.0], t_max=3000.0)
    # σ²* = 4 at η = 0.05 keeps 0.5 and 2; σ²* = 0.25 at η = 0.2 keeps none
    assert result.kept_predicted.tolist() == [[True, True, False], [False, False, False]]
    assert (result.kept == result.kept_predicted).all()
    assert linssl.theory.threshold_aug_var(0.05) == pytest.approx(4.0)


def test_check_accepts_names_or_a_comma_string():
    (result,) = linssl.check("rate", quick=True)  # the quickest check
    assert result.name == "rate" and result.passed
    with pytest.raises(LinsslError, match="unknown"):
        linssl.check(["nope"])


class Digits(torch.utils.data.Dataset):
    """A torch Dataset of (uint8 1×8×8, label) items: the user's own data in its most general form."""

    def __init__(self, n: int) -> None:
        from linssl.deep.datasets import digits_arrays

        images, labels = digits_arrays()
        self.images, self.labels = torch.from_numpy(images[:n]), torch.from_numpy(labels[:n])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def test_deep_train_with_own_backbone_and_a_torch_dataset(tmp_path):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU())  # no feature_dim: measured (24)
    config = {"out": str(tmp_path / "run"), "predictor": "directcopy", "epochs": 1, "batch_size": 64,
              "proj_hidden": 16, "proj_dim": 8, "device": "cpu", "probe_epochs": 3, "knn_k": 5, "progress": False,
              "workers": 0}
    result = linssl.deep.train(config, backbone=backbone, dataset=Digits(200))
    assert result.online.backbone is backbone and result.online.projector[0].in_features == 24
    assert result.summary["dataset"] == "custom" and result.summary["config"]["arch"] == "custom"
    assert len(result.metrics) == 1 and len(result.metrics[0]["F_eigenvalues"]) == 8
    # a custom run resumes only with its backbone given again
    with pytest.raises(LinsslError, match="backbone"):
        linssl.deep.train({**config, "epochs": 2}, dataset=Digits(200), resume=True)


def test_deep_train_refuses_images_that_are_not_uint8(tmp_path):
    with pytest.raises(LinsslError, match="uint8"):
        linssl.deep.train({"out": str(tmp_path / "r")}, dataset=(torch.rand(10, 1, 8, 8), torch.zeros(10)))
