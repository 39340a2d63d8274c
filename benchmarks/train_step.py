"""Images/s of linssl's DirectCopy training step against the ``lightly`` library's BYOL step, on CPU.

Both sides get the same backbone (linssl's ResNet-18 with the CIFAR stem), the same projector sizes
(Linear-BN-ReLU-Linear 512 → 4096 → 256), the same batch of two pre-made views (random tensors of the
input size: augmentation is not timed, lightly has none of its own on tensors), the same SGD
(lr 0.03, momentum 0.9, wd 4e-4), the same torch threads, and run in one process, their steps
interleaved so that machine load hits both alike; warm-up steps are excluded, the median is reported.

- linssl: ``OnlineNetwork`` with the ``directcopy`` head and the trainer's defaults (F̂ EMA ρ 0.3,
  W_p = F̂/λ_max(F̂) + 0.01 I with λ_max by power iteration, reset every step; no trained
  predictor), symmetric 2 − 2cos loss, ``ema_update_`` of the target — ``linssl.deep.step.TrainingStep``, the
  trainer's own step.
- lightly: the BYOL of lightly's own example: ``BYOLProjectionHead``, ``BYOLPredictionHead``
  (256 → 4096 → 256, trained), ``NegativeCosineSimilarity``, ``update_momentum`` and
  ``deactivate_requires_grad`` from ``lightly.models.utils``.

predictor_share = median time of linssl's predictor update (F̂ EMA + DirectCopy set, on the step's
(2B, 256) projections) / median linssl step time.

lightly is an optional benchmark dependency: ``.venv/bin/pip install lightly --no-deps``. Its
modules import torchvision at module level (``lightly/models/utils.py``: ``from torchvision.ops import
StochasticDepth``; ``lightly/loss/dense_relational_utils.py``: ``from torchvision.ops import roi_align``),
and torchvision does not import beside this torch build; when torchvision is missing this script
registers a stand-in ``torchvision.ops`` holding only those two names, each raising if called
(none is called by the BYOL parts used here). Everything timed on the lightly side is lightly's code.

    .venv/bin/python benchmarks/train_step.py            # ResNet-18, batch 64, 32 px
    .venv/bin/python benchmarks/train_step.py --quick    # small conv net, batch 16, 8 px, seconds

Last line: {"ratio_vs_lightly": …, "predictor_share": …} (ratio null when lightly is not installed).
"""

from __future__ import annotations

import argparse
import copy
import importlib.machinery
import sys
import time
import types

import torch
from _common import emit, machine, median, print_table, time_calls
from torch import nn

from linssl.deep.models import HeadConfig, OnlineNetwork, build_backbone, build_predictor, make_target, mlp
from linssl.deep.step import TrainingStep

INSTALL_HINT = "lightly is not installed: .venv/bin/pip install lightly --no-deps   (then rerun)"


def _stand_in(name: str):
    def fail(*_args, **_kwargs):
        raise RuntimeError(f"torchvision.ops.{name} is a stand-in registered by benchmarks/train_step.py")

    return fail


def import_lightly() -> tuple[types.SimpleNamespace | None, str]:
    """lightly's BYOL parts, and how they were imported ("plain", "torchvision stand-in", or why not)."""
    how = "plain"
    try:
        import lightly  # noqa: F401
    except ImportError:
        return None, "not installed"
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or failing to load beside this torch build
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
        ops.__spec__ = importlib.machinery.ModuleSpec("torchvision.ops", None)
        ops.StochasticDepth, ops.roi_align = _stand_in("StochasticDepth"), _stand_in("roi_align")
        tv.ops = ops
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = tv, ops
        how = "torchvision stand-in (torchvision.ops.StochasticDepth, roi_align)"
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    return types.SimpleNamespace(NegativeCosineSimilarity=NegativeCosineSimilarity,
                                 BYOLPredictionHead=BYOLPredictionHead, BYOLProjectionHead=BYOLProjectionHead,
                                 deactivate_requires_grad=deactivate_requires_grad,
                                 update_momentum=update_momentum), how


def sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=4e-4)


class LinsslStep:
    """linssl's DirectCopy step on two views: the trainer's ``TrainingStep``, without augmentation and schedules."""

    def __init__(self, backbone: nn.Module, hidden: int, out: int) -> None:
        head = build_predictor("directcopy", out, HeadConfig())  # the trainer's defaults: spectral, ε 0.01, ρ 0.3
        self.online = OnlineNetwork(backbone, mlp(backbone.feature_dim, hidden, out), head).train()
        self.target = make_target(self.online).train()
        self.step = TrainingStep(self.online, self.target, sgd(self.online.parameters()))

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        self.step(x1, x2, 0.996)


class LightlyBYOLStep(nn.Module):
    """lightly's BYOL example (lightly/examples/pytorch/byol.py) with linssl's backbone."""

    def __init__(self, lib: types.SimpleNamespace, backbone: nn.Module, hidden: int, out: int) -> None:
        super().__init__()
        self.lib = lib
        self.backbone = backbone
        self.projection_head = lib.BYOLProjectionHead(backbone.feature_dim, hidden, out)
        self.prediction_head = lib.BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        lib.deactivate_requires_grad(self.backbone_momentum)
        lib.deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = lib.NegativeCosineSimilarity()
        self.optimizer = sgd([p for p in self.parameters() if p.requires_grad])
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

    def step(self, x0: torch.Tensor, x1: torch.Tensor) -> None:
        self.lib.update_momentum(self.backbone, self.backbone_momentum, m=0.996)
        self.lib.update_momentum(self.projection_head, self.projection_head_momentum, m=0.996)
        p0, z0 = self(x0), self.forward_momentum(x0)
        p1, z1 = self(x1), self.forward_momentum(x1)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small conv net, batch 16, 8 px, 2 timed steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="input height = width")
    parser.add_argument("--steps", type=int, default=7, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (1: on a shared 2-core machine 2 OpenMP threads thrash)")
    parser.add_argument("--proj-hidden", type=int, default=4096)
    parser.add_argument("--proj-dim", type=int, default=256)
    args = parser.parse_args(argv)
    arch = "resnet18"
    if args.quick:
        arch, args.batch, args.size, args.steps, args.warmup = "small", 16, 8, 2, 1
        args.proj_hidden, args.proj_dim = 64, 32
    torch.set_num_threads(args.threads)
    lib, how = import_lightly()
    print("machine:", machine())
    print(f"arch {arch} (CIFAR stem), batch {args.batch}, input {args.size}px, projector "
          f"{args.proj_hidden}->{args.proj_dim}, threads {args.threads}, {args.warmup} warm-up + {args.steps} timed "
          f"steps per side, lightly: {how}")

    def backbone() -> nn.Module:
        torch.manual_seed(0)
        return build_backbone(arch, 3, "cifar", width=8)

    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    x2 = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    ours = LinsslStep(backbone(), args.proj_hidden, args.proj_dim)
    theirs = LightlyBYOLStep(lib, backbone(), args.proj_hidden, args.proj_dim) if lib is not None else None
    times: dict[str, list[float]] = {"linssl": [], "lightly": []}
    for k in range(args.warmup + args.steps):
        for name, fn in (("linssl", ours), ("lightly", None if theirs is None else theirs.step)):
            if fn is None:
                continue
            t0 = time.perf_counter()
            fn(x1, x2)
            if k >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    z = torch.randn(2 * args.batch, args.proj_dim, generator=gen)
    head = ours.online.predictor
    predictor_s = median(time_calls(lambda: head.observe(z), warmup=3, min_repeats=20, budget_s=0.5))
    ours_s = median(times["linssl"])
    rows = [["linssl directcopy", ours_s, args.batch / ours_s, predictor_s * 1e3, predictor_s / ours_s]]
    ratio = None
    if theirs is not None:
        theirs_s = median(times["lightly"])
        ratio = theirs_s / ours_s
        rows.append(["lightly BYOL", theirs_s, args.batch / theirs_s, float("nan"), float("nan")])
    else:
        print(INSTALL_HINT)
    print_table(["step", "median s/step", "images/s", "predictor update ms", "predictor share"], rows)
    headline = {"ratio_vs_lightly": None if ratio is None else round(ratio, 3),
                "predictor_share": round(predictor_s / ours_s, 5)}
    emit(headline)
    return headline


if __name__ == "__main__":
    main()
