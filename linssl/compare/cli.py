"""The linear theory's prediction against networks trained on real images (docs/theory.md §8).

``linssl compare --dataset digits --wd 0.003,0.01,0.03,0.1,0.3 --predictor directpred --out DIR``: measures
the two-view model X, X' under the trainer's augmentations, runs the simulator on it, trains a linear network
and a deep network with deep-train at every weight decay, and writes DIR/compare.json, compare.png/.pdf and a
table on stdout. ``--quick`` takes a few minutes on 2 CPU cores; ``--resume`` skips finished stages.
"""

from __future__ import annotations

import argparse

from linssl.errors import LinsslError


def _wd_list(text: str) -> tuple[float, ...]:
    values = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise LinsslError(f"--wd must be a comma list of numbers, got {text!r}") from None
    return tuple(values)


def configure(parser: argparse.ArgumentParser) -> None:
    from linssl.compare.run import PREDICTORS, THEORY_TIME, VIEWS
    from linssl.deep.datasets import DATASETS

    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; must be empty)")
    parser.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)} (digits)")
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="where the dataset files are (not digits)")
    parser.add_argument("--wd", default="0.003,0.01,0.03,0.1,0.3", help="weight decays η, comma list")
    parser.add_argument("--predictor", default="directpred", help=f"one of {', '.join(PREDICTORS)} (directpred)")
    parser.add_argument("--space", default="pixels",
                        help="input space of the two-view model: pixels (normalised, flattened) or pca:D")
    parser.add_argument("--images", type=int, default=None, help="images for the estimate (all of pretrain)")
    parser.add_argument("--views", type=int, default=None,
                        help=f"augmented views per image K ({VIEWS[0]}; --quick {VIEWS[1]})")
    parser.add_argument("--theory-time", type=float, default=None,
                        help=f"flow time of the theory and horizon of the linear SGD ({THEORY_TIME[0]:g}; "
                             f"--quick {THEORY_TIME[1]:g})")
    parser.add_argument("--deep-arch", default=None, help="deep network (small on digits, else resnet18)")
    parser.add_argument("--deep-epochs", type=int, default=None, help="deep epochs (the recipe's; --quick 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of views, inits and training (0)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device")
    parser.add_argument("--quick", action="store_true", help="fewer views, shorter runs: a smoke run")
    parser.add_argument("--resume", action="store_true", help="continue DIR, skipping finished stages")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar or lines")


def run(args: argparse.Namespace) -> int:
    from linssl.compare.run import CompareConfig, run_compare

    cfg = CompareConfig(out=args.out, dataset=args.dataset, data_dir=args.data_dir, wd=_wd_list(args.wd),
                        predictor=args.predictor, space=args.space, images=args.images, views=args.views,
                        theory_time=args.theory_time, deep_arch=args.deep_arch, deep_epochs=args.deep_epochs,
                        seed=args.seed, device=args.device, quick=args.quick, resume=args.resume,
                        progress=args.progress)
    result = run_compare(cfg)
    print(result.table)
    print(f"-> {result.out / 'compare.json'}, {result.out / 'compare.png'} (+ .pdf)")
    return 0
