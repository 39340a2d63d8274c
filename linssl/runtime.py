"""Runtime settings shared by the computation modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (restored after).

    A batch of small (p × p) LAPACK problems (eigh, Cholesky, solve) gains nothing from threads
    and on a busy machine loses badly to thread contention (measured: batched eigh of 200 50×50
    matrices 0.04 s on one thread, 22 s on two contended ones).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
