"""Shared helpers of the benchmark scripts: timing, machine description, table and JSON output.

Every script prints a table and, as its last line, one JSON object with its headline figures.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blas_kernels() -> list[str]:
    """The BLAS/OpenMP libraries in use and their kernel (threadpoolctl), if threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [f"{i.get('internal_api')}:{i.get('architecture') or '-'}:{i.get('num_threads')}" for i in threadpool_info()]


def machine() -> dict:
    """Date, CPU, cores, load average, torch threads, BLAS kernels and the CUDA card (if any)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_1m_5m_15m": [round(x, 2) for x in load],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "blas": blas_kernels(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.cuda.get_device_name()
    return info


def time_calls(fn: Callable[[], object], *, warmup: int = 1, min_repeats: int = 3, max_repeats: int = 200,
               budget_s: float = 0.5, sync: Callable[[], None] | None = None) -> list[float]:
    """Wall-clock seconds of repeated calls of ``fn`` after ``warmup`` untimed calls: at least
    ``min_repeats``, then more until ``budget_s`` is spent or ``max_repeats`` reached."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    spent = 0.0
    while len(times) < max_repeats and (len(times) < min_repeats or spent < budget_s):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (pastes into RESULTS.md as is)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _fmt(x: object) -> str:
    if isinstance(x, float):
        if x != x:
            return "-"
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"
    return str(x)


def emit(headline: dict) -> None:
    """Print the headline figures as the script's last line (one JSON object)."""
    print(json.dumps(headline), flush=True)
