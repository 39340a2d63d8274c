"""Figure 9: a deep training run (``linssl deep-train``): the spectrum of F̂ over epochs and accuracy.

Reads RUN_DIR/metrics.jsonl (one JSON object per epoch: ``epoch``, ``F_eigenvalues`` descending,
``knn_top1`` or null, ``effective_rank``, ``normalised_std``, ``loss``, ...) and, if the run
finished, RUN_DIR/summary.json (``linear_top1``, ``knn_top1``, ``dataset``, ``predictor``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator

from linssl.errors import LinsslError
from linssl.figures.style import styled, subplots
from linssl.io import path_kind

#: eigenvalue key of metrics.jsonl (``F_eigs`` accepted as an older spelling)
EIG_KEYS = ("F_eigenvalues", "F_eigs")


@dataclass
class DeepRunData:
    run_dir: str
    epochs: np.ndarray  # (E,)
    F_eigs: np.ndarray  # (E, m) descending
    loss: np.ndarray  # (E,) NaN where missing
    knn_epochs: np.ndarray  # epochs with a kNN value
    knn_top1: np.ndarray
    effective_rank: np.ndarray  # (E,) NaN where missing
    summary: dict | None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The epoch lines of RUN_DIR/metrics.jsonl; a one-line LinsslError if absent or malformed."""
    from linssl.io import require_folder

    path = require_folder(run_dir, "--run", "give the --out folder of a linssl deep-train run") / "metrics.jsonl"
    if path_kind(path) != "a file":
        raise LinsslError(f"--run {run_dir}: no metrics.jsonl; is this the folder of a linssl deep-train run?")
    lines = []
    for k, text in enumerate(_read_text(path).splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise LinsslError(f"{path}: line {k} is not JSON; the file is damaged") from None
        if not isinstance(line, dict) or "epoch" not in line:
            raise LinsslError(f"{path}: line {k} has no 'epoch'; not a linssl deep-train metrics file")
        lines.append(line)
    if not lines:
        raise LinsslError(f"{path} is empty: the run has not finished an epoch yet")
    return lines


#: largest metrics.jsonl / summary.json read (a run of 10⁴ epochs with m = 4096 eigenvalues is ~1 GB of text:
#: far beyond any run this figure shows legibly)
MAX_RUN_FILE_BYTES = 256 * 2**20


def _read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_RUN_FILE_BYTES:
        raise LinsslError(f"{path} has {size} bytes, more than the {MAX_RUN_FILE_BYTES} read for a figure")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LinsslError(f"{path} is not UTF-8 text (byte {exc.start}); the file is damaged") from None


def _eigs(line: dict, path: Path) -> list[float]:
    for key in EIG_KEYS:
        if line.get(key) is not None:
            return line[key]
    raise LinsslError(f"{path}: epoch {line['epoch']} has no F_eigenvalues; not a linssl deep-train metrics file")


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def compute_deep_run(run_dir: str | Path, quick: bool = False) -> DeepRunData:
    """Parse the run folder (``quick`` changes nothing: the data is already computed)."""
    lines = read_metrics(run_dir)
    path = Path(run_dir) / "metrics.jsonl"
    summary = None
    summary_path = Path(run_dir) / "summary.json"
    if path_kind(summary_path) == "a file":
        try:
            summary = json.loads(_read_text(summary_path))
        except (json.JSONDecodeError, RecursionError):
            raise LinsslError(f"{summary_path} is not JSON; the file is damaged") from None
        if not isinstance(summary, dict):
            raise LinsslError(f"{summary_path} is not a JSON object; not a linssl deep-train summary")
    try:
        return _run_data(run_dir, lines, path, summary)
    except (ValueError, TypeError, KeyError, OverflowError):  # a string or a list where a number belongs
        raise LinsslError(f"{path} holds values of the wrong type; not a linssl deep-train metrics file") from None


def _run_data(run_dir: str | Path, lines: list[dict], path: Path, summary: dict | None) -> DeepRunData:
    eigs = [_eigs(line, path) for line in lines]
    if len({len(e) for e in eigs}) != 1:
        raise LinsslError(f"{path}: the F_eigenvalues lists change length between epochs")
    knn = [(line["epoch"], line["knn_top1"]) for line in lines if line.get("knn_top1") is not None]
    for key in ("linear_top1", "knn_top1"):  # what the plot reads from summary.json
        if summary is not None and summary.get(key) is not None:
            float(summary[key])
    return DeepRunData(
        str(run_dir),
        np.array([line["epoch"] for line in lines], dtype=float),
        np.array(eigs, dtype=float),
        np.array([_number(line.get("loss")) for line in lines]),
        np.array([e for e, _ in knn], dtype=float),
        np.array([v for _, v in knn], dtype=float),
        np.array([_number(line.get("effective_rank")) for line in lines]),
        summary,
    )


def _percent(values) -> np.ndarray:
    """Accuracies are stored as fractions in [0, 1]; show percent."""
    v = np.asarray(values, dtype=float)
    return 100 * v if v.size and np.nanmax(v) <= 1.0 else v


@styled
def plot_deep_run(data: DeepRunData):
    fig, axes = subplots(ncols=2, width=11.0, height=4.4)
    ax = axes[0]
    eigs = data.F_eigs
    top = np.nanmax(eigs)
    lowest = top * 1e-8 if top > 0 else 1e-12
    m = eigs.shape[1]
    cmap = matplotlib.colormaps["viridis"]
    for j in range(m):
        ax.plot(data.epochs, np.maximum(eigs[:, j], lowest), color=cmap(j / max(m - 1, 1)), lw=0.8)
    sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(1, m))
    fig.colorbar(sm, ax=ax, label="eigenvalue index (1 = largest)")
    ax.set(yscale="log", xlabel="epoch", ylabel="eigenvalue of F̂", title=f"Spectrum of F̂ ({m} eigenvalues)")
    if np.isfinite(data.effective_rank).any():
        ax.plot([], [], " ", label=f"effective rank {data.effective_rank[0]:.3g} → {data.effective_rank[-1]:.3g}")
        ax.legend(loc="lower left")
    ax = axes[1]
    if data.knn_top1.size:
        ax.plot(data.knn_epochs, _percent(data.knn_top1), "o-", ms=4, color="C0", label="kNN top-1 (monitor)")
    summary = data.summary or {}
    if summary.get("linear_top1") is not None:
        ax.plot([data.epochs[-1]], _percent([summary["linear_top1"]]), "*", ms=14, color="C3",
                label=f"linear probe top-1 (final): {_percent([summary['linear_top1']])[0]:.1f}%")
    ax.set(xlabel="epoch", ylabel="test top-1 accuracy (%)", title="Accuracy")
    if np.isfinite(data.loss).any():
        twin = ax.twinx()
        twin.plot(data.epochs, data.loss, color="0.5", ls="--", lw=1.2, label="training loss (right axis)")
        twin.set_ylabel("training loss")
        twin.grid(False)
        handles = ax.get_legend_handles_labels()
        extra = twin.get_legend_handles_labels()
        fig.legend(handles[0] + extra[0], handles[1] + extra[1], loc="outside lower right", ncol=3)
    elif ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower right", ncol=3)
    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    name = ", ".join(str(summary[k]) for k in ("dataset", "predictor") if summary.get(k) is not None)
    status = "finished" if data.summary else "unfinished (no summary.json)"
    last = int(data.epochs[-1]) if math.isfinite(data.epochs[-1]) else 0
    fig.suptitle(f"Deep run {name or Path(data.run_dir).name}: {last} epochs, {status}")
    return fig
