"""Estimators of the downstream task, batched over a leading seed axis (docs/theory.md §5).

Least squares and ridge (penalty by generalised cross-validation) from the sufficient statistics
ZᵀZ, Zᵀy; L2-penalised logistic regression by damped Newton; the exact excess risk and 0-1 error of
a linear predictor under a Gaussian design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from linssl.errors import LinsslError
from linssl.runtime import one_thread

#: ridge penalties tried by GCV, relative to the mean squared singular value per sample of the design
RIDGE_GRID = tuple(float(x) for x in np.logspace(-6, 2, 33))
#: L2 penalty (l2/2)‖γ‖² of the logistic loss (per-sample mean): keeps separable training sets finite
LOGISTIC_L2 = 1e-2


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of a batch of least-squares problems: G = ZᵀZ (S, p, p), b = Zᵀy (S, p),
    ‖y‖² (S,) and n. Features z = Mᵀx have moments MᵀGM, Mᵀb (:meth:`project`)."""

    gram: torch.Tensor
    cross: torch.Tensor
    yy: torch.Tensor
    n: int

    @classmethod
    def from_samples(cls, Z: torch.Tensor, y: torch.Tensor) -> Moments:
        """Z (S, n, p), y (S, n)."""
        return cls(Z.mT @ Z, (Z.mT @ y.unsqueeze(-1)).squeeze(-1), (y**2).sum(-1), Z.shape[-2])

    def project(self, matrix: torch.Tensor) -> Moments:
        """Moments of z = Mᵀx from those of x: MᵀGM, Mᵀb."""
        return Moments(matrix.mT @ self.gram @ matrix, self.cross @ matrix, self.yy, self.n)


def ols_fit(m: Moments) -> torch.Tensor:
    """Least squares γ̂ = (ZᵀZ)⁻¹Zᵀy per seed (Cholesky; needs n ≥ p) -> (S, p)."""
    with one_thread():
        chol, info = torch.linalg.cholesky_ex(m.gram)
    if (info != 0).any():
        raise LinsslError(f"a least-squares design is singular (n = {m.n}, p = {m.gram.shape[-1]}); use larger n")
    with one_thread():
        return torch.cholesky_solve(m.cross.unsqueeze(-1), chol).squeeze(-1)


def ridge_gcv_fit(m: Moments, grid: tuple[float, ...] = RIDGE_GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge γ̂ = (ZᵀZ + nλI)⁻¹Zᵀy with λ minimising GCV(λ) = n RSS(λ) / (n − tr H(λ))², per seed.

    With ZᵀZ = V diag(s²) Vᵀ, a = Vᵀ Zᵀy, h_j = s_j²/(s_j² + nλ): tr H = Σ h_j,
    RSS = ‖y‖² − Σ a_j²/s_j² + Σ (1 − h_j)² a_j²/s_j², γ̂ = V (a / (s² + nλ)).
    λ runs over ``grid`` × mean(s²)/n (the design's scale). Returns (γ̂ (S, p), λ (S,)).
    """
    n = m.n
    with one_thread():
        s2, V = torch.linalg.eigh(m.gram)
    s2 = s2.clamp_min(torch.finfo(s2.dtype).tiny)
    a = (V.mT @ m.cross.unsqueeze(-1)).squeeze(-1)  # (S, p)
    lam = s2.mean(-1, keepdim=True) / n * torch.as_tensor(grid, dtype=s2.dtype)  # (S, K)
    denom = s2.unsqueeze(-2) + n * lam.unsqueeze(-1)  # (S, K, p)
    h = s2.unsqueeze(-2) / denom
    c2 = a**2 / s2  # squared coordinates of y in the column space of Z
    residual = (m.yy - c2.sum(-1)).clamp_min(0).unsqueeze(-1)  # (S, 1): ‖(I − P)y‖²
    rss = residual + ((1 - h) ** 2 * c2.unsqueeze(-2)).sum(-1)
    gcv = n * rss / (n - h.sum(-1)) ** 2
    best = gcv.argmin(-1)
    rows = torch.arange(best.shape[0])
    coef = (V @ (a / denom[rows, best]).unsqueeze(-1)).squeeze(-1)
    return coef, lam[rows, best]


def logistic_fit(
    Z: torch.Tensor, signs: torch.Tensor, l2: float = LOGISTIC_L2, iters: int = 50, tol: float = 1e-8
) -> tuple[torch.Tensor, float]:
    """argmin_γ mean log(1 + exp(−y γᵀz)) + (l2/2) Σ_j D_j γ_j², y = ±1, D_j = mean z_j² (training set).

    Weighting the penalty by the feature scale D makes it the same as a plain L2 penalty on
    standardised features, so gains that differ per feature (a learned W) are not penalised
    unevenly. Damped Newton with Armijo backtracking, batched: Z (S, n, p), signs (S, n) -> γ̂ (S, p).
    Returns (γ̂, largest gradient norm at exit).
    """
    S, n, p = Z.shape
    weight = l2 * (Z**2).mean(-2)  # (S, p)
    w = torch.zeros(S, p, dtype=Z.dtype)

    def objective(w: torch.Tensor) -> torch.Tensor:
        margin = signs * (Z @ w.unsqueeze(-1)).squeeze(-1)
        return torch.nn.functional.softplus(-margin).mean(-1) + 0.5 * (weight * w**2).sum(-1)

    grad_norm = float("inf")
    for _ in range(iters):
        margin = signs * (Z @ w.unsqueeze(-1)).squeeze(-1)
        grad = -(Z.mT @ (signs * torch.sigmoid(-margin)).unsqueeze(-1)).squeeze(-1) / n + weight * w
        grad_norm = float(grad.norm(dim=-1).max())
        if grad_norm < tol:
            break
        curvature = torch.sigmoid(margin) * torch.sigmoid(-margin)
        hessian = Z.mT @ (curvature.unsqueeze(-1) * Z) / n + torch.diag_embed(weight)
        with one_thread():
            step = torch.linalg.solve(hessian, grad)
        decrease = (grad * step).sum(-1)
        base, t = objective(w), torch.ones(S, dtype=Z.dtype)
        for _ in range(30):
            ok = objective(w - t.unsqueeze(-1) * step) <= base - 1e-4 * t * decrease
            if ok.all():
                break
            t = torch.where(ok, t, 0.5 * t)
        w = w - t.unsqueeze(-1) * step
    return w, grad_norm


def excess_risk(coef_x: torch.Tensor, beta: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """(b̂ − β*)ᵀ Σ (b̂ − β*) per seed: coef_x (S, d) -> (S,)."""
    diff = coef_x - beta
    return ((diff @ cov) * diff).sum(-1)


def classification_error(coef_x: torch.Tensor, beta: torch.Tensor, cov: torch.Tensor, noise_var: float):
    """0-1 error of sign(b̂ᵀx) for labels sign(β*ᵀx + ν): arccos(ρ)/π, ρ = b̂ᵀΣβ* / sqrt(b̂ᵀΣb̂ (β*ᵀΣβ* + σ_ν²))."""
    signal = float(beta @ cov @ beta)
    norm = ((coef_x @ cov) * coef_x).sum(-1).clamp_min(torch.finfo(coef_x.dtype).tiny)
    rho = (coef_x @ cov @ beta) / torch.sqrt(norm * (signal + noise_var))
    return torch.arccos(rho.clamp(-1.0, 1.0)) / math.pi


def bayes_error(beta: torch.Tensor, cov: torch.Tensor, noise_var: float) -> float:
    """Error of sign(β*ᵀx): arccos(sqrt(β*ᵀΣβ* / (β*ᵀΣβ* + σ_ν²)))/π."""
    signal = float(beta @ cov @ beta)
    return math.acos(math.sqrt(signal / (signal + noise_var))) / math.pi
