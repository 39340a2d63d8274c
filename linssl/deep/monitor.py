"""What a run measures besides its loss: the spectrum of F̂ and of W_p, the effective rank, the std of the
normalised embedding (collapse), and kNN / linear-probe accuracy of the backbone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linssl.deep import datasets, evaluate
from linssl.deep.config import DeepConfig, augment_config
from linssl.deep.models import OnlineNetwork


def effective_rank(eigenvalues: Tensor) -> float:
    """exp(−Σ p log p) with p = max(s, 0)/Σ max(s, 0): 1 for one direction, m for a flat spectrum."""
    s = eigenvalues.double().clamp_min(0.0)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def normalised_std(z: Tensor) -> Tensor:
    """Mean over dimensions of the batch std of z/‖z‖: ≈ 1/sqrt(m) when spread, → 0 when collapsed."""
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()

def evaluate_backbone(
    backbone: nn.Module, cfg: DeepConfig, train_set, test_set, num_classes: int, device: torch.device, probe: bool,
    spec: datasets.DatasetSpec | None = None,
) -> dict[str, Any]:
    """kNN top-1 (k, T from cfg) and, if ``probe``, the linear probe on frozen backbone features."""
    aug = augment_config(cfg, spec)
    was_training = backbone.training
    train_x, train_y = evaluate.extract_features(backbone, train_set, aug, device, num_workers=cfg.workers, amp=cfg.amp)
    test_x, test_y = evaluate.extract_features(backbone, test_set, aug, device, num_workers=cfg.workers, amp=cfg.amp)
    backbone.train(was_training)
    out: dict[str, Any] = {
        "knn_top1": evaluate.knn_top1(train_x, train_y, test_x, test_y, k=cfg.knn_k, temperature=cfg.knn_t,
                                      num_classes=num_classes, device=device),
        "knn_k": min(cfg.knn_k, train_x.shape[0]),  # as used: clipped to the train size
        "knn_t": cfg.knn_t,
    }
    if probe:
        chosen = {} if cfg.probe_wd is None else {"weight_decays": (cfg.probe_wd,)}
        result = evaluate.linear_probe(train_x, train_y, test_x, test_y, num_classes, epochs=cfg.probe_epochs,
                                       seed=cfg.seed, device=str(device), **chosen)
        out.update(linear_top1=result.top1, linear_train_top1=result.train_top1,
                   probe_weight_decay=result.weight_decay, probe_epochs=result.epochs)
    return out

def spectra(online: OnlineNetwork) -> dict[str, Any]:
    """Eigenvalues of F̂ (descending), its effective rank, and the predictor's spectrum:
    eigenvalues of a set W_p (symmetric), singular values of a trained linear one, None for an MLP."""
    head = online.predictor
    corr = head.tracker.value.detach().double().cpu()
    eig_f = torch.linalg.eigvalsh(0.5 * (corr + corr.T)).flip(0)
    matrix = head.matrix()
    if matrix is None:
        pred = None
    elif head.trained:
        pred = torch.linalg.svdvals(matrix.detach().double().cpu())
    else:
        w = matrix.detach().double().cpu()
        pred = torch.linalg.eigvalsh(0.5 * (w + w.T)).flip(0)
    return {
        "F_eigenvalues": eig_f.tolist(),
        "effective_rank": effective_rank(eig_f),
        "predictor_spectrum": None if pred is None else pred.tolist(),
        "predictor_spectrum_kind": None if pred is None else ("singular" if head.trained else "eigen"),
    }
