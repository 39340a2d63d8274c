"""Schedules of a deep run: learning rate (warm-up, constant or cosine), target momentum, and the seeds of
each epoch's random streams.
"""

from __future__ import annotations

import math

import numpy as np


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str = "cosine") -> float:
    """Linear warm-up lr·(k+1)/K_w for k < K_w, then constant lr or lr·½(1 + cos(π (k − K_w)/(K − K_w)))."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def ema_momentum_at(step: int, total_steps: int, base: float, schedule: str = "constant") -> float:
    """Target momentum: constant m, or BYOL's 1 − (1 − m)·½(cos(π k/K) + 1), rising from m to 1."""
    if schedule == "constant":
        return base
    return 1.0 - (1.0 - base) * 0.5 * (math.cos(math.pi * min(step / max(1, total_steps), 1.0)) + 1.0)

def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for (seed, epoch, stream): independent generators per epoch and per use."""
    words = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))
