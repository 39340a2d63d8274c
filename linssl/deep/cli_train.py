"""Train a ResNet (or the small digits net) with DirectCopy, DirectPred, DirectSet(α) or a trained predictor.

Values come from, in increasing priority: the defaults (DirectPred STL-10 recipe), the run's own
config.json when resuming, ``--config FILE.toml`` (keys = the long flag names, dashes or
underscores), and the flags given on the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from linssl.deep.augment import JITTER_ORDERS
from linssl.deep.models import ARCHS, PREDICTOR_HEADS
from linssl.errors import LinsslError

DATASET_NAMES = ("stl10", "cifar10", "cifar100", "imagenet", "digits")


def configure(parser: argparse.ArgumentParser) -> None:
    from linssl.deep.config import DEVICES, OPTIMIZERS, PROJECTORS, SCHEDULES, STEMS

    flag = argparse.BooleanOptionalAction
    data = parser.add_argument_group("data and run")
    data.add_argument("--dataset", choices=DATASET_NAMES, default=None, help="dataset to pretrain on")
    data.add_argument("--data-dir", default=None, help="folder holding the dataset's official files")
    data.add_argument("--out", default=None, help="run folder (config.json, metrics.jsonl, checkpoint.pt, ...)")
    data.add_argument("--download", action=flag, default=None, help="fetch STL-10 / CIFAR archives first")
    data.add_argument("--config", default=None, metavar="FILE.toml", help="settings file; flags override it")
    data.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    data.add_argument("--stop-after-epochs", type=int, default=None,
                      help="end this session after N epochs (checkpointed; --resume continues)")
    net = parser.add_argument_group("network")
    net.add_argument("--arch", choices=ARCHS, default=None, help="backbone (default resnet18)")
    net.add_argument("--stem", choices=STEMS, default=None,
                     help="ResNet stem: cifar (3x3, no max-pool) or imagenet (7x7 + max-pool); auto by dataset")
    net.add_argument("--width", type=int, default=None, help="channels of the first layer of the small arch (32)")
    net.add_argument("--projector", choices=tuple(PROJECTORS), default=None,
                     help="projector preset: directpred 512 -> 128 (default) or byol 4096 -> 256")
    net.add_argument("--proj-hidden", type=int, default=None, help="projector hidden width (overrides the preset)")
    net.add_argument("--proj-dim", type=int, default=None, help="projector output m (overrides the preset)")
    pred = parser.add_argument_group("predictor")
    pred.add_argument("--predictor", choices=tuple(PREDICTOR_HEADS), default=None,
                      help="directpred (default), directcopy, directset (needs --alpha), linear or mlp (trained)")
    pred.add_argument("--alpha", type=float, default=None, help="DirectSet exponent: W_p = g(F)^alpha + eps I")
    pred.add_argument("--norm", choices=("none", "spectral", "frobenius"), default=None,
                      help="normalisation g of F (default spectral). DirectCopy's paper constants are unconfirmed: "
                           "the authors' code used none, another group spectral with eps 0.25")
    pred.add_argument("--eps", type=float, default=None, help="eps added to the predictor's diagonal (default 0.01)")
    pred.add_argument("--rho", type=float, default=None, help="EMA of F: F <- rho F + (1 - rho) mean(z z^T) (0.3)")
    pred.add_argument("--freq", type=int, default=None, help="set W_p from F every FREQ steps (1)")
    pred.add_argument("--pred-hidden", type=int, default=None, help="hidden width of the mlp predictor (4096)")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=None, help="epochs (100)")
    opt.add_argument("--batch-size", type=int, default=None, help="global batch size (128)")
    opt.add_argument("--lr", type=float, default=None, help="peak learning rate, not batch-scaled (0.03)")
    opt.add_argument("--momentum", type=float, default=None, help="SGD / LARS momentum (0.9)")
    opt.add_argument("--wd", type=float, default=None, help="weight decay (4e-4)")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="sgd (default) or lars")
    opt.add_argument("--lr-schedule", choices=SCHEDULES, default=None, help="constant (default) or cosine")
    opt.add_argument("--warmup-epochs", type=float, default=None, help="linear lr warm-up epochs (0)")
    opt.add_argument("--exclude-bn-bias-wd", action=flag, default=None, help="no weight decay on BN and biases")
    opt.add_argument("--ema", type=float, default=None, help="target momentum m (0.996)")
    opt.add_argument("--ema-schedule", choices=SCHEDULES, default=None,
                     help="constant (default) or cosine from m to 1 (BYOL)")
    opt.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                     help="random-resized-crop area range (default: the dataset's preset)")
    opt.add_argument("--jitter-order", choices=JITTER_ORDERS, default=None,
                     help="colour jitter order: random per image (default, as torchvision/BYOL) or fixed b, c, s, h")
    run = parser.add_argument_group("execution")
    run.add_argument("--device", choices=DEVICES, default=None, help="auto (default: cuda if present), cpu, cuda")
    run.add_argument("--amp", action=flag, default=None, help="bf16 autocast")
    run.add_argument("--compile", action=flag, default=None, help="torch.compile the backbones")
    run.add_argument("--sync-bn", action=flag, default=None, help="SyncBatchNorm under DDP (torchrun)")
    run.add_argument("--deterministic", action=flag, default=None, help="torch deterministic algorithms")
    run.add_argument("--workers", type=int, default=None, help="DataLoader workers for ImageNet (4)")
    run.add_argument("--seed", type=int, default=None, help="seed of init, shuffles and augmentations (0)")
    run.add_argument("--progress", action=flag, default=None, help="tqdm progress bar (on)")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--knn-k", type=int, default=None, help="kNN monitor neighbours (200)")
    ev.add_argument("--knn-t", type=float, default=None, help="kNN monitor temperature (0.1)")
    ev.add_argument("--knn-every", type=int, default=None,
                    help="kNN monitor every N epochs (1; 0 = only after the last epoch, e.g. for ImageNet)")
    ev.add_argument("--probe-epochs", type=int, default=None, help="linear-probe epochs at the end (100)")
    ev.add_argument("--probe-wd", type=float, default=None,
                    help="fixed probe weight decay (default: chosen on a held-out part of the train split)")


def read_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    from linssl.io import require_file

    file = require_file(path, "config file")
    if file.stat().st_size > 2**20:
        raise LinsslError(f"config file {file} has {file.stat().st_size} bytes; a settings file is under 1 MiB")
    try:
        with open(file, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise LinsslError(f"config file {file} is not valid TOML: {exc}") from None
    except RecursionError:
        raise LinsslError(f"config file {file} nests deeper than any settings file") from None
    except UnicodeDecodeError as exc:
        raise LinsslError(f"config file {file} is not UTF-8 text (byte {exc.start}), so not TOML") from None


def merged_config(args: argparse.Namespace):
    """Defaults < RUN_DIR/config.json (with --resume) < --config TOML < flags."""
    import json

    from linssl.deep.config import LEGACY_DEFAULTS, config_fields, config_from_dict

    given = {name: getattr(args, name) for name in config_fields() if getattr(args, name, None) is not None}
    from_file = read_toml(args.config) if args.config else {}
    values: dict[str, Any] = {}
    if args.resume:
        out = given.get("out") or from_file.get("out")
        if not out:
            raise LinsslError("--resume needs --out RUN_DIR (the run to continue)")
        from linssl.io import require_folder

        saved = require_folder(out, "run folder", "--resume continues a run in an existing folder") / "config.json"
        if not saved.is_file():
            raise LinsslError(f"no run to resume in {out} (config.json missing); start it without --resume")
        if saved.stat().st_size > 2**20:
            raise LinsslError(f"{saved} has {saved.stat().st_size} bytes; a run's settings take under 1 MiB")
        try:
            saved_values = json.loads(saved.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise LinsslError(f"{saved} is not valid JSON ({exc}); restore it (checkpoint.pt holds the same "
                              "settings under 'config') or start a new run") from None
        if not isinstance(saved_values, dict):
            raise LinsslError(f"{saved} does not hold a run's settings (a JSON object)")
        values.update({**LEGACY_DEFAULTS, **saved_values})  # a run saved before a setting existed keeps its value
    config_from_dict(from_file, args.config or "config")  # unknown keys raise, naming the file
    values.update({k.replace("-", "_"): v for k, v in from_file.items()})
    values.update(given)
    cfg = config_from_dict(values, "config")
    if not cfg.dataset:
        raise LinsslError("give --dataset (stl10, cifar10, cifar100, imagenet or digits)")
    return cfg


def run(args: argparse.Namespace) -> int:
    from linssl.deep.config import CHECKPOINT
    from linssl.deep.loop import train

    if args.stop_after_epochs is not None and args.stop_after_epochs < 1:
        raise LinsslError(f"--stop-after-epochs must be >= 1, got {args.stop_after_epochs}")
    cfg = merged_config(args)
    try:
        result = train(cfg, resume=args.resume, stop_after_epochs=args.stop_after_epochs)
    except KeyboardInterrupt:
        if (Path(cfg.out) / CHECKPOINT).is_file():
            where = f"the last checkpoint is kept; continue with: linssl deep-train --resume --out {cfg.out}"
        else:
            where = "no epoch had finished, so there is nothing to resume"
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank gets the interrupt; one reports
            sys.stderr.write(f"linssl deep-train: interrupted ({where})\n")
        return 130
    if result.summary is not None:
        s = result.summary
        print(f"{s['dataset']} {s['predictor']} {s['epochs']} epochs: linear top-1 {s['linear_top1']:.4f}, "
              f"kNN top-1 {s['knn_top1']:.4f}, {s['wall_seconds']:.0f} s -> {Path(cfg.out) / 'summary.json'}")
    elif result.main and result.epoch < cfg.epochs and result.metrics:
        print(f"stopped after epoch {result.epoch} of {cfg.epochs}; "
              f"continue with: linssl deep-train --resume --out {cfg.out}")
    return 0
