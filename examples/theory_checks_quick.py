"""Run two of the theory checks from Python and read their results.

    python examples/theory_checks_quick.py
"""

import linssl


def main() -> bool:
    results = linssl.check(["threshold", "gains"], quick=True)
    for r in results:
        print(f"{r.name:<10} {'PASS' if r.passed else 'FAIL'}  error {r.error:.2e} (tolerance {r.tolerance:g})  "
              f"{r.claim}")
    return all(r.passed for r in results)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
