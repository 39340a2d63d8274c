"""Theory meets practice (docs/theory.md §8): the linear theory's prediction, from the two-view model measured
under the trainer's own augmentations, against a linear and a deep network trained on the same images.

Public API: ``run_compare(CompareConfig(...)) -> CompareResult``; the face is ``linssl compare``.
"""

from linssl.compare.run import CompareConfig, CompareResult, run_compare

__all__ = ["CompareConfig", "CompareResult", "run_compare"]
