"""Stage 1: the measured two-view model of a dataset under the trainer's own augmentations (docs/theory.md §8).

For image i draw K augmented views v_ik in a fixed input space (the normalised pixels, flattened, or their
projection on the top-D principal components of the clean images), centred by the global mean of all views.
With m_i = (1/K) Σ_k v_ik the per-image mean view:

    X'  = (1/N) Σ_i (1/(K−1)) Σ_k (v_ik − m_i)(v_ik − m_i)ᵀ      (augmentation covariance, unbiased)
    X   = Cov_i(m_i) − X'/K                                          (data covariance, unbiased)

because Cov_i(m_i) = X + X'/K when view = x + noise of covariance X'. With finite K the estimate of X can
have small negative eigenvalues: they are clipped to the PSD part and reported (count and share of the
trace). Then Cov(v) = X + X'. The sampling error is the relative Frobenius difference of the estimates from
two halves of the images; ``commutator_norm`` = ‖XX' − X'X‖_F / (‖X‖_F ‖X'‖_F) says how far the model is
from the commuting one the closed forms assume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from linssl.errors import LinsslError

SPACES = ("pixels", "pca")
#: images per batch when drawing views (memory: batch × K × d floats)
VIEW_BATCH = 512


@dataclass(frozen=True)
class Space:
    """The fixed input space: ``pixels`` (normalised, flattened) or ``pca`` with ``dim`` components."""

    kind: str
    dim: int | None = None

    @property
    def label(self) -> str:
        return "pixels" if self.kind == "pixels" else f"pca:{self.dim}"


def parse_space(text: str) -> Space:
    """``pixels`` or ``pca:D`` (D ≥ 1); anything else is a one-line LinsslError."""
    if text == "pixels":
        return Space("pixels")
    kind, _, dim = text.partition(":")
    if kind == "pca" and dim.isdigit() and int(dim) >= 1:
        return Space("pca", int(dim))
    raise LinsslError(f"--space must be pixels or pca:D with D >= 1, got {text!r}")


@dataclass(frozen=True)
class TwoViewModel:
    """X (PSD part), X', the global mean of the views, and what the PSD clipping removed."""

    data_cov: np.ndarray
    aug_cov: np.ndarray
    mean: np.ndarray
    images: int
    views: int
    clipped_count: int  # negative eigenvalues of the raw X estimate
    clipped_share: float  # their total |value| over the trace of X

    @property
    def dim(self) -> int:
        return self.data_cov.shape[0]

    @property
    def view_cov(self) -> np.ndarray:
        return self.data_cov + self.aug_cov


def psd_part(M: np.ndarray) -> tuple[np.ndarray, int, float]:
    """(M with negative eigenvalues set to 0, how many were negative, their |sum| / trace of the result)."""
    M = 0.5 * (M + M.T)
    s, U = np.linalg.eigh(M)
    negative = s < 0
    clipped = (U * np.clip(s, 0, None)) @ U.T
    trace = float(np.trace(clipped))
    share = float(-s[negative].sum() / trace) if trace > 0 else 0.0
    return 0.5 * (clipped + clipped.T), int(negative.sum()), share


def estimate_two_view(views: np.ndarray | torch.Tensor, mean: np.ndarray | None = None) -> TwoViewModel:
    """X and X' from views (N, K, d) (module docstring); ``mean``: centre by this instead of the views' mean."""
    V = torch.as_tensor(views, dtype=torch.float64)
    if V.ndim != 3:
        raise LinsslError(f"views must have shape (images, views, dim), got {tuple(V.shape)}")
    n, k, _ = V.shape
    if k < 2:
        raise LinsslError(f"need at least 2 views per image to separate X from X', got {k}")
    if n < 2:
        raise LinsslError(f"need at least 2 images, got {n}")
    centre = V.mean((0, 1)) if mean is None else torch.as_tensor(mean, dtype=torch.float64)
    V = V - centre
    m = V.mean(1)  # (N, d)
    dev = V - m[:, None, :]
    aug = torch.einsum("nki,nkj->ij", dev, dev) / (n * (k - 1))
    mc = m - m.mean(0)
    cov_means = mc.T @ mc / (n - 1)
    raw = (cov_means - aug / k).numpy()
    data, count, share = psd_part(raw)
    aug_np = aug.numpy()
    return TwoViewModel(data, 0.5 * (aug_np + aug_np.T), centre.numpy(), n, k, count, share)


def commutator_norm(X: np.ndarray, Xa: np.ndarray) -> float:
    """‖XX' − X'X‖_F / (‖X‖_F ‖X'‖_F): 0 for commuting covariances, at most √2."""
    denom = np.linalg.norm(X) * np.linalg.norm(Xa)
    return float(np.linalg.norm(X @ Xa - Xa @ X) / denom) if denom > 0 else 0.0


def half_split_error(views: np.ndarray | torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Relative Frobenius difference ‖A₁ − A₂‖ / ‖(A₁ + A₂)/2‖ of X and X' estimated on two random halves
    of the images (centred by the same global mean): the sampling error of an estimate from N/2 images,
    so about √2 times that of the full estimate."""
    V = torch.as_tensor(views, dtype=torch.float64)
    order = np.random.default_rng(seed).permutation(V.shape[0])
    half = V.shape[0] // 2
    centre = V.mean((0, 1)).numpy()
    a = estimate_two_view(V[order[:half]], centre)
    b = estimate_two_view(V[order[half:2 * half]], centre)

    def rel(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.linalg.norm(x - y) / max(np.linalg.norm(0.5 * (x + y)), 1e-300))

    return {"data_cov": rel(a.data_cov, b.data_cov), "aug_cov": rel(a.aug_cov, b.aug_cov)}


def pca_basis(clean: np.ndarray, dim: int) -> np.ndarray:
    """Rows: the top-``dim`` principal directions of the clean (flattened, normalised) images (dim, d)."""
    if dim > clean.shape[1]:
        raise LinsslError(f"--space pca:{dim} asks for more components than the {clean.shape[1]} input dimensions")
    centred = clean - clean.mean(0)
    _, _, Vt = np.linalg.svd(centred, full_matrices=False)
    return Vt[:dim]


@torch.no_grad()
def draw_views(images: torch.Tensor, augment: torch.nn.Module, views: int, seed: int,
               basis: np.ndarray | None = None, progress=None) -> np.ndarray:
    """(N, K, d) float64: K views of each image from ``augment`` (the trainer's ``BatchAugment``), flattened,
    projected on ``basis`` rows if given. Seeded: the same views for the same seed."""
    generator = torch.Generator().manual_seed(int(seed))
    proj = None if basis is None else torch.as_tensor(basis, dtype=torch.float64)
    chunks = []
    for start in range(0, images.shape[0], VIEW_BATCH):
        batch = images[start:start + VIEW_BATCH]
        per_view = []
        for _ in range(views):
            v = augment(batch, generator=generator).flatten(1).double()
            per_view.append(v if proj is None else v @ proj.T)
        chunks.append(torch.stack(per_view, 1))
        if progress is not None:
            progress(batch.shape[0])
    return torch.cat(chunks).numpy()
