"""The configuration of a deep run: ``DeepConfig`` (every value checked by ``resolve``), reading it from a
mapping (TOML / config.json), and building the networks and optimiser it describes (docs/theory.md §6).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from linssl.deep import augment as augment_mod
from linssl.deep import datasets
from linssl.deep.lars import LARS
from linssl.deep.models import (
    ARCHS,
    PREDICTOR_HEADS,
    HeadConfig,
    OnlineNetwork,
    build_backbone,
    build_predictor,
    mlp,
)
from linssl.errors import LinsslError, check_number, check_seed

DIRECT_PREDICTORS = ("directcopy", "directpred", "directset")
PROJECTORS = {"directpred": (512, 128), "byol": (4096, 256)}
OPTIMIZERS = ("sgd", "lars")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
STEMS = ("auto", "cifar", "imagenet")
CHECKPOINT = "checkpoint.pt"
#: Fields that fix the network's shape: a checkpoint only resumes under the same values.
ARCHITECTURE_FIELDS = ("dataset", "arch", "stem", "width", "predictor", "projector", "proj_hidden", "proj_dim",
                       "pred_hidden")
#: Fields that shape the schedules and the predictor of a run: changing one on --resume would silently
#: bend the lr / EMA schedules (or the predictor rule) mid-run, so resume refuses it too.
SCHEDULE_FIELDS = ("alpha", "norm", "eps", "rho", "freq", "epochs", "batch_size", "lr", "momentum", "wd", "optimizer",
                   "lr_schedule", "warmup_epochs", "exclude_bn_bias_wd", "ema", "ema_schedule", "crop_scale",
                   "jitter_order", "seed")
#: most DataLoader worker processes
MAX_WORKERS = 256
#: settings added since older runs were saved, with the value those runs used (--resume keeps it)
LEGACY_DEFAULTS: dict[str, Any] = {"jitter_order": "fixed"}

@dataclass(frozen=True)
class DeepConfig:
    """Everything a deep run depends on (resolved: ``resolve`` fills predictor/projector defaults).

    Defaults follow the DirectPred STL-10 recipe (SPEC §6). ``norm``/``eps`` default to spectral /
    0.01 for every direct predictor; ``proj_hidden``/``proj_dim`` to the ``projector`` preset;
    ``knn_every``: kNN monitor every N epochs (0: only at the end; the last epoch always has it);
    ``crop_scale`` overrides the dataset's augmentation preset; ``probe_wd`` fixes the probe's weight
    decay (default: chosen on a held-out part of the train split); ``lr`` is used as given (no batch
    scaling); ``batch_size`` is the global batch (split over DDP ranks).
    """

    dataset: str = ""
    data_dir: str | None = None
    out: str = ""
    arch: str = "resnet18"
    stem: str = "auto"
    width: int = 32
    predictor: str = "directpred"
    alpha: float | None = None
    norm: str | None = None
    eps: float | None = None
    rho: float = 0.3
    freq: int = 1
    projector: str = "directpred"
    proj_hidden: int | None = None
    proj_dim: int | None = None
    pred_hidden: int = 4096
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.03
    momentum: float = 0.9
    wd: float = 4e-4
    optimizer: str = "sgd"
    lr_schedule: str = "constant"  # the authors' STL-10 runs; cosine (+ warm-up) for large batches
    warmup_epochs: float = 0.0
    exclude_bn_bias_wd: bool = False
    ema: float = 0.996
    ema_schedule: str = "constant"
    crop_scale: tuple[float, float] | None = None
    jitter_order: str = "random"
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    sync_bn: bool = False
    deterministic: bool = False
    workers: int = 4
    seed: int = 0
    knn_k: int = 200
    knn_t: float = 0.1
    knn_every: int = 1
    probe_epochs: int = 100
    probe_wd: float | None = None
    progress: bool = True
    download: bool = False

    def resolve(self) -> DeepConfig:
        """Check every value (``LinsslError``) and fill the defaults that depend on other fields."""
        _check_field_types(self)
        datasets.get_spec(self.dataset)
        if not self.out:
            raise LinsslError("give the run folder with --out RUN_DIR")
        choices = {"arch": ARCHS, "stem": STEMS, "predictor": tuple(PREDICTOR_HEADS), "projector": tuple(PROJECTORS),
                   "optimizer": OPTIMIZERS, "lr_schedule": SCHEDULES, "ema_schedule": SCHEDULES, "device": DEVICES,
                   "jitter_order": augment_mod.JITTER_ORDERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                flag = "--" + name.replace("_", "-")
                raise LinsslError(f"{flag} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        positive_ints = ("epochs", "batch_size", "freq", "width", "pred_hidden", "knn_k", "probe_epochs")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise LinsslError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "knn_t"):
            check_number(f"--{name.replace('_', '-')}", getattr(self, name))
        for name in ("wd", "momentum", "warmup_epochs", "probe_wd"):
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), inclusive=True)
        if self.momentum >= 1:
            raise LinsslError(f"--momentum must be below 1, got {self.momentum}")
        check_seed("--seed", self.seed)
        if not 0.0 <= self.ema <= 1.0:
            raise LinsslError(f"--ema must be in [0, 1], got {self.ema}")
        if not 0.0 <= self.rho < 1.0:
            raise LinsslError(f"--rho must be in [0, 1), got {self.rho}")
        for name in ("proj_hidden", "proj_dim"):  # None: the --projector preset's size
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise LinsslError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.knn_every < 0:
            raise LinsslError(f"--knn-every must be >= 0, got {self.knn_every}")
        if not 0 <= self.workers <= MAX_WORKERS:  # each is a process: a million would exhaust the machine
            raise LinsslError(f"--workers must be between 0 and {MAX_WORKERS}, got {self.workers}")
        if self.warmup_epochs > self.epochs:
            raise LinsslError(f"--warmup-epochs {self.warmup_epochs:g} is longer than the run (--epochs {self.epochs})")
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            if not 0.0 < lo <= hi <= 1.0:
                raise LinsslError(f"--crop-scale must be two numbers 0 < lo <= hi <= 1, got {self.crop_scale}")
        if self.alpha is not None and self.predictor not in DIRECT_PREDICTORS:
            raise LinsslError(f"--alpha only applies to directset, not {self.predictor}")
        if self.predictor == "directset" and self.alpha is None:
            raise LinsslError("directset needs --alpha")
        hidden, dim = PROJECTORS[self.projector]
        resolved = dataclasses.replace(
            self,
            norm=self.norm or "spectral",
            eps=0.01 if self.eps is None else float(self.eps),
            proj_hidden=hidden if self.proj_hidden is None else self.proj_hidden,
            proj_dim=dim if self.proj_dim is None else self.proj_dim,
            stem=self.stem if self.stem != "auto" else ("imagenet" if self.dataset == "imagenet" else "cifar"),
            crop_scale=None if self.crop_scale is None else tuple(float(c) for c in self.crop_scale),
        )
        build_predictor(resolved.predictor, 2, head_config(resolved))  # invalid norm / eps / alpha raise here
        return resolved


#: what each annotation of a DeepConfig field accepts (the TOML / config.json path has no argparse types)
_FIELD_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "tuple[float, float]": ("two numbers", lambda v: isinstance(v, (tuple, list)) and len(v) == 2
                            and all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v)),
}


def _check_field_types(cfg: DeepConfig, where: str = "") -> None:
    """A one-line error for a value of the wrong type (``epochs = "abc"`` or ``1.5`` in a TOML file)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind, _, optional = str(f.type).partition(" | ")
        if value is None and optional == "None":
            continue
        what, accepts = _FIELD_KINDS[kind]
        if not accepts(value):
            place = f" in {where}" if where else ""
            raise LinsslError(f"{f.name} (--{f.name.replace('_', '-')}){place} must be {what}, got {value!r}")


def head_config(cfg: DeepConfig) -> HeadConfig:
    return HeadConfig(alpha=cfg.alpha, norm=cfg.norm or "spectral", eps=0.01 if cfg.eps is None else cfg.eps,
                      rho=cfg.rho, freq=cfg.freq, hidden_dim=cfg.pred_hidden)


def config_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(DeepConfig))


def config_from_dict(values: dict[str, Any], where: str) -> DeepConfig:
    """DeepConfig from a mapping whose keys are field names (dashes or underscores); unknown keys raise."""
    known = set(config_fields())
    clean: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise LinsslError(f"unknown key {key!r} in {where}; known keys: {', '.join(sorted(known))}")
        clean[name] = tuple(value) if name == "crop_scale" and isinstance(value, list) else value
    cfg = DeepConfig(**clean)
    _check_field_types(cfg, where)  # a file's values, even those a flag overrides later
    return cfg

def param_groups(module: nn.Module, wd: float, exclude_bn_bias_wd: bool) -> list[dict[str, Any]]:
    """Weights (≥ 2-D) get weight decay and LARS adaptation; BN and bias parameters (1-D) never get the
    LARS trust ratio and, with ``exclude_bn_bias_wd``, no weight decay either."""
    weights = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
    others = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": weights, "weight_decay": wd, "lars_exclude": False}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0 if exclude_bn_bias_wd else wd, "lars_exclude": True})
    return groups


def build_optimizer(module: nn.Module, cfg: DeepConfig) -> torch.optim.Optimizer:
    groups = param_groups(module, cfg.wd, cfg.exclude_bn_bias_wd)
    if cfg.optimizer == "lars":
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def build_online(cfg: DeepConfig, channels: int) -> OnlineNetwork:
    """Backbone + projector + predictor head of a resolved config, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.arch, channels, cfg.stem, cfg.width)
    projector = mlp(backbone.feature_dim, int(cfg.proj_hidden), int(cfg.proj_dim))
    return OnlineNetwork(backbone, projector, build_predictor(cfg.predictor, int(cfg.proj_dim), head_config(cfg)))


def augment_config(cfg: DeepConfig) -> augment_mod.AugmentConfig:
    aug = dataclasses.replace(augment_mod.preset(cfg.dataset), jitter_order=cfg.jitter_order)
    return aug if cfg.crop_scale is None else dataclasses.replace(aug, crop_scale=tuple(cfg.crop_scale))
