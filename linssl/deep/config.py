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

from linssl import predictors
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
from linssl.deep.recipes import recipe_names
from linssl.errors import LinsslError, check_number, check_seed

#: the dataset / arch a run records when it trained on the user's own images / backbone (Python API)
CUSTOM = "custom"

DIRECT_PREDICTORS = ("directcopy", "directpred", "directset")
PROJECTORS = {"directpred": (512, 128), "byol": (4096, 256)}
OPTIMIZERS = ("sgd", "lars")
SCHEDULES = ("constant", "cosine")
LR_SCALINGS = ("none", "linear")
DEVICES = ("auto", "cpu", "cuda")
LOSS_NAMES = ("cosine", "l2")
STEMS = ("auto", "cifar", "imagenet")
CHECKPOINT = "checkpoint.pt"
#: Fields that fix the network's shape: a checkpoint only resumes under the same values.
ARCHITECTURE_FIELDS = ("dataset", "arch", "stem", "width", "predictor", "projector", "proj_hidden", "proj_dim",
                       "proj_bn_affine", "pred_hidden")
#: Fields that shape the schedules, the views and the predictor of a run: changing one on --resume would
#: silently bend the lr / EMA schedules (or the predictor rule) mid-run, so resume refuses it too (and
#: another --recipe, whose values the saved ones would silently replace).
SCHEDULE_FIELDS = ("alpha", "norm", "eps", "rho", "freq", "epochs", "batch_size", "lr", "lr_scaling", "momentum", "wd",
                   "optimizer", "lars_eta", "lars_clip", "lr_schedule", "warmup_epochs", "exclude_bn_bias_wd",
                   "ema_momentum", "ema_schedule", "crop_scale", "jitter", "jitter_p", "gray_p", "blur_p",
                   "solarize_p", "jitter_order", "seed", "recipe", "loss")
#: most DataLoader worker processes
MAX_WORKERS = 256
#: longest warm-up: a warm-up longer than the run only rises for the whole run, but its step count must stay finite
MAX_WARMUP_EPOCHS = 1e6
#: settings added since older runs were saved, with the value those runs used (--resume keeps it)
LEGACY_DEFAULTS: dict[str, Any] = {"jitter_order": "fixed", "proj_bn_affine": True, "lr_scaling": "none",
                                   "lars_eta": 0.001, "lars_clip": False, "solarize_p": (0.0, 0.0), "recipe": "",
                                   "loss": "cosine"}
#: settings renamed since older runs were saved: old name -> new name (same meaning and value)
LEGACY_NAMES = {"ema": "ema_momentum"}


@dataclass(frozen=True)
class DeepConfig:
    """Everything a deep run depends on (resolved: ``resolve`` fills the defaults that depend on others).

    Without a recipe (``linssl.deep.recipes``) the network and optimiser follow the DirectPred authors'
    STL-10 setup (docs/theory.md §6) and the views the dataset's preset (``augment.preset``). ``None``
    means: ``norm``/``eps`` spectral / 0.01 for every direct predictor; ``proj_hidden``/``proj_dim`` the
    ``projector`` preset; ``crop_scale``, ``jitter``, ``jitter_p``, ``gray_p``, ``blur_p`` the dataset's
    augmentation preset; ``exclude_bn_bias_wd`` on for LARS, off for SGD; ``probe_wd`` chosen on a
    held-out part of the train split. ``stem="auto"``: the CIFAR stem for images of 32 px or less, the
    ImageNet stem otherwise. ``blur_p``/``solarize_p`` are (view 1, view 2). The peak learning rate is
    ``lr``, or ``lr · batch_size / 256`` with ``lr_scaling="linear"`` (``peak_lr``); ``batch_size`` is
    the global batch (split over DDP ranks). ``knn_every``: kNN monitor every N epochs (0: only at the
    end; the last epoch always has it). ``recipe`` records the recipe a run started from.
    ``arch="linear"`` (the linear theory's network, docs/theory.md §8) has no projector: ``width`` is its
    output dimension and ``proj_dim``; ``loss="l2"`` is the theory's squared loss instead of the cosine one.
    """

    dataset: str = ""
    data_dir: str | None = None
    out: str = ""
    recipe: str = ""
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
    proj_bn_affine: bool = True
    pred_hidden: int = 4096
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.03
    lr_scaling: str = "none"
    momentum: float = 0.9
    wd: float = 4e-4
    optimizer: str = "sgd"
    lars_eta: float = 0.001
    lars_clip: bool = False
    lr_schedule: str = "constant"  # the authors' STL-10 runs; cosine (+ warm-up) for large batches
    warmup_epochs: float = 0.0
    exclude_bn_bias_wd: bool | None = None
    ema_momentum: float = 0.996
    ema_schedule: str = "constant"
    crop_scale: tuple[float, float] | None = None
    jitter: tuple[float, float, float, float] | None = None
    jitter_p: float | None = None
    gray_p: float | None = None
    blur_p: tuple[float, float] | None = None
    solarize_p: tuple[float, float] = (0.0, 0.0)
    jitter_order: str = "random"
    loss: str = "cosine"
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

    def resolve(self, need_out: bool = True, spec: datasets.DatasetSpec | None = None) -> DeepConfig:
        """Check every value (``LinsslError``) and fill the defaults that depend on other fields.
        ``need_out=False`` accepts an empty ``out`` (``deep-train --print-config``); ``spec`` describes the
        user's own images (dataset ``custom``; without it their stem defaults to the CIFAR one)."""
        _check_field_types(self)
        spec = spec if spec is not None or self.dataset == CUSTOM else datasets.get_spec(self.dataset)
        if need_out and not self.out:
            raise LinsslError("give the run folder with --out RUN_DIR")
        for name, allowed in field_choices().items():
            value = getattr(self, name)  # a run keeps the name of its recipe, even one renamed since
            if name in ("dataset", "arch") and value == CUSTOM:  # the user's own images / backbone (Python API)
                continue
            if value is not None and name != "recipe" and value not in allowed:
                flag = "--" + name.replace("_", "-")
                raise LinsslError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
        positive_ints = ("epochs", "batch_size", "freq", "width", "pred_hidden", "knn_k", "probe_epochs")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise LinsslError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "knn_t", "lars_eta"):
            check_number(f"--{name.replace('_', '-')}", getattr(self, name))
        for name in ("wd", "momentum", "warmup_epochs", "probe_wd"):
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), inclusive=True)
        if self.momentum >= 1:
            raise LinsslError(f"--momentum must be below 1, got {self.momentum}")
        check_seed("--seed", self.seed)
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise LinsslError(f"--ema-momentum must be in [0, 1], got {self.ema_momentum}")
        if not 0.0 <= self.rho < 1.0:
            raise LinsslError(f"--rho must be in [0, 1), got {self.rho}")
        for name in ("proj_hidden", "proj_dim"):  # None: the --projector preset's size
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise LinsslError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.knn_every < 0:
            raise LinsslError(f"--knn-every must be >= 0, got {self.knn_every}")
        if not 0 <= self.workers <= MAX_WORKERS:  # each is a process: a million would exhaust the machine
            raise LinsslError(f"--workers must be between 0 and {MAX_WORKERS}, got {self.workers}")
        if self.warmup_epochs > MAX_WARMUP_EPOCHS:  # longer than the run is allowed: a short try of a recipe
            raise LinsslError(f"--warmup-epochs {self.warmup_epochs:g} is beyond any run (at most "
                              f"{MAX_WARMUP_EPOCHS:g} epochs)")
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            if not 0.0 < lo <= hi <= 1.0:
                raise LinsslError(f"--crop-scale must be two numbers 0 < lo <= hi <= 1, got {self.crop_scale}")
        for name in ("jitter_p", "gray_p", "blur_p", "solarize_p"):
            value = getattr(self, name)
            if value is not None and not all(0.0 <= p <= 1.0 for p in _as_tuple(value)):
                raise LinsslError(f"--{name.replace('_', '-')} must be probabilities in [0, 1], got {value}")
        if self.alpha is not None and self.predictor not in DIRECT_PREDICTORS:
            raise LinsslError(f"--alpha only applies to directset, not {self.predictor}")
        if self.predictor == "directset" and self.alpha is None:
            raise LinsslError("directset needs --alpha")
        hidden, dim = PROJECTORS[self.projector]
        if self.arch == "linear":  # no projector: the output of W is the projection
            if self.proj_dim is not None and self.proj_dim != self.width:
                raise LinsslError("--arch linear has no projector; its output dimension is --width, not --proj-dim")
            dim = self.width
        resolved = dataclasses.replace(
            self,
            norm=self.norm or "spectral",
            eps=0.01 if self.eps is None else float(self.eps),
            proj_hidden=hidden if self.proj_hidden is None else self.proj_hidden,
            proj_dim=dim if self.proj_dim is None else self.proj_dim,
            stem=self.stem if self.stem != "auto" else ("cifar" if spec is None or spec.image_size <= 32
                                                        else "imagenet"),
            exclude_bn_bias_wd=(self.optimizer == "lars" if self.exclude_bn_bias_wd is None
                                else self.exclude_bn_bias_wd),
            **{f.name: tuple(float(v) for v in getattr(self, f.name)) for f in dataclasses.fields(self)
               if str(f.type).startswith("tuple") and getattr(self, f.name) is not None},
        )
        build_predictor(resolved.predictor, 2, head_config(resolved))  # invalid norm / eps / alpha raise here
        if spec is not None or self.dataset != CUSTOM:
            view_configs(resolved, spec)  # invalid jitter strengths raise here
        return resolved


def field_choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of every field that has a fixed set of them (resolve and the flags share it), read
    from their registries each time: a dataset, norm or recipe added there is accepted everywhere."""
    return {"dataset": tuple(datasets.DATASETS), "recipe": recipe_names(), "arch": ARCHS, "stem": STEMS,
            "predictor": tuple(PREDICTOR_HEADS), "norm": predictors.NORMS, "projector": tuple(PROJECTORS),
            "optimizer": OPTIMIZERS, "lr_scaling": LR_SCALINGS, "lr_schedule": SCHEDULES,
            "ema_schedule": SCHEDULES, "device": DEVICES, "jitter_order": augment_mod.JITTER_ORDERS,
            "loss": LOSS_NAMES}


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def peak_lr(cfg: DeepConfig) -> float:
    """The learning rate after warm-up: ``lr``, or ``lr · batch_size / 256`` with linear scaling (BYOL)."""
    return cfg.lr * cfg.batch_size / 256 if cfg.lr_scaling == "linear" else cfg.lr


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


#: what each annotation of a DeepConfig field accepts (the TOML / config.json path has no argparse types)
_FIELD_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    "float": ("a number", _is_real),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "tuple[float, float]": ("two numbers", lambda v: isinstance(v, (tuple, list)) and len(v) == 2
                            and all(_is_real(x) for x in v)),
    "tuple[float, float, float, float]": ("four numbers", lambda v: isinstance(v, (tuple, list)) and len(v) == 4
                                          and all(_is_real(x) for x in v)),
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


def normalise_keys(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Field names for the keys of a mapping (dashes or underscores; legacy names such as ``ema`` renamed,
    lists of tuple fields as tuples); an unknown key raises, naming ``where``."""
    known = set(config_fields())
    tuples = {f.name for f in dataclasses.fields(DeepConfig) if str(f.type).startswith("tuple")}
    clean: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        name = LEGACY_NAMES.get(name, name)
        if name not in known:
            raise LinsslError(f"unknown key {key!r} in {where}; known keys: {', '.join(sorted(known))}")
        if name in clean:
            raise LinsslError(f"{where} gives {name} twice (as {key!r} and under another spelling)")
        clean[name] = tuple(value) if name in tuples and isinstance(value, list) else value
    return clean


def upgrade_saved(values: dict[str, Any], where: str) -> dict[str, Any]:
    """A saved run's settings (config.json or a checkpoint) in today's names, with the values of the
    settings added since it was saved (``LEGACY_DEFAULTS``)."""
    return {**LEGACY_DEFAULTS, **normalise_keys(values, where)}


def config_from_dict(values: dict[str, Any], where: str) -> DeepConfig:
    """DeepConfig from a mapping whose keys are field names (see ``normalise_keys``); unknown keys raise."""
    cfg = DeepConfig(**normalise_keys(values, where))
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
    """SGD or LARS at ``peak_lr(cfg)``; BN and bias excluded from weight decay by default for LARS only."""
    exclude = cfg.optimizer == "lars" if cfg.exclude_bn_bias_wd is None else cfg.exclude_bn_bias_wd
    groups = param_groups(module, cfg.wd, exclude)
    if cfg.optimizer == "lars":
        return LARS(groups, lr=peak_lr(cfg), momentum=cfg.momentum, trust_coefficient=cfg.lars_eta,
                    clip_lr=cfg.lars_clip)
    return torch.optim.SGD(groups, lr=peak_lr(cfg), momentum=cfg.momentum)


def build_online(cfg: DeepConfig, channels: int, backbone: nn.Module | None = None,
                 feature_dim: int | None = None, image_size: int | None = None) -> OnlineNetwork:
    """Backbone + projector + predictor head of a resolved config, initialised from ``cfg.seed``.

    ``backbone``: the user's own module (``cfg.arch == "custom"``) with output size ``feature_dim``;
    default the one ``cfg.arch`` names, for images of side ``image_size`` (default: the dataset's)."""
    torch.manual_seed(cfg.seed)
    if backbone is None:
        if cfg.arch == CUSTOM:
            raise LinsslError("this run trained its own backbone (arch = custom): pass that backbone again")
        size = image_size or datasets.get_spec(cfg.dataset).image_size
        backbone = build_backbone(cfg.arch, channels, cfg.stem, cfg.width, size)
        feature_dim = backbone.feature_dim
    projector = (nn.Identity() if cfg.arch == "linear"
                 else mlp(int(feature_dim), int(cfg.proj_hidden), int(cfg.proj_dim), bn_affine=cfg.proj_bn_affine))
    return OnlineNetwork(backbone, projector, build_predictor(cfg.predictor, int(cfg.proj_dim), head_config(cfg)))


def view_configs(cfg: DeepConfig, spec: datasets.DatasetSpec | None = None
                 ) -> tuple[augment_mod.AugmentConfig, augment_mod.AugmentConfig]:
    """The two views' augmentations: the dataset's preset (by image size for the user's own images,
    whose ``spec`` is then needed) with the config's overrides; ``blur_p`` and ``solarize_p`` per view
    (BYOL's asymmetric views: blur 1.0 / 0.1, solarisation 0 / 0.2)."""
    base = augment_mod.preset(cfg.dataset) if cfg.dataset != CUSTOM else augment_mod.preset_for(spec)
    overrides = {name: getattr(cfg, name) for name in ("crop_scale", "jitter", "jitter_p", "gray_p")
                 if getattr(cfg, name) is not None}
    base = dataclasses.replace(base, jitter_order=cfg.jitter_order,
                               **{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in overrides.items()})
    blur = (base.blur_p, base.blur_p) if cfg.blur_p is None else tuple(cfg.blur_p)
    return tuple(dataclasses.replace(base, blur_p=float(b), solarize_p=float(p))  # type: ignore[return-value]
                 for b, p in zip(blur, cfg.solarize_p, strict=True))


def augment_config(cfg: DeepConfig, spec: datasets.DatasetSpec | None = None) -> augment_mod.AugmentConfig:
    """The first view's augmentation (its size and normalisation are the evaluation's too)."""
    return view_configs(cfg, spec)[0]
