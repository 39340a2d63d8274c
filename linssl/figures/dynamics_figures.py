"""Figures 1, 3–6: the linear dynamics against the closed forms of docs/theory.md §4.

1 gains: per-feature squared gain g_i = ‖W u_i‖² over time; kept features converge to
  w² = p₊^(1/α)/(λ + σ²), discarded ones (σ² > 1/(4η) − 1) decay to 0.
3 spectra: eigenvalues of F = W(X + X')Wᵀ and of W_p = F^α over time; kept eigenvalues settle on
  c w² and p₊, the others fall to 0.
4 alignment: max_{i≠j}|M_ij| / max_i M_ii, M = UᵀWᵀWU, from a random rotation, for several rules/seeds.
5 basin: aligned start (features decouple: one one-feature run each); final gain² against initial
  gain², with the basin boundary p₋^(1/α)/c and the stable gain p₊^(1/α)/c.
6 directset: final gain² against σ² for DirectSet(α), α = ½ (DirectPred), 1 (DirectCopy) and others;
  the threshold does not depend on α, the kept gain does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from linssl import theory
from linssl.figures.style import feature_colors, floor, positive_times, styled, subplots
from linssl.linear.data import commuting_model
from linssl.linear.dynamics import DynamicsConfig, Problem, State, integrate_flow
from linssl.linear.records import gains_along
from linssl.linear.simulation import SimConfig, SimulationResult, run_simulation
from linssl.linear.sweep import sweep_flow
from linssl.predictors import make_rule

#: weight decay of the reference run (threshold σ²* = 1/(4η) − 1 = 4 at unit data variance)
REFERENCE_WD = 0.05
#: lowest value drawn on log axes of gains / eigenvalues (collapsed quantities sit on this floor)
GAIN_FLOOR = 1e-10


@lru_cache(maxsize=4)
def reference_run(wd: float = REFERENCE_WD, predictor: str = "directpred", seed: int = 0) -> SimulationResult:
    """DirectPred gradient flow on the default data model (8 features, σ² from 0.1 to 10), cached."""
    return run_simulation(SimConfig(wd=wd, predictor=predictor, seed=seed))


# ---------------------------------------------------------------------------------- 1: gains


@dataclass
class GainsData:
    times: np.ndarray  # (T,)
    gains: np.ndarray  # (T, d) squared gains ‖W u_i‖²
    aug_var: np.ndarray  # (d,)
    predicted: np.ndarray  # (d,) closed-form squared gains (0: discarded)
    threshold: float  # σ²* = 1/(4η) − 1
    wd: float


def compute_gains(quick: bool = False) -> GainsData:
    """Gain trajectories of the reference run (the same in quick mode: it takes about a second)."""
    res = reference_run()
    rec = res.record
    return GainsData(rec.times, rec.gains[:, 0, :], res.model.aug_var.numpy(),
                     np.array([f.gain_sq_predicted for f in res.features]), res.threshold_aug_var, res.config.wd)


@styled
def plot_gains(data: GainsData):
    fig, ax = subplots(width=7.0, height=4.6)
    t = positive_times(data.times)
    for i, (s2, c) in enumerate(zip(data.aug_var, feature_colors(len(data.aug_var)), strict=True)):
        kept = data.predicted[i] > 0
        ax.plot(t, floor(data.gains[:, i], GAIN_FLOOR), color=c, ls="-" if kept else ":",
                label=f"σ² = {s2:g} ({'kept' if kept else 'discarded'})")
        if kept:
            ax.axhline(data.predicted[i], color=c, ls="--", lw=0.9)
    ax.set(xscale="log", yscale="log", ylim=(GAIN_FLOOR, None), xlabel="time t",
           ylabel="squared gain ‖W uᵢ‖²",
           title=f"DirectPred flow, η = {data.wd:g}: features with σ² ≤ {data.threshold:g} are kept "
                 "(dashed: closed form)")
    ax.legend(ncol=2, loc="lower left")
    return fig


# -------------------------------------------------------------------------------- 3: spectra


@dataclass
class SpectraData:
    times: np.ndarray  # (T,)
    F_eigs: np.ndarray  # (T, m) descending
    Wp_eigs: np.ndarray  # (T, m) descending
    F_predicted: np.ndarray  # (k,) closed-form non-zero eigenvalues of F (kept features)
    Wp_predicted: np.ndarray  # (k,) p₊ of the kept features
    wd: float


def compute_spectra(quick: bool = False) -> SpectraData:
    """Spectra of the reference run; predictions F = (λ + σ²) w² and W_p = p₊ for kept features."""
    res = reference_run()
    rec = res.record
    lam, s2 = res.model.data_var.numpy(), res.model.aug_var.numpy()
    kept = np.array([f.kept_predicted for f in res.features])
    p_plus, _ = theory.fixed_points(lam[kept], s2[kept], res.config.wd)
    gain = np.array([f.gain_sq_predicted for f in res.features])[kept]
    return SpectraData(rec.times, rec.F_eigs[:, 0, :], rec.Wp_eigs[:, 0, :],
                       (lam[kept] + s2[kept]) * gain, np.asarray(p_plus), res.config.wd)


@styled
def plot_spectra(data: SpectraData):
    fig, axes = subplots(ncols=2, width=10.0, height=4.2)
    t = positive_times(data.times)
    colors = feature_colors(data.F_eigs.shape[1])
    for ax, eigs, pred, name in ((axes[0], data.F_eigs, data.F_predicted, "F = W(X + X′)Wᵀ"),
                                 (axes[1], data.Wp_eigs, data.Wp_predicted, "W_p = F^½ (DirectPred)")):
        for j in range(eigs.shape[1]):
            ax.plot(t, floor(eigs[:, j], GAIN_FLOOR), color=colors[j], label=f"eigenvalue {j + 1}")
        for k, v in enumerate(pred):
            ax.axhline(v, color="0.3", ls="--", lw=0.8, label="closed form (kept)" if k == 0 else None)
        ax.set(xscale="log", yscale="log", ylim=(GAIN_FLOOR, None), xlabel="time t", ylabel="eigenvalue",
               title=f"eigenvalues of {name}")
    axes[0].legend(ncol=2, loc="lower left")
    fig.suptitle(f"Thresholding at η = {data.wd:g}: {len(data.F_predicted)} eigenvalues stay, "
                 f"{data.F_eigs.shape[1] - len(data.F_predicted)} fall to 0")
    return fig


# ------------------------------------------------------------------------------ 4: alignment


@dataclass
class AlignmentData:
    times: dict[str, list[np.ndarray]]  # rule -> one time array per seed
    alignment: dict[str, list[np.ndarray]]  # rule -> one alignment curve per seed
    wd: float


ALIGNMENT_RULES = ("directpred", "directcopy", "trainable")


def compute_alignment(quick: bool = False) -> AlignmentData:
    """Alignment curves from random-rotation starts: 1 seed × 2 rules (quick) or 4 seeds × 3 rules."""
    rules = ALIGNMENT_RULES[:2] if quick else ALIGNMENT_RULES
    seeds = range(1 if quick else 4)
    times: dict[str, list[np.ndarray]] = {r: [] for r in rules}
    align: dict[str, list[np.ndarray]] = {r: [] for r in rules}
    for rule in rules:
        for seed in seeds:
            rec = reference_run(REFERENCE_WD, rule, seed).record
            times[rule].append(rec.times)
            align[rule].append(rec.alignment[:, 0])
    return AlignmentData(times, align, REFERENCE_WD)


RULE_LABELS = {"directpred": "DirectPred (α = ½)", "directcopy": "DirectCopy (α = 1)",
               "trainable": "trained linear predictor"}


@styled
def plot_alignment(data: AlignmentData):
    fig, ax = subplots(width=6.6, height=4.3)
    for k, rule in enumerate(data.alignment):
        for s, (t, a) in enumerate(zip(data.times[rule], data.alignment[rule], strict=True)):
            ax.plot(positive_times(t), floor(a, 1e-12), color=f"C{k}", alpha=0.85,
                    label=RULE_LABELS[rule] if s == 0 else None)
    seeds = len(next(iter(data.alignment.values())))
    starts = f"{seeds} seeds each" if seeds > 1 else "1 seed"
    ax.set(xscale="log", yscale="log", xlabel="time t", ylabel="max off-diag |UᵀWᵀWU| / max diag",
           title=f"Alignment with the data basis from random rotations ({starts}, η = {data.wd:g})")
    ax.legend(loc="lower left")
    return fig


# ---------------------------------------------------------------------------------- 5: basin


@dataclass
class BasinData:
    initial: np.ndarray  # (B,) initial squared gain w₀² (the same for every feature)
    final: np.ndarray  # (B, d) final squared gains
    aug_var: np.ndarray  # (d,)
    stable: np.ndarray  # (d,) closed-form stable gain² (0: discarded)
    boundary: np.ndarray  # (d,) closed-form basin boundary gain² (NaN: discarded)
    wd: float
    t_final: float


BASIN_WD = 0.1
BASIN_AUG_VAR = (0.1, 0.5, 1.0, 3.0)  # threshold at η = 0.1 is 1.5: three kept, one discarded


def compute_basin(quick: bool = False) -> BasinData:
    """Aligned starts on a log grid of w₀², one batch of DirectPred flows.

    Aligned, the features decouple (F and W_p are diagonal in U), so each (feature, w₀²) pair is its
    own one-feature run (d = m = 1). In one d-dimensional aligned network they would not stay
    independent: once an output row collapses, a surviving row is unstable towards any stronger
    (lower σ²) feature and round-off lets it switch, which would blur the per-feature basin.
    """
    rule = make_rule("directpred")
    lam, s2 = np.ones(len(BASIN_AUG_VAR)), np.asarray(BASIN_AUG_VAR)
    edges = np.asarray(theory.basin_gain_sq(lam, s2, BASIN_WD, rule.alpha))
    edges = edges[np.isfinite(edges)]  # a log grid, denser across the predicted boundaries
    initial = np.unique(np.concatenate([np.geomspace(1e-3, 10.0, 13 if quick else 33),
                                        np.geomspace(edges.min() / 1.6, edges.max() * 1.6, 12 if quick else 36)]))
    models = [commuting_model(1.0, (s2,), seed=0) for s2 in BASIN_AUG_VAR for _ in initial]
    problem = Problem.from_models(models, DynamicsConfig(rule, BASIN_WD), batch=len(models))
    gain0 = torch.as_tensor(np.tile(initial, len(BASIN_AUG_VAR)))
    basis = torch.stack([m.basis for m in models])  # (B, 1, 1): ±1
    W = gain0.sqrt()[:, None, None] * basis.mT
    traj = integrate_flow(problem, State(W.contiguous()), t_max=3000.0 if quick else 10000.0, n_records=3)
    final = gains_along(traj.final.W, basis).numpy().reshape(len(BASIN_AUG_VAR), len(initial)).T
    return BasinData(initial, final, s2, np.asarray(theory.predicted_gain_sq(lam, s2, BASIN_WD, rule.alpha)),
                     np.asarray(theory.basin_gain_sq(lam, s2, BASIN_WD, rule.alpha)), BASIN_WD,
                     float(traj.info["t_final"]))


@styled
def plot_basin(data: BasinData):
    fig, ax = subplots(width=6.8, height=4.6)
    for i, (s2, c) in enumerate(zip(data.aug_var, feature_colors(len(data.aug_var)), strict=True)):
        kept = data.stable[i] > 0
        ax.plot(data.initial, floor(data.final[:, i], GAIN_FLOOR), "o-", ms=3.5, color=c,
                label=f"σ² = {s2:g} ({'kept' if kept else 'discarded'})")
        if kept:
            ax.axhline(data.stable[i], color=c, ls="--", lw=0.9)
            ax.axvline(data.boundary[i], color=c, ls=":", lw=1.2)
    ax.plot([], [], "k--", lw=0.9, label="stable gain p₊²/(λ+σ²)")
    ax.plot([], [], "k:", lw=1.2, label="basin boundary p₋²/(λ+σ²)")
    ax.set(xscale="log", yscale="log", ylim=(GAIN_FLOOR / 2, None), xlabel="initial squared gain w₀²",
           ylabel=f"final squared gain (t = {data.t_final:.3g})",
           title=f"Collapse basin, DirectPred, η = {data.wd:g}: w = 0 is stable too")
    ax.legend(loc="center right", fontsize=9)
    return fig


# ------------------------------------------------------------------------------ 6: DirectSet


@dataclass
class DirectSetData:
    alphas: tuple[float, ...]
    aug_var: np.ndarray  # (d,)
    final: dict[float, np.ndarray]  # α -> (d,) simulated final gain²
    predicted: dict[float, np.ndarray]  # α -> (d,) closed form
    curve_aug_var: np.ndarray  # fine σ² grid for the closed-form curves
    curve: dict[float, np.ndarray]  # α -> closed form on the fine grid
    times: dict[float, np.ndarray]  # α -> (T,)
    trajectory: dict[float, np.ndarray]  # α -> (T,) gain² of feature ``tracked`` over its closed form
    tracked: int
    threshold: float
    wd: float


def directset_aug_var(count: int, wd: float) -> np.ndarray:
    """``count`` log-spaced σ² in [0.1, 12], dropping those within 15% of the threshold (slow to settle)."""
    star = float(theory.threshold_aug_var(wd))
    grid = np.geomspace(0.1, 12.0, count)
    return grid[np.abs(grid - star) > 0.15 * star]


def compute_directset(quick: bool = False) -> DirectSetData:
    """One flow per α on the same data model (and the same random-rotation start)."""
    alphas = (0.5, 1.0) if quick else (0.25, 0.5, 1.0, 2.0)
    wd = REFERENCE_WD
    s2 = directset_aug_var(7 if quick else 14, wd)
    model = commuting_model(1.0, s2, seed=0)
    fine = np.geomspace(s2[0], s2[-1], 300)
    tracked = int(np.argmin(np.abs(s2 - 1.0)))
    final, predicted, curve, times, traj = {}, {}, {}, {}, {}
    for alpha in alphas:
        rule = make_rule("directset", alpha=alpha)
        res = sweep_flow(model, [wd], rule, n_records=60)
        final[alpha], predicted[alpha] = res.gain_sq[0], res.gain_sq_predicted[0]
        curve[alpha] = np.asarray(theory.predicted_gain_sq(1.0, fine, wd, alpha))
        W = torch.stack([s.W for s in res.trajectory.snapshots])
        g = gains_along(W, model.basis)[:, 0, tracked].numpy()
        times[alpha], traj[alpha] = res.trajectory.times, g / predicted[alpha][tracked]
    return DirectSetData(alphas, s2, final, predicted, fine, curve, times, traj, tracked,
                         float(theory.threshold_aug_var(wd)), wd)


#: a feature counts as kept by a converged flow when its gain² exceeds this (discarded ones reach ~1e-13)
KEPT_BY_FLOW = 1e-8


def alpha_label(alpha: float) -> str:
    names = {0.5: "DirectPred, α = ½", 1.0: "DirectCopy, α = 1"}
    return names.get(alpha, f"DirectSet(α = {alpha:g})")


@styled
def plot_directset(data: DirectSetData):
    fig, axes = subplots(ncols=2, width=10.5, height=4.4)
    ax = axes[0]
    lowest = 1e-6  # discarded features (gain² → 0) are drawn on this floor
    for k, alpha in enumerate(data.alphas):
        ax.plot(data.curve_aug_var, floor(data.curve[alpha], lowest), color=f"C{k}", lw=1.2)
        ax.plot(data.aug_var, floor(data.final[alpha], lowest), "o", color=f"C{k}", ms=5,
                label=alpha_label(alpha))
    lost = [(data.aug_var[i], alpha) for alpha in data.alphas for i in range(len(data.aug_var))
            if (data.predicted[alpha][i] > 0) != (data.final[alpha][i] > KEPT_BY_FLOW)]
    if lost:
        ax.scatter([s for s, _ in lost], [max(data.final[a][list(data.aug_var).index(s)], lowest) for s, a in lost],
                   s=140, facecolors="none", edgecolors="red", lw=1.4,
                   label="differs from theory: lost from this start\n(w = 0 is stable too)")
    ax.axvline(data.threshold, color="k", ls=":", lw=1.2, label=f"threshold σ²* = {data.threshold:g}")
    ax.plot([], [], color="0.4", lw=1.2, label="closed form")
    ax.set(xscale="log", yscale="log", ylim=(lowest / 2, 3), xlabel="augmentation variance σ²",
           ylabel="final squared gain", title=f"Final gains (markers: flow), η = {data.wd:g}")
    ax.annotate(f"discarded: gain² → 0\n(drawn at {lowest:g})", (data.threshold * 1.1, lowest * 3), fontsize=9)
    ax.legend(loc="lower left")
    ax = axes[1]
    for k, alpha in enumerate(data.alphas):
        ax.plot(positive_times(data.times[alpha]), data.trajectory[alpha], color=f"C{k}", label=alpha_label(alpha))
    ax.axhline(1.0, color="0.3", ls="--", lw=0.9)
    ax.set(xscale="log", xlabel="time t", ylabel="gain² / closed-form gain²",
           title=f"Approach of the feature σ² = {data.aug_var[data.tracked]:.3g}")
    ax.legend(loc="best")
    fig.suptitle("DirectSet(α): the threshold does not depend on α, the kept gain does")
    return fig
