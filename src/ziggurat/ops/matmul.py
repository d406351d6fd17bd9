"""MatMul, Gemm, Einsum, MatMulInteger, Det, Trilu and other linear algebra."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel
from .shape import host_scalar

# Dtypes numpy's matmul runs through BLAS. Others (float16, bfloat16) are computed in float32 and cast
# back: numpy's float16 matmul is a naive loop ~100x slower, and float32 accumulation is also what
# onnxruntime does.
_BLAS_DTYPES = frozenset(
    (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.complex64), np.dtype(np.complex128))
)
_SMALL_INTS = frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16))


def _native():
    """backends.cpu.gemm (oneDNN), imported on first use to keep ``import ziggurat`` light."""
    global _gemm
    if _gemm is None:
        from ..backends.cpu import gemm

        _gemm = gemm
    return _gemm


_gemm = None


def _matmul(a, b):
    """``a @ b`` with numpy semantics, folding a stack of rows into one GEMM when ``b`` is a matrix.

    float32 products big enough to pay for the call go to oneDNN (measured faster than OpenBLAS
    on BERT's shapes and far steadier under load: backends/cpu/gemm.py); numpy does the rest."""
    if type(a) is np.ndarray and a.dtype == np.float32 and a.ndim >= 2 and b.ndim >= 2:
        y = _native().matmul(a, b)
        if y is not None:
            return y
    xp = xp_of(a, b)
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
        # numpy would loop one GEMM per leading index; one (prod(lead)*M, K) @ (K, N) GEMM is faster.
        out = xp.matmul(a.reshape(-1, a.shape[-1]), b)
        return out.reshape(a.shape[:-1] + (b.shape[1],))
    out = xp.matmul(a, b)
    return out if a.ndim > 1 or b.ndim > 1 else xp.asarray(out)  # 1-D @ 1-D gives a numpy scalar


def _matmul_any(a, b):
    """``a @ b`` keeping the inputs' dtype, computing non-BLAS float types in float32."""
    dt = a.dtype
    if dt in _BLAS_DTYPES and b.dtype == dt:
        return _matmul(a, b)
    if dt.kind == "f" or dt.name == "bfloat16":
        return _matmul(a.astype(np.float32), b.astype(np.float32)).astype(dt)
    if dt in _SMALL_INTS and b.dtype == dt:
        # Exact in float64 (|sum| < 2**53) and BLAS-fast; wrap to the narrow type like an integer GEMM.
        return _matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64).astype(dt)
    return _matmul(a, b)


@kernel("MatMul", since=1)
def MatMul(a, b, /):
    """Matrix product with numpy ``matmul`` semantics (1-D promotion, batch broadcasting)."""
    if a.ndim == 0 or b.ndim == 0:
        raise ExecutionError(
            f"MatMul needs inputs of rank >= 1, got shapes {a.shape} and {b.shape}"
        )
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ExecutionError(
            f"MatMul inner dimensions differ: A {a.shape} @ B {b.shape}; A's last dim must equal B's "
            f"second-to-last (or only) dim"
        )
    return (_matmul_any(a, b),)


@kernel("Gemm", since=1)
def Gemm(a, b, c=None, /, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0):
    """``alpha * A' @ B' + beta * C`` with A' = A.T if transA, B' = B.T if transB; C broadcasts.

    ``broadcast`` (opset < 7) is accepted and ignored: C is always broadcast.
    """
    dt = a.dtype
    if transA:
        a = a.T
    if transB:
        b = b.T
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ExecutionError(
            f"Gemm needs 2-D A' (M, K) and B' (K, N); got A' {a.shape} and B' {b.shape} "
            f"(transA={transA}, transB={transB})"
        )
    y = _matmul_any(a, b)  # always a fresh array, so the scaling and bias below may work in place
    xp = xp_of(y)
    if alpha != 1.0:
        xp.multiply(y, alpha, out=y, casting="unsafe")
    if c is not None and beta != 0.0:
        if beta != 1.0:
            c = c * beta
        try:
            xp.add(y, c, out=y, casting="unsafe")
        except ValueError:  # C broadcasts beyond (M, N): not valid ONNX, but give numpy's result
            y = (y + c).astype(dt, copy=False)
    return (y,)


@kernel("Einsum", since=12)
def Einsum(*inputs, equation):
    """Einstein summation over the inputs as written in ``equation`` (spaces allowed)."""
    eq = equation.replace(" ", "")
    if not inputs:
        raise ExecutionError("Einsum needs at least one input")
    dt = inputs[0].dtype
    xp = xp_of(*inputs)
    if dt.kind == "f" and dt not in _BLAS_DTYPES or dt.name == "bfloat16":
        inputs = tuple(x.astype(np.float32) for x in inputs)
    # Path optimization pays off once there are 3+ operands or the operands are big (it lets numpy
    # route contractions through BLAS); for tiny inputs its planning cost dominates.
    big = sum(x.size for x in inputs) > 4096
    optimize = len(inputs) > 2 or (len(inputs) == 2 and big)
    y = xp.einsum(eq, *inputs, optimize=optimize)
    y = xp.asarray(y)
    if y.dtype != dt:
        y = y.astype(dt)
    return (y,)


@kernel("MatMulInteger", since=10)
def MatMulInteger(a, b, a_zero_point=None, b_zero_point=None, /):
    """Integer matrix product ``(A - a_zero_point) @ (B - b_zero_point)`` with int32 output.

    ``a_zero_point`` is a scalar or per-row (M,) vector; ``b_zero_point`` a scalar or per-column (N,).
    """
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if a_zero_point is not None:
        za = a_zero_point.astype(np.float64)
        if za.ndim == 1 and za.size > 1:
            za = za.reshape(-1, 1)  # per-row of A
        a = a - za
    if b_zero_point is not None:
        # Scalar or per-column: broadcasts over the last axis.
        b = b - b_zero_point.astype(np.float64)
    # float64 is exact here (8-bit products summed well below 2**53) and runs through BLAS.
    return (_matmul(a, b).astype(np.int32),)


@kernel("Det", since=11)
def Det(x, /):
    """Determinant of the square matrices in the last two axes of ``x``."""
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ExecutionError(f"Det needs (..., M, M) input, got shape {x.shape}")
    xp = xp_of(x)
    dt = x.dtype
    xc = x if dt in _BLAS_DTYPES else x.astype(np.float32)
    y = xp.linalg.det(xc)
    return (xp.asarray(y).astype(dt, copy=False),)


@kernel("Trilu", since=14)
def Trilu(x, k=None, /, *, upper=1):
    """Keep the upper (or lower) triangle of the last two dims from diagonal ``k``; zero the rest."""
    if x.ndim < 2:
        raise ExecutionError(f"Trilu: input must have rank >= 2, got shape {list(x.shape)}")
    diag = 0 if k is None else int(host_scalar(k))
    xp = xp_of(x)
    return ((xp.triu if upper else xp.tril)(x, diag),)
