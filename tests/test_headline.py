"""``linssl headline``: DirectCopy, BYOL and DirectPred with one shared budget, through the real trainer,
into one results table; ``--quick`` runs the whole path on CPU (digits, tiny net, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linssl.cli import main as cli_main
from linssl.deep import headline
from linssl.deep.headline import SHARED_FIELDS, headline_configs, run_headline
from linssl.deep.loop import train
from linssl.errors import LinsslError

RECIPES = ["directcopy-cifar10", "byol-cifar10", "directpred-cifar10"]


def test_quick_headline_writes_the_table_and_a_rerun_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "headline"
    assert cli_main(["headline", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["methods"] == RECIPES and results["complete"]
    assert [r["recipe"] for r in results["rows"]] == RECIPES
    assert [r["predictor"] for r in results["rows"]] == ["directcopy", "mlp", "directpred"]
    assert results["budget"]["dataset"] == "digits" and results["budget"]["epochs"] == 1
    configs = []
    for row in results["rows"]:
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        # the table is the runs' own summaries, nothing recomputed
        for key in ("linear_top1", "knn_top1", "images_per_second", "wall_seconds", "device"):
            assert row[key] == summary[key], key
        assert 0 <= row["linear_top1"] <= 1 and 0 <= row["knn_top1"] <= 1 and row["images_per_second"] > 0
        assert row["device"].startswith("cpu")
        configs.append(summary["config"])
    for name in SHARED_FIELDS:  # the same budget, as trained
        assert len({json.dumps(c[name]) for c in configs}) == 1, name
    table = (out / "results.md").read_text()
    assert table == printed
    assert [line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if line.startswith("| ")][1:] == RECIPES

    stamps = {r: (out / r / "checkpoint.pt").stat().st_mtime_ns for r in RECIPES}
    assert cli_main(["headline", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().err.count("skipped") == 3
    assert stamps == {r: (out / r / "checkpoint.pt").stat().st_mtime_ns for r in RECIPES}  # nothing retrained

    settings = tmp_path / "settings.toml"
    settings.write_text("[directcopy]\nlr = 0.5\n")
    assert cli_main(["headline", "--quick", "--out", str(out), "--settings", str(settings)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other settings" in err and "lr" in err


def test_cifar10_recipes_on_official_format_files(tmp_path, capsys):
    """The path a GPU run takes (recipes <method>-cifar10, --data-dir), on tiny CIFAR-10 files and the CPU."""
    from test_deep_datasets import write_fake

    data = tmp_path / "data"
    write_fake("cifar10", data, n_train=6, n_test=4)
    out = tmp_path / "headline"
    # six train images cannot hold out a validation part: the probe's weight decay is fixed
    assert cli_main(["headline", "--data-dir", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "4",
                     "--arch", "small", "--knn-k", "3", "--probe-epochs", "2", "--probe-wd", "1e-4", "--device",
                     "cpu", "--workers", "0", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["dataset"] == "cifar10" and results["budget"]["data_dir"] == str(data)
    assert [r["recipe"] for r in results["rows"]] == RECIPES and all(r["epochs"] == 1 for r in results["rows"])
    assert "| byol-cifar10 | mlp | 1 |" in capsys.readouterr().out


def test_an_interrupted_method_resumes(tmp_path, capsys):
    configs = headline_configs(tmp_path, ["byol"], budget={"epochs": 2, "progress": False}, quick=True)
    (cfg,) = configs.values()
    assert train(cfg, stop_after_epochs=1).summary is None
    results = run_headline(configs, tmp_path)
    assert "resuming" in capsys.readouterr().err
    (row,) = results["rows"]
    assert row["epochs"] == 2 and row["linear_top1"] == json.loads((Path(cfg.out) / "summary.json").read_text())[
        "linear_top1"]


def test_configs_layer_recipe_settings_quick_and_budget(tmp_path):
    configs = headline_configs(tmp_path, settings={"byol": {"lr": 0.1, "projector": "byol"}},
                               budget={"epochs": 7, "batch_size": 64, "data_dir": "DATA"})
    assert list(configs) == RECIPES
    byol, copy = configs["byol-cifar10"], configs["directcopy-cifar10"]
    assert (byol.predictor, byol.lr, byol.proj_dim, byol.recipe) == ("mlp", 0.1, 256, "byol-cifar10")
    # the rest is the shipped recipe: solo-learn's LARS at lr 1.0 (× batch/256), BYOL projector 4096 -> 256
    assert (copy.predictor, copy.lr, copy.lr_scaling, copy.proj_dim) == ("directcopy", 1.0, "linear", 256)
    for cfg in configs.values():
        assert (cfg.dataset, cfg.epochs, cfg.batch_size, cfg.data_dir) == ("cifar10", 7, 64, "DATA")
        assert Path(cfg.out).parent == tmp_path
    quick = headline_configs(tmp_path, quick=True, budget={"epochs": 3})
    assert {(c.dataset, c.device, c.epochs) for c in quick.values()} == {("digits", "cpu", 3)}


def test_recipes_that_disagree_on_the_budget_need_it_given(tmp_path, monkeypatch):
    """A recipe with its own epochs (as the recipe files will have): the comparison is refused until the
    budget is given once for all."""
    real = headline.recipe_values
    monkeypatch.setattr(headline, "recipe_values",
                        lambda recipe, over: {**real(recipe, {}), "epochs": 5, **over} if recipe.startswith("byol")
                        else real(recipe, over))
    with pytest.raises(LinsslError, match="differ in epochs"):
        headline_configs(tmp_path)
    assert {c.epochs for c in headline_configs(tmp_path, budget={"epochs": 9}).values()} == {9}


@pytest.mark.parametrize("kwargs, message", [
    ({"settings": {"byol": {"epochs": 3}}}, "every method shares"),
    ({"settings": {"byol": {"out": "elsewhere"}}}, "every method shares"),
    ({"settings": {"simclr": {"lr": 1.0}}}, "not among the methods"),
    ({"budget": {"lr": 1.0}}, "method's setting"),
    ({"methods": ["simclr"]}, "unknown recipe"),
    ({"methods": ["byol", "byol"]}, "each method once"),
    ({"settings": {"byol": {"nonsense": 1}}}, "unknown key"),
])
def test_bad_headline_requests_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(LinsslError, match=message):
        headline_configs(tmp_path, **kwargs)


def test_cli_settings_file_must_hold_one_table_per_method(tmp_path, capsys):
    settings = tmp_path / "s.toml"
    settings.write_text("lr = 0.5\n")
    assert cli_main(["headline", "--quick", "--out", str(tmp_path / "h"), "--settings", str(settings)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "table" in err
    assert not (tmp_path / "h").exists()


def test_ctrl_c_says_rerun_to_continue(tmp_path, capsys, monkeypatch):
    from linssl.deep import loop

    def interrupted(cfg, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    assert cli_main(["headline", "--quick", "--out", str(tmp_path / "h")]) == 130
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "rerun the same command" in err[-1]  # the "[1/3] ..." line, then the advice
