"""compare.json and the one-screen table of ``linssl compare`` (docs/theory.md §8)."""

from __future__ import annotations

import math
from typing import Any

from linssl.compare import measures


def document(cfg, dim: int, stage1: dict[str, Any], theory: list[dict], linear: list[dict],
             deep: list[dict]) -> dict[str, Any]:
    """The compare.json contract: dataset, space, dim, images, views_per_image, data_cov, aug_cov (files),
    commutator_norm, kept_rule, runs (one per η: wd, theory, linear, deep); more keys allowed."""
    runs = []
    for t, lin, dp in zip(theory, linear, deep, strict=True):
        runs.append({"wd": t["wd"], "theory": t, "linear": lin, "deep": dp,
                     "gain_rel_diff": _gain_rel_diff(t, lin)})
    return {
        "dataset": cfg.dataset,
        "space": cfg.space,
        "dim": dim,
        "images": stage1["images"],
        "views_per_image": stage1["views_per_image"],
        "data_cov": "data_cov.npy",
        "aug_cov": "aug_cov.npy",
        "commutator_norm": stage1["commutator_norm"],
        "half_split_rel_diff": stage1["half_split_rel_diff"],
        "clipped_eigenvalues": stage1["clipped_eigenvalues"],
        "clipped_share_of_trace": stage1["clipped_share_of_trace"],
        "predictor": cfg.predictor,
        "quick": cfg.quick,
        "seed": cfg.seed,
        "theory_time": cfg.t_max,
        "kept_rule": measures.KEPT_RULE,
        "kept_fraction": measures.KEPT_FRACTION,
        "settle_tol": measures.SETTLE_TOL,
        "runs": runs,
    }


def _gain_rel_diff(theory: dict, linear: dict) -> float | None:
    """Largest relative difference of the kept squared gains (eigenvalues of WᵀW, sorted) of the two maps
    over the theory's kept count (None if either is unsettled or nothing is kept)."""
    k = theory["kept"]
    if k is None or linear["kept"] is None or k == 0:
        return None
    a = theory["gains_sq"][:k]
    b = (linear["gains_sq"] + [0.0] * k)[:k]
    return max(abs(x - y) / x for x, y in zip(a, b, strict=True))


def _count(value: int | None, at_end: int) -> str:
    return f"{value}" if value is not None else f"({at_end})?"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def table(doc: dict[str, Any]) -> str:
    """One screen: the measured model, then one row per η."""
    halves = doc["half_split_rel_diff"]
    lines = [
        f"linssl compare: {doc['dataset']}, space {doc['space']} (d = {doc['dim']}), {doc['images']} images × "
        f"{doc['views_per_image']} views, predictor {doc['predictor']}",
        f"two-view model: commutator ‖XX'−X'X‖/(‖X‖‖X'‖) = {doc['commutator_norm']:.3f}; half-split error "
        f"X {halves['data_cov']:.3f}, X' {halves['aug_cov']:.3f}; clipped {doc['clipped_eigenvalues']} negative "
        f"eigenvalues of X ({doc['clipped_share_of_trace']:.1e} of its trace)",
        "",
        "              kept (theory)          linear SGD                    deep",
        "     wd   flow  commuting   kept  max angle  gain²Δ  top-1   kept  eff.rank  share kept/disc  top-1",
    ]
    for run in doc["runs"]:
        t, lin, dp = run["theory"], run["linear"], run["deep"]
        angle = max(lin["principal_angles_deg"]) if lin["principal_angles_deg"] else None
        share = f"{_num(dp['aug_share_kept'], '.2f')}/{_num(dp['aug_share_discarded'], '.2f')}"
        if dp.get("collapsed"):
            share = "collapsed"
        lines.append(
            f"{run['wd']:7g}  {_count(t['kept'], t['kept_at_end']):>5}  {t['commuting_kept']:>9}  "
            f"{_count(lin['kept'], lin['kept_at_end']):>5}  {_num(angle, '8.1f'):>9}  "
            f"{_num(run['gain_rel_diff'], '6.2f'):>6}  {lin['linear_top1']:.3f}  {dp['kept']:>5}  "
            f"{dp['effective_rank']:8.2f}  {share:>15}  {dp['linear_top1']:.3f}")
    lines += ["", f"rule: {doc['kept_rule']}.",
              "(n)? = not settled: the count at the end of the run, not reported as kept. commuting = the closed-form "
              "threshold λ² ≥ 4η(λ+σ²) per eigendirection of X+X' (an approximation: X, X' do not commute). "
              "max angle: largest principal angle between the theory's and the linear network's top-k right "
              "singular subspaces, k = theory's count. deep share: augmentation share of the F̂ eigendirections' "
              "embedding variance, mean over kept / discarded; collapsed = the embeddings do not vary (F̂ = E[zzᵀ] "
              "then holds only their constant mean) (theory: kept ⇔ λ(1 − share) ≥ 4η; absolute λ "
              "depends on the network's scale, so compare orderings and trends)."]
    return "\n".join(lines)
