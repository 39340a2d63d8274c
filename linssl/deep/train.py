"""The deep training loop: two augmented views, online/target networks, symmetric cosine loss (SPEC §6).

One step, for a batch x and a predictor head that keeps F̂ (``linssl.deep.models``):

    x1, x2 = aug(x), aug(x)                 (batched, on the training device)
    z_i = proj(backbone(x_i));  F̂ ← ρ F̂ + (1 − ρ) mean(z zᵀ) over both views;  W_p = rule(F̂) every freq
    L = (2 − 2cos(W_p z1, sg(z2'))) + (2 − 2cos(W_p z2, sg(z1')))      z' = target projections
    θ ← optimiser step (SGD or LARS; lr constant or warm-up + cosine);   θ' ← m θ' + (1 − m) θ

Every epoch: kNN monitor, one line of RUN_DIR/metrics.jsonl, an atomic RUN_DIR/checkpoint.pt.
At the end: linear probe on frozen backbone features, RUN_DIR/summary.json.
All randomness of an epoch (shuffle, augmentations) comes from generators seeded by
(seed, epoch, stream), so a resumed run repeats an uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import numbers
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from linssl.deep import augment as augment_mod
from linssl.deep import datasets, evaluate
from linssl.deep.lars import LARS
from linssl.deep.models import (
    ARCHS,
    PREDICTOR_HEADS,
    HeadConfig,
    OnlineNetwork,
    build_backbone,
    build_predictor,
    ema_update_,
    make_target,
    mlp,
    symmetric_loss,
)
from linssl.errors import DivergenceError, LinsslError, check_number, check_seed
from linssl.io import atomic_write, to_jsonable, write_json

DIRECT_PREDICTORS = ("directcopy", "directpred", "directset")
PROJECTORS = {"directpred": (512, 128), "byol": (4096, 256)}
OPTIMIZERS = ("sgd", "lars")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
STEMS = ("auto", "cifar", "imagenet")
CHECKPOINT = "checkpoint.pt"
COLLECTIVE_TIMEOUT_S = 4 * 3600
#: Fields that fix the network's shape: a checkpoint only resumes under the same values.
ARCHITECTURE_FIELDS = ("dataset", "arch", "stem", "width", "predictor", "projector", "proj_hidden", "proj_dim",
                       "pred_hidden")
#: Fields that shape the schedules and the predictor of a run: changing one on --resume would silently
#: bend the lr / EMA schedules (or the predictor rule) mid-run, so resume refuses it too.
SCHEDULE_FIELDS = ("alpha", "norm", "eps", "rho", "freq", "epochs", "batch_size", "lr", "momentum", "wd", "optimizer",
                   "lr_schedule", "warmup_epochs", "exclude_bn_bias_wd", "ema", "ema_schedule", "crop_scale",
                   "jitter_order", "seed")
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
        if self.workers < 0:
            raise LinsslError(f"--workers must be >= 0, got {self.workers}")
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


# --------------------------------------------------------------------------- schedules and small math


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str = "cosine") -> float:
    """Linear warm-up lr·(k+1)/K_w for k < K_w, then constant lr or lr·½(1 + cos(π (k − K_w)/(K − K_w)))."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def ema_momentum_at(step: int, total_steps: int, base: float, schedule: str = "constant") -> float:
    """Target momentum: constant m, or BYOL's 1 − (1 − m)·½(cos(π k/K) + 1), rising from m to 1."""
    if schedule == "constant":
        return base
    return 1.0 - (1.0 - base) * 0.5 * (math.cos(math.pi * min(step / max(1, total_steps), 1.0)) + 1.0)


def effective_rank(eigenvalues: Tensor) -> float:
    """exp(−Σ p log p) with p = max(s, 0)/Σ max(s, 0): 1 for one direction, m for a flat spectrum."""
    s = eigenvalues.double().clamp_min(0.0)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def normalised_std(z: Tensor) -> Tensor:
    """Mean over dimensions of the batch std of z/‖z‖: ≈ 1/sqrt(m) when spread, → 0 when collapsed."""
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for (seed, epoch, stream): independent generators per epoch and per use."""
    words = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))


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


# --------------------------------------------------------------------------- devices and ranks


@dataclass(frozen=True)
class Ranks:
    """This process under torchrun (RANK / WORLD_SIZE / LOCAL_RANK) or alone (0 / 1 / 0)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def select_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise LinsslError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_ranks(device_name: str) -> tuple[Ranks, bool]:
    """Join the torchrun process group if WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU).

    Returns (ranks, whether this call created the group and must destroy it).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), False
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_initialized():
        return ranks, False
    device = select_device(device_name, ranks.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # rank 0 alone runs the kNN monitor and the final probe while the others wait at a barrier
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return ranks, True


def all_reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` over all ranks (a new tensor)."""
    out = t.clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


# --------------------------------------------------------------------------- data


def epoch_shard(n: int, batch_size: int, ranks: Ranks, seed: int, epoch: int) -> Tensor:
    """This rank's indices of the epoch's permutation, shaped (steps, batch_size / world).

    The permutation comes from (seed, epoch); step k takes the k-th block of ``batch_size`` indices
    and rank r its r-th slice, so the ranks together see exactly one global batch per step.
    """
    steps = n // batch_size
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch, 0)))
    return perm[: steps * batch_size].view(steps, ranks.world, batch_size // ranks.world)[:, ranks.rank]


#: In-memory datasets up to this size are copied to the GPU once and indexed there.
GPU_RESIDENT_BYTES = 4 << 30


def device_images(dataset, device: torch.device) -> Tensor | None:
    """The uint8 images of an in-memory dataset where batches should be indexed: on the GPU when
    they fit in ``GPU_RESIDENT_BYTES``, else on the CPU; None for a file dataset (DataLoader).

    Moved to the GPU, the dataset holds the GPU copy from then on, so the host copy (2.9 GB for
    STL-10's pretraining split, per DDP process) is freed."""
    images = getattr(dataset, "images", None)
    if images is None:
        return None
    if device.type == "cuda" and images.numel() <= GPU_RESIDENT_BYTES:
        dataset.images = images.to(device)
        return dataset.images
    return images


def iterate_batches(dataset, images: Tensor | None, shard: Tensor, cfg: DeepConfig, device: torch.device):
    """uint8 image batches on ``device``, in the order of ``shard`` (steps, b).

    In-memory datasets are indexed directly (``images`` from ``device_images``); file datasets go
    through a DataLoader with workers. CPU batches bound for CUDA are pinned and copied without blocking.
    """
    pin = device.type == "cuda"
    if images is not None:
        for idx in shard.to(images.device):  # the epoch's indices cross to a GPU once, not once per step
            batch = images[idx]
            if batch.device != device:
                batch = (batch.pin_memory() if pin else batch).to(device, non_blocking=pin)
            yield batch
        return
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=shard.shape[1], sampler=shard.flatten().tolist(), num_workers=cfg.workers,
        pin_memory=pin, drop_last=True, persistent_workers=False,
    )
    for images, _labels in datasets.loader_batches(loader):
        yield images.to(device, non_blocking=pin)


# --------------------------------------------------------------------------- evaluation


def evaluate_backbone(
    backbone: nn.Module, cfg: DeepConfig, train_set, test_set, num_classes: int, device: torch.device, probe: bool
) -> dict[str, Any]:
    """kNN top-1 (k, T from cfg) and, if ``probe``, the linear probe on frozen backbone features."""
    aug = augment_config(cfg)
    was_training = backbone.training
    train_x, train_y = evaluate.extract_features(backbone, train_set, aug, device, num_workers=cfg.workers, amp=cfg.amp)
    test_x, test_y = evaluate.extract_features(backbone, test_set, aug, device, num_workers=cfg.workers, amp=cfg.amp)
    backbone.train(was_training)
    out: dict[str, Any] = {
        "knn_top1": evaluate.knn_top1(train_x, train_y, test_x, test_y, k=cfg.knn_k, temperature=cfg.knn_t,
                                      num_classes=num_classes, device=device),
        "knn_k": min(cfg.knn_k, train_x.shape[0]),  # as used: clipped to the train size
        "knn_t": cfg.knn_t,
    }
    if probe:
        chosen = {} if cfg.probe_wd is None else {"weight_decays": (cfg.probe_wd,)}
        result = evaluate.linear_probe(train_x, train_y, test_x, test_y, num_classes, epochs=cfg.probe_epochs,
                                       seed=cfg.seed, device=str(device), **chosen)
        out.update(linear_top1=result.top1, linear_train_top1=result.train_top1,
                   probe_weight_decay=result.weight_decay, probe_epochs=result.epochs)
    return out


def spectra(online: OnlineNetwork) -> dict[str, Any]:
    """Eigenvalues of F̂ (descending), its effective rank, and the predictor's spectrum:
    eigenvalues of a set W_p (symmetric), singular values of a trained linear one, None for an MLP."""
    head = online.predictor
    corr = head.tracker.value.detach().double().cpu()
    eig_f = torch.linalg.eigvalsh(0.5 * (corr + corr.T)).flip(0)
    matrix = head.matrix()
    if matrix is None:
        pred = None
    elif head.trained:
        pred = torch.linalg.svdvals(matrix.detach().double().cpu())
    else:
        w = matrix.detach().double().cpu()
        pred = torch.linalg.eigvalsh(0.5 * (w + w.T)).flip(0)
    return {
        "F_eigenvalues": eig_f.tolist(),
        "effective_rank": effective_rank(eig_f),
        "predictor_spectrum": None if pred is None else pred.tolist(),
        "predictor_spectrum_kind": None if pred is None else ("singular" if head.trained else "eigen"),
    }


# --------------------------------------------------------------------------- checkpoints


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


def check_resumable(saved: dict[str, Any], cfg: DeepConfig) -> None:
    saved = {**LEGACY_DEFAULTS, **saved}
    for name in ARCHITECTURE_FIELDS + SCHEDULE_FIELDS:
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


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What ``train`` leaves: the networks (on their device), metrics so far, summary (None if stopped early)."""

    online: OnlineNetwork
    target: nn.Module
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    epoch: int
    step: int
    main: bool = True  # rank 0 (or a single process): the one that writes and reports


@dataclass
class Session:
    """Everything one training session holds: data, networks, optimiser and progress counters."""

    cfg: DeepConfig
    ranks: Ranks
    device: torch.device
    run_dir: Path
    spec: datasets.DatasetSpec
    pretrain: Any
    train_set: Any
    test_set: Any
    images: Tensor | None
    online: OnlineNetwork
    target: nn.Sequential
    model: nn.Module
    optimizer: torch.optim.Optimizer
    augment: nn.Module
    reduce: Any
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    epoch: int = 0
    step: int = 0
    metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    wall_before: float = 0.0
    started: float = 0.0


@dataclass
class EpochStats:
    loss: float
    normalised_std: float
    lr: float
    seconds: float


def train(cfg: DeepConfig, resume: bool = False, stop_after_epochs: int | None = None) -> TrainResult:
    """Train (or resume) the run of ``cfg`` in ``cfg.out``; see the module docstring.

    ``stop_after_epochs`` ends this session after that many epochs (checkpoint written, no probe),
    for time-limited jobs; ``--resume`` continues it.
    """
    cfg = cfg.resolve()
    ranks, owns_group = init_ranks(cfg.device)
    try:
        s = prepare(cfg, ranks, resume)
        writer = _tensorboard(s.run_dir) if ranks.main else None
        stop_at = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, s.epoch + stop_after_epochs)
        while s.epoch < stop_at:
            try:
                stats = train_one_epoch(s)
            except torch.linalg.LinAlgError:  # DirectPred's eigh of a non-finite F̂, before the loss is seen
                raise _diverged(s, "the eigendecomposition of F̂ failed (F̂ non-finite or ill-conditioned)") from None
            if ranks.main:
                line = end_of_epoch(s, stats)
                if cfg.progress:
                    _report_epoch(line, cfg.epochs)
                if writer is not None:
                    for key in ("loss", "lr", "knn_top1", "effective_rank", "normalised_std", "images_per_second"):
                        if line[key] is not None:
                            writer.add_scalar(key, line[key], s.epoch)
            barrier(ranks)
        if writer is not None:
            writer.close()
        summary = finish(s) if s.epoch >= cfg.epochs and ranks.main else None
        barrier(ranks)
        return TrainResult(s.online, s.target, s.metrics, summary, s.epoch, s.step, ranks.main)
    finally:
        if owns_group:
            dist.destroy_process_group()


def prepare(cfg: DeepConfig, ranks: Ranks, resume: bool) -> Session:
    """Check the run folder, load the data, build (or restore) networks and optimiser."""
    run_dir = Path(cfg.out)
    device = select_device(cfg.device, ranks.local_rank)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT) if resume else None
    if not resume and (run_dir / CHECKPOINT).exists():
        raise LinsslError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if checkpoint is not None:
        check_resumable(checkpoint["config"], cfg)
    if cfg.sync_bn and device.type != "cuda":
        raise LinsslError("--sync-bn needs CUDA (torch has no CPU SyncBatchNorm); drop it on CPU")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    if cfg.download and ranks.main:
        datasets.download(cfg.dataset, cfg.data_dir)
    barrier(ranks)
    spec = datasets.resolve_spec(cfg.dataset, cfg.data_dir)
    pretrain = datasets.load_split(cfg.dataset, cfg.data_dir, "pretrain")
    train_set = datasets.load_split(cfg.dataset, cfg.data_dir, "train") if ranks.main else None
    test_set = datasets.load_split(cfg.dataset, cfg.data_dir, "test") if ranks.main else None
    n = len(pretrain)
    if cfg.batch_size > n:
        raise LinsslError(f"--batch-size {cfg.batch_size} is larger than the {n} pretraining images of {cfg.dataset}")
    if cfg.batch_size % ranks.world or cfg.batch_size // ranks.world < 2:
        raise LinsslError(f"--batch-size {cfg.batch_size} must split into >= 2 images on each of {ranks.world} ranks")
    steps_per_epoch = n // cfg.batch_size

    online = build_online(cfg, spec.channels)
    if cfg.sync_bn and ranks.world > 1:
        online = nn.SyncBatchNorm.convert_sync_batchnorm(online)
    online.to(device)
    target = make_target(online)
    if device.type == "cuda":
        online.to(memory_format=torch.channels_last)
        target.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(online, cfg)
    s = Session(cfg, ranks, device, run_dir, spec, pretrain, train_set, test_set, device_images(pretrain, device),
                online, target, online, optimizer, augment_mod.BatchAugment(augment_config(cfg)).to(device), None,
                steps_per_epoch, cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch))
    if checkpoint is not None:
        online.load_state_dict(checkpoint["online"])
        target.load_state_dict(checkpoint["target"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        s.epoch, s.step, s.metrics = checkpoint["epoch"], checkpoint["step"], list(checkpoint["metrics"])
        s.wall_before = checkpoint["wall_seconds"]
        set_rng_state(checkpoint["rng"])
    if cfg.compile:
        online.backbone.compile()
        target[0].compile()
    if ranks.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        s.model = nn.parallel.DistributedDataParallel(online, device_ids=ids)
        s.reduce = all_reduce_mean
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", dataclasses.asdict(cfg))
        write_metrics(run_dir / "metrics.jsonl", s.metrics)  # drops lines of an epoch never checkpointed
    s.started = time.perf_counter()
    return s


def train_one_epoch(s: Session) -> EpochStats:
    """One pass over this rank's shard of the epoch's permutation (see the module docstring)."""
    cfg, device = s.cfg, s.device
    s.online.train()
    s.target.train()
    shard = epoch_shard(len(s.pretrain), cfg.batch_size, s.ranks, cfg.seed, s.epoch)
    aug_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, s.epoch, 1 + s.ranks.rank))
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    check_every = 1 if device.type == "cpu" else 25  # host syncs (NaN check, progress bar) on CUDA
    loss_sum, std_sum = torch.zeros((), device=device), torch.zeros((), device=device)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    lr = cfg.lr
    bar = _progress(cfg, s.ranks, s.steps_per_epoch, s.epoch)
    t0 = time.perf_counter()
    for k, batch in enumerate(iterate_batches(s.pretrain, s.images, shard, cfg, device)):
        lr = lr_at(s.step, s.total_steps, s.warmup_steps, cfg.lr, cfg.lr_schedule)
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        x1 = s.augment(batch, generator=aug_gen).contiguous(memory_format=layout)
        x2 = s.augment(batch, generator=aug_gen).contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            z1, z2, p1, p2 = s.model(x1, x2, reduce=s.reduce)
            with torch.no_grad():
                t1, t2 = s.target(x1), s.target(x2)
            loss = symmetric_loss(p1, p2, t1, t2)
        seen = loss.detach() if s.reduce is None else s.reduce(loss.detach())
        nonfinite |= ~torch.isfinite(seen)
        if (k + 1) % check_every == 0:
            _stop_if_nonfinite(nonfinite, s)
            if bar is not None:
                rate = (k + 1) * cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{seen.item():.4f}", img_s=f"{rate:.0f}")
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        s.optimizer.step()
        ema_update_(s.target, s.online, ema_momentum_at(s.step, s.total_steps, cfg.ema, cfg.ema_schedule))
        s.step += 1
        loss_sum += seen
        std_sum += normalised_std(z1)
        if bar is not None:
            bar.update(1)
    _stop_if_nonfinite(nonfinite, s)  # never checkpoint a diverged network
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    s.epoch += 1
    n = s.steps_per_epoch
    return EpochStats((loss_sum / n).item(), (std_sum / n).item(), lr, seconds)


def end_of_epoch(s: Session, stats: EpochStats) -> dict[str, Any]:
    """Rank 0: kNN monitor, spectra, one metrics.jsonl line, then the atomic checkpoint."""
    cfg = s.cfg
    knn = None
    if s.epoch == cfg.epochs or (cfg.knn_every > 0 and s.epoch % cfg.knn_every == 0):
        knn = evaluate_backbone(s.online.backbone, cfg, s.train_set, s.test_set, s.spec.num_classes, s.device,
                                probe=False)["knn_top1"]
    line = {
        "epoch": s.epoch,
        "step": s.step,
        "loss": stats.loss,
        "lr": stats.lr,
        "knn_top1": knn,
        **spectra(s.online),
        "normalised_std": stats.normalised_std,
        "healthy_std": 1.0 / math.sqrt(int(cfg.proj_dim)),
        "images_per_second": s.steps_per_epoch * cfg.batch_size / stats.seconds,
        "epoch_seconds": stats.seconds,
        "wall_seconds": s.wall_before + time.perf_counter() - s.started,
    }
    s.metrics.append(line)
    append_metrics(s.run_dir / "metrics.jsonl", line)
    save_checkpoint(s.run_dir / CHECKPOINT, {
        "online": s.online.state_dict(),
        "target": s.target.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "epoch": s.epoch,
        "step": s.step,
        "rng": rng_state(),
        "metrics": s.metrics,
        "wall_seconds": line["wall_seconds"],
        "config": dataclasses.asdict(cfg),
    })
    return line


def finish(s: Session) -> dict[str, Any]:
    """Rank 0, after the last epoch: linear probe + kNN on frozen backbone features -> summary.json."""
    cfg = s.cfg
    final = evaluate_backbone(s.online.backbone, cfg, s.train_set, s.test_set, s.spec.num_classes, s.device,
                              probe=True)
    summary = {
        "dataset": cfg.dataset,
        "predictor": cfg.predictor,
        "arch": cfg.arch,
        "epochs": cfg.epochs,
        "linear_top1": final["linear_top1"],
        "linear_train_top1": final["linear_train_top1"],
        "probe_weight_decay": final["probe_weight_decay"],
        "knn_top1": final["knn_top1"],
        "wall_seconds": s.wall_before + time.perf_counter() - s.started,
        "images_per_second": _mean_images_per_second(s.metrics),
        "device": _device_name(s.device),
        "world_size": s.ranks.world,
        "config": dataclasses.asdict(cfg),
    }
    write_json(s.run_dir / "summary.json", summary)
    return summary


def _mean_images_per_second(metrics: list[dict[str, Any]]) -> float | None:
    """Training images per second over every epoch of the run, the resumed sessions' included."""
    seconds = sum(m["epoch_seconds"] for m in metrics)
    return sum(m["images_per_second"] * m["epoch_seconds"] for m in metrics) / seconds if seconds > 0 else None


def _stop_if_nonfinite(nonfinite: Tensor, s: Session) -> None:
    if bool(nonfinite):
        raise _diverged(s, "the loss became NaN/inf")


def _diverged(s: Session, what: str) -> DivergenceError:
    """The one-line divergence error: where, what to change, and what is left of the run."""
    if (s.run_dir / CHECKPOINT).is_file():
        left = f"the last good checkpoint in {s.run_dir} is kept; --resume continues from it"
    else:
        left = "no epoch finished, so there is no checkpoint: start again with a lower --lr"
    return DivergenceError(f"{what} in epoch {s.epoch + 1} (by step {s.step}); lower --lr ({left})")


def _progress(cfg: DeepConfig, ranks: Ranks, total: int, epoch: int):
    if not (cfg.progress and ranks.main):
        return None
    from tqdm.auto import tqdm

    # disable=None: a live bar on a terminal only; a log file gets the epoch lines of _report_epoch
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True, disable=None)


def _report_epoch(line: dict[str, Any], epochs: int) -> None:
    """One line on stderr per epoch (what metrics.jsonl records, in short): progress in a log file too."""
    from tqdm.auto import tqdm

    knn = "" if line["knn_top1"] is None else f"  knn {line['knn_top1']:.4f}"
    tqdm.write(f"epoch {line['epoch']}/{epochs}  loss {line['loss']:.4f}{knn}  "
               f"eff. rank {line['effective_rank']:.2f}  std {line['normalised_std']:.3f} "
               f"(healthy {line['healthy_std']:.3f})  {line['images_per_second']:.0f} img/s  "
               f"{line['epoch_seconds']:.1f} s", file=sys.stderr)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


# --------------------------------------------------------------------------- finished / interrupted runs


def load_run(run_dir: str | os.PathLike, device: torch.device) -> tuple[DeepConfig, OnlineNetwork, dict[str, Any]]:
    """Config, online network (weights of the last checkpoint) and checkpoint of a run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LinsslError(f"run folder {run_dir} does not exist")
    checkpoint = load_checkpoint(run_dir / CHECKPOINT, "train at least one epoch with deep-train first")
    cfg = config_from_dict(checkpoint["config"], f"{run_dir / CHECKPOINT}").resolve()
    online = build_online(cfg, datasets.get_spec(cfg.dataset).channels)
    online.load_state_dict(checkpoint["online"])
    return cfg, online.to(device), checkpoint
