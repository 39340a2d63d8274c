"""Checkpoints and run folders: RNG state, atomic checkpoint writes, metrics.jsonl, resuming checks, and
loading a finished or interrupted run.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import zipfile
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
from linssl.io import atomic_write, path_kind, require_folder, to_jsonable

#: the checkpoint format: only what ``torch.load(weights_only=True)`` rebuilds (tensors, numbers, strings,
#: None, lists, tuples, dicts). Format 1 (before this key) pickled numpy's RNG state and is refused.
FORMAT = "linssl-checkpoint/2"
#: every key of a checkpoint and the types its value may have
CHECKPOINT_KEYS: dict[str, tuple[type, ...]] = {
    "format": (str,), "online": (dict,), "target": (dict,), "optimizer": (dict,), "epoch": (int,), "step": (int,),
    "rng": (dict,), "metrics": (list,), "wall_seconds": (int, float), "config": (dict,),
}


def rng_state() -> dict[str, Any]:
    """Torch, numpy and python RNG states as tensors, numbers, strings and tuples (weights_only-loadable)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["key"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                         saved["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU visible when saved: a run resumed on fewer GPUs restores the ones it has
        for index, device_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save (with the format key) to a temporary file in the run folder, then os.replace onto ``path``."""
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: Path, hint: str = "start the run without --resume") -> dict[str, Any]:
    """The checkpoint at ``path``, loaded with ``weights_only=True`` (a crafted file cannot run code) and
    checked to be a linssl checkpoint of the current format; anything else is a one-line ``LinsslError``."""
    kind = path_kind(path)
    if kind is None:
        raise LinsslError(f"no checkpoint at {path}; {hint}")
    if kind != "a file":
        raise LinsslError(f"checkpoint {path} is {kind}, not a file")
    _check_archive(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: foreign, malicious or format 1
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it refers to {found.group(1)}, which is never loaded" if found else "it holds objects never loaded"
        raise LinsslError(f"{path} is not a {FORMAT} file ({what}); checkpoints of linssl before format 2 "
                          "cannot be loaded safely: start the run afresh") from None
    except Exception as exc:  # truncated or foreign file
        raise LinsslError(f"cannot read checkpoint {path} ({type(exc).__name__}); delete it to start afresh") from None
    check_checkpoint(checkpoint, path)
    return checkpoint


def _check_archive(path: Path) -> None:
    """A checkpoint is the zip archive torch.save writes: entries stored uncompressed, so that what loading
    allocates is bounded by the file's own size (no zip bomb, no legacy format declaring its own sizes)."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise LinsslError(f"cannot read checkpoint {path} (not a complete torch.save archive); "
                          "delete it to start afresh") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or \
            sum(e.file_size for e in entries) > path.stat().st_size:
        raise LinsslError(f"{path} is not a {FORMAT} file (compressed entries, which torch.save never writes)")


def check_checkpoint(checkpoint: Any, path: Path) -> None:
    """A one-line ``LinsslError`` unless ``checkpoint`` has every key of the current format with the right types
    (state dicts of tensors, RNG states a generator accepts, a config DeepConfig takes)."""
    def refuse(why: str) -> LinsslError:
        return LinsslError(f"{path} is not a {FORMAT} file ({why})")

    if not isinstance(checkpoint, dict):
        raise refuse(f"it holds a {type(checkpoint).__name__}, not a checkpoint")
    if checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format")
        raise refuse(f"format {found!r}" if found is not None else "no format key")
    for key, types in CHECKPOINT_KEYS.items():
        if not isinstance(checkpoint.get(key), types) or isinstance(checkpoint.get(key), bool):
            raise refuse(f"{key!r} is missing or a {type(checkpoint.get(key)).__name__}")
    for key in ("online", "target"):
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint[key].items()):
            raise refuse(f"{key!r} is not a state dict of tensors")
    rng = checkpoint["rng"]
    saved = rng.get("numpy")
    python = rng.get("python")
    cuda = rng.get("cuda", [])  # saved where CUDA was available
    ok = (isinstance(rng.get("torch"), torch.Tensor) and rng["torch"].dtype == torch.uint8
          and isinstance(saved, dict) and saved.get("kind") == "MT19937"
          and isinstance(saved.get("key"), torch.Tensor) and saved["key"].shape == (624,)
          and saved["key"].dtype == torch.int64 and bool(((saved["key"] >= 0) & (saved["key"] < 2**32)).all())
          and all(isinstance(saved.get(k), t)
                  for k, t in (("pos", int), ("has_gauss", int), ("cached_gaussian", float)))
          and isinstance(python, tuple) and len(python) == 3 and isinstance(python[1], tuple)
          and len(python[1]) == 625 and all(isinstance(v, int) and 0 <= v < 2**32 for v in python[1][:624])
          and isinstance(cuda, list) and all(isinstance(t, torch.Tensor) for t in cuda))
    if not ok:
        raise refuse("its RNG state is malformed")
    if checkpoint["epoch"] < 0 or checkpoint["step"] < 0:
        raise refuse("a negative epoch or step")
    if not all(isinstance(m, dict) and all(isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
                                           for k in ("epoch_seconds", "images_per_second"))
               for m in checkpoint["metrics"]):
        raise refuse("its metrics are malformed")
    config_from_dict(checkpoint["config"], str(path))  # unknown keys or wrong types: one line naming the file


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any], path: Path) -> None:
    """``optimizer.load_state_dict(state)`` with every per-parameter tensor checked against its parameter's shape
    (``load_state_dict`` checks neither, and a wrong momentum buffer would fail mid-step)."""
    restore(optimizer, state, path, "optimizer state")
    for group in optimizer.param_groups:
        for param in group["params"]:
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape != param.shape:
                    raise LinsslError(f"the optimizer state in {path} does not fit the network its config describes "
                                      f"(a {tuple(value.shape)} buffer for a {tuple(param.shape)} parameter)")


def restore(module: Any, state: dict[str, Any], path: Path, what: str) -> None:
    """``module.load_state_dict(state)``; a state that does not fit (shapes, keys) is a one-line error."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise LinsslError(f"the {what} in {path} does not fit the network its config describes ({first})") from None


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
    from linssl.memory import check_fits, deep_memory_available, network_parameters

    run_dir = require_folder(run_dir, "run folder")
    path = run_dir / CHECKPOINT
    checkpoint = load_checkpoint(path, "train at least one epoch with deep-train first")
    cfg = config_from_dict(checkpoint["config"], f"{path}").resolve()
    if cfg.dataset == CUSTOM:
        raise LinsslError(f"{run_dir} trained on images given in Python (dataset = custom): evaluate it there, "
                          "with linssl.deep.evaluate on your own splits")
    channels = datasets.get_spec(cfg.dataset).channels
    if backbone is None:
        available, where = deep_memory_available(device)
        check_fits(4.0 * network_parameters(cfg, channels), f"the network {path} describes",
                   f"{path} is not a checkpoint this machine can load", available, where)
    online = build_online(cfg, channels, backbone, feature_dim)
    restore(online, checkpoint["online"], path, "online network")
    return cfg, online.to(device), checkpoint
