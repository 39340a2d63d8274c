"""Shared figure style: Agg backend, font sizes ≥ 9 pt, constrained layout, PNG + PDF output."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from linssl.io import save_figure  # noqa: E402

#: rcParams applied to every figure (all text ≥ 9 pt)
RC = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.6,
    "savefig.dpi": 130,
    "pdf.fonttype": 42,
}
FORMATS = ("png", "pdf")


def subplots(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.2, **kwargs):
    """``plt.subplots`` with the linssl style and constrained layout."""
    with plt.rc_context(RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), layout="constrained", **kwargs)
    return fig, axes


def styled(plot):
    """Decorator: run a plotting function under the linssl rcParams."""

    def wrapper(data):
        with plt.rc_context(RC):
            return plot(data)

    wrapper.__name__ = plot.__name__
    wrapper.__doc__ = plot.__doc__
    return wrapper


def save(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``out_dir/stem.png`` and ``.pdf`` atomically, close the figure, return the paths."""
    paths = []
    with plt.rc_context(RC):
        for fmt in FORMATS:
            paths.append(save_figure(fig, Path(out_dir) / f"{stem}.{fmt}"))
    plt.close(fig)
    return paths


def positive_times(times: np.ndarray) -> np.ndarray:
    """Times for a log axis: t = 0 is drawn at half the first positive time."""
    t = np.asarray(times, dtype=float)
    pos = t[t > 0]
    return np.maximum(t, pos.min() / 2 if pos.size else 1e-3)


def floor(values: np.ndarray, lowest: float) -> np.ndarray:
    """Clip to ``lowest`` so zeros and round-off negatives stay on a log axis."""
    return np.maximum(np.asarray(values, dtype=float), lowest)


def feature_colors(n: int):
    """``n`` colours from plasma (dark blue = low augmentation variance, orange = high)."""
    return plt.cm.plasma(np.linspace(0.0, 0.85, n))
