"""Backbones, heads, target copy, EMA update and the symmetric loss of the deep backend."""

from __future__ import annotations

import pytest
import torch

from linssl.deep.models import (
    PREDICTOR_HEADS,
    CorrelationTracker,
    DirectPredictorHead,
    HeadConfig,
    OnlineNetwork,
    build_backbone,
    build_predictor,
    ema_update_,
    make_target,
    mlp,
    negative_cosine,
    symmetric_loss,
)
from linssl.errors import LinsslError
from linssl.predictors import CorrelationEMA, make_rule


@pytest.mark.parametrize(
    ("arch", "stem", "size", "channels", "dim"),
    [
        ("resnet18", "cifar", 32, 3, 512),
        ("resnet18", "cifar", 96, 3, 512),
        ("resnet18", "imagenet", 64, 3, 512),
        ("resnet18", "cifar", 32, 1, 512),
        ("resnet50", "imagenet", 32, 3, 2048),
        ("small", "cifar", 8, 1, 128),
    ],
)
def test_backbone_shapes(arch, stem, size, channels, dim):
    torch.manual_seed(0)
    net = build_backbone(arch, in_channels=channels, stem=stem)
    out = net(torch.randn(2, channels, size, size))
    assert net.feature_dim == dim
    assert out.shape == (2, dim)
    assert torch.isfinite(out).all()


def test_cifar_stem_keeps_resolution_and_full_stem_quarters_it():
    cifar = build_backbone("resnet18", stem="cifar")
    full = build_backbone("resnet18", stem="imagenet")
    x = torch.randn(2, 3, 64, 64)
    assert cifar.stem(x).shape[-1] == 64  # 3×3 stride 1, no max-pool
    assert full.stem(x).shape[-1] == 16  # 7×7 stride 2, then max-pool stride 2


def test_unknown_arch_is_a_user_error():
    with pytest.raises(LinsslError, match="unknown arch"):
        build_backbone("vgg")


def test_negative_cosine_equals_squared_distance_of_normalised_vectors():
    torch.manual_seed(1)
    p, z = torch.randn(16, 8), torch.randn(16, 8)
    second = ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(1).mean()
    # float32 on unit vectors: both forms agree to a few ulps of the O(1) result.
    assert negative_cosine(p, z).item() == pytest.approx(second.item(), abs=1e-5)
    assert negative_cosine(p, 3.0 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert negative_cosine(p, -p).item() == pytest.approx(4.0, abs=1e-5)


def test_symmetric_loss_is_symmetric_and_stops_gradient_into_target():
    torch.manual_seed(2)
    p1, p2 = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    t1, t2 = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    loss = symmetric_loss(p1, p2, t1, t2)
    assert loss.item() == pytest.approx(symmetric_loss(p2, p1, t2, t1).item(), abs=1e-6)
    assert loss.item() == pytest.approx((negative_cosine(p1, t2) + negative_cosine(p2, t1)).item(), abs=1e-6)
    loss.backward()
    assert t1.grad is None and t2.grad is None
    assert p1.grad is not None and p1.grad.abs().sum() > 0


def _online(name: str = "directcopy", dim: int = 6, **kwargs) -> OnlineNetwork:
    torch.manual_seed(0)
    backbone = build_backbone("small", in_channels=1, width=4)
    cfg = HeadConfig(hidden_dim=8, **kwargs)
    return OnlineNetwork(backbone, mlp(backbone.feature_dim, 12, dim), build_predictor(name, dim, cfg))


def test_target_starts_as_exact_copy_and_has_no_gradients():
    online = _online()
    target = make_target(online)
    online_state = list(online.backbone.state_dict().values()) + list(online.projector.state_dict().values())
    for a, b in zip(target.state_dict().values(), online_state, strict=True):
        assert torch.equal(a, b)
        assert a.data_ptr() != b.data_ptr()  # a copy, not shared storage
    assert not any(p.requires_grad for p in target.parameters())


def test_ema_update_formula():
    online = _online()
    target = make_target(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    online_params = list(online.backbone.parameters()) + list(online.projector.parameters())
    for t, b, o in zip(target.parameters(), before, online_params, strict=True):
        # one multiply-add in float32: a few ulps.
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o, rtol=1e-6, atol=1e-6)
    ema_update_(target, online, 0.0)
    for t, o in zip(target.parameters(), online_params, strict=True):
        assert torch.equal(t, o)


def test_tracker_matches_correlation_ema_and_survives_state_dict():
    torch.manual_seed(3)
    tracker, reference = CorrelationTracker(4, 0.3), CorrelationEMA(0.3)
    for _ in range(3):
        f = torch.randn(10, 4)
        tracker.update(f)
        reference.update(f)
    assert torch.equal(tracker.value, reference.value)
    clone = CorrelationTracker(4, 0.3)
    clone.load_state_dict(tracker.state_dict())
    assert clone.updates == 3
    f = torch.randn(10, 4)
    assert torch.equal(clone.update(f), tracker.update(f))


@pytest.mark.parametrize("name", ["directcopy", "directpred"])
def test_direct_head_sets_weight_from_rule_every_freq_steps(name):
    torch.manual_seed(4)
    head = build_predictor(name, 5, HeadConfig(rho=0.5, freq=2, eps=0.01, norm="spectral"))
    assert isinstance(head, DirectPredictorHead)
    rule = make_rule(name, norm="spectral", eps=0.01)
    f1, f2 = torch.randn(20, 5), torch.randn(20, 5)
    head.observe(f1)
    set_at_first = rule(head.tracker.value.clone())
    assert torch.equal(head.weight, set_at_first)
    head.observe(f2)  # second update: F̂ moves, W_p is kept (freq = 2)
    assert torch.equal(head.weight, set_at_first)
    assert not torch.equal(head.tracker.value, CorrelationEMA.batch_correlation(f1))
    head.observe(torch.randn(20, 5))
    assert torch.equal(head.weight, rule(head.tracker.value))
    z = torch.randn(3, 5)
    torch.testing.assert_close(head(z), z @ head.weight.T)
    assert "tracker.value" in head.state_dict() and "weight" in head.state_dict()


def test_directset_needs_alpha_and_registry_covers_every_head():
    with pytest.raises(LinsslError, match="alpha"):
        build_predictor("directset", 4, HeadConfig())
    assert set(PREDICTOR_HEADS) == {"directcopy", "directpred", "directset", "linear", "mlp"}
    with pytest.raises(LinsslError, match="unknown predictor"):
        build_predictor("simclr", 4, HeadConfig())


@pytest.mark.parametrize("name", sorted(PREDICTOR_HEADS))
def test_online_forward_every_head(name):
    kwargs = {"alpha": 0.7} if name == "directset" else {}
    online = _online(name, **kwargs)
    x1, x2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    z1, z2, p1, p2 = online(x1, x2)
    assert z1.shape == p1.shape == (6, 6)
    assert online.predictor.tracker.updates == 1
    # F̂ after the first update is the batch correlation of both views.
    torch.testing.assert_close(online.predictor.tracker.value, CorrelationEMA.batch_correlation(torch.cat([z1, z2])))
    target = make_target(online)
    loss = symmetric_loss(p1, p2, target(x1), target(x2))
    loss.backward()
    grads = [p.grad for p in online.backbone.parameters()]
    assert all(g is not None for g in grads)
    trained = list(online.predictor.parameters())
    assert bool(trained) == online.predictor.trained
