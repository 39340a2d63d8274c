"""Weight decay as a threshold: which features a DirectPred network keeps, against the closed form.

    python examples/simulate_threshold.py

For each weight decay η, one gradient-flow run on eight features with unit data variance and
augmentation variances 0.1 … 10; theory keeps a feature iff σ² ≤ 1/(4η) − 1 (docs/theory.md §4.2).
"""

import linssl

AUG_VAR = [0.1, 0.25, 0.5, 1.0, 2.5, 6.0, 8.0, 10.0]


def main() -> list[tuple[float, int, int]]:
    rows = []
    for wd in (0.02, 0.05, 0.1):
        result = linssl.simulate(wd=wd, aug_var=AUG_VAR, predictor="directpred")
        kept_sim = sum(f.kept_simulated for f in result.features)
        kept_theory = sum(f.kept_predicted for f in result.features)
        print(f"wd {wd:<5g} threshold σ² = {linssl.theory.threshold_aug_var(wd):5.2f}  "
              f"kept {kept_sim} (theory {kept_theory})  {result.verdict.split(':')[0]}")
        rows.append((wd, kept_sim, kept_theory))
    return rows


if __name__ == "__main__":
    main()
