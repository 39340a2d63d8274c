"""How many labelled samples the learned representation saves (docs/theory.md §5).

    python examples/downstream_samples.py

Least squares on the raw input x (d = 20) against the DirectPred representation Wx (r = 4 kept
features): excess risk against n beside σ_ν² p/(n − p − 1), and the n each needs for the target risk.
"""

import linssl


def main():
    result = linssl.sample_complexity(dim=20, rank=4, seeds=60, target_risk=0.03)
    for name, curve in result.curves.items():
        print(f"{name:<8} risk at n = {curve.n[0]}: {curve.risk_mean[0]:.3f} (closed form "
              f"{curve.risk_predicted[0]:.3f});  n for the target {result.target_risk:.3g}: {curve.n_to_target}")
    print(f"ratio of the n needed: {result.n_to_target_ratio} (d/r = {result.dim_over_rank:g})")
    return result


if __name__ == "__main__":
    main()
