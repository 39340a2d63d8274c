"""The output-rotation symmetry of the linear flow, and the speed that ignores it.

For a direct predictor the field is equivariant under output rotations Q (m×m, orthogonal):
W_p(QFQᵀ) = Q W_p(F) Qᵀ, so v(QW) = Q v(W); a trained predictor and an EMA target rotate along
(W_p → QW_pQᵀ, W_a → QW_a). A fixed point is then a whole orbit {QW}, and on a non-commuting model
the flow can settle onto a relative equilibrium that turns along it for ever, dW/dt = ΩW with Ω
antisymmetric, while everything a rotation leaves alone (WᵀW, the loss, the spectra) is fixed.

``non_rotational_speed`` removes that motion: with Z = [W, W_a] and V = [dW, dW_a] it fits the
antisymmetric Ω minimising ‖V − ΩZ‖_F, i.e. ΩM + MΩ = VZᵀ − ZVᵀ with M = ZZᵀ, solved in the eigenbasis
of M (Ω̃_ij = C̃_ij / (d_i + d_j)), and returns max |V − ΩZ| (and |dW_p − (ΩW_p − W_pΩ)| for a trained
predictor): zero exactly when every rotation-invariant quantity is stationary (W of full row rank).
"""

from __future__ import annotations

import torch

#: pairs of directions with d_i + d_j below this fraction of max d are not fitted (rotating two
#: directions W has collapsed is not a motion anything measures)
RANK_TOL = 1e-12


def fitted_rotation(Z: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """The antisymmetric Ω (…, m, m) minimising ‖V − ΩZ‖_F for Z, V (…, m, n)."""
    M = Z @ Z.mT
    C = V @ Z.mT
    C = C - C.mT
    d, Q = torch.linalg.eigh(M)
    denom = d.unsqueeze(-1) + d.unsqueeze(-2)
    ok = denom > RANK_TOL * d.amax(-1, keepdim=True).unsqueeze(-1).clamp_min(torch.finfo(d.dtype).tiny)
    Ct = Q.mT @ C @ Q
    Om = torch.where(ok, Ct / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(Ct))
    return Q @ Om @ Q.mT


def non_rotational_speed(W, dW, Wp=None, dWp=None, Wa=None, dWa=None) -> torch.Tensor:
    """Per run (leading batch axis), max |velocity − its output-rotation part| (module docstring)."""
    Z, V = (W, dW) if Wa is None else (torch.cat([W, Wa], -1), torch.cat([dW, dWa], -1))
    Om = fitted_rotation(Z, V)
    speed = (V - Om @ Z).abs().flatten(1).amax(-1)
    if Wp is not None:
        speed = torch.maximum(speed, (dWp - (Om @ Wp - Wp @ Om)).abs().flatten(1).amax(-1))
    return speed
