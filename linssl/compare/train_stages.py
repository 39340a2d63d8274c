"""Stages 3 and 4: networks trained by the real trainer (``linssl.deep.loop.train``), measured like the theory
(docs/theory.md §8).

Stage 3 (linear): ``--arch linear`` (z = W(x − μ), μ the batch mean: centred inputs as the theory assumes),
no projector, the theory's squared loss (``loss="l2"``), stop-gradient target (``ema_momentum=0``), the predictor rule
without normalisation and ε = 0 (as in stage 2), minibatch SGD with momentum on actually augmented images,
started from the W₀ that stage 2 starts from. Its horizon matches stage 2's flow time: with momentum β a step
of lr moves the flow by lr/(1 − β), so epochs = ⌈t · (1 − β) / (lr · steps per epoch)⌉; lr = min(0.05,
1 / curvature₀), curvature₀ = p²_max λ_max(Σ) at W₀ (explicit steps diverge above ≈ 2 / curvature, §3).

Stage 4 (deep): the dataset's deep recipe (digits: arch small as in docs/results.md's measured table), weight decay η.
Measured: the final F̂, its effective rank and kept count, and per eigenvector u of F̂ the augmentation share
uᵀΣ_aug u / uᵀΣ_tot u of its embedding variance over K views per image.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from linssl.compare import measures
from linssl.deep.config import DeepConfig, build_online
from linssl.deep.monitor import effective_rank

#: SGD momentum of the linear stage
LINEAR_MOMENTUM = 0.9
LINEAR_LR_CAP = 0.05


def linear_config(dataset: str, data_dir: str | None, out: Path, wd: float, width: int, predictor: str,
                  seed: int, device: str, lr: float = 0.01, epochs: int = 1, batch_size: int = 128,
                  rho: float = 0.5, momentum: float = LINEAR_MOMENTUM) -> DeepConfig:
    """The deep-train settings of the linear stage (module docstring)."""
    return DeepConfig(dataset=dataset, data_dir=data_dir, out=str(out), arch="linear", width=width,
                      predictor=predictor, norm="none", eps=0.0, rho=rho, freq=1, epochs=epochs,
                      batch_size=batch_size, lr=lr, momentum=momentum, wd=wd, loss="l2", ema_momentum=0.0,
                      knn_every=0, device=device, seed=seed, progress=False, workers=0)


def initial_linear_weight(cfg: DeepConfig, channels: int) -> np.ndarray:
    """The W₀ the trainer starts the linear arch from (seeded by ``cfg.seed``)."""
    online = build_online(cfg.resolve(), channels)
    return online.backbone.linear.weight.detach().double().numpy()


def linear_schedule(W0: np.ndarray, view_cov: np.ndarray, predictor: str, t_max: float,
                    steps_per_epoch: int) -> tuple[float, int]:
    """(lr, epochs) of the linear stage (module docstring)."""
    f_max = float(measures.output_spectrum(W0, view_cov)[0])
    p_sq = f_max if predictor == "directpred" else f_max**2  # p = F^½ or F (directcopy)
    curvature = p_sq * float(np.linalg.eigvalsh(view_cov)[-1])
    lr = min(LINEAR_LR_CAP, 1.0 / max(curvature, 1e-12))
    epochs = max(1, math.ceil(t_max * (1 - LINEAR_MOMENTUM) / (lr * steps_per_epoch)))
    return lr, epochs


def deep_config(dataset: str, data_dir: str | None, out: Path, wd: float, predictor: str, seed: int,
                device: str, arch: str | None, epochs: int | None) -> DeepConfig:
    """The deep stage's recipe: on digits that of docs/results.md (arch small, width 8, projector 128 → 32, batch 128,
    lr 0.05 cosine, ε = 0.25, 20 epochs); elsewhere the trainer's defaults (ResNet-18, docs/theory.md §6)."""
    common = dict(dataset=dataset, data_dir=data_dir, out=str(out), wd=wd, predictor=predictor, seed=seed,
                  device=device, knn_every=0, progress=False)
    if dataset == "digits":
        cfg = DeepConfig(arch=arch or "small", width=8, proj_hidden=128, proj_dim=32, epochs=20, batch_size=128,
                         lr=0.05, lr_schedule="cosine", eps=0.25, workers=0, **common)
    else:
        cfg = DeepConfig(arch=arch or "resnet18", **common)
    return cfg if epochs is None else dataclasses.replace(cfg, epochs=epochs)


def train_run(cfg: DeepConfig, resume: bool) -> None:
    """Train ``cfg`` in ``cfg.out`` unless it finished already (summary.json); continue a stopped one."""
    from linssl.deep.loop import train

    run_dir = Path(cfg.out)
    if (run_dir / "summary.json").is_file():
        return
    train(cfg, resume=resume and (run_dir / "checkpoint.pt").is_file())


def load_online(run_dir: Path):
    from linssl.deep.checkpoint import load_run

    _, online, _ = load_run(run_dir, torch.device("cpu"))
    return online.eval()


def read_summary(run_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((run_dir / "summary.json").read_text())


def read_f_eigs(run_dir: Path) -> list[np.ndarray]:
    """The trainer's F̂ eigenvalues per epoch (metrics.jsonl)."""
    import json

    lines = [json.loads(t) for t in (run_dir / "metrics.jsonl").read_text().splitlines() if t.strip()]
    return [np.asarray(line["F_eigenvalues"], dtype=float) for line in lines]


@dataclass
class LinearRun:
    wd: float
    W: np.ndarray  # in the comparison space (m, D)
    F_eigs: np.ndarray
    gains_sq: np.ndarray
    kept: int | None
    kept_at_end: int
    settled: bool
    principal_angles_deg: np.ndarray
    linear_top1: float
    aug_share: np.ndarray
    epochs: int
    lr: float


def measure_linear(run_dir: Path, wd: float, basis: np.ndarray | None, data_cov: np.ndarray,
                   aug_cov: np.ndarray, theory_W: np.ndarray, theory_kept: int) -> LinearRun:
    """Stage 3's numbers for one finished run (module docstring)."""
    online = load_online(run_dir)
    W = online.backbone.linear.weight.detach().double().numpy()
    if basis is not None:
        W = W @ basis.T
    view_cov = data_cov + aug_cov
    eigs = measures.output_spectrum(W, view_cov)
    history = read_f_eigs(run_dir)
    ok = measures.settled(*measures.window_means(history)) if len(history) >= 4 else False
    count = measures.kept_count(eigs)
    gains = measures.sym_eigh_desc(W.T @ W)[0][:count]
    angles = measures.principal_angles_deg(measures.top_right_singular(theory_W, theory_kept),
                                           measures.top_right_singular(W, theory_kept))
    summary = read_summary(run_dir)
    vt = measures.top_right_singular(W, W.shape[0])
    return LinearRun(wd, W, eigs, gains, count if ok else None, count, ok, angles, float(summary["linear_top1"]),
                     measures.direction_shares(vt, aug_cov, view_cov), int(summary["epochs"]),
                     float(summary["config"]["lr"]))


@dataclass
class DeepRun:
    wd: float
    F_eigs: np.ndarray
    effective_rank: float
    kept: int
    shares: np.ndarray  # augmentation share along each eigenvector of F̂ (descending eigenvalues)
    aug_share_kept: float | None
    aug_share_discarded: float | None
    linear_top1: float
    collapsed: bool  # the embeddings do not vary (F̂ then holds only their constant mean): no shares


@torch.no_grad()
def measure_deep(run_dir: Path, wd: float, images: torch.Tensor, augment: torch.nn.Module, views: int,
                 seed: int) -> DeepRun:
    """Stage 4's numbers for one finished run: F̂ from the checkpoint, shares from K views per image."""
    online = load_online(run_dir)
    F_hat = online.predictor.tracker.value.detach().double().numpy()
    eigs, U = measures.sym_eigh_desc(F_hat)
    generator = torch.Generator().manual_seed(int(seed))
    chunks = []
    for start in range(0, images.shape[0], 512):
        batch = images[start:start + 512]
        chunks.append(torch.stack([online.projector(online.backbone(augment(batch, generator=generator))).double()
                                   for _ in range(views)], 1))
    emb = torch.cat(chunks).numpy()
    aug_cov, tot_cov = measures.within_and_total_cov(emb)
    # F̂ = E[zzᵀ] is not centred: a collapsed network (constant z) still has one eigenvalue, its mean's
    collapsed = not np.trace(tot_cov) > 1e-9 * max(float(np.trace(F_hat)), 1e-300)
    shares = np.full(len(eigs), np.nan) if collapsed else measures.direction_shares(U.T, aug_cov, tot_cov)
    count = measures.kept_count(eigs)
    summary = read_summary(run_dir)
    return DeepRun(wd, eigs, effective_rank(torch.as_tensor(eigs)), count, shares,
                   measures.mean_or_none(shares[:count]), measures.mean_or_none(shares[count:]),
                   float(summary["linear_top1"]), collapsed)


def sgd_on_model(data_cov: np.ndarray, aug_cov: np.ndarray, wd: float, W0: np.ndarray, predictor: str,
                 lr: float, steps: int, batch_size: int = 256, seed: int = 0, average_last: float = 0.2,
                 rho: float = 0.5, momentum: float = LINEAR_MOMENTUM) -> np.ndarray:
    """The linear stage's network, head, loss and optimiser (the trainer's ``TrainingStep``, the settings of
    ``linear_config``) on views x + ξ₁, x + ξ₂ of a Gaussian two-view model (x ~ N(0, X), ξ ~ N(0, X')):
    what stage 3 does on images, where X, X' are known exactly. Returns WᵀW averaged over the last
    ``average_last`` of the steps (SGD noise averaged out), as (d, d)."""
    from linssl.deep.config import build_optimizer, head_config
    from linssl.deep.models import LinearBackbone, OnlineNetwork, build_predictor, make_target
    from linssl.deep.step import TrainingStep
    from linssl.linear.data import ViewSampler, general_model
    from linssl.linear.dynamics import DTYPE

    m, d = W0.shape
    cfg = linear_config("digits", None, Path("unused"), wd, m, predictor, seed, "cpu", lr=lr, rho=rho,
                        momentum=momentum).resolve()
    torch.manual_seed(seed)
    backbone = LinearBackbone(d, m)
    with torch.no_grad():
        backbone.linear.weight.copy_(torch.as_tensor(W0, dtype=torch.float32))
    online = OnlineNetwork(backbone, torch.nn.Identity(), build_predictor(predictor, m, head_config(cfg)))
    target = make_target(online)
    step = TrainingStep(online, target, build_optimizer(online, cfg), loss="l2")
    sampler = ViewSampler(general_model(torch.as_tensor(data_cov, dtype=DTYPE), torch.as_tensor(aug_cov, dtype=DTYPE)),
                          seed)
    gram = np.zeros((d, d))
    start = int(steps * (1 - average_last))
    for k in range(steps):
        _, x1, x2 = sampler(batch_size)
        step(x1.float(), x2.float(), cfg.ema_momentum)
        if k >= start:
            W = backbone.linear.weight.detach().double().numpy()
            gram += W.T @ W
    return gram / (steps - start)
