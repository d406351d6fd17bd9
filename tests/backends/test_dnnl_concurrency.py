"""oneDNN primitives run from several threads at once give each caller its own exact result.

oneDNN's library-managed scratchpad is one buffer shared by every primitive: before
``dnnl.Primitive``'s lock and ``gemm._Plan``'s per-thread scratchpads, 4 threads running one
packed Dense 3,000 times each got 3-5 wrong results per run (what a server running two models at
once, or the parallel executor, would hand back). Each thread checks every result bit for bit
against the single-threaded one. The Dense runs in user scratchpad mode (a scratchpad per
thread, no lock); the int8 matmul below in the library's mode (under the lock).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ziggurat.backends.cpu import dnnl, gemm

pytestmark = pytest.mark.skipif(not dnnl.available(), reason=f"oneDNN: {dnnl.unavailable_reason()}")


def _hammer(call, n_threads: int = 4, runs: int = 3000) -> list[int]:
    """Run ``call(i)`` ``runs`` times in each of ``n_threads`` threads started together; return
    the thread indices whose result ever differed from its first single-threaded result."""
    expected = [call(i) for i in range(n_threads)]
    wrong: list[int] = []
    start = threading.Barrier(n_threads)

    def worker(i: int) -> None:
        start.wait()
        for _ in range(runs):
            if not np.array_equal(call(i), expected[i]):
                wrong.append(i)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wrong


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_one_packed_dense_from_four_threads(dtype):
    if dtype == "bfloat16" and not gemm.bf16_supported():
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX")
    rng = np.random.default_rng(1)
    w = gemm.pack_weight(rng.standard_normal((256, 256)).astype(np.float32), np.dtype(
        gemm._bf16_dtype() if dtype == "bfloat16" else np.float32))  # fmt: skip
    xs = [rng.standard_normal((5, 256)).astype(np.float32) for _ in range(4)]
    bs = [rng.standard_normal(256).astype(np.float32) for _ in range(4)]
    assert _hammer(lambda i: gemm.dense(xs[i], w, bs[i], "gelu")) == []


def test_one_int8_matmul_from_four_threads():
    """The int8 matmul (library scratchpad mode: runs under dnnl.Primitive's lock), each thread
    with its own activation zero point and scales."""
    from ziggurat.backends.cpu import int8

    if not int8.native():
        pytest.skip("no native int8 matmul on this CPU")
    rng = np.random.default_rng(2)
    w = int8.pack(rng.integers(-127, 128, (96, 64)).astype(np.int8))
    qas = [rng.integers(0, 256, (5, 96)).astype(np.uint8) for _ in range(4)]
    zps = [np.uint8(z) for z in (3, 128, 250, 17)]
    scales = [rng.uniform(1e-3, 1e-2, 64).astype(np.float32) for _ in range(4)]
    assert _hammer(lambda i: int8.matmul_u8s8(qas[i], zps[i], np.float32(0.01 * (i + 1)), w,
                                              scales[i])) == []  # fmt: skip
