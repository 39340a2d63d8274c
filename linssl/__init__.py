"""linssl: theory and practice of non-contrastive self-supervised learning.

The public API (``linssl/api.py``; every CLI flag is a keyword argument)::

    import linssl
    result = linssl.simulate(wd=0.05, aug_var=[0.1, 6.0], predictor="directpred")   # one run vs theory
    sweep = linssl.sweep([0.01, 0.05, 0.1], aug_var=[0.1, 1.0, 6.0])              # many η as one batch
    linssl.theory.threshold_aug_var(0.05)                                          # closed forms
    checks = linssl.check(["threshold", "gains"], quick=True)                      # theory checks
    curves = linssl.sample_complexity(dim=20, rank=4, seeds=50)                   # downstream risk
    linssl.deep.train(config, backbone=None, dataset=None)                        # the deep trainer
    linssl.compare.run_compare(linssl.compare.CompareConfig(dataset="digits", ...))  # theory vs practice

Floors (nothing imports upward): ``predictors`` / ``theory`` (math) -> ``linear`` (the simulator) and
``deep`` (the trainer) -> the faces (``simulate``, ``sample_complexity``, ``cli``, ``figures``) and the
top-level ``theory_checks``. Attributes load lazily: ``import linssl`` alone does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["check", "compare", "deep", "sample_complexity", "simulate", "sweep", "theory", "__version__"]

#: name -> (module, attribute or None for the module itself)
_LAZY = {
    "simulate": ("linssl.simulate", None),  # a callable module: also ``python -m linssl.simulate``
    "sample_complexity": ("linssl.sample_complexity", None),  # callable too
    "sweep": ("linssl.api", "sweep"),
    "check": ("linssl.api", "check"),
    "theory": ("linssl.theory", None),
    "deep": ("linssl.deep", None),
    "compare": ("linssl.compare", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'linssl' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
