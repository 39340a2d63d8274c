"""LARS (layer-wise adaptive rate scaling, You et al. 2017) as used by SimCLR/BYOL for large batches.

Per parameter w with gradient g, weight decay η and trust coefficient c:

    g ← g + η w
    q = c ‖w‖ / ‖g‖   (q = 1 if ‖w‖ = 0 or ‖g‖ = 0, and for groups with ``lars_exclude``)
    q ← min(q / lr, 1)   only with ``clip_lr`` (solo-learn's option: the layer's rate lr·q is at most lr)
    v ← μ v + q g;    w ← w − lr v

Groups flagged ``lars_exclude=True`` (BN and bias parameters) skip the trust ratio: plain SGD with
momentum (and with whatever weight decay the group sets, usually 0).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    def __init__(
        self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust_coefficient: float = 0.001,
        clip_lr: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "clip_lr": clip_lr,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                if group["weight_decay"] != 0:
                    g = g.add(w, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    w_norm, g_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(g)
                    ratio = group["trust_coefficient"] * w_norm / g_norm
                    if group.get("clip_lr", False):  # absent from the groups of checkpoints saved before it
                        ratio = torch.clamp(ratio / group["lr"], max=1.0)
                    q = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
                    g = g * q
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                w.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
