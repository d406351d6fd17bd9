"""The CPU backend: thread counts, the C allocator, and the native kernel layer.

- here: BLAS/oneDNN thread counts and glibc malloc tuning, both process-wide (numpy's BLAS,
  oneDNN's OpenMP pool and malloc are shared by every session);
- ``dnnl``: oneDNN's C API through ctypes (loaded on first use; ``dnnl.available()``);
- ``gemm``: matmul with fused bias/activation on oneDNN, bf16 packed weights;
- ``conv``: convolutions on oneDNN.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

_lock = threading.Lock()
_allocator_tuned = False
_default_blas_threads: int | None = None  # BLAS's own thread count, saved before we first change it

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def set_blas_threads(n: int) -> None:
    """Limit numpy's BLAS and oneDNN's OpenMP to ``n`` threads (0: their default, all cores).
    Process-wide: the session created last decides. (oneDNN is not loaded by this.)

    threadpoolctl finds whichever BLAS numpy loaded (OpenBLAS, MKL, BLIS) and calls its own
    thread setter; a dependency because doing that by hand means tracking every BLAS's symbols.
    """
    global _default_blas_threads
    from . import dnnl

    dnnl.set_threads(n)
    if n <= 0 and _default_blas_threads is None:
        return  # never changed: BLAS is at its own default
    from threadpoolctl import threadpool_info, threadpool_limits

    with _lock:
        if _default_blas_threads is None:
            infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
            _default_blas_threads = max((i["num_threads"] for i in infos), default=0)
        target = n if n > 0 else _default_blas_threads
    if target > 0:
        threadpool_limits(limits=target, user_api="blas")


def tune_allocator() -> bool:
    """Keep freed large buffers in the heap instead of returning them to the OS at every free.

    Kernels allocate fresh outputs of the same sizes on every run; with glibc's defaults each
    allocation over 128 KiB is a new mmap whose pages fault in again (measured: ~0.6 ms per MB, a
    depthwise conv 3-5x slower run alone). Raising the mmap and trim thresholds lets malloc reuse
    those pages, as onnxruntime's arena does. Set ZIGGURAT_TUNE_MALLOC=0 to leave malloc alone.
    Returns whether the allocator was tuned.
    """
    global _allocator_tuned
    with _lock:
        if _allocator_tuned or os.environ.get("ZIGGURAT_TUNE_MALLOC", "1") == "0":
            return _allocator_tuned
        if not sys.platform.startswith("linux"):
            return False
        try:
            # The running process already has libc loaded; CDLL(None) finds its symbols without
            # ctypes.util.find_library (which spawns tools and costs ~10 ms of cold start).
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
            return False
        ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
        _allocator_tuned = ok
        return ok


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``); returns whether it ran.

    ``tune_allocator`` keeps freed buffers in the heap for reuse, which is right for a running
    model's activations but wrong after a one-time drop of many large buffers (``precision="bf16"``
    frees every float32 weight copy it converted: ~170 MB on BERT-base that would stay resident).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    trim(ctypes.c_size_t(0))
    return True
