"""Evaluation of a frozen encoder: feature extraction, weighted kNN monitor, linear probe (docs/theory.md §6).

Nothing here looks at the test set to choose anything: the probe's weight decay is chosen on a
held-out part of the train features and the reported accuracy is the test top-1 after the final
epoch (never the best epoch on test).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from linssl.deep import datasets
from linssl.deep.augment import AugmentConfig, eval_transform, preset
from linssl.deep.datasets import DatasetSpec
from linssl.errors import LinsslError

#: bytes of similarity matrix per kNN test chunk (float32): bounds memory for large train sets
KNN_CHUNK_BYTES = 1 << 28


def eval_config(spec_or_cfg: DatasetSpec | AugmentConfig | str) -> AugmentConfig:
    """The deterministic evaluation view: an AugmentConfig as given, a spec's size and mean/std, or a preset."""
    if isinstance(spec_or_cfg, AugmentConfig):
        return spec_or_cfg
    if isinstance(spec_or_cfg, DatasetSpec):
        return AugmentConfig(out_size=spec_or_cfg.image_size, mean=spec_or_cfg.mean, std=spec_or_cfg.std)
    return preset(spec_or_cfg)


def _batches(dataset, batch_size: int, device: torch.device, num_workers: int | None):
    """(uint8 images, labels) batches in dataset order: direct slices of ``.images`` when in memory,
    otherwise a DataLoader (decoding in ``num_workers`` processes, default min(8, CPUs))."""
    pin = device.type == "cuda"
    if hasattr(dataset, "images"):
        for start in range(0, len(dataset), batch_size):
            images = dataset.images[start:start + batch_size]
            if pin and images.device.type == "cpu":
                images = images.pin_memory()
            yield images, dataset.labels[start:start + batch_size].cpu()
        return
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=pin)
    yield from datasets.loader_batches(loader)


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    dataset,
    spec_or_cfg: DatasetSpec | AugmentConfig | str,
    device: str | torch.device,
    batch_size: int = 256,
    *,
    num_workers: int | None = None,
    amp: bool = False,
) -> tuple[Tensor, Tensor]:
    """Encoder outputs on ``eval_transform`` views of every item, in dataset order, in eval mode.

    Returns (features float32 (N, D) on the CPU, labels int64 (N,)). The encoder's train/eval mode
    is restored afterwards. ``amp``: bfloat16 autocast on CUDA.
    """
    if len(dataset) == 0:
        raise LinsslError("cannot extract features of an empty dataset")
    cfg = eval_config(spec_or_cfg)
    device = torch.device(device)
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    try:
        for images, y in _batches(dataset, batch_size, device, num_workers):
            x = eval_transform(images.to(device, non_blocking=True), cfg)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                out = encoder(x)
            feats.append(out.float().flatten(1).cpu())
            labels.append(torch.as_tensor(y, dtype=torch.int64))
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def _check_features(feats: Tensor, labels: Tensor, what: str) -> None:
    if feats.ndim != 2 or labels.shape != (feats.shape[0],):
        raise LinsslError(f"{what}: features must be (N, D) with N labels, got {tuple(feats.shape)} and "
                          f"{tuple(labels.shape)}")
    if feats.shape[0] == 0:
        raise LinsslError(f"{what}: no samples")


def _num_classes(num_classes: int | None, *labels: Tensor) -> int:
    found = max(int(t.max()) for t in labels) + 1
    if num_classes is None:
        return found
    if found > num_classes:
        raise LinsslError(f"labels go up to {found - 1} but num_classes is {num_classes}")
    return num_classes


@torch.no_grad()
def knn_top1(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Weighted kNN accuracy (InstDisc / DirectPred monitor).

    s_ij = cos(test_i, train_j); the k most similar train samples vote for their class with weight
    exp(s_ij / T); prediction = class with the largest total vote. k is clipped to the train size.
    Test samples are processed in chunks so the similarity matrix stays below ``KNN_CHUNK_BYTES``;
    ``device`` None means CUDA when available, else the features' device.
    """
    _check_features(train_feats, train_labels, "kNN train set")
    _check_features(test_feats, test_labels, "kNN test set")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise LinsslError(f"kNN: train features have dim {train_feats.shape[1]}, test {test_feats.shape[1]}")
    if k < 1 or temperature <= 0:
        raise LinsslError(f"kNN needs k >= 1 and temperature > 0, got k={k}, T={temperature}")
    if int(train_labels.min()) < 0:
        raise LinsslError("kNN train labels must be >= 0 (pass the labelled train split, not pretrain)")
    classes = _num_classes(num_classes, train_labels, test_labels)
    if device is None:  # the similarity matmul and top-k are the cost: use the GPU when there is one
        device = "cuda" if torch.cuda.is_available() else train_feats.device
    device = torch.device(device)
    train = F.normalize(train_feats.float().to(device), dim=1)
    train_y = train_labels.to(device)
    k = min(k, train.shape[0])
    chunk = max(1, KNN_CHUNK_BYTES // (4 * train.shape[0]))
    correct = 0
    for start in range(0, test_feats.shape[0], chunk):
        test = F.normalize(test_feats[start:start + chunk].float().to(device), dim=1)
        sims, idx = (test @ train.T).topk(k, dim=1)
        votes = torch.zeros(test.shape[0], classes, device=device)
        votes.scatter_add_(1, train_y[idx], torch.exp(sims / temperature))
        correct += int((votes.argmax(dim=1) == test_labels[start:start + chunk].to(device)).sum())
    return correct / test_feats.shape[0]


# ---------------------------------------------------------------- linear probe


@dataclass
class ProbeResult:
    """Test top-1 after the final epoch, train top-1 of the same classifier, the weight decay chosen
    on held-out train data, epochs, and (weight decay, held-out top-1) for every candidate."""

    top1: float
    train_top1: float
    weight_decay: float
    epochs: int
    validation: tuple[tuple[float, float], ...] = ()


def stratified_holdout(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(fit indices, held-out indices): from every class with >= 2 samples, round(fraction · n_c)
    (at least 1) seeded-random samples are held out."""
    gen = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for cls in torch.unique(labels.cpu()):
        members = torch.nonzero(labels.cpu() == cls).flatten()
        members = members[torch.randperm(members.numel(), generator=gen)]
        n_held = 0 if members.numel() < 2 else max(1, round(fraction * members.numel()))
        held.append(members[:n_held])
        fit.append(members[n_held:])
    return torch.sort(torch.cat(fit)).values, torch.sort(torch.cat(held)).values


@dataclass(frozen=True)
class LogisticModel:
    """A fitted probe: logits = W (x − μ) / σ + b."""

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor

    @torch.no_grad()
    def logits(self, feats: Tensor) -> Tensor:
        return ((feats.float().to(self.weight.device) - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, feats: Tensor) -> Tensor:
        return self.logits(feats).argmax(dim=1)


def fit_logistic(
    feats: Tensor,
    labels: Tensor,
    num_classes: int,
    weight_decay: float,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    device: torch.device,
) -> LogisticModel:
    """Multinomial logistic regression on standardised features.

    Features are standardised with their own mean/std, z = (x − μ) / (σ + 1e-6); minimise the
    full-batch objective mean CE(Wz + b, y) + (wd / 2)‖W‖²_F from W = 0, b = 0 with L-BFGS
    (strong-Wolfe line search, step scale ``lr``) for ``epochs`` iterations (one pass over the data
    each, plus line-search passes). Loss and gradient are accumulated over chunks of ``batch_size``
    rows, so memory stays bounded; the result is deterministic (no sampling).
    """
    x = feats.float().to(device)
    y = labels.to(device)
    mu, sigma = x.mean(dim=0), x.std(dim=0, unbiased=False) + 1e-6
    x = x.sub(mu).div_(sigma)  # one new copy (x may be the caller's tensor: never changed in place)
    n = x.shape[0]
    weight = torch.zeros(num_classes, x.shape[1], device=device, requires_grad=True)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=lr, max_iter=epochs, max_eval=2 * epochs, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        total = 0.5 * weight_decay * weight.square().sum()
        total.backward()
        total = total.detach()
        for start in range(0, n, batch_size):
            chunk = F.cross_entropy(x[start:start + batch_size] @ weight.T + bias, y[start:start + batch_size],
                                    reduction="sum") / n
            chunk.backward()
            total = total + chunk.detach()
        return total

    with torch.enable_grad():
        opt.step(closure)
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise LinsslError("linear probe diverged (non-finite weights); lower the probe learning rate")
    return LogisticModel(weight.detach(), bias.detach(), mu, sigma)


def _accuracy(model: LogisticModel, feats: Tensor, labels: Tensor) -> float:
    return float((model.predict(feats).cpu() == labels.cpu()).double().mean())


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    weight_decays: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
    epochs: int = 100,
    lr: float = 1.0,
    batch_size: int = 65536,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> ProbeResult:
    """Linear probe on frozen features: choose the weight decay on held-out train data, refit on all of
    train, report test top-1 at the final epoch.

    Each candidate is fit (:func:`fit_logistic`: full-batch L-BFGS, ``epochs`` iterations,
    ``batch_size`` rows per chunk) on a stratified (1 − val_fraction) part of train, drawn from
    ``seed``, and scored on the rest (ties go to the larger weight decay); the winner is refit on the
    whole train set. The test features are used once, for the reported accuracy.
    """
    _check_features(train_feats, train_labels, "probe train set")
    _check_features(test_feats, test_labels, "probe test set")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise LinsslError(f"probe: train features have dim {train_feats.shape[1]}, test {test_feats.shape[1]}")
    if int(train_labels.min()) < 0 or int(test_labels.min()) < 0:
        raise LinsslError("probe labels must be >= 0 (pass the labelled train split, not pretrain)")
    _num_classes(num_classes, train_labels, test_labels)
    if not weight_decays or min(weight_decays) < 0:
        raise LinsslError(f"probe weight decays must be a non-empty list of values >= 0, got {weight_decays}")
    if epochs < 1 or lr <= 0 or batch_size < 1 or not 0 < val_fraction < 1:
        raise LinsslError(f"probe needs epochs >= 1, lr > 0, batch size >= 1, 0 < val fraction < 1; got "
                          f"{epochs}, {lr}, {batch_size}, {val_fraction}")
    device = torch.device(device)
    fit = dict(epochs=epochs, lr=lr, batch_size=batch_size, device=device)
    validation: list[tuple[float, float]] = []
    chosen = float(weight_decays[0])
    if len(weight_decays) > 1:
        fit_idx, held_idx = stratified_holdout(train_labels, val_fraction, seed)
        if held_idx.numel() == 0 or fit_idx.numel() == 0:
            raise LinsslError("probe train set too small to hold out a validation part; pass one weight decay")
        for wd in sorted(float(w) for w in weight_decays):
            model = fit_logistic(train_feats[fit_idx], train_labels[fit_idx], num_classes, wd, **fit)
            validation.append((wd, _accuracy(model, train_feats[held_idx], train_labels[held_idx])))
        best = max(acc for _, acc in validation)
        chosen = max(wd for wd, acc in validation if acc == best)
    model = fit_logistic(train_feats, train_labels, num_classes, chosen, **fit)
    return ProbeResult(
        top1=_accuracy(model, test_feats, test_labels),
        train_top1=_accuracy(model, train_feats, train_labels),
        weight_decay=chosen,
        epochs=epochs,
        validation=tuple(validation),
    )
