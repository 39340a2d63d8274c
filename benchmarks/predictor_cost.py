"""Cost of one predictor update W_p = rule(F̂): DirectPred (eigh) against DirectCopy (no eigh).

Rules as the deep trainer builds them (``linssl.predictors.make_rule``, ε = 0.01):
DirectPred (α = ½, spectral norm, eigh), DirectSet(α) (eigh), DirectCopy with the Frobenius norm and
with the spectral norm by power iteration. F̂ is the correlation of 2n random outputs with a decaying
spectrum, in the trainer's dtype (float32 by default). Reports the median over repeats per d and the
ratio DirectPred / DirectCopy(frobenius) per d.

    .venv/bin/python benchmarks/predictor_cost.py            # d = 64 … 4096, CPU (and CUDA if present)
    .venv/bin/python benchmarks/predictor_cost.py --quick    # d = 64, 512 on CPU, seconds

Last line: {"ratio_d512": …, "ratio_d2048": …} (CPU; null for a d not measured).
"""

from __future__ import annotations

import argparse

import torch
from _common import emit, machine, median, print_table, time_calls

from linssl.predictors import PredictorRule, make_rule

FULL_DIMS = (64, 128, 256, 512, 1024, 2048, 4096)
QUICK_DIMS = (64, 512)


def rules(alpha: float, eps: float) -> dict[str, PredictorRule]:
    return {
        "directpred": make_rule("directpred", norm="spectral", eps=eps),
        f"directset({alpha:g})": make_rule("directset", alpha=alpha, norm="spectral", eps=eps),
        "directcopy-frob": make_rule("directcopy", norm="frobenius", eps=eps),
        "directcopy-spec": make_rule("directcopy", norm="spectral", eps=eps),
    }


def correlation(d: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> torch.Tensor:
    """F̂ = ZᵀZ / 2n for 2n = 2d outputs whose scales decay as 1/sqrt(1 + j) (a realistic spectrum)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * d, d, generator=gen, dtype=torch.float64) / torch.arange(1, d + 1).sqrt()
    return (z.T @ z / (2 * d)).to(dtype=dtype, device=device)


def measure(device: torch.device, dims: tuple[int, ...], dtype: torch.dtype, alpha: float, eps: float,
            budget_s: float) -> list[dict]:
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    rows = []
    for d in dims:
        F = correlation(d, dtype, device)
        row: dict = {"device": device.type, "d": d}
        for name, rule in rules(alpha, eps).items():
            times = time_calls(lambda rule=rule, F=F: rule(F), warmup=1, min_repeats=3, budget_s=budget_s, sync=sync)
            row[name] = median(times)
        row["ratio_frob"] = row["directpred"] / row["directcopy-frob"]
        row["ratio_spec"] = row["directpred"] / row["directcopy-spec"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 64, 512 only, short timing budget")
    parser.add_argument("--dims", type=int, nargs="+", help="override the list of d")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as in docs/theory.md §7)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--alpha", type=float, default=0.25, help="α of the DirectSet(α) row")
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, and CUDA too when present")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dims = tuple(args.dims or (QUICK_DIMS if args.quick else FULL_DIMS))
    dtype = getattr(torch, args.dtype)
    budget = 0.05 if args.quick else 1.0
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    print("machine:", machine())
    print(f"dtype {args.dtype}, eps {args.eps}, median seconds per update")
    rows = [r for dev in devices for r in measure(dev, dims, dtype, args.alpha, args.eps, budget)]
    names = list(rules(args.alpha, args.eps))
    headers = ["device", "d", *(f"{n} ms" for n in names), "pred/copy-frob", "pred/copy-spec"]
    print_table(headers, [[r["device"], r["d"], *(1e3 * r[n] for n in names), r["ratio_frob"], r["ratio_spec"]]
                          for r in rows])
    cpu = {r["d"]: r for r in rows if r["device"] == "cpu"}
    headline = {f"ratio_d{d}": (round(cpu[d]["ratio_frob"], 2) if d in cpu else None) for d in (512, 2048)}
    cuda = {r["d"]: r for r in rows if r["device"] == "cuda"}
    if cuda:
        headline.update({f"cuda_ratio_d{d}": round(cuda[d]["ratio_frob"], 2) for d in (512, 2048) if d in cuda})
    emit(headline)
    return headline


if __name__ == "__main__":
    main()
