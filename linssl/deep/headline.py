"""The headline comparison: DirectCopy, BYOL and DirectPred trained by the real trainer with the same budget,
and one results table (linear and kNN top-1, images/s, wall time, the device) — docs/theory.md §6, §8.

Each method runs its recipe ``<method>-<dataset>`` (e.g. ``directcopy-cifar10``) in ``OUT/<recipe>/``; the
values of a method's config are, in increasing priority: the recipe (``recipe_values``), the method's table
of explicit settings, the ``quick`` overrides, and the shared budget. Fields in ``SHARED_FIELDS`` (data,
epochs, batch, seed, backbone, evaluation, where it runs) must come out equal for every method, or the
comparison is refused. A finished run is skipped, an interrupted one resumed, and a finished one asked for
more epochs extended, so rerunning the command continues it. ``OUT/results.json`` and ``OUT/results.md``
are rewritten (atomically) after every method.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from linssl.deep.config import CHECKPOINT, DeepConfig, config_from_dict
from linssl.errors import LinsslError
from linssl.io import atomic_write, check_output_path, write_json

METHODS = ("directcopy", "byol", "directpred")
#: the budget and the setting of the comparison: equal for every method
SHARED_FIELDS = ("dataset", "data_dir", "arch", "stem", "width", "epochs", "batch_size", "seed", "device", "amp",
                 "compile", "sync_bn", "deterministic", "workers", "knn_k", "knn_t", "knn_every", "probe_epochs",
                 "probe_wd", "progress", "download")
#: ``quick``: every method on scikit-learn's digits with a tiny net for 1 epoch, on the CPU (seconds); one
#: channel, so the recipes' saturation, hue and grayscale are off
QUICK: dict[str, Any] = dict(dataset="digits", arch="small", width=4, proj_hidden=16, proj_dim=8, pred_hidden=16,
                             jitter=(0.4, 0.4, 0.0, 0.0), gray_p=0.0,
                             epochs=1, batch_size=256, knn_k=10, probe_epochs=5, probe_wd=1e-4, device="cpu",
                             workers=0)
#: Until the recipe files exist, a recipe is its method's predictor head on DeepConfig's defaults.
def recipe_values(recipe: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The DeepConfig values of the shipped ``recipe`` (``linssl recipes``) with ``overrides`` on top, as
    ``deep-train --recipe NAME --flag ...`` layers them."""
    from linssl.deep.config import normalise_keys
    from linssl.deep.recipes import load_recipe

    return {**normalise_keys(load_recipe(recipe).values, f"recipe {recipe}"), "recipe": recipe, **overrides}


def headline_configs(out: str | Path, methods: Sequence[str] = METHODS, dataset: str = "cifar10",
                     budget: Mapping[str, Any] | None = None, settings: Mapping[str, Mapping[str, Any]] | None = None,
                     quick: bool = False) -> dict[str, DeepConfig]:
    """One resolved DeepConfig per method (keyed by recipe name), run folders ``out/<recipe>``.

    ``budget``: DeepConfig values every method gets (``SHARED_FIELDS`` only); ``settings``: per method, explicit
    DeepConfig values on top of its recipe (no shared field). Raises ``LinsslError`` if the shared fields
    still differ between methods (e.g. recipes with other epochs and no ``epochs`` in ``budget``).
    """
    budget = dict(budget or {})
    settings = dict(settings or {})
    if not methods or len(set(methods)) != len(methods):
        raise LinsslError(f"give each method once, got {', '.join(methods) or 'none'}")
    for name in budget:
        if name not in SHARED_FIELDS:
            raise LinsslError(f"{name} is a method's setting, not part of the shared budget "
                              f"({', '.join(SHARED_FIELDS)})")
    for method, values in settings.items():
        if method not in methods:
            raise LinsslError(f"settings for {method!r}, which is not among the methods ({', '.join(methods)})")
        shared = sorted(set(k.replace("-", "_") for k in values) & {*SHARED_FIELDS, "out"})
        if shared:
            raise LinsslError(f"settings for {method} set {', '.join(shared)}, which every method shares "
                              "(run folders are OUT/<recipe>); give it once for all (e.g. --epochs)")
    configs: dict[str, DeepConfig] = {}
    for method in methods:
        recipe = f"{method}-{dataset}"
        overrides = {"dataset": dataset, **settings.get(method, {}), **(QUICK if quick else {}), **budget,
                     "out": str(Path(out) / recipe)}
        configs[recipe] = config_from_dict(recipe_values(recipe, overrides), f"recipe {recipe}").resolve()
    for name in SHARED_FIELDS:
        values = {recipe: getattr(cfg, name) for recipe, cfg in configs.items()}
        if len({json.dumps(v) for v in values.values()}) > 1:
            listed = ", ".join(f"{recipe} {value!r}" for recipe, value in values.items())
            raise LinsslError(f"the methods differ in {name} ({listed}); give it once for all "
                              f"(--{name.replace('_', '-')}) so they share the budget")
    return configs


def run_headline(configs: Mapping[str, DeepConfig], out: str | Path) -> dict[str, Any]:
    """Train (skip / resume / extend) each config in turn; write and return the results (see the module doc).

    Under torchrun every rank trains and rank 0 alone reports and writes the results (the others return {}).
    """
    from linssl.deep.checkpoint import check_resumable
    from linssl.deep.loop import train

    out = Path(out)
    main = os.environ.get("RANK", "0") == "0"
    check_output_path(out / "results.json")
    check_output_path(out / "results.md")
    rows: list[dict[str, Any]] = []
    for i, (recipe, cfg) in enumerate(configs.items(), start=1):
        run = Path(cfg.out)
        summary = _finished_summary(run, cfg)
        if summary is not None:
            try:
                check_resumable(summary["config"], cfg, epochs_done=cfg.epochs)
            except LinsslError as exc:
                raise LinsslError(f"{run} holds a finished run with other settings ({exc}); "
                                  "choose another --out") from None
            if main:
                print(f"[{i}/{len(configs)}] {recipe}: finished in {run}, skipped", file=sys.stderr)
        else:
            resume = (run / CHECKPOINT).is_file()
            if main:
                print(f"[{i}/{len(configs)}] {recipe}: {'resuming' if resume else 'training'} {cfg.epochs} "
                      f"epochs in {run}", file=sys.stderr)
            summary = train(cfg, resume=resume).summary
        if main:
            rows.append(_row(recipe, run, summary))
            write_results(out, configs, rows)
    return write_results(out, configs, rows) if main else {}


def _finished_summary(run: Path, cfg: DeepConfig) -> dict[str, Any] | None:
    """The run's summary.json if it finished ``cfg.epochs`` epochs (a longer plan resumes: extended)."""
    path = run / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LinsslError(f"cannot read {path} ({exc}); delete it to evaluate the run again") from None
    keys = ("epochs", "linear_top1", "knn_top1", "wall_seconds", "device")
    if not isinstance(summary, dict) or not all(k in summary for k in keys) or not isinstance(summary.get("config"),
                                                                                              dict):
        raise LinsslError(f"{path} is not a deep-train summary; delete it to evaluate the run again")
    return summary if summary["epochs"] == cfg.epochs else None


def _row(recipe: str, run: Path, summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("predictor", "epochs", "linear_top1", "knn_top1", "images_per_second", "wall_seconds", "device",
            "world_size")
    return {"recipe": recipe, "run_dir": str(run), **{k: summary.get(k) for k in keys}}


def write_results(out: Path, configs: Mapping[str, DeepConfig], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """OUT/results.json (budget, rows, the date) and OUT/results.md (the same as a table)."""
    first = next(iter(configs.values()))
    results = {
        "budget": {name: getattr(first, name) for name in SHARED_FIELDS},
        "methods": list(configs),
        "rows": rows,
        "complete": len(rows) == len(configs),
        "written": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    write_json(out / "results.json", results)
    text = format_table(results)
    atomic_write(out / "results.md", lambda tmp: Path(tmp).write_text(text))
    return results


def format_table(results: Mapping[str, Any]) -> str:
    """The results as a Markdown table, with the budget above it."""
    b = results["budget"]
    state = "" if results["complete"] else " (incomplete: rerun to continue)"
    lines = [f"# {b['dataset']}: {', '.join(results['methods'])}", "",
             f"Same budget for every method: {b['arch']} ({b['stem']} stem), {b['epochs']} epochs, batch "
             f"{b['batch_size']}, seed {b['seed']}; linear probe {b['probe_epochs']} L-BFGS epochs, kNN k = "
             f"{b['knn_k']}. Written {results['written']}{state}.",
             "", "| recipe | predictor | epochs | linear top-1 | kNN top-1 | images/s | wall time (s) | device |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        ips = "-" if r["images_per_second"] is None else f"{r['images_per_second']:.0f}"
        world = "" if (r.get("world_size") or 1) == 1 else f" x{r['world_size']}"
        lines.append(f"| {r['recipe']} | {r['predictor']} | {r['epochs']} | {r['linear_top1']:.4f} | "
                     f"{r['knn_top1']:.4f} | {ips} | {r['wall_seconds']:.0f} | {r['device']}{world} |")
    return "\n".join(lines) + "\n"

