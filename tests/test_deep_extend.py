"""Extending a run: ``deep-train --resume --epochs N`` continues a finished or interrupted run; with constant
schedules it equals a run asked for N epochs from the start, bit for bit on CPU; with cosine schedules the
rest of the run follows the N-epoch plan (``schedules.replan``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_config

from linssl.cli import main as cli_main
from linssl.deep.config import DeepConfig
from linssl.deep.loop import train
from linssl.deep.schedules import ema_momentum_at, lr_at, replan
from linssl.errors import LinsslError

STEPS = 1437 // 256  # digits: 1437 pretraining images, batch 256 -> 5 steps per epoch


def tiny(run: Path, **overrides) -> DeepConfig:
    return tiny_config(run, **overrides)


def _strip(metrics):
    """Metrics without wall-clock values and the plan in force (which is what differs by construction)."""
    drop = ("images_per_second", "epoch_seconds", "wall_seconds", "epochs_planned")
    return [{k: v for k, v in m.items() if k not in drop} for m in metrics]


@pytest.fixture(scope="module")
def straight_three(tmp_path_factory):
    """The reference: a run asked for 3 epochs from the start (constant lr and EMA, the defaults)."""
    torch.set_num_threads(1)
    return train(tiny(tmp_path_factory.mktemp("straight") / "run", epochs=3))


@pytest.mark.parametrize("how", ["finished", "interrupted"])
def test_extending_a_constant_schedule_run_equals_the_longer_run_bit_for_bit(tmp_path, straight_three, how):
    run = tmp_path / "run"
    if how == "finished":
        first = train(tiny(run, epochs=2))
        assert first.summary is not None and (run / "summary.json").is_file()
    else:
        first = train(tiny(run, epochs=2), stop_after_epochs=1)
        assert first.summary is None
    extended = train(tiny(run, epochs=3), resume=True)
    assert extended.epoch == 3 and extended.step == straight_three.step == 3 * STEPS
    for name in ("online", "target"):
        a, b = getattr(straight_three, name).state_dict(), getattr(extended, name).state_dict()
        assert a.keys() == b.keys()
        for key in a:  # weights, BN statistics, F̂ and W_p: bit for bit
            assert torch.equal(a[key], b[key]), key
    assert _strip(extended.metrics) == _strip(straight_three.metrics)  # metrics of the first epochs kept
    assert [m["epochs_planned"] for m in extended.metrics] == ([2, 2, 3] if how == "finished" else [2, 3, 3])
    assert extended.summary["linear_top1"] == straight_three.summary["linear_top1"]
    assert extended.summary["epochs"] == 3
    (record,) = extended.summary["extensions"]
    assert (record["epochs_before"], record["epochs_after"]) == (2, 3)
    assert record["lr_before"] == record["lr_after"] and record["ema_before"] == record["ema_after"]
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    assert json.loads((run / "config.json").read_text())["epochs"] == 3
    assert [json.loads(s)["epoch"] for s in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    kept = run / "summary-2epochs.json"  # the finished 2-epoch result is kept beside the new one
    assert kept.is_file() == (how == "finished")
    if how == "finished":
        assert json.loads(kept.read_text())["linear_top1"] == first.summary["linear_top1"]


def test_cosine_schedules_follow_the_longer_plan_after_the_extension(tmp_path, capsys):
    cosine = dict(lr_schedule="cosine", ema_schedule="cosine", ema_momentum=0.99)
    run = tmp_path / "run"
    train(tiny(run, epochs=2, **cosine))
    capsys.readouterr()
    extended = train(tiny(run, epochs=4, **cosine), resume=True)
    cfg = tiny(run, **cosine)
    # "lr" of a metrics line is the lr of the epoch's last step, k = e·STEPS − 1 (0-based)
    expected = [lr_at(e * STEPS - 1, (2 if e <= 2 else 4) * STEPS, 0, cfg.lr, "cosine") for e in (1, 2, 3, 4)]
    assert [m["lr"] for m in extended.metrics] == expected  # same formula, same arguments: exact
    (record,) = extended.summary["extensions"]
    # the finished 2-epoch plan had decayed to 0 at step 10; the 4-epoch plan is at half of its cosine there
    assert record["lr_before"] == 0.0
    assert record["lr_after"] == pytest.approx(cfg.lr / 2, rel=1e-12)
    assert record["ema_before"] == 1.0 and record["ema_after"] == pytest.approx(0.995, rel=1e-12)
    err = capsys.readouterr().err.splitlines()
    (note,) = [line for line in err if "extended from 2 to 4" in line]
    assert "planned for 4 epochs" in note and "cosine to 0 at step 20" in note and "cosine to 1" in note


def test_replan_of_constant_schedules_and_of_a_warm_up_is_a_no_op():
    constant = replan(10, 5, 0, 2, 4, 0.1, "constant", 0.99, "constant")
    assert constant["lr_before"] == constant["lr_after"] == 0.1 and "nothing to re-plan" in constant["note"]
    # warm-up is counted in steps from 0, independent of the total: inside it, nothing changes
    warm = replan(5, 5, 8, 2, 4, 0.1, "cosine", 0.99, "constant")
    assert warm["lr_before"] == warm["lr_after"] == pytest.approx(0.1 * 6 / 8)
    assert warm["ema_before"] == warm["ema_after"] == 0.99
    # after it, the cosine restarts from the longer plan: lr·½(1 + cos(π (k − K_w)/(K' − K_w)))
    later = replan(10, 5, 2, 2, 4, 0.1, "cosine", 0.99, "cosine")
    assert later["lr_after"] == pytest.approx(0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 8 / 18)).item()))
    assert later["ema_after"] == ema_momentum_at(10, 20, 0.99, "cosine")


def test_cli_extends_a_finished_run_and_refuses_to_shrink_it(tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--dataset", "digits", "--arch", "small", "--width", "4", "--proj-hidden", "16", "--proj-dim", "8",
             "--batch-size", "256", "--knn-k", "10", "--probe-epochs", "5", "--no-progress", "--workers", "0",
             "--out", str(run)]
    assert cli_main(["deep-train", *flags, "--epochs", "2"]) == 0
    capsys.readouterr()
    # --resume takes the rest from the run's config.json: only the new total is given
    assert cli_main(["deep-train", "--resume", "--out", str(run), "--epochs", "3"]) == 0
    out, err = capsys.readouterr()
    assert "3 epochs: linear top-1" in out and "extended from 2 to 3 epochs" in err
    assert cli_main(["deep-train", "--resume", "--out", str(run), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already trained 3 epochs" in err and "--epochs >= 3" in err
    with pytest.raises(LinsslError, match="already trained 3"):
        train(tiny(run, epochs=2), resume=True)
