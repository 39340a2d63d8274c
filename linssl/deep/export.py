"""Take a trained backbone away: the online backbone of a run as a plain state_dict, under torchvision's
ResNet key names (``format="torchvision"``) or linssl's own (``format="linssl"``).

linssl's ResNet (``linssl.deep.models.ResNet``) and torchvision's have the same layers in the same order
(ResNet-50 v1.5: the stride on the 3×3 conv; a 1×1 conv + BN shortcut exactly where the shape changes);
only the names differ:

    stem.0 -> conv1          stem.1 -> bn1          layers.<i>.<j> -> layer<i+1>.<j>
    ...shortcut.0 / .1 -> ...downsample.0 / .1      (block conv1/bn1/conv2/bn2[/conv3/bn3] keep their names)

torchvision's ``fc`` classifier has no counterpart (the backbone ends at the pooled features). The CIFAR stem
(3×3 conv stride 1, no max-pool) keeps the names, but its conv1 weight is 3×3, not 7×7; a dataset with other
than 3 channels (digits) changes conv1's input channels: ``torchvision_differences`` says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from linssl.deep.config import CHECKPOINT
from linssl.deep.models import ResNet
from linssl.errors import LinsslError
from linssl.io import atomic_write, check_output_path

FORMATS = ("torchvision", "linssl")
_STEM = {"0": "conv1", "1": "bn1"}  # the stem's conv and BN (ReLU and max-pool hold no weights)


def torchvision_key(name: str) -> str:
    """The torchvision ResNet name of a linssl ResNet state_dict key (see the module docstring)."""
    parts = name.split(".")
    if parts[0] == "stem" and len(parts) >= 3 and parts[1] in _STEM:
        return ".".join([_STEM[parts[1]], *parts[2:]])
    if parts[0] == "layers" and len(parts) >= 5 and parts[1].isdigit() and parts[2].isdigit():
        rest = ["downsample", *parts[4:]] if parts[3] == "shortcut" else parts[3:]
        return ".".join([f"layer{int(parts[1]) + 1}", parts[2], *rest])
    raise LinsslError(f"{name!r} is not a key of a linssl ResNet backbone")


def torchvision_state_dict(backbone_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A linssl ResNet backbone's state_dict renamed to torchvision's keys (copies on the CPU; no ``fc``)."""
    return {torchvision_key(k): v.detach().to("cpu", copy=True) for k, v in backbone_state.items()}


def torchvision_differences(arch: str, stem: str, in_channels: int) -> list[str]:
    """How an exported backbone differs from ``torchvision.models.<arch>()``, each with the fix before loading."""
    notes = ["no fc: set m.fc = torch.nn.Identity() (m(x) then gives the pooled features) or load with strict=False"]
    if stem == "cifar":
        notes.append(f"CIFAR stem: conv1.weight is (64, {in_channels}, 3, 3), not torchvision's (64, 3, 7, 7), and "
                     f"there is no max-pool: set m.conv1 = torch.nn.Conv2d({in_channels}, 64, 3, 1, 1, bias=False) "
                     "and m.maxpool = torch.nn.Identity() before loading")
    elif in_channels != 3:
        notes.append(f"conv1 takes {in_channels} input channels, not 3: set "
                     f"m.conv1 = torch.nn.Conv2d({in_channels}, 64, 7, 2, 3, bias=False) before loading")
    return notes


@dataclass(frozen=True)
class ExportResult:
    """What ``export_backbone`` wrote: file, format, the run's arch / stem / epoch, tensors, parameters, notes."""

    path: Path
    format: str
    arch: str
    stem: str
    epoch: int
    epochs: int
    tensors: int
    parameters: int
    notes: tuple[str, ...]


def export_backbone(run_dir: str | os.PathLike, out: str | os.PathLike, format: str = "torchvision",
                    overwrite: bool = False) -> ExportResult:
    """Write the online backbone of the run in ``run_dir`` (last checkpoint: finished or interrupted) to ``out``
    as a plain state_dict (``torch.load(out, weights_only=True)`` reads it), atomically.

    ``out`` must not exist unless ``overwrite`` (never the run's own checkpoint). ``format="torchvision"``
    needs a ResNet backbone.
    """
    from linssl.deep.checkpoint import load_run

    if format not in FORMATS:
        raise LinsslError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not Path(run_dir).is_dir():
        raise LinsslError(f"run folder {run_dir} does not exist")
    out = check_output_path(out)
    if out.resolve() == (Path(run_dir) / CHECKPOINT).resolve():
        raise LinsslError(f"--out {out} is the run's own checkpoint; choose another file")
    if out.exists() and not overwrite:
        raise LinsslError(f"{out} exists; pass --overwrite to replace it or choose another --out")
    cfg, online, checkpoint = load_run(run_dir, torch.device("cpu"))
    backbone = online.backbone
    state = backbone.state_dict()
    notes: list[str] = []
    if format == "torchvision":
        if not isinstance(backbone, ResNet):
            raise LinsslError(f"--format torchvision needs a ResNet backbone; {run_dir} trained arch {cfg.arch!r}: "
                              "use --format linssl")
        state = torchvision_state_dict(state)
        notes = torchvision_differences(cfg.arch, cfg.stem, int(state["conv1.weight"].shape[1]))
    else:
        state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    return ExportResult(out, format, cfg.arch, str(cfg.stem), int(checkpoint["epoch"]), cfg.epochs, len(state),
                        sum(p.numel() for p in backbone.parameters()), tuple(notes))
