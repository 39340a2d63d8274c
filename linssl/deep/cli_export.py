"""Write the backbone of a deep-train run as a plain state_dict: torchvision's ResNet key names or linssl's.

    linssl export RUN_DIR --out backbone.pt                   # torchvision.models.resnet18/50 names
    linssl export RUN_DIR --format linssl --out backbone.pt   # linssl.deep.models.build_backbone names

The output file is never replaced without --overwrite.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from linssl.deep.export import FORMATS

    parser.add_argument("run_dir", help="folder of a deep-train run (holds checkpoint.pt; finished or interrupted)")
    parser.add_argument("--out", required=True, help="file to write (a torch state_dict)")
    parser.add_argument("--format", choices=FORMATS, default="torchvision",
                        help="torchvision (default): torchvision ResNet key names; linssl: the backbone as trained")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from linssl.deep.export import export_backbone

    r = export_backbone(args.run_dir, args.out, args.format, args.overwrite)
    state = "finished" if r.epoch >= r.epochs else f"interrupted at epoch {r.epoch} of {r.epochs}"
    print(f"{r.path}: {r.arch} backbone ({r.stem} stem, run {state}), {r.tensors} tensors, "
          f"{r.parameters:,} parameters, {r.format} key names")
    for note in r.notes:
        print(f"  {note}")
    return 0
