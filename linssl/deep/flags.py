"""deep-train's flags, generated from ``DeepConfig``: one flag per field (``--field-name``), its type,
``nargs`` and choices read from the field's annotation and ``config.field_choices``, its default shown
from the dataclass, and its group and help from ``FLAG_HELP`` below (the only hand-written part).

Every flag defaults to ``None`` (not given), so ``cli_train.merged_config`` can layer defaults < recipe
< saved run < ``--config`` TOML < flags. Booleans are ``--x`` / ``--no-x``; tuples take several numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from linssl.deep.config import DeepConfig, field_choices
from linssl.deep.recipes import recipe_names

GROUPS = ("data and run", "network", "predictor", "optimisation", "augmentation", "execution", "evaluation")

#: field -> (group, help); the default is appended from DeepConfig
FLAG_HELP: dict[str, tuple[str, str]] = {
    "dataset": ("data and run", "dataset to pretrain on"),
    "data_dir": ("data and run", "folder holding the dataset's official files"),
    "out": ("data and run", "run folder (config.json, metrics.jsonl, checkpoint.pt, ...)"),
    "recipe": ("data and run", "reference recipe to start from: " + ", ".join(recipe_names())
                               + " (linssl recipes shows their sources); other flags override it"),
    "download": ("data and run", "fetch STL-10 / CIFAR archives first"),
    "arch": ("network", "backbone"),
    "stem": ("network", "ResNet stem: cifar (3x3, no max-pool) or imagenet (7x7 + max-pool); auto: cifar for "
                        "images of 32 px or less (CIFAR, digits), imagenet otherwise (STL-10, ImageNet)"),
    "width": ("network", "channels of the first layer of the small arch; output dimension of the linear arch"),
    "projector": ("network", "projector preset: directpred 512 -> 128 or byol 4096 -> 256"),
    "proj_hidden": ("network", "projector hidden width (overrides the preset)"),
    "proj_dim": ("network", "projector output m (overrides the preset)"),
    "proj_bn_affine": ("network", "learned scale and shift in the projector's BN (--no-proj-bn-affine: standardise "
                                  "only, as the DirectPred authors)"),
    "predictor": ("predictor", "directpred, directcopy, directset (needs --alpha), linear or mlp (trained, BYOL)"),
    "alpha": ("predictor", "DirectSet exponent: W_p = g(F)^alpha + eps I"),
    "norm": ("predictor", "normalisation g of F (spectral if not given). DirectCopy's paper constants are "
                          "unconfirmed: the authors' code used none, another group spectral with eps 0.25"),
    "eps": ("predictor", "eps added to the predictor's diagonal (0.01 if not given)"),
    "rho": ("predictor", "EMA of F: F <- rho F + (1 - rho) mean(z z^T)"),
    "freq": ("predictor", "set W_p from F every FREQ steps"),
    "pred_hidden": ("predictor", "hidden width of the mlp predictor"),
    "epochs": ("optimisation", "epochs"),
    "batch_size": ("optimisation", "global batch size (split over torchrun ranks)"),
    "lr": ("optimisation", "learning rate; the peak lr after warm-up is lr, or lr x batch / 256 with "
                           "--lr-scaling linear"),
    "lr_scaling": ("optimisation", "none: lr as given; linear: lr x batch-size / 256 (BYOL, solo-learn)"),
    "momentum": ("optimisation", "SGD / LARS momentum"),
    "wd": ("optimisation", "weight decay"),
    "optimizer": ("optimisation", "sgd or lars"),
    "lars_eta": ("optimisation", "LARS trust coefficient"),
    "lars_clip": ("optimisation", "clip the LARS layer rate at lr (solo-learn's clip_lr)"),
    "lr_schedule": ("optimisation", "constant or cosine (after the warm-up)"),
    "warmup_epochs": ("optimisation", "linear lr warm-up epochs"),
    "exclude_bn_bias_wd": ("optimisation", "no weight decay on BN and biases (if not given: on for lars, as BYOL "
                                           "and solo-learn; off for sgd, as the DirectPred authors)"),
    "ema_momentum": ("optimisation", "target momentum m: target <- m target + (1 - m) online"),
    "ema_schedule": ("optimisation", "constant, or cosine from m to 1 (BYOL)"),
    "crop_scale": ("augmentation", "random-resized-crop area range (if not given: the dataset's preset)"),
    "jitter": ("augmentation", "colour jitter strengths brightness, contrast, saturation, hue (preset if not given)"),
    "jitter_p": ("augmentation", "colour jitter probability (preset if not given)"),
    "gray_p": ("augmentation", "grayscale probability (preset if not given)"),
    "blur_p": ("augmentation", "Gaussian blur probability of view 1 and view 2 (preset, the same for both, if "
                               "not given; BYOL: 1.0 0.1)"),
    "solarize_p": ("augmentation", "solarisation probability of view 1 and view 2 (BYOL: 0 0.2)"),
    "loss": ("optimisation", "cosine (2 - 2cos, the deep recipes) or l2, the linear theory's squared loss "
                             "(with --arch linear)"),
    "jitter_order": ("augmentation", "colour jitter order: random per image (as torchvision/BYOL) or fixed b, c, s, h"),
    "device": ("execution", "auto (cuda if present), cpu, cuda"),
    "amp": ("execution", "bf16 autocast"),
    "compile": ("execution", "torch.compile the backbones"),
    "sync_bn": ("execution", "SyncBatchNorm under DDP (torchrun)"),
    "deterministic": ("execution", "torch deterministic algorithms"),
    "workers": ("execution", "DataLoader workers for ImageNet"),
    "seed": ("execution", "seed of init, shuffles and augmentations"),
    "progress": ("execution", "progress bar and one stderr line per epoch"),
    "knn_k": ("evaluation", "kNN monitor neighbours"),
    "knn_t": ("evaluation", "kNN monitor temperature"),
    "knn_every": ("evaluation", "kNN monitor every N epochs (0 = only after the last epoch, e.g. for ImageNet)"),
    "probe_epochs": ("evaluation", "linear-probe epochs at the end"),
    "probe_wd": ("evaluation", "fixed probe weight decay (if not given: chosen on a held-out part of the train split)"),
}

#: metavars where the field's name or its choices would read worse
METAVARS = {"out": "RUN_DIR", "data_dir": "DIR", "recipe": "NAME", "crop_scale": ("LO", "HI"),
            "jitter": ("B", "C", "S", "H"), "blur_p": ("P1", "P2"), "solarize_p": ("P1", "P2")}

_SCALARS = {"int": int, "float": float, "str": str}


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def flag_spec(field: dataclasses.Field) -> dict[str, Any]:
    """argparse keyword arguments for one DeepConfig field (type, nargs, choices, help with the default)."""
    _, text = FLAG_HELP[field.name]
    kind = str(field.type).partition(" | ")[0]
    default = field.default
    if default not in (None, ""):
        shown = " ".join(str(v) for v in default) if isinstance(default, tuple) else str(default).lower() \
            if isinstance(default, bool) else str(default)
        text = f"{text} (default {shown})"
    spec: dict[str, Any] = {"default": None, "help": text}
    if kind == "bool":
        spec["action"] = argparse.BooleanOptionalAction
    elif kind.startswith("tuple["):
        parts = kind[len("tuple["):-1].split(", ")
        spec.update(type=_SCALARS[parts[0]], nargs=len(parts), metavar=tuple(p.upper() for p in parts))
    else:
        spec["type"] = _SCALARS[kind]
    choices = field_choices().get(field.name)
    if choices is not None:
        spec["choices"] = choices
    if field.name in METAVARS:
        spec["metavar"] = METAVARS[field.name]
    return spec


def add_config_flags(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """One flag per DeepConfig field, in argument groups (returned, so a face can add its own flags)."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for field in dataclasses.fields(DeepConfig):
        group, _ = FLAG_HELP[field.name]
        groups[group].add_argument(flag_name(field.name), dest=field.name, **flag_spec(field))
    return groups
