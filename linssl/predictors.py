"""Predictor rules: the one implementation used by the linear simulator and the deep trainer.

All functions take torch tensors and are batched over leading dimensions (``F`` is ``(..., m, m)``),
so the same code sets the predictor of one deep network, of one linear run, or of a batch of
simulated runs. Dtype and device follow the input (float64 on CPU for theory, float32 on CUDA for
the deep trainer).

Rules (docs/theory.md §2):

- DirectSet(α):  W_p = g(F)^α + εI, F the correlation of the online outputs, g a normalisation.
- DirectPred   = DirectSet(½): eigendecomposition F = U diag(s) Uᵀ, p_j = (g(s)_j)^½ + ε.
- DirectCopy   = DirectSet(1): W_p = g(F) + εI, no eigendecomposition (spectral norm by power
  iteration).
- trainable:     W_p is a parameter updated by the gradient of the loss (BYOL).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from linssl.errors import LinsslError

NORMS = ("none", "spectral", "frobenius")
F_SOURCES = ("aug", "clean")


@dataclass(frozen=True)
class PredictorRule:
    """How the predictor is set. ``kind`` is ``"direct"`` (DirectSet family) or ``"trainable"``.

    alpha: exponent of DirectSet(α); norm: g in {none, spectral, frobenius}; eps: ε added to the
    diagonal; f_source: ``aug`` (F = W(X+X')Wᵀ) or ``clean`` (F = W X Wᵀ); power_iters: steps of
    power iteration for the spectral norm when α = 1.
    """

    name: str
    kind: str = "direct"
    alpha: float = 0.5
    norm: str = "none"
    eps: float = 0.0
    f_source: str = "aug"
    power_iters: int = 30

    def __post_init__(self) -> None:
        if self.kind not in ("direct", "trainable"):
            raise LinsslError(f"unknown predictor kind {self.kind!r}")
        if not (self.alpha > 0 and self.alpha < float("inf")):
            raise LinsslError(f"alpha must be a positive number, got {self.alpha}")
        if self.norm not in NORMS:
            raise LinsslError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.f_source not in F_SOURCES:
            raise LinsslError(f"f-source must be one of {', '.join(F_SOURCES)}, got {self.f_source!r}")
        if not (self.eps >= 0 and self.eps < float("inf")):
            raise LinsslError(f"eps must be a non-negative number, got {self.eps}")
        if self.power_iters < 1:
            raise LinsslError(f"power_iters must be >= 1, got {self.power_iters}")

    @property
    def uses_eigh(self) -> bool:
        """DirectCopy (α = 1) never decomposes F; every other direct rule does."""
        return self.kind == "direct" and self.alpha != 1.0

    def __call__(self, F: torch.Tensor) -> torch.Tensor:
        """The predictor matrix W_p for output correlation ``F`` (direct rules only)."""
        if self.kind != "direct":
            raise LinsslError(f"predictor {self.name!r} is trained, not set from F")
        return direct_set(F, self.alpha, self.norm, self.eps, self.power_iters)


#: The registry of predictor rules, by CLI name. ``directset`` takes its α from the user.
PREDICTOR_NAMES = ("directpred", "directcopy", "directset", "trainable")


def make_rule(
    name: str,
    *,
    alpha: float | None = None,
    norm: str = "none",
    eps: float = 0.0,
    f_source: str = "aug",
    power_iters: int = 30,
) -> PredictorRule:
    """Build a rule by name: directpred (α=½), directcopy (α=1), directset (α given), trainable."""
    fixed_alpha = {"directpred": 0.5, "directcopy": 1.0}
    if name not in PREDICTOR_NAMES:
        raise LinsslError(f"unknown predictor {name!r}; choose from {', '.join(PREDICTOR_NAMES)}")
    if name in fixed_alpha:
        if alpha is not None and alpha != fixed_alpha[name]:
            raise LinsslError(f"{name} fixes alpha = {fixed_alpha[name]}; use --predictor directset for alpha {alpha}")
        alpha = fixed_alpha[name]
    elif name == "directset" and alpha is None:
        raise LinsslError("directset needs --alpha")
    kind = "trainable" if name == "trainable" else "direct"
    return PredictorRule(name, kind, 1.0 if alpha is None else float(alpha), norm, eps, f_source, power_iters)


def spectral_norm_power(F: torch.Tensor, iters: int = 30, v0: torch.Tensor | None = None) -> torch.Tensor:
    """λ_max(F) of symmetric PSD ``F`` by power iteration: v ← Fv/‖Fv‖, λ = vᵀFv (no eigh).

    ``v0`` (shape ``(..., m)``) warm-starts the iteration; by default a fixed pseudo-random unit vector
    (seeded, so results are reproducible). A structured start such as the all-ones vector can be
    orthogonal to the top eigenvector (F = [[1.5, −.5], [−.5, 1.5]] would give 1 instead of 2).
    Returns shape ``F.shape[:-2]``.
    """
    v = _start_vector(F.shape[-1], F.dtype, F.device).expand(*F.shape[:-1]) if v0 is None else v0
    for _ in range(iters):
        v = _unit_scale((F @ v.unsqueeze(-1)).squeeze(-1), (-1,))
    return (v * (F @ v.unsqueeze(-1)).squeeze(-1)).sum(-1)


@functools.lru_cache(maxsize=32)
def _start_vector(m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    v = torch.randn(m, generator=torch.Generator().manual_seed(12345), dtype=torch.float64)
    return (v / v.norm()).to(dtype=dtype, device=device)


def normalise(F: torch.Tensor, norm: str, power_iters: int = 30) -> torch.Tensor:
    """g(F): ``none`` F; ``spectral`` F/λ_max(F) (power iteration); ``frobenius`` F/‖F‖_F."""
    if norm == "none":
        return F
    if norm == "spectral":
        scale = spectral_norm_power(F, power_iters)
    elif norm == "frobenius":
        return _unit_scale(F, (-2, -1))
    else:
        raise LinsslError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return F / scale.clamp_min(torch.finfo(F.dtype).tiny)[..., None, None]


def _unit_scale(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """x / ‖x‖₂ over ``dims``, computed as y / ‖y‖₂ with y = x / max|x| so that the sum of squares
    cannot underflow (entries below ≈ 1e-19 in float32, 1e-162 in float64 would give ‖x‖ = 0 and a
    predictor of size 1 / tiny: a collapsing run would blow up instead of collapsing)."""
    tiny = torch.finfo(x.dtype).tiny
    biggest = torch.maximum(x.amax(dims, keepdim=True), -x.amin(dims, keepdim=True))  # max|x|, no |x| copy
    y = x / biggest.clamp_min(tiny)
    return y.div_(torch.linalg.vector_norm(y, dim=dims, keepdim=True).clamp_min(tiny))


def direct_set(
    F: torch.Tensor, alpha: float, norm: str = "none", eps: float = 0.0, power_iters: int = 30
) -> torch.Tensor:
    """DirectSet(α): W_p = g(F)^α + εI.

    α = 1 (DirectCopy) is a normalisation plus a diagonal shift: no eigendecomposition. Otherwise
    F = U diag(s) Uᵀ and W_p = U diag(g(max(s, 0))^α + ε) Uᵀ, where the spectral normalisation
    divides by max s (DirectPred's p_j = sqrt(s_j / max s) + ε) and the Frobenius one by ‖s‖₂.
    ``F`` must be symmetric (a correlation is, up to rounding): eigh reads its lower triangle only, and
    α = 1 does not symmetrise it — at d = 2048 that copy alone cost 35× the rest of DirectCopy.
    """
    if alpha == 1.0:
        Wp = normalise(F, norm, power_iters)
        if eps:  # in place on a fresh tensor: no d×d identity and no third full-size temporary
            Wp = Wp.clone() if Wp is F else Wp
            Wp.diagonal(dim1=-2, dim2=-1).add_(eps)
        return Wp
    p, U = direct_set_spectrum(F, alpha, norm, eps)
    return (U * p.unsqueeze(-2)) @ U.mT


def direct_set_spectrum(
    F: torch.Tensor, alpha: float, norm: str = "none", eps: float = 0.0, eigh=torch.linalg.eigh
) -> tuple[torch.Tensor, torch.Tensor]:
    """DirectSet(α) as (p, U) with W_p = U diag(p) Uᵀ: F = U diag(s) Uᵀ, p = g(max(s, 0))^α + ε, where
    g divides by max s (spectral) or ‖s‖₂ (Frobenius). Exact for every α (it decomposes F, by ``eigh``)."""
    s, U = eigh(F)
    s = s.clamp_min(0.0)
    tiny = torch.finfo(F.dtype).tiny
    if norm == "spectral":
        s = s / s.amax(-1, keepdim=True).clamp_min(tiny)
    elif norm == "frobenius":
        s = _unit_scale(s, (-1,))
    elif norm != "none":
        raise LinsslError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return s**alpha + eps, U


def direct_pred(F: torch.Tensor, norm: str = "spectral", eps: float = 0.0) -> torch.Tensor:
    """DirectPred = DirectSet(½): p_j = sqrt(max(s_j, 0) / max_k s_k) + ε (spectral norm)."""
    return direct_set(F, 0.5, norm, eps)


def direct_copy(F: torch.Tensor, norm: str = "spectral", eps: float = 0.0, power_iters: int = 30) -> torch.Tensor:
    """DirectCopy = DirectSet(1): W_p = F / ‖F‖ + εI, no eigendecomposition."""
    return direct_set(F, 1.0, norm, eps, power_iters)


class CorrelationEMA:
    """The running estimate F̂ ← ρ F̂ + (1 − ρ) mean(f fᵀ) of the online-output correlation.

    The first update initialises F̂ to the batch estimate (no bias towards zero). ``update``
    accepts ``(n, m)`` or batched ``(..., n, m)`` outputs; pass both views' outputs concatenated
    along ``n``. Under DDP, pass ``reduce`` (e.g. an all-reduce mean) so every rank holds the same F̂.
    A tensor it returned is never changed by later updates.
    """

    def __init__(self, rho: float) -> None:
        if not 0.0 <= rho < 1.0:
            raise LinsslError(f"rho must be in [0, 1), got {rho}")
        self.rho = rho
        self.value: torch.Tensor | None = None

    @staticmethod
    def batch_correlation(outputs: torch.Tensor) -> torch.Tensor:
        """mean over samples of f fᵀ: ``outputs`` (..., n, m) -> (..., m, m)."""
        return outputs.mT @ outputs / outputs.shape[-2]

    def update(self, outputs: torch.Tensor, reduce=None) -> torch.Tensor:
        corr = self.batch_correlation(outputs.detach())
        if reduce is not None:
            corr = reduce(corr)
        # a new tensor each time, never an update in place: DirectCopy with norm none and ε = 0 returns F̂
        # itself as W_p, which must stay as it was until the next predictor reset (--freq)
        if self.value is None:
            self.value = corr.clone()
        else:
            self.value = torch.add(self.value * self.rho, corr, alpha=1.0 - self.rho)
        return self.value

    def state_dict(self) -> dict:
        return {"rho": self.rho, "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.rho = float(state["rho"])
        self.value = state["value"]
