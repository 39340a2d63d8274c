"""One training step, the same for the trainer and the benchmarks (docs/theory.md §6).

Given two views x1, x2 of a batch:

    z_i = proj(backbone(x_i));  the predictor head updates F̂ and sets W_p;  p_i = W_p z_i (or its MLP)
    L = (2 − 2cos(p1, sg(t2))) + (2 − 2cos(p2, sg(t1)))      t_i = target projections of x_i
        (or the linear theory's ¼(‖p1 − sg(t2)‖² + ‖p2 − sg(t1)‖²): ``loss``, ``models.LOSSES``)
    θ ← optimiser step;   θ' ← m θ' + (1 − m) θ               (EMA target, momentum m)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from linssl.deep.models import LOSSES, OnlineNetwork, ema_update_, symmetric_loss


@dataclass
class StepOutput:
    """The step's loss as seen by every rank (detached; the mean over ranks under DDP) and z1, the
    online projections of the first view (detached), for the collapse monitor."""

    loss: Tensor
    z1: Tensor


@dataclass
class TrainingStep:
    """Forward both views, symmetric cosine loss, backward, optimiser step, EMA update of the target.

    ``model`` is what the forward pass runs (``online`` itself, or its DistributedDataParallel
    wrapper); ``reduce`` averages F̂ over ranks (None alone); ``amp`` runs the forward pass under bf16
    autocast. ``before_update(loss)`` is called after the forward pass and before any weight changes,
    so a caller can stop on a non-finite loss with the networks still untouched.
    """

    online: OnlineNetwork
    target: nn.Module
    optimizer: torch.optim.Optimizer
    model: nn.Module | None = None
    reduce: Callable[[Tensor], Tensor] | None = None
    amp: bool = False
    loss: str = "cosine"  # a name of models.LOSSES: "cosine" or "l2" (the linear theory's)

    def __call__(self, x1: Tensor, x2: Tensor, ema_momentum: float,
                 before_update: Callable[[Tensor], None] | None = None) -> StepOutput:
        model = self.online if self.model is None else self.model
        with torch.autocast(x1.device.type, dtype=torch.bfloat16, enabled=self.amp):
            z1, _z2, p1, p2 = model(x1, x2, reduce=self.reduce)
            with torch.no_grad():
                t1, t2 = self.target(x1), self.target(x2)
            loss_fn = symmetric_loss if self.loss == "cosine" else LOSSES[self.loss]
            loss = loss_fn(p1, p2, t1, t2)
        seen = loss.detach() if self.reduce is None else self.reduce(loss.detach())
        if before_update is not None:
            before_update(seen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        ema_update_(self.target, self.online, ema_momentum)
        return StepOutput(seen, z1.detach())
