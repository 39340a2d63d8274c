"""Every figure of the toolkit, computed from data linssl produces (``linssl figures``).

A figure is a pure ``compute(quick) -> data`` (arrays in a small dataclass) and a
``plot(data) -> matplotlib Figure``; :data:`FIGURES` maps the registry name to both. Files are
``DIR/NN_name.png`` and ``.pdf`` (NN the figure's number), written atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from linssl.figures import deep_run, downstream_curves, dynamics_figures, phase, predictor_cost


@dataclass(frozen=True)
class Figure:
    """One registry entry: number (file prefix), name, one-line caption, data and plot functions.

    ``needs_run``: the figure reads a deep training run (``compute`` then takes the run folder).
    """

    number: int
    name: str
    caption: str
    compute: Callable[..., Any]
    plot: Callable[[Any], Any]
    needs_run: bool = False

    @property
    def stem(self) -> str:
        return f"{self.number:02d}_{self.name}"


_ENTRIES = (
    Figure(1, "gains", "per-feature squared gain over time, both sides of the weight-decay threshold",
           dynamics_figures.compute_gains, dynamics_figures.plot_gains),
    Figure(2, "phase", "kept or discarded over (augmentation variance, weight decay) with σ² = λ²/(4η) − λ",
           phase.compute_phase, phase.plot_phase),
    Figure(3, "spectra", "eigenvalues of F and of W_p over time (the thresholding)",
           dynamics_figures.compute_spectra, dynamics_figures.plot_spectra),
    Figure(4, "alignment", "off-diagonal of UᵀWᵀWU over time from a random rotation",
           dynamics_figures.compute_alignment, dynamics_figures.plot_alignment),
    Figure(5, "basin", "final gain against initial gain from an aligned start (collapse basin)",
           dynamics_figures.compute_basin, dynamics_figures.plot_basin),
    Figure(6, "directset", "DirectPred vs DirectCopy vs DirectSet(α): gains and the α-free threshold",
           dynamics_figures.compute_directset, dynamics_figures.plot_directset),
    Figure(7, "downstream", "downstream excess risk against n, raw input vs learned representation",
           downstream_curves.compute_downstream, downstream_curves.plot_downstream),
    Figure(8, "predictor_cost", "measured predictor-update time against dimension, DirectPred vs DirectCopy",
           predictor_cost.compute_cost, predictor_cost.plot_cost),
    Figure(9, "deep_run", "deep run: spectrum of F̂ over epochs and the accuracy curves",
           deep_run.compute_deep_run, deep_run.plot_deep_run, needs_run=True),
)

#: registry name -> figure, in file-number order
FIGURES: dict[str, Figure] = {f.name: f for f in _ENTRIES}

__all__ = ["FIGURES", "Figure"]
