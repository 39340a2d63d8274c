"""The comparison figure, drawn from DIR/compare.json (``linssl compare``; ``linssl figures --compare DIR``).

Left: kept count against η — the theory's flow on the measured model (line; hollow where the run had not
settled), the commuting approximation (dashed), the linear network trained by SGD, the deep network.
Right: the augmentation share of kept against discarded directions, per η — input space for the theory's
W (σ²/(λ+σ²) along its right singular vectors), embedding space for the deep network (along F̂'s
eigenvectors); the theory says kept directions have the lower share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linssl.errors import LinsslError
from linssl.figures.style import save, styled, subplots


@dataclass
class CompareData:
    doc: dict


def compute_compare(folder: str | Path) -> CompareData:
    path = Path(folder) / "compare.json"
    if not path.is_file():
        raise LinsslError(f"{path} does not exist; give the --out folder of a finished linssl compare run")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LinsslError(f"{path} is not valid JSON; the file is damaged") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list) or not doc["runs"]:
        raise LinsslError(f"{path} has no runs; not a linssl compare result")
    return CompareData(doc)


def _count(part: dict) -> tuple[float, bool]:
    kept = part.get("kept")
    return (float(kept), True) if kept is not None else (float(part.get("kept_at_end", np.nan)), False)


@styled
def plot_compare(data: CompareData):
    doc = data.doc
    runs = doc["runs"]
    wd = np.array([r["wd"] for r in runs], dtype=float)
    x = np.where(wd > 0, wd, np.nan)
    fig, axes = subplots(ncols=2, width=11.0, height=4.4)
    ax = axes[0]
    theory = [_count(r["theory"]) for r in runs]
    linear = [_count(r["linear"]) for r in runs]
    ax.plot(x, [c for c, _ in theory], "-", color="C0", lw=1.5, label="theory: flow on measured X, X'")
    for (c, ok), xi in zip(theory, x, strict=True):
        ax.plot([xi], [c], "o", ms=7, color="C0", mfc="C0" if ok else "white")
    ax.plot(x, [r["theory"]["commuting_kept"] for r in runs], "--", color="C0", alpha=0.6,
            label="commuting approximation λ² ≥ 4η(λ+σ²)")
    for (c, ok), xi in zip(linear, x, strict=True):
        ax.plot([xi], [c], "s", ms=7, color="C1", mfc="C1" if ok else "white")
    ax.plot([], [], "s", color="C1", label="linear network, SGD (deep-train --arch linear)")
    alive = np.array([not r["deep"].get("collapsed", False) for r in runs])
    deep_kept = np.array([r["deep"]["kept"] for r in runs], dtype=float)
    ax.plot(x[alive], deep_kept[alive], "^", ms=8, color="C2",
            label=f"deep network ({runs[0]['deep'].get('arch', 'deep')}), kept of F̂")
    if (~alive).any():
        ax.plot(x[~alive], deep_kept[~alive], "X", ms=9, color="C3", label="deep network collapsed (z constant)")
    ax.plot([], [], "o", color="0.4", mfc="white", label="hollow: not settled (count at end)")
    ax.set(xscale="log", xlabel="weight decay η", ylabel="kept directions",
           title=f"Kept count ({doc['dataset']}, {doc['space']}, d = {doc['dim']})")
    ax.legend(fontsize=7.5, loc="upper right")
    ax = axes[1]
    offsets = (0.9, 1.1)
    for r, xi in zip(runs, x, strict=True):
        t = r["theory"]
        k = t["kept"] if t["kept"] is not None else t["kept_at_end"]
        shares = np.asarray(t.get("aug_share", []), dtype=float)
        if shares.size:
            ax.plot(np.full(k, xi * offsets[0]), shares[:k], "o", ms=3, color="C0", alpha=0.6)
            ax.plot(np.full(shares.size - k, xi * offsets[0]), shares[k:], "x", ms=3, color="C0", alpha=0.25)
        d = r["deep"]
        shares = np.asarray(d.get("aug_share", []), dtype=float)
        if shares.size:
            ax.plot(np.full(d["kept"], xi * offsets[1]), shares[:d["kept"]], "^", ms=3, color="C2", alpha=0.6)
            ax.plot(np.full(shares.size - d["kept"], xi * offsets[1]), shares[d["kept"]:], "x", ms=3, color="C2",
                    alpha=0.25)
    ax.plot([], [], "o", color="C0", label="theory W, kept (input space σ²/(λ+σ²))")
    ax.plot([], [], "x", color="C0", label="theory W, discarded")
    ax.plot([], [], "^", color="C2", label="deep F̂ eigendirection, kept (embedding space)")
    ax.plot([], [], "x", color="C2", label="deep, discarded")
    ax.set(xscale="log", xlabel="weight decay η", ylabel="augmentation share of variance", ylim=(0, 1.02),
           title="Augmentation share: kept vs discarded directions")
    ax.legend(fontsize=7.5, loc="lower left")
    fig.suptitle(f"Does weight decay threshold features in practice? (predictor {doc.get('predictor', '?')}, "
                 f"{doc['images']} images × {doc['views_per_image']} views)")
    return fig


def write_compare_figure(folder: str | Path) -> list[Path]:
    """(Re)draw FOLDER/compare.png and .pdf from FOLDER/compare.json."""
    return save(plot_compare(compute_compare(folder)), folder, "compare")
