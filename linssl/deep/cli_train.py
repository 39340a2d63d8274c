"""Train a ResNet (or the small digits net) with DirectCopy, DirectPred, DirectSet(α) or a trained predictor.

Values come from, in increasing priority: the defaults (``DeepConfig``), ``--recipe NAME`` (a reference
recipe, ``linssl recipes``), the run's own config.json when resuming, ``--config FILE.toml`` (keys = the
long flag names, dashes or underscores), and the flags given on the command line. The flags themselves
are generated from ``DeepConfig`` (``linssl.deep.flags``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from linssl.errors import LinsslError


def configure(parser: argparse.ArgumentParser) -> None:
    from linssl.deep.flags import add_config_flags

    groups = add_config_flags(parser)
    data = groups["data and run"]
    data.add_argument("--config", default=None, metavar="FILE.toml", help="settings file; flags override it")
    data.add_argument("--resume", action="store_true",
                      help="continue from RUN_DIR/checkpoint.pt; with --epochs N, extend a finished run to N epochs")
    data.add_argument("--stop-after-epochs", type=int, default=None,
                      help="end this session after N epochs (checkpointed; --resume continues)")
    data.add_argument("--print-config", action="store_true",
                      help="print the resolved settings as JSON and exit (reads no data, writes nothing)")


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
    """Defaults < --recipe < RUN_DIR/config.json (with --resume) < --config TOML < flags.

    A resumed run keeps every setting it was saved with; the TOML file and the flags may then only repeat
    them (resume refuses a changed network, schedule or recipe).
    """
    import json

    from linssl.deep.config import config_fields, config_from_dict, normalise_keys, upgrade_saved
    from linssl.deep.datasets import DATASETS
    from linssl.deep.recipes import load_recipe

    given = {name: getattr(args, name) for name in config_fields() if getattr(args, name, None) is not None}
    from_file = normalise_keys(read_toml(args.config), args.config) if args.config else {}
    config_from_dict(from_file, args.config or "config")  # a file's bad values raise, naming the file
    recipe = given.get("recipe") or from_file.get("recipe")
    values: dict[str, Any] = {}
    if recipe:
        values = dict(normalise_keys(load_recipe(recipe).values, f"recipe {recipe}"), recipe=recipe)
        config_from_dict(values, f"recipe {recipe}")  # a bad value raises, naming the recipe
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
        values.update(upgrade_saved(saved_values, str(saved)))  # old names renamed, later settings' old values
    values.update(from_file)
    values.update(given)
    cfg = config_from_dict(values, "config")
    if not cfg.dataset:
        raise LinsslError(f"give --dataset ({', '.join(DATASETS)}) or --recipe (linssl recipes lists them)")
    return cfg


def print_config(cfg) -> None:
    """The resolved settings as JSON on stdout (what config.json will hold), and the derived values a
    reader needs on stderr: the peak learning rate and each view's augmentation."""
    import dataclasses
    import json

    from linssl.deep.config import peak_lr, view_configs

    print(json.dumps(dataclasses.asdict(cfg), indent=2))
    views = view_configs(cfg)
    sys.stderr.write(f"peak lr {peak_lr(cfg):g}" + (f" (= {cfg.lr:g} x {cfg.batch_size} / 256)"
                                                    if cfg.lr_scaling == "linear" else "") + "\n")
    for k, view in enumerate(views, 1):
        sys.stderr.write(f"view {k}: crop {view.crop_scale}, jitter {view.jitter} p {view.jitter_p}, "
                         f"gray {view.gray_p}, blur {view.blur_p}, solarize {view.solarize_p}\n")


def run(args: argparse.Namespace) -> int:
    from linssl.deep.config import CHECKPOINT
    from linssl.deep.loop import train

    if args.stop_after_epochs is not None and args.stop_after_epochs < 1:
        raise LinsslError(f"--stop-after-epochs must be >= 1, got {args.stop_after_epochs}")
    cfg = merged_config(args)
    if args.print_config:
        print_config(cfg.resolve(need_out=False))
        return 0
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
