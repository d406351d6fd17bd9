"""GEMM micro-benchmark behind backends/cpu/gemm.py's choices: numpy (OpenBLAS) vs oneDNN's matmul
(fp32 in place, fp32 packed, bf16 packed) on BERT-base and tiny-MLP shapes, dense = GEMM + bias
(+ erf-GELU where marked). Run each variant in its own process (their thread pools interfere):

    for v in numpy plain packed bf16; do python benchmarks/gemm.py $v; done

Prints best / p25 / median milliseconds over --repeats runs, 2 threads unless --threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SHAPES = [
    (128, 768, 768, ""),
    (128, 768, 3072, "gelu"),
    (128, 3072, 768, ""),
    (1, 784, 128, "relu"),
]


def _stats(f, repeats: int) -> str:
    for _ in range(5):
        f()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ms = np.array(ts) * 1e3
    return f"{ms.min():.3f} / {np.percentile(ms, 25):.3f} / {np.median(ms):.3f} ms"


def _variant(name: str, x, w, b, act: str):
    from ziggurat.backends.cpu import gemm
    from ziggurat.ops.fused import _epilogue

    if name == "numpy":

        def f():
            y = np.matmul(x, w)
            _epilogue(y, b, act)

        return f
    if name == "plain":
        return lambda: gemm.dense(x, w, b, act)
    dtype = np.float32 if name == "packed" else gemm._bf16_dtype()
    pw = gemm.pack_weight(w, dtype)
    return lambda: gemm.dense(x, pw, b, act)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("variant", choices=["numpy", "plain", "packed", "bf16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=60)
    args = p.parse_args()
    from ziggurat.backends.cpu import set_blas_threads

    set_blas_threads(args.threads)
    rng = np.random.default_rng(0)
    for m, k, n, act in SHAPES:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        f = _variant(args.variant, x, w, b, act)
        label = f"{m}x{k}x{n}{' +' + act if act else ''}"
        print(f"{args.variant:7s} {label:18s} {_stats(f, args.repeats)}", flush=True)


if __name__ == "__main__":
    main()
