"""Train your own backbone on your own images with DirectCopy (the Python face of ``linssl deep-train``).

    python examples/own_backbone.py [RUN_DIR]

The images are scikit-learn's 8×8 digits as a uint8 tensor (any N×C×H×W uint8 tensor with labels
works, or a torch Dataset); the backbone is a small MLP. The run folder holds what ``deep-train``
writes (config.json, metrics.jsonl with the spectrum of F̂ per epoch, checkpoint.pt, summary.json).
"""

import sys
import tempfile

import torch
from torch import nn

import linssl
from linssl.deep.datasets import digits_arrays


def main(run_dir: str | None = None, epochs: int = 3):
    images, labels = digits_arrays()  # uint8 (1797, 1, 8, 8), int labels
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 64))
    config = {"out": run_dir or tempfile.mkdtemp(prefix="linssl-own-"), "predictor": "directcopy", "epochs": epochs,
              "batch_size": 128, "lr": 0.05, "proj_hidden": 128, "proj_dim": 32, "eps": 0.25, "device": "cpu",
              "probe_epochs": 30, "knn_k": 20, "progress": False}
    result = linssl.deep.train(config, backbone=backbone, dataset=(torch.from_numpy(images), torch.from_numpy(labels)))
    last = result.metrics[-1]
    print(f"{config['out']}: effective rank of F̂ {last['effective_rank']:.2f} of {config['proj_dim']}, "
          f"linear probe top-1 {result.summary['linear_top1']:.3f}, kNN top-1 {result.summary['knn_top1']:.3f}")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
