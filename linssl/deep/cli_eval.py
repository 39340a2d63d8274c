"""Linear probe and kNN on the backbone of a finished or interrupted deep-train run.

Reads RUN_DIR/checkpoint.pt (weights and resolved config), writes RUN_DIR/eval.json (with the k and
probe epochs used) and, if the run finished (summary.json exists) and was evaluated with its own
settings, updates summary.json's linear_top1 / knn_top1 fields; --knn-k / --probe-epochs leave it alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from linssl.errors import LinsslError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="folder of a deep-train run (holds checkpoint.pt)")
    parser.add_argument("--data-dir", default=None, help="dataset folder, if it moved since training")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to evaluate")
    parser.add_argument("--probe-epochs", type=int, default=None, help="linear-probe epochs (default: the run's)")
    parser.add_argument("--knn-k", type=int, default=None, help="kNN neighbours (default: the run's)")


def run(args: argparse.Namespace) -> int:
    from linssl.deep import datasets
    from linssl.deep.checkpoint import load_run
    from linssl.deep.monitor import evaluate_backbone
    from linssl.deep.ranks import select_device
    from linssl.io import check_output_path, path_kind, write_json

    run_dir = Path(args.run_dir)
    device = select_device(args.device)
    cfg, online, checkpoint = load_run(run_dir, device)
    overrides = {"data_dir": args.data_dir, "probe_epochs": args.probe_epochs, "knn_k": args.knn_k}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None}).resolve()
    finished = checkpoint["epoch"] >= cfg.epochs
    summary_path = run_dir / "summary.json"
    own_settings = args.knn_k is None and args.probe_epochs is None
    summary = None  # read, and both outputs checked, before the evaluation: a bad file costs no minutes
    check_output_path(run_dir / "eval.json")
    if finished and own_settings and path_kind(summary_path) is not None:
        summary = _read_summary(check_output_path(summary_path))
    spec = datasets.resolve_spec(cfg.dataset, cfg.data_dir)
    train_set = datasets.load_split(cfg.dataset, cfg.data_dir, "train")
    test_set = datasets.load_split(cfg.dataset, cfg.data_dir, "test")
    result = evaluate_backbone(online.backbone, cfg, train_set, test_set, spec.num_classes, device, probe=True)
    report = {"dataset": cfg.dataset, "predictor": cfg.predictor, "epoch": checkpoint["epoch"],
              "epochs": cfg.epochs, "finished": finished, **result}
    write_json(run_dir / "eval.json", report)
    if summary is not None:
        summary.update({k: result[k] for k in ("linear_top1", "linear_train_top1", "probe_weight_decay", "knn_top1")})
        write_json(summary_path, summary)
    state = "finished" if finished else f"interrupted at epoch {checkpoint['epoch']} of {cfg.epochs}"
    print(f"{run_dir} ({state}): linear top-1 {result['linear_top1']:.4f}, kNN top-1 {result['knn_top1']:.4f}")
    return 0


def _read_summary(path: Path) -> dict:
    """A run's summary.json, which deep-eval refreshes; a damaged one is a one-line error."""
    if path.stat().st_size > 2**20:
        raise LinsslError(f"{path} has {path.stat().st_size} bytes; a run's summary takes under 1 MiB")
    try:
        summary = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise LinsslError(f"cannot read {path}: {exc}; delete it and rerun deep-eval") from None
    if not isinstance(summary, dict):
        raise LinsslError(f"{path} is not a JSON object; delete it and rerun deep-eval")
    return summary
