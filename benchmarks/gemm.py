"""GEMM micro-benchmark behind backends/cpu/gemm.py's choices: numpy (OpenBLAS) vs oneDNN's matmul
(fp32 in place, fp32 packed, bf16 packed) on BERT-base and tiny-MLP shapes, dense = GEMM + bias
(+ erf-GELU where marked), and the int8 candidates behind backends/cpu/int8.py (uint8 activations
x int8 weights, per-column scales, float32 out): ``u8s8-gemm`` (dnnl_gemm_u8s8s32 to int32, then
numpy's scale/bias/activation), ``u8s8-plain`` and ``u8s8-packed`` (the matmul primitive on plain
or blocked int8 weights, scales/zero point/bias/GELU fused). Run each variant in its own process
(their thread pools interfere):

    for v in numpy plain packed bf16 u8s8-gemm u8s8-plain u8s8-packed; do
        python benchmarks/gemm.py $v; done

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
    if name.startswith("u8s8"):
        return _int8_variant(name, x, w, b, act)
    dtype = np.float32 if name == "packed" else gemm._bf16_dtype()
    pw = gemm.pack_weight(w, dtype)
    return lambda: gemm.dense(x, pw, b, act)


def _int8_variant(name: str, x, w, b, act: str):
    from ziggurat.backends.cpu import int8
    from ziggurat.ops.fused import _epilogue

    qa = np.clip(np.rint(x * 20) + 128, 0, 255).astype(np.uint8)
    ws = np.abs(w).max(axis=0) / 127
    wq = np.rint(w / ws).astype(np.int8)
    ws = ws.astype(np.float32)
    scale = ws * np.float32(0.05)
    if name == "u8s8-gemm":

        def f():
            y = int8.gemm_u8s8s32(qa, 128, wq).astype(np.float32)
            y *= scale
            _epilogue(y, b, act)

        return f
    wp = int8.pack(wq) if name == "u8s8-packed" else wq
    return lambda: int8.matmul_u8s8(qa, 128, 0.05, wp, ws, b, act)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "variant",
        choices=["numpy", "plain", "packed", "bf16", "u8s8-gemm", "u8s8-plain", "u8s8-packed"],
    )
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
