"""Frozen-feature evaluation: feature extraction, weighted kNN, linear probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from linssl.deep import evaluate
from linssl.deep.augment import AugmentConfig, eval_transform
from linssl.deep.datasets import TensorImageDataset, get_spec, load_split
from linssl.deep.evaluate import extract_features, knn_top1, linear_probe
from linssl.errors import LinsslError

CPU = torch.device("cpu")


def _clusters(n_per_class: int, classes: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters: centres 3·e_c (orthogonal, distance 4.2 apart) plus N(0, spread²) noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    centres = 3.0 * torch.eye(classes, dim)
    return centres[labels] + spread * torch.randn(labels.numel(), dim, generator=gen), labels


# ---------------------------------------------------------------- kNN


def test_knn_and_probe_on_separable_clusters():
    train_x, train_y = _clusters(60, 4, 12, 0.5, seed=0)
    test_x, test_y = _clusters(40, 4, 12, 0.5, seed=1)
    assert knn_top1(train_x, train_y, test_x, test_y) > 0.95
    result = linear_probe(train_x, train_y, test_x, test_y, 4, epochs=50)
    assert result.top1 > 0.95 and result.train_top1 > 0.95
    assert result.weight_decay in (0.0, 1e-5, 1e-4, 1e-3, 1e-2) and len(result.validation) == 5


def test_knn_k1_is_the_nearest_neighbour():
    gen = torch.Generator().manual_seed(2)
    train_x = torch.randn(80, 6, generator=gen)
    train_y = torch.randint(0, 3, (80,), generator=gen)
    test_x = torch.randn(40, 6, generator=gen)
    test_y = torch.randint(0, 3, (40,), generator=gen)
    # brute force in float64 numpy: the train sample with the largest cosine similarity
    a = train_x.double().numpy()
    b = test_x.double().numpy()
    cos = (b / np.linalg.norm(b, axis=1, keepdims=True)) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T
    nearest_label = train_y.numpy()[cos.argmax(axis=1)]
    for i in range(40):
        single = knn_top1(train_x, train_y, test_x[i:i + 1], test_y[i:i + 1], k=1)
        assert single == float(nearest_label[i] == test_y[i].item())
    brute_force = float((nearest_label == test_y.numpy()).mean())
    assert knn_top1(train_x, train_y, test_x, test_y, k=1) == pytest.approx(brute_force)


def test_knn_weighted_vote_and_temperature():
    """Test point (1, 0); one class-0 neighbour at angle 0.1, two class-1 neighbours at 0.5 and 0.6.

    Votes with T = 1: class 0 e^0.995 = 2.70, class 1 e^0.878 + e^0.825 = 4.69 -> class 1.
    With T = 0.1: e^9.95 = 20952 against e^8.78 + e^8.25 = 10336 -> class 0. With k = 1: class 0.
    """
    angles = torch.tensor([0.1, 0.5, 0.6, 2.5])
    train_x = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    train_y = torch.tensor([0, 1, 1, 0])
    test_x, test_y = torch.tensor([[5.0, 0.0]]), torch.tensor([1])
    assert knn_top1(train_x, train_y, test_x, test_y, k=3, temperature=1.0) == 1.0
    assert knn_top1(train_x, train_y, test_x, test_y, k=3, temperature=0.1) == 0.0
    assert knn_top1(train_x, train_y, test_x, test_y, k=1, temperature=1.0) == 0.0
    # k above the train size is clipped: all 4 vote, class 0 gains e^cos(2.5) = 0.45 -> still class 1
    assert knn_top1(train_x, train_y, test_x, test_y, k=200, temperature=1.0) == 1.0


def test_knn_chunking_does_not_change_the_result(monkeypatch):
    train_x, train_y = _clusters(30, 5, 8, 2.0, seed=3)
    test_x, test_y = _clusters(20, 5, 8, 2.0, seed=4)
    full = knn_top1(train_x, train_y, test_x, test_y, k=10)
    monkeypatch.setattr(evaluate, "KNN_CHUNK_BYTES", 4 * len(train_x) * 7)  # chunks of 7 test samples
    assert knn_top1(train_x, train_y, test_x, test_y, k=10) == full
    assert 0.3 < full < 1.0  # overlapping clusters: neither trivial nor chance


def test_knn_bad_input():
    x, y = _clusters(5, 2, 4, 0.1, seed=5)
    with pytest.raises(LinsslError, match="labelled train split"):
        knn_top1(x, torch.full_like(y, -1), x, y)
    with pytest.raises(LinsslError, match="dim"):
        knn_top1(x, y, x[:, :3], y)
    with pytest.raises(LinsslError, match="num_classes"):
        knn_top1(x, y, x, y, num_classes=1)


# ---------------------------------------------------------------- linear probe


def test_probe_on_random_labels_is_at_chance():
    gen = torch.Generator().manual_seed(6)
    train_x, train_y = torch.randn(300, 20, generator=gen), torch.randint(0, 5, (300,), generator=gen)
    test_x, test_y = torch.randn(2000, 20, generator=gen), torch.randint(0, 5, (2000,), generator=gen)
    result = linear_probe(train_x, train_y, test_x, test_y, 5, epochs=50)
    # test labels are independent of everything the probe saw, so test top-1 ~ Binomial(2000, 0.2)/2000,
    # std 0.0089; 6 std = 0.054
    assert abs(result.top1 - 0.2) < 0.054
    assert result.train_top1 > result.top1 + 0.1  # it does fit the train labels it was given


def test_weight_decay_choice_ignores_the_test_set():
    train_x, train_y = _clusters(40, 3, 10, 1.5, seed=7)
    test_x, test_y = _clusters(30, 3, 10, 1.5, seed=8)
    first = linear_probe(train_x, train_y, test_x, test_y, 3, epochs=30)
    shuffled = test_y[torch.randperm(len(test_y), generator=torch.Generator().manual_seed(9))]
    second = linear_probe(train_x, train_y, test_x * 3 + 1, shuffled, 3, epochs=30)
    assert second.weight_decay == first.weight_decay
    assert second.validation == first.validation and second.train_top1 == first.train_top1
    assert second.top1 != first.top1  # the test set did change


def test_fit_logistic_matches_sklearn_optimum():
    """Same objective as sklearn's multinomial LogisticRegression with C = 1 / (wd · n): mean CE +
    (wd/2)‖W‖², bias unpenalised. The optimum W is unique, so the weights must agree."""
    from sklearn.linear_model import LogisticRegression

    x, y = _clusters(50, 3, 5, 2.0, seed=10)
    wd = 1e-2
    model = evaluate.fit_logistic(x, y, 3, wd, epochs=100, lr=1.0, batch_size=64, device=CPU)
    z = ((x - model.mean) / model.std).double().numpy()
    clf = LogisticRegression(C=1 / (wd * len(x)), tol=1e-12, max_iter=10_000).fit(z, y.numpy())
    # ours runs in float32: the objective (~0.3) is resolved to ~1e-7 · 0.3, and with strong convexity
    # at least wd = 1e-2 a parameter error e costs wd e² / 2, so e <= sqrt(2 · 3e-8 / 1e-2) ~ 2.4e-3
    # (observed: 1.4e-4)
    np.testing.assert_allclose(model.weight.double().numpy(), clf.coef_, atol=2.5e-3)
    # the bias is unique up to a common shift across classes
    diff = model.bias.double().numpy() - clf.intercept_
    np.testing.assert_allclose(diff - diff.mean(), 0.0, atol=2.5e-3)
    assert np.abs(clf.coef_).max() > 0.5  # the comparison is not between two near-zero solutions


def test_probe_bad_input():
    x, y = _clusters(10, 2, 4, 0.1, seed=11)
    with pytest.raises(LinsslError, match="labelled train split"):
        linear_probe(x, torch.full_like(y, -1), x, y, 2)
    with pytest.raises(LinsslError, match="num_classes"):
        linear_probe(x, y, x, y, 1)
    with pytest.raises(LinsslError, match="weight decays"):
        linear_probe(x, y, x, y, 2, weight_decays=())


def test_stratified_holdout():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2])
    fit, held = evaluate.stratified_holdout(labels, 0.2, seed=0)
    assert sorted(torch.cat([fit, held]).tolist()) == list(range(16))
    assert torch.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]  # round(0.2 n), >= 1, none of 1
    assert torch.equal(evaluate.stratified_holdout(labels, 0.2, seed=0)[1], held)


# ---------------------------------------------------------------- feature extraction


class _Encoder(nn.Module):
    """Flatten -> BatchNorm -> Linear: BN makes train and eval mode give different outputs."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(in_dim), nn.Linear(in_dim, out_dim))
        with torch.no_grad():
            self.net[1].running_mean.fill_(0.3)
            self.net[1].running_var.fill_(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _FileLike(torch.utils.data.Dataset):
    """A dataset without ``.images`` (like the ImageNet reader): items only, read through a DataLoader."""

    def __init__(self, base: TensorImageDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i]


def test_extract_features_in_memory_and_loader_paths_agree():
    torch.manual_seed(0)
    dataset = load_split("digits", None, "test")
    encoder = _Encoder(64, 7).train()
    spec = get_spec("digits")
    feats, labels = extract_features(encoder, dataset, spec, CPU, batch_size=100)
    assert feats.shape == (360, 7) and feats.dtype == torch.float32 and labels.dtype == torch.int64
    assert encoder.training  # mode restored
    with torch.no_grad():
        expected = encoder.eval()(eval_transform(dataset.images, AugmentConfig(8, mean=spec.mean, std=spec.std)))
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=0)  # batching changes summation order only
    assert torch.equal(labels, dataset.labels)
    loader_feats, loader_labels = extract_features(encoder, _FileLike(dataset), "digits", CPU, batch_size=64,
                                                   num_workers=0)
    torch.testing.assert_close(loader_feats, feats, atol=1e-5, rtol=0)
    assert torch.equal(loader_labels, labels)
    with pytest.raises(LinsslError, match="empty"):
        extract_features(encoder, _FileLike(TensorImageDataset(dataset.images[:0], dataset.labels[:0], 10)),
                         spec, CPU)


def test_digits_pixels_probe_and_knn_are_strong():
    """Raw 8×8 digits pixels are nearly linearly separable: both monitors should exceed 0.9."""
    train, test = load_split("digits", None, "train"), load_split("digits", None, "test")
    identity = nn.Flatten()
    train_x, train_y = extract_features(identity, train, "digits", CPU)
    test_x, test_y = extract_features(identity, test, "digits", CPU)
    assert knn_top1(train_x, train_y, test_x, test_y, k=20) > 0.9
    result = linear_probe(train_x, train_y, test_x, test_y, 10, weight_decays=(1e-3,), epochs=100)
    assert result.top1 > 0.9 and math.isfinite(result.train_top1) and result.validation == ()
