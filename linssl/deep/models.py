"""Networks of the deep backend: backbones, projector, predictor heads, target and loss (docs/theory.md §6).

- Backbones return pooled features of size ``.feature_dim``: ResNet-18 / ResNet-50 (BasicBlock /
  Bottleneck) with the CIFAR stem (3×3 conv stride 1, no max-pool; inputs of 32 px or less) or the
  full stem (7×7 conv stride 2 + max-pool; larger inputs: STL-10, ImageNet), ``small``, a tiny conv net for digits and
  tests, and ``linear``, the linear theory's network: one bias-free linear map of the flattened, centred
  input (no projector; docs/theory.md §8).
- Projector: Linear-BN-ReLU-Linear (DirectPred paper 512 → 128, BYOL 4096 → 256).
- Predictor heads, by registry name (``PREDICTOR_HEADS``): ``directpred`` / ``directcopy`` /
  ``directset`` set a bias-free W_p from F̂ with the rule of ``linssl.predictors``; ``linear`` and
  ``mlp`` are trained. Every head keeps the running correlation F̂ of the online projections in
  buffers (for the trained ones only as a monitor), so a checkpoint carries it.
- Loss (``LOSSES``): ``cosine`` L = (2 − 2cos(p1, sg(z2'))) + (2 − 2cos(p2, sg(z1'))), z' the target
  projections; ``l2`` the linear theory's ¼(‖p1 − sg(z2')‖² + ‖p2 − sg(z1')‖²), batch means.
- Target: an exact copy of the online backbone + projector, then θ' ← m θ' + (1 − m) θ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linssl.errors import LinsslError
from linssl.predictors import CorrelationEMA, PredictorRule, make_rule

ARCHS = ("resnet18", "resnet50", "small", "linear")
STEMS = ("cifar", "imagenet")
Reduce = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- backbones


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carries the stride), 1×1 expand ×4, residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """ResNet backbone without the classifier: image (B, C, H, W) -> pooled features (B, feature_dim).

    ``stem="cifar"``: 3×3 conv stride 1, no max-pool (inputs of 32 px or less: CIFAR, digits);
    ``stem="imagenet"``: 7×7 conv stride 2 + 3×3 max-pool stride 2 (STL-10, ImageNet).
    """

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], in_channels: int = 3, stem: str = "cifar"):
        super().__init__()
        if stem not in STEMS:
            raise LinsslError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        in_planes = 64
        stages = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stage = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(block(in_planes, planes, stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*stages)
        self.feature_dim = in_planes
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)


class SmallConvNet(nn.Module):
    """Three conv-BN-ReLU layers (the second with stride 2) and global average pooling.

    Fast on CPU; meant for 8×8 digits and tests. feature_dim = 4 × width.
    """

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        layers = conv(in_channels, width, 1) + conv(width, 2 * width, 2) + conv(2 * width, 4 * width, 1)
        self.net = nn.Sequential(*layers)
        self.feature_dim = 4 * width

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.net(x), 1), 1)


class LinearBackbone(nn.Module):
    """The linear theory's network (docs/theory.md §8): z = W (x − μ), x the flattened image, W a bias-free
    ``out_dim × in_dim`` map (orthogonal init, gain 1), μ the mean input.

    The theory assumes centred inputs; augmented views are not. μ is the batch mean in training (so a
    batch's centring is exact) and the running mean of those batch means (momentum 0.01) in eval mode,
    like a BatchNorm that only centres. feature_dim = out_dim.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        nn.init.orthogonal_(self.linear.weight)
        self.register_buffer("running_mean", torch.zeros(in_dim))
        self.feature_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(x, 1)
        if self.training:
            mean = x.mean(0)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), 0.01)
        else:
            mean = self.running_mean.to(x.dtype)
        return self.linear(x - mean)


def build_backbone(arch: str, in_channels: int = 3, stem: str = "cifar", width: int = 32,
                   image_size: int | None = None) -> nn.Module:
    """Backbone by name: resnet18, resnet50 (with ``stem``), small (with ``width``), or linear
    (``in_channels × image_size²`` inputs, ``width`` outputs)."""
    if arch == "resnet18":
        return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, stem)
    if arch == "resnet50":
        return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, stem)
    if arch == "small":
        return SmallConvNet(in_channels, width)
    if arch == "linear":
        if image_size is None:
            raise LinsslError("the linear arch needs the image size")
        return LinearBackbone(in_channels * image_size * image_size, width)
    raise LinsslError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")


# --------------------------------------------------------------------------- heads


def mlp(in_dim: int, hidden_dim: int, out_dim: int, bn_affine: bool = True) -> nn.Sequential:
    """Linear-BN-ReLU-Linear (projector of DirectPred/BYOL, BYOL's predictor); ``bn_affine=False``: the BN
    only standardises (no learned scale and shift, as the DirectPred authors' projector)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim, affine=bn_affine), nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim)
    )


class CorrelationTracker(nn.Module):
    """F̂ ← ρ F̂ + (1 − ρ) mean(f fᵀ) over the online projections of both views.

    The update is ``linssl.predictors.CorrelationEMA``; F̂ and the number of updates live in buffers,
    so ``state_dict`` (and every checkpoint) carries them. ``reduce`` (e.g. an all-reduce mean under
    DDP) is applied to the batch correlation so every rank holds the same F̂.
    """

    def __init__(self, dim: int, rho: float) -> None:
        super().__init__()
        self._ema = CorrelationEMA(rho)
        self.register_buffer("value", torch.zeros(dim, dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._count = 0  # host mirror of ``count``: no device sync per step
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync_count())

    def _sync_count(self) -> None:
        self._count = int(self.count)

    @property
    def updates(self) -> int:
        return self._count

    @torch.no_grad()
    def update(self, outputs: Tensor, reduce: Reduce | None = None) -> Tensor:
        with torch.autocast(outputs.device.type, enabled=False):
            self._ema.value = self.value if self._count > 0 else None
            new = self._ema.update(outputs.float(), reduce)
            self._ema.value = None
        self.value.copy_(new)
        self.count.add_(1)
        self._count += 1
        return self.value


class DirectPredictorHead(nn.Module):
    """Bias-free linear predictor p = W_p z whose W_p = rule(F̂) is set, not trained.

    ``observe`` updates F̂ (``CorrelationTracker``) and resets W_p every ``freq`` updates (the first
    update included), before the predictor is applied to the same batch.
    """

    trained = False

    def __init__(self, dim: int, rule: PredictorRule, rho: float, freq: int) -> None:
        super().__init__()
        if rule.kind != "direct":
            raise LinsslError(f"predictor {rule.name!r} is trained; use LinearPredictor or MLPPredictor")
        if freq < 1:
            raise LinsslError(f"--freq must be >= 1, got {freq}")
        self.rule = rule
        self.freq = freq
        self.tracker = CorrelationTracker(dim, rho)
        self.register_buffer("weight", torch.eye(dim))

    def observe(self, outputs: Tensor, reduce: Reduce | None = None) -> None:
        corr = self.tracker.update(outputs, reduce)
        if (self.tracker.updates - 1) % self.freq == 0:
            with torch.no_grad(), torch.autocast(corr.device.type, enabled=False):
                self.weight.copy_(self.rule(corr))

    def matrix(self) -> Tensor | None:
        return self.weight

    def forward(self, z: Tensor) -> Tensor:
        return z @ self.weight.to(z.dtype).T


class LinearPredictor(nn.Module):
    """Trainable bias-free m×m predictor p = W_p z (F̂ is tracked as a monitor only)."""

    trained = True

    def __init__(self, dim: int, rho: float) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=False)
        self.tracker = CorrelationTracker(dim, rho)

    def observe(self, outputs: Tensor, reduce: Reduce | None = None) -> None:
        self.tracker.update(outputs, reduce)

    def matrix(self) -> Tensor | None:
        return self.linear.weight

    def forward(self, z: Tensor) -> Tensor:
        return self.linear(z)


class MLPPredictor(nn.Module):
    """BYOL predictor Linear-BN-ReLU-Linear (F̂ tracked as a monitor; no single matrix to report)."""

    trained = True

    def __init__(self, dim: int, hidden_dim: int, rho: float) -> None:
        super().__init__()
        self.net = mlp(dim, hidden_dim, dim)
        self.tracker = CorrelationTracker(dim, rho)

    def observe(self, outputs: Tensor, reduce: Reduce | None = None) -> None:
        self.tracker.update(outputs, reduce)

    def matrix(self) -> Tensor | None:
        return None

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


@dataclass(frozen=True)
class HeadConfig:
    """Predictor options: alpha (directset), norm g, eps ε, rho ρ of the F̂ EMA, freq of W_p resets,
    hidden width of the MLP predictor."""

    alpha: float | None = None
    norm: str = "spectral"
    eps: float = 0.01
    rho: float = 0.3
    freq: int = 1
    hidden_dim: int = 4096


def _direct(name: str) -> Callable[[int, HeadConfig], nn.Module]:
    def build(dim: int, cfg: HeadConfig) -> nn.Module:
        rule = make_rule(name, alpha=cfg.alpha, norm=cfg.norm, eps=cfg.eps)
        return DirectPredictorHead(dim, rule, cfg.rho, cfg.freq)

    return build


#: The one registry of predictor heads, by CLI name: builder(dim, HeadConfig) -> head module.
PREDICTOR_HEADS: dict[str, Callable[[int, HeadConfig], nn.Module]] = {
    "directcopy": _direct("directcopy"),
    "directpred": _direct("directpred"),
    "directset": _direct("directset"),
    "linear": lambda dim, cfg: LinearPredictor(dim, cfg.rho),
    "mlp": lambda dim, cfg: MLPPredictor(dim, cfg.hidden_dim, cfg.rho),
}


def build_predictor(name: str, dim: int, cfg: HeadConfig) -> nn.Module:
    if name not in PREDICTOR_HEADS:
        raise LinsslError(f"unknown predictor {name!r}; choose from {', '.join(PREDICTOR_HEADS)}")
    return PREDICTOR_HEADS[name](dim, cfg)


# --------------------------------------------------------------------------- siamese pair


class OnlineNetwork(nn.Module):
    """backbone -> projector -> predictor, both views; F̂ is updated from both views' projections.

    ``forward(x1, x2, reduce)`` returns (z1, z2, p1, p2); ``reduce`` reaches the F̂ update (DDP).
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.predictor = predictor

    def forward(self, x1: Tensor, x2: Tensor, reduce: Reduce | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        self.predictor.observe(torch.cat([z1, z2]), reduce)
        return z1, z2, self.predictor(z1), self.predictor(z2)


def make_target(online: OnlineNetwork) -> nn.Sequential:
    """Target network = exact copy of the online backbone + projector, without gradients."""
    target = nn.Sequential(copy.deepcopy(online.backbone), copy.deepcopy(online.projector))
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Sequential, online: OnlineNetwork, momentum: float) -> None:
    """θ' ← m θ' + (1 − m) θ for every parameter of the target (backbone + projector).

    Buffers (BN running statistics) are not averaged: the target runs in train mode, on batch
    statistics, and its running statistics are never used.
    """
    online_params = [p.detach() for p in (*online.backbone.parameters(), *online.projector.parameters())]
    target_params = list(target.parameters())
    if len(target_params) != len(online_params):
        raise ValueError("target and online networks have different parameter lists")
    torch._foreach_mul_(target_params, momentum)  # one fused kernel per dtype/device, same arithmetic
    torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """2 − 2 cos(p, sg(z)), averaged over the batch (= ‖p/‖p‖ − z/‖z‖‖², z detached)."""
    return 2.0 - 2.0 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()


def symmetric_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
    """L = (2 − 2cos(p1, sg(t2))) + (2 − 2cos(p2, sg(t1))), t the target projections."""
    return negative_cosine(p1, t2) + negative_cosine(p2, t1)


def symmetric_l2_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
    """L = ¼ (mean‖p1 − sg(t2)‖² + mean‖p2 − sg(t1)‖²): the linear theory's ½E‖W_p W x1 − W_a x2‖²,
    symmetrised; its gradient is the simulator's (``linssl.linear.sgd.sampled_gradients``)."""
    d12 = p1.float() - t2.detach().float()
    d21 = p2.float() - t1.detach().float()
    return 0.25 * (d12.pow(2).sum(-1).mean() + d21.pow(2).sum(-1).mean())


#: training losses by name (``DeepConfig.loss``)
LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]] = {
    "cosine": symmetric_loss, "l2": symmetric_l2_loss}
