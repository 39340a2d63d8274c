"""Generative models of the linear theory (docs/theory.md §2): data and augmentation covariances.

x ~ N(0, X), views x1 = x + ξ1, x2 = x + ξ2 with ξ ~ N(0, X') independent. In the commuting model
X = U diag(λ) Uᵀ and X' = U diag(σ²) Uᵀ for an orthonormal basis U (a seeded random rotation by
default, so nothing is axis-aligned by accident); the general model takes any symmetric PSD X, X'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from linssl.errors import LinsslError

DTYPE = torch.float64

#: Default augmentation variances (unit data variance): at wd 0.05 (threshold σ² = 4) the first
#: five are kept and the last three discarded; at wd 0.1 (threshold 1.5) the first four are kept.
#: None lies within 10% of either threshold.
DEFAULT_AUG_VAR = (0.1, 0.25, 0.5, 1.0, 2.5, 6.0, 8.0, 10.0)


@dataclass(frozen=True)
class DataModel:
    """Population moments of the two-view model.

    data_cov X (d, d), aug_cov X' (d, d); for the commuting model also basis U (columns u_i),
    data_var λ_i and aug_var σ_i² (so X = U diag(λ) Uᵀ); ``None`` for a general model.
    """

    data_cov: torch.Tensor
    aug_cov: torch.Tensor
    basis: torch.Tensor | None = None
    data_var: torch.Tensor | None = None
    aug_var: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return self.data_cov.shape[-1]

    @property
    def commuting(self) -> bool:
        return self.basis is not None

    @property
    def view_cov(self) -> torch.Tensor:
        """E[x1 x1ᵀ] = X + X'."""
        return self.data_cov + self.aug_cov


def haar_rotation(dim: int, generator: torch.Generator, batch_shape: tuple[int, ...] = ()) -> torch.Tensor:
    """Haar-random orthogonal matrices (QR of a Gaussian with the signs of diag(R) fixed)."""
    q, r = torch.linalg.qr(torch.randn(*batch_shape, dim, dim, generator=generator, dtype=DTYPE))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def random_rotation(dim: int, seed: int) -> torch.Tensor:
    """One Haar-random orthogonal matrix, reproducible from ``seed``."""
    return haar_rotation(dim, torch.Generator().manual_seed(int(seed)))


def _as_vector(values, name: str, allow_zero: bool = False) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=DTYPE).reshape(-1)
    if t.numel() == 0:
        raise LinsslError(f"{name} is empty")
    if not torch.isfinite(t).all() or (t < 0).any() or (not allow_zero and (t == 0).any()):
        kind = "non-negative" if allow_zero else "positive"
        raise LinsslError(f"{name} must be {kind} finite numbers, got {t.tolist()}")
    return t


def commuting_model(data_var, aug_var, seed: int = 0, rotate: bool = True) -> DataModel:
    """X = U diag(λ) Uᵀ, X' = U diag(σ²) Uᵀ with U a seeded random rotation (or the identity);
    λ > 0, σ² ≥ 0 (σ² = 0: a feature the augmentation leaves alone)."""
    aug = _as_vector(aug_var, "aug-var", allow_zero=True)
    data = _as_vector(data_var, "data-var")
    if data.numel() == 1:
        data = data.expand(aug.numel()).clone()
    if data.numel() != aug.numel():
        raise LinsslError(f"data-var has {data.numel()} values, aug-var has {aug.numel()}; give 1 or {aug.numel()}")
    d = aug.numel()
    U = random_rotation(d, seed) if rotate else torch.eye(d, dtype=DTYPE)
    return DataModel(U @ torch.diag(data) @ U.T, U @ torch.diag(aug) @ U.T, U, data, aug)


def _check_cov(mat, name: str) -> torch.Tensor:
    t = torch.as_tensor(mat, dtype=DTYPE)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise LinsslError(f"{name} must be a square matrix, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all() or not torch.allclose(t, t.T, atol=1e-10):
        raise LinsslError(f"{name} must be a finite symmetric matrix")
    if torch.linalg.eigvalsh(t).min() < -1e-10:
        raise LinsslError(f"{name} must be positive semi-definite")
    return 0.5 * (t + t.T)


def general_model(data_cov, aug_cov) -> DataModel:
    """Any symmetric PSD X and X' (not necessarily commuting); no closed-form basis."""
    X, Xa = _check_cov(data_cov, "data covariance"), _check_cov(aug_cov, "augmentation covariance")
    if X.shape != Xa.shape:
        raise LinsslError(f"covariances differ in shape: {tuple(X.shape)} vs {tuple(Xa.shape)}")
    return DataModel(X, Xa)


class ViewSampler:
    """Seeded sampler of view pairs: x ~ N(0, X), x_k = x + ξ_k, ξ_k ~ N(0, X') (roots cached)."""

    def __init__(self, model: DataModel, seed: int) -> None:
        self.data_root = _psd_sqrt(model.data_cov)
        self.aug_root = _psd_sqrt(model.aug_cov)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, n: int, batch_shape: tuple[int, ...] = ()) -> tuple[torch.Tensor, ...]:
        """(x, x1, x2), each ``(*batch_shape, n, d)``."""
        shape = (*batch_shape, n, self.data_root.shape[-1])
        draw = lambda: torch.randn(shape, generator=self.generator, dtype=DTYPE)  # noqa: E731
        x = draw() @ self.data_root
        return x, x + draw() @ self.aug_root, x + draw() @ self.aug_root


def _psd_sqrt(C: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix, so z @ C^½ has covariance C for white z."""
    s, V = torch.linalg.eigh(C)
    return (V * s.clamp_min(0).sqrt().unsqueeze(-2)) @ V.mT
