"""linssl: theory and practice of non-contrastive self-supervised learning.

Floors (nothing imports upward): predictors/data/theory (pure math) -> dynamics/records/
downstream/deep (computation) -> simulate/cli/figures and the top-level ``theory_checks``.
"""

__version__ = "0.1.0"
