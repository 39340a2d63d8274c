"""The deep training loop: two augmented views, online/target networks, symmetric cosine loss (docs/theory.md §6).

One step, for a batch x and a predictor head that keeps F̂ (``linssl.deep.models``):

    x1, x2 = aug1(x), aug2(x)               (batched, on the training device; per-view settings)
    z_i = proj(backbone(x_i));  F̂ ← ρ F̂ + (1 − ρ) mean(z zᵀ) over both views;  W_p = rule(F̂) every freq
    L = (2 − 2cos(W_p z1, sg(z2'))) + (2 − 2cos(W_p z2, sg(z1')))      z' = target projections
    θ ← optimiser step (SGD or LARS; lr constant or warm-up + cosine);   θ' ← m θ' + (1 − m) θ

Every epoch: kNN monitor, one line of RUN_DIR/metrics.jsonl, an atomic RUN_DIR/checkpoint.pt.
At the end: linear probe on frozen backbone features, RUN_DIR/summary.json.
Resuming with other ``epochs`` (at least the epochs done) extends or re-plans a finished or interrupted
run: ``schedules.replan`` says what the schedules become; the finished run's summary.json is kept as
summary-<E>epochs.json.
All randomness of an epoch (shuffle, augmentations) comes from generators seeded by
(seed, epoch, stream), so a resumed run repeats an uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from linssl.deep import augment as augment_mod
from linssl.deep import datasets
from linssl.deep.checkpoint import (
    append_metrics,
    check_resumable,
    load_checkpoint,
    restore,
    restore_optimizer,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_metrics,
)
from linssl.deep.config import CHECKPOINT, CUSTOM, DeepConfig, build_online, build_optimizer, peak_lr, view_configs
from linssl.deep.models import OnlineNetwork, make_target
from linssl.deep.monitor import evaluate_backbone, normalised_std, spectra
from linssl.deep.ranks import Ranks, all_reduce_mean, barrier, init_ranks, select_device
from linssl.deep.schedules import ema_momentum_at, epoch_seed, lr_at, replan
from linssl.deep.sharding import device_images, epoch_shard, iterate_batches
from linssl.deep.step import TrainingStep
from linssl.deep.userdata import ImageData
from linssl.errors import DivergenceError, LinsslError
from linssl.io import check_output_folder, write_json
from linssl.memory import check_fits, deep_memory_available, deep_training_bytes


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))

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
    extensions: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # schedules.replan records
    wall_before: float = 0.0
    started: float = 0.0


@dataclass
class EpochStats:
    loss: float
    normalised_std: float
    lr: float
    seconds: float


def train(cfg: DeepConfig, resume: bool = False, stop_after_epochs: int | None = None, *,
          backbone: nn.Module | None = None, feature_dim: int | None = None, data: ImageData | None = None
          ) -> TrainResult:
    """Train (or resume) the run of ``cfg`` in ``cfg.out``; see the module docstring.

    ``stop_after_epochs`` ends this session after that many epochs (checkpoint written, no probe),
    for time-limited jobs; ``--resume`` continues it. ``backbone`` (output size ``feature_dim``) and
    ``data`` replace the network ``cfg.arch`` names and the dataset ``cfg.dataset`` names; the config
    then says ``custom`` (``linssl.deep.train`` sets it).
    """
    cfg = cfg.resolve(spec=None if data is None else data.spec)
    ranks, owns_group = init_ranks(cfg.device)
    try:
        s = prepare(cfg, ranks, resume, backbone, feature_dim, data)
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


def prepare(cfg: DeepConfig, ranks: Ranks, resume: bool, backbone: nn.Module | None = None,
            feature_dim: int | None = None, data: ImageData | None = None) -> Session:
    """Check the run folder, load the data, build (or restore) networks and optimiser."""
    run_dir = check_output_folder(cfg.out, "--out")
    device = select_device(cfg.device, ranks.local_rank)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT) if resume else None
    if not resume and (run_dir / CHECKPOINT).exists():
        raise LinsslError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if checkpoint is not None:
        check_resumable(checkpoint["config"], cfg, epochs_done=checkpoint["epoch"])
    if cfg.sync_bn and device.type != "cuda":
        raise LinsslError("--sync-bn needs CUDA (torch has no CPU SyncBatchNorm); drop it on CPU")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    if cfg.download and ranks.main:
        datasets.download(cfg.dataset, cfg.data_dir)
    barrier(ranks)
    if (data is None) != (cfg.dataset != CUSTOM):
        raise LinsslError("dataset = custom goes with images given to linssl.deep.train, and only with them")
    spec = datasets.resolve_spec(cfg.dataset, cfg.data_dir) if data is None else data.spec
    if backbone is None:  # the user's own backbone is theirs to size
        available, where = deep_memory_available(device)
        check_fits(deep_training_bytes(cfg, spec.channels, spec.image_size),
                   f"training with --batch-size {cfg.batch_size}, --width {cfg.width}, --proj-hidden "
                   f"{cfg.proj_hidden}, --proj-dim {cfg.proj_dim}", "lower them", available, where)
    if data is not None:
        pretrain, train_set, test_set = data.pretrain, data.train, data.test
    else:
        pretrain = datasets.load_split(cfg.dataset, cfg.data_dir, "pretrain")
        train_set = datasets.load_split(cfg.dataset, cfg.data_dir, "train") if ranks.main else None
        test_set = datasets.load_split(cfg.dataset, cfg.data_dir, "test") if ranks.main else None
    n = len(pretrain)
    if cfg.batch_size > n:
        raise LinsslError(f"--batch-size {cfg.batch_size} is larger than the {n} pretraining images of {cfg.dataset}")
    if cfg.batch_size % ranks.world or cfg.batch_size // ranks.world < 2:
        raise LinsslError(f"--batch-size {cfg.batch_size} must split into >= 2 images on each of {ranks.world} ranks")
    steps_per_epoch = n // cfg.batch_size

    online = build_online(cfg, spec.channels, backbone, feature_dim, spec.image_size)
    if cfg.sync_bn and ranks.world > 1:
        online = nn.SyncBatchNorm.convert_sync_batchnorm(online)
    online.to(device)
    target = make_target(online)
    if device.type == "cuda":
        online.to(memory_format=torch.channels_last)
        target.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(online, cfg)
    s = Session(cfg, ranks, device, run_dir, spec, pretrain, train_set, test_set, device_images(pretrain, device),
                online, target, online, optimizer, augment_mod.ViewPair(*view_configs(cfg, spec)).to(device), None,
                steps_per_epoch, cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch))
    if checkpoint is not None:
        path = run_dir / CHECKPOINT
        restore(online, checkpoint["online"], path, "online network")
        restore(target, checkpoint["target"], path, "target network")
        restore_optimizer(optimizer, checkpoint["optimizer"], path)
        s.epoch, s.step, s.metrics = checkpoint["epoch"], checkpoint["step"], list(checkpoint["metrics"])
        s.wall_before = checkpoint["wall_seconds"]
        try:
            set_rng_state(checkpoint["rng"])
        except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
            raise LinsslError(f"the RNG state in {path} cannot be restored ({type(exc).__name__})") from None
        s.extensions = list(checkpoint.get("extensions", []))
        planned = int(checkpoint["config"].get("epochs", cfg.epochs))
        if planned != cfg.epochs:
            record = replan(s.step, steps_per_epoch, s.warmup_steps, planned, cfg.epochs, peak_lr(cfg),
                            cfg.lr_schedule, cfg.ema_momentum, cfg.ema_schedule)
            s.extensions.append(record)
            if ranks.main:
                print(record["note"], file=sys.stderr)
                if s.epoch >= planned and (run_dir / "summary.json").is_file():  # the finished run's result
                    os.replace(run_dir / "summary.json", run_dir / f"summary-{s.epoch}epochs.json")
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
    lr = peak_lr(cfg)
    bar = _progress(cfg, s.ranks, s.steps_per_epoch, s.epoch)
    t0 = time.perf_counter()
    step = TrainingStep(s.online, s.target, s.optimizer, s.model, s.reduce, cfg.amp, cfg.loss)
    for k, batch in enumerate(iterate_batches(s.pretrain, s.images, shard, cfg.workers, device)):
        lr = lr_at(s.step, s.total_steps, s.warmup_steps, peak_lr(cfg), cfg.lr_schedule)
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        x1, x2 = (x.contiguous(memory_format=layout) for x in s.augment(batch, generator=aug_gen))

        def check(seen: Tensor, k: int = k) -> None:
            nonlocal nonfinite
            nonfinite |= ~torch.isfinite(seen)
            if (k + 1) % check_every == 0:
                _stop_if_nonfinite(nonfinite, s)
                if bar is not None:
                    rate = (k + 1) * cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{seen.item():.4f}", img_s=f"{rate:.0f}")

        m = ema_momentum_at(s.step, s.total_steps, cfg.ema_momentum, cfg.ema_schedule)
        out = step(x1, x2, m, before_update=check)
        seen, z1 = out.loss, out.z1
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
                                probe=False, spec=s.spec)["knn_top1"]
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
        "epochs_planned": cfg.epochs,
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
        "extensions": s.extensions,
        "wall_seconds": line["wall_seconds"],
        "config": dataclasses.asdict(cfg),
    })
    return line


def finish(s: Session) -> dict[str, Any]:
    """Rank 0, after the last epoch: linear probe + kNN on frozen backbone features -> summary.json."""
    cfg = s.cfg
    final = evaluate_backbone(s.online.backbone, cfg, s.train_set, s.test_set, s.spec.num_classes, s.device,
                              probe=True, spec=s.spec)
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
        "extensions": s.extensions,
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
