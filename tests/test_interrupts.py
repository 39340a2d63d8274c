"""Interrupts during ``deep-train`` (real processes, slow): after SIGINT, SIGTERM or SIGKILL in the second
epoch, ``--resume`` reaches exactly the weights of the run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


def _train_argv(out: Path) -> list[str]:
    """Three short epochs on digits (1437 pretraining images, 44 steps of 32 each)."""
    return [sys.executable, "-m", "linssl.cli", "deep-train", "--dataset", "digits", "--arch", "small", "--width",
            "4", "--proj-hidden", "16", "--proj-dim", "8", "--epochs", "3", "--batch-size", "32", "--knn-every",
            "0", "--knn-k", "10", "--probe-epochs", "2", "--no-progress", "--workers", "0", "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from linssl.deep.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run / "checkpoint.pt")
    return {f"{part}.{k}": v for part in ("online", "target") for k, v in ckpt[part].items()} | {
        "epoch": torch.tensor(ckpt["epoch"]), "step": torch.tensor(ckpt["step"])}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(_train_argv(out), env=_env(), check=True, capture_output=True, timeout=600)
    return _weights(out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, straight_run, sig):
    """Interrupted in its second epoch (the first one checkpointed), ``--resume`` reaches exactly the weights
    of the run that was never interrupted; the checkpoint it left is a whole one."""
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_argv(out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == {signal.SIGINT: 130}.get(sig, -sig), err
    if sig == signal.SIGINT:
        assert err.decode().strip().splitlines()[-1].startswith("linssl deep-train: interrupted")
    assert 1 <= _weights(out)["epoch"] < 3  # a whole checkpoint of an epoch before the end was left
    resumed = subprocess.run([*_train_argv(out), "--resume"], env=_env(),
                             capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    weights = _weights(out)
    assert weights.keys() == straight_run.keys()
    for key, value in straight_run.items():
        assert torch.equal(weights[key], value), key
