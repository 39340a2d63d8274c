"""The problem's own units, and the simulator's defaults in them.

Scaling (λ, σ², η) → c(λ, σ², η) leaves the predictor eigenvalues p (and p±) unchanged, multiplies a
direct rule's squared gains by 1/c and time by 1/c: W → W/√c keeps F = WΣ₁Wᵀ, hence W_p = F^α, and
dW/dt = −W_pᵀ(W_pWΣ₁ − τWX) − ηW becomes c/√c times itself. With a trained predictor both equations
scale by c at fixed W and W_p (w² = η_p p₊²/(α_p η) does not change), so only time scales. A run
whose horizon, initial scale and tolerances are in these units gives the same verdict for every c:

    rate   s      = λ_max        largest data variance (general model: ‖X‖₂)            [1/time]
    slow   s_slow = λ_min        smallest data variance (general model: ‖X‖₂)           [1/time]
    gain   g      = 1/s          squared-gain unit of a direct rule; 1 for a trained predictor

    horizon 5000/s_slow, GD 600/s_slow, SGD 300/s_slow  (each feature's rates scale with its own λ)
    initial W scale 0.5 √g,  atol 1e-12 √g  (entries of W),  conv tol 1e-8 s √g  (entries of dW/dt)
    kept tolerance 1e-8 g (flow, GD) or 1e-4 g (SGD),  lr cap 0.01/s,  SGD settle rate 1e-3 s,
    EMA rate β = s  (dW_a/dt = β(W − W_a): a rate like the others)
    exponential flow: transient at rtol 1e-6 until max|dW/dt| < 1e-4 s √g

At the default problem (λ = 1) every unit is 1 and these are the former absolute defaults. A model
with no data variance at all (X = 0) takes s = max(‖X'‖₂, η), or 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from linssl.linear.data import DataModel
from linssl.linear.records import CONVERGED_KEPT_TOL, KEPT_TOL
from linssl.linear.sgd import SGD_SETTLE_RATE

HORIZON, GD_TIME, SGD_TIME = 5000.0, 600.0, 300.0
INIT_SCALE, ATOL, CONV_TOL, LR_CAP = 0.5, 1e-12, 1e-8, 0.01
COARSE_RTOL, COARSE_UNTIL = 1e-6, 1e-4


@dataclass(frozen=True)
class Scales:
    """rate s, slow rate s_slow (1/time) and gain unit g (squared gain) of one problem (module docstring)."""

    rate: float
    slow: float
    gain: float

    @classmethod
    def of(cls, model: DataModel, wd: float, trainable: bool = False) -> Scales:
        if model.commuting:
            rate, slow = float(model.data_var.max()), float(model.data_var.min())
        else:
            rate = slow = float(torch.linalg.matrix_norm(model.data_cov, ord=2))
        if not rate > 0:  # X = 0: nothing is kept; the augmentation or the weight decay sets the pace
            rate = slow = max(float(torch.linalg.matrix_norm(model.aug_cov, ord=2)), wd) or 1.0
        return cls(rate, slow, 1.0 if trainable else 1.0 / rate)

    @property
    def weight(self) -> float:
        """Unit of W's entries: √g."""
        return math.sqrt(self.gain)


@dataclass(frozen=True)
class Settings:
    """The values a run uses: the flags given, else the defaults in the problem's units."""

    time: float
    init_scale: float
    conv_tol: float
    atol: float
    kept_tol: float
    lr_cap: float
    gd_time: float
    sgd_time: float
    sgd_settle_rate: float
    coarse_until: float
    ema_rate: float
    rate_scale: float
    gain_scale: float

    def to_json(self) -> dict:
        return asdict(self)


def settings(scales: Scales, *, time: float | None = None, init_scale: float | None = None,
             conv_tol: float | None = None, atol: float | None = None, ema: float | None = None,
             sgd: bool = False) -> Settings:
    """Explicit values win; the others follow ``scales``."""
    s, w = scales.rate, scales.weight
    return Settings(
        time=HORIZON / scales.slow if time is None else time,
        init_scale=INIT_SCALE * w if init_scale is None else init_scale,
        conv_tol=CONV_TOL * s * w if conv_tol is None else conv_tol,
        atol=ATOL * w if atol is None else atol,
        kept_tol=(KEPT_TOL if sgd else CONVERGED_KEPT_TOL) * scales.gain,
        lr_cap=LR_CAP / s,
        gd_time=GD_TIME / scales.slow,
        sgd_time=SGD_TIME / scales.slow,
        sgd_settle_rate=SGD_SETTLE_RATE * s,
        coarse_until=COARSE_UNTIL * s * w,
        ema_rate=s if ema is None else ema,
        rate_scale=s,
        gain_scale=scales.gain,
    )
