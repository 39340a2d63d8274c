"""The linear part of the exponential integrator: the flow's Jacobian, as far as it is cheap and exact.

All in the step's frame (``linssl.linear.exponential``): rows i are the eigenvectors of the predictor in
force at the start of the step, W_p = diag(p), F = diag(f); columns j are model directions with data
variance x_j, view variance v_j = x_j + σ_j² and c_j = v_j (F source aug) or x_j (clean). The field is

    f_ij(Ŵ) = −Σ_k (W_p)_ki [(W_p Ŵ)_kj v_j − τ Ŵ_kj x_j] − η Ŵ_ij,     W_p = g(F)^… with p_k = g(f_k),

g(f) = f^α + ε (norm none). Differentiating through W_p (Daleckii–Krein: dW_p = G ⊙ dF, G_ki the divided
differences (g(f_k) − g(f_i))/(f_k − f_i), G_ii = g'(f_i)) and dF_ki = c_j(δ_ki dŴ_ij Ŵ_ij + …):

    ∂f_ij/∂Ŵ_ij = μ_ij − c_j [g'(f_i) S_ij (p_i v_j − τx_j) + v_j (G (p⊙S))_ij − τ x_j (G S)_ij
                               + p_i v_j (G S)_ij + p_i v_j g'(f_i) S_ij],        S = Ŵ ⊙ Ŵ,
    μ_ij = −p_i² v_j + τ p_i x_j − η                                   (the predictor frozen),
    ∂f_il/∂Ŵ_kj = −c_j G_ik Ŵ_ij Ŵ_kl (p_k v_l + p_i v_l − τ x_l)       (k ≠ i).

Near a fixed point Ŵ is a permuted diagonal: row i lives on one column π(i). With the columns
permuted so that π(i) = i, the largest off-diagonal terms of the Jacobian couple the transposed
entries (i, k) and (k, i) — an output rotation between two kept features and its counterpart:

    d/dt (Ŵ_ik, Ŵ_ki) ≈ [[Λ_ik, B_ik], [B_ki, Λ_ki]] (Ŵ_ik, Ŵ_ki),   B_ik = ∂f_ik/∂Ŵ_ki.

``PairBasis`` diagonalises these 2×2 blocks (real, well-conditioned ones; the others stay diagonal):
in its coordinates the linear part is diagonal, so the exponential step treats it exactly, entry by
entry, with no mixing of a fast and a slow component (which rounding would turn into an error of
size eps · e^{h|λ_fast|}). Measured on d = 8 late in a run: the spectral radius of J − L falls from
0.35 (L = diag Λ) to 1e-6 (L with the pairs), against ρ(J) = 7.3.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

try:  # installed with scikit-learn; without it scipy's BLAS keeps its own thread count
    from threadpoolctl import ThreadpoolController

    _BLAS = ThreadpoolController()
except ImportError:  # pragma: no cover
    _BLAS = None

#: pairs whose eigenvectors are nearly parallel (|det| of the unit eigenvectors below this: condition
#: number above ~1/this) stay diagonal: their transformation would amplify rounding
PAIR_CONDITION = 1e-2


#: from this size on, the symmetric eigensolver scipy links (LAPACK dsyevd in its OpenBLAS) is faster
#: than torch's on CPU: measured on one core, 38 against 51 ms at m = 512, 203 against 281 ms at 1024
SCIPY_EIGH_FROM = 256


def eigh(F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh, or for large float64 CPU matrices scipy's dsyevd, one matrix at a time, on as
    many BLAS threads as torch has (both read the lower triangle)."""
    if F.shape[-1] < SCIPY_EIGH_FROM or F.dtype != torch.float64 or F.device.type != "cpu":
        return torch.linalg.eigh(F)
    flat = F.reshape(-1, *F.shape[-2:]).numpy()
    solve = lambda: [scipy.linalg.eigh(f, driver="evd", check_finite=False) for f in flat]  # noqa: E731
    if _BLAS is None:
        pairs = solve()
    else:
        with _BLAS.limit(limits=torch.get_num_threads(), user_api="blas"):
            pairs = solve()
    s = torch.from_numpy(np.stack([p[0] for p in pairs])).reshape(F.shape[:-1])
    return s, torch.from_numpy(np.stack([p[1] for p in pairs])).reshape(F.shape)


def divided_differences(f: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """G_ki = (f_k^α − f_i^α)/(f_k − f_i) (α f^{α−1} at the mean where f_k ≈ f_i) and g'(f) = α f^{α−1},
    for f (…, m) ≥ 0 (floored at the smallest normal number: the products G S used below stay bounded,
    since S_kj ≤ f_k / c_j)."""
    f = f.clamp_min(torch.finfo(f.dtype).tiny)
    fk, fi = f.unsqueeze(-1), f.unsqueeze(-2)
    diff = fk - fi
    g = f**alpha
    close = diff.abs() <= 1e-6 * (fk + fi)
    quotient = (g.unsqueeze(-1) - g.unsqueeze(-2)) / torch.where(close, torch.ones_like(diff), diff)
    return torch.where(close, alpha * (0.5 * (fk + fi)) ** (alpha - 1), quotient), alpha * f ** (alpha - 1)


def jacobian_parts(W: torch.Tensor, p: torch.Tensor, corr: torch.Tensor, view: torch.Tensor, data: torch.Tensor,
                   tau: float, wd: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(Λ, B): the diagonal ∂f_ij/∂Ŵ_ij (…, m, d) and, on the leading m columns, B_ik = ∂f_ik/∂Ŵ_ki
    (…, m, m; zero diagonal) — module docstring; W (…, m, d) in the frame with columns permuted so that
    column i is row i's direction; p (…, m); corr, view, data (…, 1, d); wd (…, 1, 1). Norm none only.
    f is the diagonal of F computed from S, not from the eigendecomposition, so that S_ij c_j ≤ f_i holds
    exactly and the products with g'(f) stay bounded where f underflows."""
    S = W * W
    G, gp = divided_differences((S * corr).sum(-1), alpha)
    GS, GpS = G @ S, G @ (p.unsqueeze(-1) * S)
    pc, gpS = p.unsqueeze(-1), gp.unsqueeze(-1) * S
    mu = -(pc * pc) * view + tau * pc * data - wd
    lam = mu - corr * (gpS * (pc * view - tau * data) + view * GpS - tau * data * GS + pc * view * (GS + gpS))
    m = W.shape[-2]
    diag = torch.diagonal(W[..., :m], dim1=-2, dim2=-1)  # Ŵ_kk
    c, v, x = corr[..., 0, :m], view[..., 0, :m], data[..., 0, :m]
    # B_ik = −c_i G_ik Ŵ_ii Ŵ_kk (p_k v_k + p_i v_k − τ x_k)
    B = -(c.unsqueeze(-1) * G * diag.unsqueeze(-1) * diag.unsqueeze(-2)
          * ((p.unsqueeze(-2) + p.unsqueeze(-1)) * v.unsqueeze(-2) - tau * x.unsqueeze(-2)))
    return lam, B - torch.diag_embed(torch.diagonal(B, dim1=-2, dim2=-1))


def dominant_permutation(W: torch.Tensor, corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per run, a permutation of the d columns putting row i's dominant direction (largest Ŵ_ij² c_j,
    its share of F_ii) in column i, for the rows whose dominant column no other row shares; the other
    rows get the unused columns in order. Returns (perm (…, d): new column c is old column perm[c],
    matched (…, m) bool)."""
    m, d = W.shape[-2:]
    best = (W * W * corr).argmax(-1)  # (b, m)
    perms, matched = [], []
    for col in best:  # a few runs at most: a loop is simplest
        unique = torch.bincount(col, minlength=d)[col] == 1
        perm = torch.full((d,), -1, dtype=torch.long)
        perm[unique.nonzero().squeeze(-1)] = col[unique]
        used = torch.zeros(d, dtype=torch.bool)
        used[col[unique]] = True
        perm[perm == -1] = (~used).nonzero().squeeze(-1)
        perms.append(perm)
        matched.append(unique)
    return torch.stack(perms), torch.stack(matched)


class PairBasis:
    """The coordinates in which the linear part (Λ on every entry, the 2×2 blocks B on paired entries of
    the leading m×m square) is diagonal: for a paired slot i < k, (Ŵ_ik, Ŵ_ki) = V (z₊, z₋) with V the
    eigenvectors of [[Λ_ik, B_ik], [B_ki, Λ_ki]] for λ± = m̄ ± r (m̄, δ = half sum / difference of the
    diagonal, r = √(δ² + B_ik B_ki) > 0); z₊ is stored at (i, k), z₋ at (k, i), and ``rates`` holds λ±
    there and Λ elsewhere. Pairs with complex or nearly equal eigenvalues, or an ill-conditioned V, and
    rows without a matched direction stay diagonal (correct either way: only the step size gains)."""

    def __init__(self, lam: torch.Tensor, B: torch.Tensor, matched: torch.Tensor | None) -> None:
        m = B.shape[-1]
        a1, a2 = lam[..., :m], lam[..., :m].mT
        mean, half = 0.5 * (a1 + a2), 0.5 * (a1 - a2)
        q = B * B.mT
        w = half * half + q
        r = w.clamp_min(0).sqrt()
        one = torch.ones_like(r)
        upper = torch.ones(m, m, dtype=torch.bool).triu(1)
        pair = upper & (w > 0) & (q != 0)
        if matched is not None:
            pair &= matched.unsqueeze(-1) & matched.unsqueeze(-2)
        # eigenvectors without cancellation: δ ≥ 0: v₊ = (δ + r, B_ki), v₋ = (B_ik, −(δ + r));
        # δ < 0: v₊ = (B_ik, r − δ), v₋ = (−(r − δ), B_ki)
        pos = half >= 0
        s = torch.where(pos, half + r, r - half)
        b1, b2 = B, B.mT
        vp1, vp2 = torch.where(pos, s, b1), torch.where(pos, b2, s)
        vm1, vm2 = torch.where(pos, b1, -s), torch.where(pos, -s, b2)
        det = vp1 * vm2 - vm1 * vp2
        norms = (vp1.square() + vp2.square()).sqrt() * (vm1.square() + vm2.square()).sqrt()
        pair &= det.abs() > PAIR_CONDITION * norms
        det = torch.where(pair, det, one)
        lower = pair.mT
        self.pair, self.lower, self.m = pair, lower, m
        rates = lam.clone()
        rates[..., :m] = torch.where(pair, mean + r, torch.where(lower, (mean - r).mT, a1))
        self.rates = rates
        # both maps as X ↦ P ⊙ X + Q ⊙ Xᵀ on the square: at (i, k) paired, z₊ = (v₋₂ y₁ − v₋₁ y₂)/det and
        # y₁ = v₊₁ z₊ + v₋₁ z₋; at its partner (k, i), z₋ = (v₊₁ y₂ − v₊₂ y₁)/det and y₂ = v₊₂ z₊ + v₋₂ z₋
        zero = torch.zeros_like(r)
        pick = lambda upper, low, other: torch.where(pair, upper, torch.where(lower, low.mT, other))  # noqa: E731
        self.to_p, self.to_q = pick(vm2 / det, vp1 / det, one), pick(-vm1 / det, -vp2 / det, zero)
        self.from_p, self.from_q = pick(vp1, vm2, one), pick(vm1, vp2, zero)

    @staticmethod
    def _map(X: torch.Tensor, P: torch.Tensor, Q: torch.Tensor, m: int) -> torch.Tensor:
        Y = X[..., :m]
        out = P * Y + Q * Y.mT
        return out if X.shape[-1] == m else torch.cat([out, X[..., m:]], -1)

    def to_pair(self, X: torch.Tensor) -> torch.Tensor:
        """Ŵ → z: (z₊, z₋) = V⁻¹ (Ŵ_ik, Ŵ_ki) on paired slots, unchanged elsewhere."""
        return self._map(X, self.to_p, self.to_q, self.m)

    def from_pair(self, Z: torch.Tensor) -> torch.Tensor:
        """z → Ŵ: the inverse of ``to_pair``."""
        return self._map(Z, self.from_p, self.from_q, self.m)
