"""Splitting large row-wise CPU work across cores.

numpy runs each ufunc on one core; BLAS already uses them all. Elementwise and per-row work on large
activations (the GELU in a BERT FFN, LayerNorm, softmax) is split by rows over a small persistent
thread pool: numpy releases the GIL inside its loops, so chunks run truly in parallel.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

MIN_ELEMENTS = 1 << 16  # below this the pool's hand-off (~20-40 µs) costs more than it saves

_lock = threading.Lock()
_pool = None  # concurrent.futures.ThreadPoolExecutor, made on first use
_threads = max(
    1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)


def set_threads(n: int) -> None:
    """Use ``n`` threads for row-parallel work (0: one per available core)."""
    global _threads, _pool
    with _lock:
        want = n if n > 0 else max(1, len(os.sched_getaffinity(0)))
        if want != _threads and _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None
        _threads = want


def threads() -> int:
    return _threads


def _get_pool():
    global _pool
    from concurrent.futures import ThreadPoolExecutor  # on demand: not needed at import

    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(1, _threads - 1), thread_name_prefix="zg-rows"
            )
        return _pool


def for_rows(fn: Callable[[int, int], None], rows: int, row_size: int) -> None:
    """Call ``fn(start, stop)`` over ``range(rows)`` in contiguous chunks, in parallel when the
    work (rows * row_size elements) is large enough; returns when every chunk is done."""
    n = min(_threads, rows)
    if n <= 1 or rows * row_size < MIN_ELEMENTS:
        fn(0, rows)
        return
    bounds = [rows * i // n for i in range(n + 1)]
    pool = _get_pool()
    futures = [pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, n)]
    fn(bounds[0], bounds[1])
    for f in futures:
        f.result()
