"""The smallest real deep run the tests train: scikit-learn's digits, the small convnet 4 channels wide,
a 16 → 8 projector, one epoch of batches of 256 on one CPU thread (about a second)."""

from __future__ import annotations

from pathlib import Path

from linssl.deep.config import DeepConfig

TINY = dict(dataset="digits", arch="small", width=4, proj_hidden=16, proj_dim=8, pred_hidden=16, epochs=1,
            batch_size=256, knn_k=10, probe_epochs=5, progress=False, workers=0)


def tiny_config(out: str | Path, **overrides) -> DeepConfig:
    """A ``DeepConfig`` of the tiny run in ``out``, with ``overrides`` on top."""
    return DeepConfig(**{**TINY, "out": str(out), **overrides})
