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


def replan(step: int, steps_per_epoch: int, warmup_steps: int, epochs_before: int, epochs_after: int,
           base_lr: float, lr_schedule: str, ema: float, ema_schedule: str) -> dict:
    """What changing a run's planned epochs at ``step`` does to its schedules (``deep-train --resume --epochs``).

    The re-plan: from ``step`` on, lr and target momentum are those of a run planned for ``epochs_after``
    from the start, i.e. ``lr_at(k, K', K_w, lr)`` and ``ema_momentum_at(k, K', m)`` with
    K' = epochs_after · steps_per_epoch, for k ≥ step; the steps already taken followed the old total K.
    Warm-up is counted in steps from step 0 and does not depend on the total. A constant schedule is
    therefore unchanged; a cosine one jumps at ``step`` from its old-plan value to the new plan's
    (up, when extending a finished cosine run whose lr had decayed to 0) and then decays to 0 at K'
    (the momentum rises to 1 at K'). Returns the record that is stored with the run, ``note`` included.
    """
    old_total, new_total = epochs_before * steps_per_epoch, epochs_after * steps_per_epoch
    record = {
        "at_step": step,
        "at_epoch": step // steps_per_epoch,
        "epochs_before": epochs_before,
        "epochs_after": epochs_after,
        "total_steps_before": old_total,
        "total_steps_after": new_total,
        "lr_before": lr_at(step, old_total, warmup_steps, base_lr, lr_schedule),
        "lr_after": lr_at(step, new_total, warmup_steps, base_lr, lr_schedule),
        "ema_before": ema_momentum_at(step, old_total, ema, ema_schedule),
        "ema_after": ema_momentum_at(step, new_total, ema, ema_schedule),
    }
    verb = "extended" if epochs_after > epochs_before else "re-planned"
    head = f"run {verb} from {epochs_before} to {epochs_after} epochs at step {step}"
    if lr_schedule != "cosine" and ema_schedule != "cosine":
        record["note"] = f"{head}: lr and EMA momentum are constant, nothing to re-plan"
        return record
    parts = []
    if lr_schedule == "cosine":
        parts.append(f"lr {record['lr_before']:.6g} -> {record['lr_after']:.6g}, then cosine to 0 at step {new_total}")
    if ema_schedule == "cosine":
        parts.append(f"EMA momentum {record['ema_before']:.6g} -> {record['ema_after']:.6g}, then cosine to 1 at "
                     f"step {new_total}")
    record["note"] = (f"{head}: from here the schedules are those of a run planned for {epochs_after} epochs "
                      f"({'; '.join(parts)})")
    return record
