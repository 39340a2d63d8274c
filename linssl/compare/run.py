"""``run_compare``: the linear theory's prediction against networks trained on real images (docs/theory.md §8).

Four stages, each leaving its results in the output folder DIR so ``resume`` skips what is finished:

1. ``estimate``  the measured two-view model X, X' under the trainer's augmentations (``estimate.py``)
                 -> DIR/data_cov.npy, aug_cov.npy, view_mean.npy (pca: pca_basis.npy), stage1.json
2. ``theory``    the simulator's flow on it for every η (``theory_stage.py``) -> theory_W_wd<η>.npy, theory.json
3. ``linear``    deep-train --arch linear for every η (``train_stages.py``) -> DIR/linear/wd_<η>/, linear_W_wd<η>.npy
4. ``deep``      deep-train with the dataset's deep recipe for every η -> DIR/deep/wd_<η>/

then compare.json, compare.png / .pdf and the table (``report.py``, ``figure.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from linssl.compare import estimate, measures, report, theory_stage, train_stages
from linssl.errors import LinsslError
from linssl.io import atomic_write, write_json

PREDICTORS = ("directpred", "directcopy")
#: flow time of stage 2 (and the horizon of stage 3): default, --quick
THEORY_TIME = (2000.0, 200.0)
#: views per image: default, --quick
VIEWS = (16, 8)
#: deep epochs on digits with --quick (the recipe's 20 otherwise)
QUICK_DEEP_EPOCHS = 3
CONFIG_FILE = "compare_config.json"


@dataclass(frozen=True)
class CompareConfig:
    """Every setting of a comparison (the ``linssl compare`` flags, one to one).

    ``views``/``theory_time``/``deep_epochs`` None: the defaults of the mode (``quick`` or not); ``images``
    None: every image of the pretraining split; ``space`` ``pixels`` or ``pca:D``.
    """

    out: str = ""
    dataset: str = "digits"
    data_dir: str | None = None
    wd: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)
    predictor: str = "directpred"
    space: str = "pixels"
    images: int | None = None
    views: int | None = None
    theory_time: float | None = None
    deep_arch: str | None = None
    deep_epochs: int | None = None
    seed: int = 0
    device: str = "auto"
    quick: bool = False
    resume: bool = False
    progress: bool = True

    @property
    def k_views(self) -> int:
        return self.views if self.views is not None else VIEWS[int(self.quick)]

    @property
    def t_max(self) -> float:
        return self.theory_time if self.theory_time is not None else THEORY_TIME[int(self.quick)]

    def check(self) -> None:
        """Every value that can be checked without reading data (one-line ``LinsslError``)."""
        from linssl.deep import datasets
        from linssl.deep.models import ARCHS

        if not self.out:
            raise LinsslError("give the output folder with --out DIR")
        if not self.wd:
            raise LinsslError("--wd needs at least one weight decay")
        for w in self.wd:
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise LinsslError(f"--wd values must be finite numbers >= 0, got {w}")
        if len(set(self.wd)) != len(self.wd):
            raise LinsslError(f"--wd lists a value twice: {list(self.wd)}")
        datasets.get_spec(self.dataset)
        estimate.parse_space(self.space)
        if self.predictor not in PREDICTORS:
            raise LinsslError(f"--predictor must be one of {', '.join(PREDICTORS)}, got {self.predictor!r}")
        if self.k_views < 2:
            raise LinsslError(f"--views must be >= 2 (X and X' are told apart by views of the same image), "
                              f"got {self.k_views}")
        if self.images is not None and self.images < 2:
            raise LinsslError(f"--images must be >= 2, got {self.images}")
        if not (self.t_max > 0 and math.isfinite(self.t_max)):
            raise LinsslError(f"--theory-time must be a positive number, got {self.t_max}")
        if self.deep_epochs is not None and self.deep_epochs < 1:
            raise LinsslError(f"--deep-epochs must be >= 1, got {self.deep_epochs}")
        if self.deep_arch is not None and (self.deep_arch not in ARCHS or self.deep_arch == "linear"):
            raise LinsslError(f"--deep-arch must be one of {', '.join(a for a in ARCHS if a != 'linear')}, "
                              f"got {self.deep_arch!r}")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise LinsslError(f"--out {out} is a file; give a folder")
        if not self.resume and out.is_dir() and any(out.iterdir()):
            raise LinsslError(f"--out {out} is not empty; pass --resume to continue that comparison or choose "
                              "another folder")


@dataclass
class CompareResult:
    """compare.json's content, the printed table, and the folder."""

    document: dict[str, Any]
    table: str
    out: Path


class _Progress:
    """One bar over every unit of work, named after the current stage; a line per stage on stderr."""

    def __init__(self, enabled: bool, total: int) -> None:
        from tqdm.auto import tqdm

        self.enabled = enabled
        self.bar = tqdm(total=total, desc="compare", leave=False, dynamic_ncols=True,
                        disable=None if enabled else True, file=sys.stderr)

    def stage(self, name: str) -> None:
        self.bar.set_description(name)
        if self.enabled:
            self.bar.write(f"linssl compare: {name}", file=sys.stderr)

    def step(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: np.save(tmp, np.asarray(array), allow_pickle=False))


def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    """A JSON list: NaN (no variance along a direction) becomes null."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def wd_tag(wd: float) -> str:
    return f"wd{wd:g}"


def _check_resume(cfg: CompareConfig, out: Path) -> None:
    """On --resume the settings must be those the folder was started with (except resume/progress)."""
    saved_path = out / CONFIG_FILE
    mine = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("resume", "progress")}
    mine = json.loads(json.dumps(mine))
    if saved_path.is_file():
        try:
            saved = json.loads(saved_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LinsslError(f"{saved_path} is not valid JSON; start the comparison in a new folder") from None
        if saved != mine:
            diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
            raise LinsslError(f"--resume with other settings than {out} was started with ({', '.join(diff)})")
    else:
        write_json(saved_path, mine)


def _load_images(cfg: CompareConfig) -> tuple[torch.Tensor, int]:
    """The pretraining split's images (the networks train on it) — a seeded subset of ``images`` — and
    the number of channels."""
    from linssl.deep import datasets

    spec = datasets.resolve_spec(cfg.dataset, cfg.data_dir)
    data = datasets.load_split(cfg.dataset, cfg.data_dir, "pretrain")
    n_total = len(data)
    n = n_total if cfg.images is None else cfg.images
    if n > n_total:
        raise LinsslError(f"--images {n} is more than the {n_total} pretraining images of {cfg.dataset}")
    index = np.sort(np.random.default_rng(cfg.seed).permutation(n_total)[:n])
    images = getattr(data, "images", None)
    if images is not None:
        return images[torch.as_tensor(index)], spec.channels
    return torch.stack([torch.as_tensor(data[int(i)][0]) for i in index]), spec.channels


def _dimension(cfg: CompareConfig) -> int:
    from linssl.deep import datasets
    from linssl.linear.simulation import MAX_DIM

    spec = datasets.get_spec(cfg.dataset)
    space = estimate.parse_space(cfg.space)
    pixels = spec.channels * spec.image_size**2
    dim = pixels if space.kind == "pixels" else int(space.dim)
    if dim > pixels:
        raise LinsslError(f"--space {cfg.space}: {cfg.dataset} images have only {pixels} pixel values")
    if dim > MAX_DIM:
        raise LinsslError(f"{cfg.dataset} pixels are {dim} dimensions, more than the simulator's {MAX_DIM}; "
                          "use --space pca:D")
    return dim


def run_compare(cfg: CompareConfig) -> CompareResult:
    """Run (or resume) the four stages and write compare.json, compare.png/.pdf (module docstring)."""
    from linssl.deep.augment import BatchAugment
    from linssl.deep.config import augment_config

    cfg.check()
    dim = _dimension(cfg)
    images, channels = _load_images(cfg)
    if images.shape[0] < dim:
        raise LinsslError(f"{images.shape[0]} images are fewer than the {dim} dimensions of the space; "
                          "use more images or --space pca:D with a smaller D")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(cfg, out)
    k = cfg.k_views
    lin0 = train_stages.linear_config(cfg.dataset, cfg.data_dir, out, cfg.wd[0], dim, cfg.predictor, cfg.seed,
                                      cfg.device)
    augment = BatchAugment(augment_config(lin0.resolve()))
    progress = _Progress(cfg.progress, 2 + 2 * len(cfg.wd))
    try:
        stage1 = _stage_estimate(cfg, out, images, augment, k, progress)
        basis = _load_npy(out / "pca_basis.npy") if (out / "pca_basis.npy").is_file() else None
        X, Xa = _load_npy(out / "data_cov.npy"), _load_npy(out / "aug_cov.npy")
        W0 = train_stages.initial_linear_weight(lin0, channels)
        if basis is not None:
            W0 = W0 @ basis.T
        theory = _stage_theory(cfg, out, X, Xa, W0, progress)
        linear = _stage_linear(cfg, out, X, Xa, W0, basis, theory, progress)
        deep = _stage_deep(cfg, out, images, augment, k, progress)
    finally:
        progress.close()
    document = report.document(cfg, dim, stage1, theory, linear, deep)
    write_json(out / "compare.json", document)
    from linssl.compare import figure

    figure.write_compare_figure(out)
    return CompareResult(document, report.table(document), out)


def _stage_estimate(cfg: CompareConfig, out: Path, images: torch.Tensor, augment, k: int,
                    progress: _Progress) -> dict[str, Any]:
    progress.stage("stage 1/4: two-view model")
    marker = out / "stage1.json"
    if marker.is_file():
        progress.step()
        return json.loads(marker.read_text())
    space = estimate.parse_space(cfg.space)
    basis = None
    if space.kind == "pca":
        from linssl.deep.augment import eval_transform

        clean = eval_transform(images, augment.cfg).flatten(1).double().numpy()
        basis = estimate.pca_basis(clean, int(space.dim))
        _save_npy(out / "pca_basis.npy", basis)
    views = estimate.draw_views(images, augment, k, cfg.seed, basis)
    model = estimate.estimate_two_view(views)
    halves = estimate.half_split_error(views, cfg.seed)
    _save_npy(out / "data_cov.npy", model.data_cov)
    _save_npy(out / "aug_cov.npy", model.aug_cov)
    _save_npy(out / "view_mean.npy", model.mean)
    info = {
        "images": model.images,
        "views_per_image": model.views,
        "dim": model.dim,
        "commutator_norm": estimate.commutator_norm(model.data_cov, model.aug_cov),
        "half_split_rel_diff": halves,
        "clipped_eigenvalues": model.clipped_count,
        "clipped_share_of_trace": model.clipped_share,
        "trace_data_cov": float(np.trace(model.data_cov)),
        "trace_aug_cov": float(np.trace(model.aug_cov)),
    }
    write_json(marker, info)
    progress.step()
    return info


def _stage_theory(cfg: CompareConfig, out: Path, X: np.ndarray, Xa: np.ndarray, W0: np.ndarray,
                  progress: _Progress) -> list[dict[str, Any]]:
    progress.stage("stage 2/4: theory (simulator flow on the measured model)")
    marker = out / "theory.json"
    if marker.is_file():
        progress.step()
        return json.loads(marker.read_text())["runs"]
    runs = theory_stage.theory_runs(X, Xa, tuple(cfg.wd), W0, cfg.predictor, cfg.t_max)
    docs = []
    for r in runs:
        name = f"theory_W_{wd_tag(r.wd)}.npy"
        _save_npy(out / name, r.W)
        docs.append({"wd": r.wd, "kept": r.kept, "kept_at_end": r.kept_at_end, "settled": r.settled,
                     "t_final": r.t_final, "W": name, "gains_sq": r.gains_sq.tolist(), "F_eigs": r.F_eigs.tolist(),
                     "commuting_kept": r.commuting_kept, "aug_share": _finite_or_none(r.aug_share)})
    approx = measures.commuting_threshold(X, Xa)
    write_json(marker, {"runs": docs, "commuting": {k: v.tolist() for k, v in approx.items()}})
    progress.step()
    return docs


def _stage_linear(cfg: CompareConfig, out: Path, X: np.ndarray, Xa: np.ndarray, W0: np.ndarray,
                  basis: np.ndarray | None, theory: list[dict[str, Any]], progress: _Progress) -> list[dict[str, Any]]:
    from linssl.deep import datasets

    progress.stage("stage 3/4: linear network (deep-train --arch linear)")
    n_train = len(datasets.load_split(cfg.dataset, cfg.data_dir, "pretrain"))
    lin = train_stages.linear_config(cfg.dataset, cfg.data_dir, out, cfg.wd[0], W0.shape[0], cfg.predictor,
                                     cfg.seed, cfg.device)
    lr, epochs = train_stages.linear_schedule(W0, X + Xa, cfg.predictor, cfg.t_max, n_train // lin.batch_size)
    docs = []
    for t in theory:
        wd = float(t["wd"])
        run_dir = out / "linear" / wd_tag(wd)
        run_cfg = dataclasses.replace(lin, out=str(run_dir), wd=wd, lr=lr, epochs=epochs)
        train_stages.train_run(run_cfg, cfg.resume)
        theory_W = _load_npy(out / t["W"])
        theory_kept = t["kept"] if t["kept"] is not None else t["kept_at_end"]
        r = train_stages.measure_linear(run_dir, wd, basis, X, Xa, theory_W, theory_kept)
        name = f"linear_W_{wd_tag(wd)}.npy"
        _save_npy(out / name, r.W)
        docs.append({"wd": wd, "kept": r.kept, "kept_at_end": r.kept_at_end, "settled": r.settled, "W": name,
                     "principal_angles_deg": r.principal_angles_deg.tolist(), "linear_top1": r.linear_top1,
                     "gains_sq": r.gains_sq.tolist(), "F_eigs": r.F_eigs.tolist(),
                     "aug_share": _finite_or_none(r.aug_share),
                     "epochs": r.epochs, "lr": r.lr, "momentum": train_stages.LINEAR_MOMENTUM,
                     "run": str(run_dir.relative_to(out))})
        progress.step()
    return docs


def _stage_deep(cfg: CompareConfig, out: Path, images: torch.Tensor, augment, k: int,
                progress: _Progress) -> list[dict[str, Any]]:
    progress.stage("stage 4/4: deep network")
    epochs = cfg.deep_epochs if cfg.deep_epochs is not None else (QUICK_DEEP_EPOCHS if cfg.quick else None)
    docs = []
    for wd in cfg.wd:
        run_dir = out / "deep" / wd_tag(wd)
        run_cfg = train_stages.deep_config(cfg.dataset, cfg.data_dir, run_dir, float(wd), cfg.predictor, cfg.seed,
                                           cfg.device, cfg.deep_arch, epochs)
        train_stages.train_run(run_cfg, cfg.resume)
        r = train_stages.measure_deep(run_dir, float(wd), images, augment, k, cfg.seed + 1)
        docs.append({"wd": float(wd), "effective_rank": r.effective_rank, "kept": r.kept,
                     "aug_share_kept": r.aug_share_kept, "aug_share_discarded": r.aug_share_discarded,
                     "linear_top1": r.linear_top1, "F_eigs": r.F_eigs.tolist(), "aug_share": _finite_or_none(r.shares),
                     "collapsed": r.collapsed, "arch": run_cfg.arch, "epochs": run_cfg.epochs,
                     "run": str(run_dir.relative_to(out))})
        progress.step()
    return docs
