"""DirectPred, DirectCopy and DirectSet(α) keep the same subspace (docs/theory.md §4.7).

    python examples/sweep_rules.py

One batched sweep over weight decays per predictor rule; the kept sets agree with each other and
with the closed form, while the gains differ (w² = p₊^{1/α}/(λ + σ²)).
"""

import numpy as np

import linssl

AUG_VAR = [0.1, 1.0, 3.0, 6.0]
WDS = [0.03, 0.06, 0.12]


def main() -> dict[str, np.ndarray]:
    kept = {}
    for predictor, alpha in (("directpred", None), ("directcopy", None), ("directset", 0.25)):
        result = linssl.sweep(WDS, aug_var=AUG_VAR, predictor=predictor, alpha=alpha, t_max=2000.0)
        kept[predictor] = result.kept
        error = np.abs(result.gain_sq - result.gain_sq_predicted).max()
        print(f"{predictor:<10} kept per wd {result.kept.sum(1).tolist()}  "
              f"(theory {result.kept_predicted.sum(1).tolist()}); max |gain² − closed form| {error:.1e}")
    return kept


if __name__ == "__main__":
    main()
