"""The headline comparison: DirectCopy, BYOL and DirectPred with the same budget -> OUT/results.md and .json.

    linssl headline --data-dir DATA --out runs/headline --device cuda --amp --epochs 200
    linssl headline --quick --out runs/headline-quick        # every method on digits, 1 epoch, CPU, seconds

Each method trains its recipe <method>-<dataset> in OUT/<recipe>/ through deep-train's trainer; rerunning the
command skips finished runs, resumes interrupted ones and extends them when --epochs grew.
--settings FILE.toml gives explicit per-method settings, one table per method ([byol] lr = 0.2 ...).
"""

from __future__ import annotations

import argparse
import os
import sys

from linssl.errors import LinsslError


def configure(parser: argparse.ArgumentParser) -> None:
    from linssl.deep.config import DEVICES
    from linssl.deep.datasets import DATASETS
    from linssl.deep.headline import METHODS
    from linssl.deep.models import ARCHS

    flag = argparse.BooleanOptionalAction
    parser.add_argument("--out", required=True, help="folder of the runs and of results.md / results.json")
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="cifar10",
                        help="the recipes are <method>-DATASET (cifar10)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated methods, in the order run ({','.join(METHODS)})")
    parser.add_argument("--settings", default=None, metavar="FILE.toml",
                        help="explicit settings per method, one table each, on top of its recipe")
    parser.add_argument("--quick", action="store_true",
                        help="digits, small net, 1 epoch, CPU: checks the whole path in seconds")
    budget = parser.add_argument_group("the shared budget (default: the recipes', which must then agree)")
    budget.add_argument("--data-dir", default=None, help="folder holding the dataset's official files")
    budget.add_argument("--epochs", type=int, default=None, help="epochs of every method")
    budget.add_argument("--batch-size", type=int, default=None, help="global batch size of every method")
    budget.add_argument("--seed", type=int, default=None, help="seed of every method (0)")
    budget.add_argument("--arch", choices=ARCHS, default=None, help="backbone of every method (resnet18)")
    budget.add_argument("--device", choices=DEVICES, default=None, help="auto (default), cpu, cuda")
    budget.add_argument("--amp", action=flag, default=None, help="bf16 autocast")
    budget.add_argument("--compile", action=flag, default=None, help="torch.compile the backbones")
    budget.add_argument("--workers", type=int, default=None, help="DataLoader workers for ImageNet")
    budget.add_argument("--knn-every", type=int, default=None, help="kNN monitor every N epochs (1)")
    budget.add_argument("--knn-k", type=int, default=None, help="kNN neighbours (200)")
    budget.add_argument("--probe-epochs", type=int, default=None, help="linear-probe epochs at the end (100)")
    budget.add_argument("--probe-wd", type=float, default=None,
                        help="fixed probe weight decay (default: chosen on a held-out part of the train split)")
    budget.add_argument("--download", action=flag, default=None, help="fetch STL-10 / CIFAR archives first")
    budget.add_argument("--progress", action=flag, default=None, help="progress bar and epoch lines (on)")


def run(args: argparse.Namespace) -> int:
    from linssl.deep.cli_train import read_toml
    from linssl.deep.headline import SHARED_FIELDS, format_table, headline_configs, run_headline

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = read_toml(args.settings) if args.settings else {}
    for method, table in settings.items():
        if not isinstance(table, dict):
            raise LinsslError(f"{args.settings}: {method!r} must be a table of settings ([{method}] ...), "
                              f"got {table!r}")
    budget = {name: getattr(args, name) for name in SHARED_FIELDS
              if name != "dataset" and getattr(args, name, None) is not None}  # --dataset names the recipes
    configs = headline_configs(args.out, methods, args.dataset, budget, settings, quick=args.quick)
    try:
        results = run_headline(configs, args.out)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank gets the interrupt; one reports
            sys.stderr.write("linssl headline: interrupted; rerun the same command to continue (finished runs "
                             "are kept, the interrupted one resumes from its last checkpoint)\n")
        return 130
    if results:
        print(format_table(results), end="")
    return 0
