"""What a run records along its trajectory (batched over runs).

For snapshots W(t) (and the W_p in force):
- gains:            g_i = u_iᵀ WᵀW u_i, the squared gain of W along each basis direction u_i;
- F_eigs, Wp_eigs:  eigenvalues (descending) of the output correlation F and of sym(W_p);
- alignment:        max_{i≠j} |M_ij| / max_i M_ii with M = Uᵀ WᵀW U (0 when WᵀW is diagonal in U);
- projection_error: ‖P_W − P_K‖_F, P_W the orthogonal projector onto the right singular vectors of W
                    with σ² > ``kept_tol`` (the learned subspace, scale removed), P_K = U_K U_Kᵀ the
                    projector onto the predicted kept features — at the final snapshot only (earlier
                    rows NaN: an SVD per snapshot cost more than the whole run at d ≥ 512);
- loss:             the expected loss J of ``Problem.loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from linssl.linear.dynamics import Problem, Trajectory
from linssl.linear.etd import eigh
from linssl.predictors import direct_set_spectrum

#: A feature counts as kept when its squared gain exceeds this. ``KEPT_TOL`` serves sampled (SGD) and
#: finite-horizon runs, whose discarded gains² sit at the noise / decay level ~1e-6; at η ≥ 0.03 the
#: smallest kept gain² away from the threshold is ~1e-3. A converged flow or GD run (max speed < 1e-8)
#: leaves discarded gains² ~1e-13, so it uses ``CONVERGED_KEPT_TOL``, which also separates kept gains
#: as small as ~5e-5 (η = 0.01 near its threshold σ² = 24).
KEPT_TOL = 1e-4
CONVERGED_KEPT_TOL = 1e-8


@dataclass
class RunRecord:
    """Arrays with a leading time axis T and a batch axis B."""

    times: np.ndarray  # (T,)
    gains: np.ndarray  # (T, B, d)
    F_eigs: np.ndarray  # (T, B, m)
    Wp_eigs: np.ndarray  # (T, B, m)
    alignment: np.ndarray  # (T, B)
    projection_error: np.ndarray  # (T, B); final row only, NaN elsewhere and when nothing is predicted
    loss: np.ndarray  # (T, B)


def gains_along(W: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """g_i = ‖W u_i‖² for each column u_i of ``basis``: (..., m, d) -> (..., d)."""
    return ((W @ basis) ** 2).sum(-2)


def alignment_offdiag(W: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """max_{i≠j} |M_ij| / max_i M_ii for M = Uᵀ WᵀW U = (WU)ᵀ(WU) (``basis`` None: W is WU already)."""
    A = W if basis is None else W @ basis
    M = A.mT @ A
    diag = torch.diagonal(M, dim1=-2, dim2=-1)
    off = (M - torch.diag_embed(diag)).abs().amax((-2, -1))
    return off / diag.amax(-1).clamp_min(torch.finfo(M.dtype).tiny)


def learned_projector(W: torch.Tensor, kept_tol: float = KEPT_TOL) -> torch.Tensor:
    """Projector onto the right singular vectors of W whose σ² exceeds ``kept_tol``."""
    _, s, Vh = torch.linalg.svd(W, full_matrices=False)
    keep = (s**2 > kept_tol).to(W.dtype)
    return Vh.mT @ (keep.unsqueeze(-1) * Vh)


def kept_projector(basis: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """P_K = U_K U_Kᵀ for a boolean mask ``kept`` over the columns of ``basis``."""
    return (basis * kept.to(basis.dtype)) @ basis.mT


def projection_error(W: torch.Tensor, target_projector: torch.Tensor, kept_tol: float = KEPT_TOL) -> torch.Tensor:
    """‖P_W − P_K‖_F (0 when W spans exactly the predicted kept subspace)."""
    return torch.linalg.matrix_norm(learned_projector(W, kept_tol) - target_projector, ord="fro")


def _sym_eigs_desc(M: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(0.5 * (M + M.mT)).flip(-1)


def record(
    problem: Problem,
    traj: Trajectory,
    basis: torch.Tensor | None,
    kept_predicted: torch.Tensor | None = None,
    kept_tol: float = KEPT_TOL,
) -> RunRecord:
    """Evaluate every recorded quantity at every snapshot of ``traj`` (see module docstring). One
    eigendecomposition per snapshot for a direct rule with α ≠ 1: W_p's eigenvalues are its p."""
    W = torch.stack([s.W for s in traj.snapshots])  # (T, B, m, d)
    F = problem.correlation(W)
    rule = problem.config.rule
    Wp_eigs = None
    if traj.predictors is not None:
        Wp = torch.stack(traj.predictors)
    elif rule.kind == "direct" and rule.alpha != 1.0:
        p, U = direct_set_spectrum(F, rule.alpha, rule.norm, rule.eps, eigh=eigh)
        Wp, Wp_eigs = (U * p.unsqueeze(-2)) @ U.mT, p.sort(-1, descending=True).values
    else:
        Wp = torch.stack([problem.predictor(s) for s in traj.snapshots])
    loss = torch.stack([problem.loss(s, wp) for s, wp in zip(traj.snapshots, Wp, strict=True)])
    T, B, _, d = W.shape
    if basis is None:  # general model: use the eigenbasis of the learned WᵀW at the end
        basis = torch.linalg.eigh(W[-1].mT @ W[-1]).eigenvectors.flip(-1)
    WU = W @ basis  # shared by the gains (diagonal of (WU)ᵀWU) and the alignment
    gains = (WU * WU).sum(-2)
    align = alignment_offdiag(WU, None)
    proj = np.full((T, B), np.nan)
    if kept_predicted is not None:
        proj[-1] = projection_error(W[-1], kept_projector(basis, kept_predicted), kept_tol).numpy()
    Wp_eigs = _sym_eigs_desc(Wp) if Wp_eigs is None else Wp_eigs
    return RunRecord(traj.times, gains.numpy(), _sym_eigs_desc(F).numpy(), Wp_eigs.numpy(), align.numpy(), proj,
                     loss.numpy())
