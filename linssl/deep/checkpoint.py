"""Checkpoints and run folders: RNG state, atomic checkpoint writes, metrics.jsonl, resuming checks, and
loading a finished or interrupted run.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from linssl.deep import datasets
from linssl.deep.config import (
    ARCHITECTURE_FIELDS,
    CHECKPOINT,
    CUSTOM,
    SCHEDULE_FIELDS,
    DeepConfig,
    build_online,
    config_from_dict,
    upgrade_saved,
)
from linssl.deep.models import OnlineNetwork
from linssl.errors import LinsslError
from linssl.io import atomic_write, to_jsonable


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU visible when saved: a run resumed on fewer GPUs restores the ones it has
        for index, device_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file in the run folder, then os.replace onto ``path``."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, hint: str = "start the run without --resume") -> dict[str, Any]:
    if not path.is_file():
        raise LinsslError(f"no checkpoint at {path}; {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file: any unpickling error
        raise LinsslError(f"cannot read checkpoint {path} ({type(exc).__name__}); delete it to start afresh") from None


#: schedule fields --resume may change: the run is re-planned (``schedules.replan``), never below the epochs done
REPLANNABLE_FIELDS = ("epochs",)


def check_resumable(saved: dict[str, Any], cfg: DeepConfig, epochs_done: int = 0) -> None:
    """Refuse to resume under another architecture or schedule; ``epochs`` may change to any number of
    epochs at least ``epochs_done`` (extending a finished or interrupted run)."""
    saved = upgrade_saved(saved, "the checkpoint's config")  # old names (ema) renamed, later settings' old values
    if saved.get("arch") == CUSTOM and cfg.arch != CUSTOM:
        raise LinsslError("this run trained its own backbone (arch = custom): pass that backbone again, "
                          "linssl.deep.train(config, backbone=..., resume=True)")
    if cfg.epochs < epochs_done:
        raise LinsslError(f"the run has already trained {epochs_done} epochs; --epochs {cfg.epochs} would end it "
                          f"before that: give --epochs >= {epochs_done}")
    for name in ARCHITECTURE_FIELDS + SCHEDULE_FIELDS:
        if name in REPLANNABLE_FIELDS:
            continue
        if name in saved and _comparable(saved[name]) != _comparable(getattr(cfg, name)):
            raise LinsslError(f"checkpoint was trained with {name} = {saved.get(name)!r}, not "
                              f"{getattr(cfg, name)!r}; resume with the run's own settings")


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def write_metrics(path: Path, metrics: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(to_jsonable(m), allow_nan=True) + "\n" for m in metrics)

    def _write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, _write)


def append_metrics(path: Path, line: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(to_jsonable(line), allow_nan=True) + "\n")


def load_run(run_dir: str | os.PathLike, device: torch.device, backbone: nn.Module | None = None,
             feature_dim: int | None = None) -> tuple[DeepConfig, OnlineNetwork, dict[str, Any]]:
    """Config, online network (weights of the last checkpoint) and checkpoint of a run folder.

    A run that trained the user's own backbone (arch ``custom``) needs that ``backbone`` again."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LinsslError(f"run folder {run_dir} does not exist")
    checkpoint = load_checkpoint(run_dir / CHECKPOINT, "train at least one epoch with deep-train first")
    cfg = config_from_dict(checkpoint["config"], f"{run_dir / CHECKPOINT}").resolve()
    if cfg.dataset == CUSTOM:
        raise LinsslError(f"{run_dir} trained on images given in Python (dataset = custom): evaluate it there, "
                          "with linssl.deep.evaluate on your own splits")
    online = build_online(cfg, datasets.get_spec(cfg.dataset).channels, backbone, feature_dim)
    online.load_state_dict(checkpoint["online"])
    return cfg, online.to(device), checkpoint
