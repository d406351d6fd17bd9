"""Activation functions: Relu, Sigmoid, Gelu, Softmax and friends.

float16 and the ml_dtypes floats (bfloat16, float8) compute in float32 and are rounded back once at
the end, which is more accurate than rounding after every step. The hot kernels (Relu, Sigmoid,
Gelu, Softmax, LogSoftmax) work in place on one fresh buffer to keep memory traffic low. On a 0-d
input numpy operators return a scalar (np.generic), which cannot be updated in place (ufuncs reject
it as ``out=``), so such a buffer is first passed through ``as_array``.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends import parallel
from ..errors import ExecutionError
from ._ewmath import as_array, gelu_erf, xp_fast
from .registry import kernel


def _work(x):
    """(array to compute on, dtype to return): float16/ml_dtypes floats widen to float32."""
    dt = x.dtype
    if dt == np.float16 or dt.kind == "V":
        return x.astype(np.float32), dt
    return x, dt


def _done(y, dt):
    return as_array(y if y.dtype == dt else y.astype(dt))


def _sigmoid_into(z, xp):
    """z <- 1 / (1 + exp(-z)) in place (exp overflow for z << 0 correctly gives 0)."""
    xp.negative(z, out=z)
    with np.errstate(over="ignore"):
        xp.exp(z, out=z)
    z += 1
    xp.reciprocal(z, out=z)
    return z


# ------------------------------------------------------------------------ pointwise


@kernel("Relu", since=1)
def Relu(x, /):
    """max(X, 0); integer inputs (opset 14) keep their dtype."""
    if x.dtype.kind == "V":
        return (_done(np.maximum(x.astype(np.float32), 0), x.dtype),)
    if type(x) is np.ndarray and x.dtype.kind == "f" and x.ndim:
        y = x.copy()
        relu_inplace(y)
        return (y,)
    return (as_array(xp_fast(x).maximum(x, 0)),)


def relu_inplace(y) -> None:
    """y <- max(y, 0) for a float numpy array, as y * (y > 0) + 0: measured ~1.5x faster than
    np.maximum, which pays for NaN checks (NaN * False is still NaN, so NaN propagates the same;
    the + 0 turns the -0.0 that negatives give into +0.0, as max would)."""
    if y.size < 16384:  # small: one call beats three (call overhead dominates)
        np.maximum(y, 0, out=y)
        return
    np.multiply(y, y > 0, out=y)
    y += y.dtype.type(0)


@kernel("LeakyRelu", since=1)
def LeakyRelu(x, /, *, alpha=0.01):
    """X if X >= 0 else alpha * X."""
    xp = xp_fast(x)
    w, dt = _work(x)
    a = w.dtype.type(alpha)
    if 0 <= alpha <= 1:  # max(x, a*x) is the same function and avoids a select
        y = as_array(w * a)
        xp.maximum(y, w, out=y)
    else:
        y = xp.where(w >= 0, w, w * a)
    return (_done(y, dt),)


@kernel("PRelu", since=1)
def PRelu(x, slope, /):
    """X if X >= 0 else slope * X; slope broadcasts to X (the output has X's shape)."""
    xp = xp_fast(x)
    if slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
        # Pre-opset-7 exporters (Caffe2 style) give a per-channel slope of shape (C,).
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
    y = xp.where(x < 0, x * slope, x)
    if y.shape != x.shape:
        raise ExecutionError(
            f"PRelu: slope of shape {slope.shape} does not broadcast to X {x.shape}"
        )
    return (as_array(y.astype(x.dtype, copy=False)),)


@kernel("ThresholdedRelu", since=10)
def ThresholdedRelu(x, /, *, alpha=1.0):
    """X if X > alpha else 0."""
    xp = xp_fast(x)
    w, dt = _work(x)
    return (_done(xp.where(w > w.dtype.type(alpha), w, 0), dt),)


@kernel("Elu", since=1)
def Elu(x, /, *, alpha=1.0):
    """X if X > 0 else alpha * (exp(X) - 1)."""
    xp = xp_fast(x)
    w, dt = _work(x)
    neg = as_array(xp.expm1(xp.minimum(w, 0)))
    neg *= w.dtype.type(alpha)
    return (_done(xp.where(w > 0, w, neg), dt),)


@kernel("Celu", since=12)
def Celu(x, /, *, alpha=1.0):
    """max(0, X) + min(0, alpha * (exp(X / alpha) - 1))."""
    xp = xp_fast(x)
    w, dt = _work(x)
    a = w.dtype.type(alpha)
    neg = as_array(xp.expm1(xp.minimum(w, 0) / a))
    neg *= a
    return (_done(xp.where(w > 0, w, neg), dt),)


@kernel("Selu", since=1)
def Selu(x, /, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    """gamma * (X if X > 0 else alpha * (exp(X) - 1))."""
    xp = xp_fast(x)
    w, dt = _work(x)
    t = w.dtype.type
    neg = as_array(xp.expm1(xp.minimum(w, 0)))
    neg *= t(alpha * gamma)
    return (_done(xp.where(w > 0, w * t(gamma), neg), dt),)


@kernel("Sigmoid", since=1)
def Sigmoid(x, /):
    """1 / (1 + exp(-X))."""
    xp = xp_fast(x)
    w, dt = _work(x)
    z = w.astype(w.dtype, copy=True) if w is x else w
    return (_done(_sigmoid_into(z, xp), dt),)


@kernel("HardSigmoid", since=1)
def HardSigmoid(x, /, *, alpha=0.2, beta=0.5):
    """max(0, min(1, alpha * X + beta))."""
    xp = xp_fast(x)
    w, dt = _work(x)
    t = w.dtype.type
    y = as_array(w * t(alpha))
    y += t(beta)
    xp.clip(y, 0, 1, out=y)
    return (_done(y, dt),)


@kernel("HardSwish", since=14)
def HardSwish(x, /):
    """X * max(0, min(1, X / 6 + 0.5))."""
    xp = xp_fast(x)
    w, dt = _work(x)
    t = w.dtype.type
    y = as_array(w * t(1 / 6))
    y += t(0.5)
    xp.clip(y, 0, 1, out=y)
    y *= w
    return (_done(y, dt),)


@kernel("Softplus", since=1)
def Softplus(x, /):
    """log(1 + exp(X)), computed without overflow."""
    xp = xp_fast(x)
    w, dt = _work(x)
    return (_done(xp.logaddexp(w, 0), dt),)


@kernel("Softsign", since=1)
def Softsign(x, /):
    """X / (1 + |X|)."""
    xp = xp_fast(x)
    w, dt = _work(x)
    d = as_array(xp.abs(w))
    d += 1
    return (_done(xp.divide(w, d, out=d), dt),)


@kernel("Mish", since=18)
def Mish(x, /):
    """X * tanh(softplus(X))."""
    xp = xp_fast(x)
    w, dt = _work(x)
    y = as_array(xp.tanh(xp.logaddexp(w, 0)))
    y *= w
    return (_done(y, dt),)


@kernel("Swish", since=24)
def Swish(x, /, *, alpha=1.0):
    """X * sigmoid(alpha * X)."""
    xp = xp_fast(x)
    w, dt = _work(x)
    s = _sigmoid_into(as_array(w * w.dtype.type(alpha)), xp)
    s *= w
    return (_done(s, dt),)


@kernel("SwiGLU", since=28)
def SwiGLU(a, b, /, *, alpha=1.0):
    """Swish_alpha(A) * B (A and B have the same shape)."""
    if a.shape != b.shape:
        raise ExecutionError(f"SwiGLU: A {a.shape} and B {b.shape} must have the same shape")
    xp = xp_fast(a)
    w, dt = _work(a)
    s = _sigmoid_into(as_array(w * w.dtype.type(alpha)), xp)
    s *= w
    s *= b if b.dtype == s.dtype else b.astype(s.dtype)
    return (_done(s, dt),)


@kernel("Shrink", since=9)
def Shrink(x, /, *, bias=0.0, lambd=0.5):
    """X + bias if X < -lambd, X - bias if X > lambd, else 0 (integer inputs keep their dtype)."""
    xp = xp_fast(x)
    w, dt = _work(x)
    y = xp.where(w < -lambd, w + bias, xp.where(w > lambd, w - bias, 0))
    return (_done(y, dt),)


_TANH_GELU_K = math.sqrt(2 / math.pi)


@kernel("Gelu", since=20)
def Gelu(x, /, *, approximate="none"):
    """0.5 * X * (1 + erf(X / sqrt(2))); approximate='tanh' uses the tanh form."""
    if approximate == "none":
        if x.dtype.kind == "V":
            return (as_array(gelu_erf(x.astype(np.float32)).astype(x.dtype)),)
        return (as_array(gelu_erf(x)),)
    if approximate != "tanh":
        raise ExecutionError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    xp = xp_fast(x)
    w, dt = _work(x)
    t = w.dtype.type
    # 0.5 * (1 + tanh(z)) == sigmoid(2z): one exp instead of a (slower) tanh. For huge |x| the cube
    # overflows to +-inf, which the sigmoid maps to exactly 0 or 1: the result is still right.
    with np.errstate(over="ignore"):
        z = as_array(w * w)
        z *= t(0.044715)
        z += 1
        z *= w
        z *= t(2 * _TANH_GELU_K)
        _sigmoid_into(z, xp)
    z *= w
    return (_done(z, dt),)


# ------------------------------------------------------------------- softmax family


def _flatten_2d(x, axis: int):
    """Before opset 13 these ops view X as 2-D: dims before ``axis`` x dims from ``axis``."""
    axis = _norm_axis(axis, x.ndim)
    rows = math.prod(x.shape[:axis])
    return x.reshape(rows, -1) if rows else x.reshape(0, math.prod(x.shape[axis:]))


def _norm_axis(axis: int, ndim: int) -> int:
    if ndim == 0:
        raise ExecutionError("the input has rank 0 but needs rank >= 1; reshape it to [1]")
    if not -ndim <= axis < ndim:
        raise ExecutionError(
            f"axis {axis} is out of range for a tensor of rank {ndim}: expected an axis in "
            f"[{-ndim}, {ndim - 1}]"
        )
    return axis + ndim if axis < 0 else axis


def _softmax(x, axis: int, log: bool):
    if not log and type(x) is np.ndarray and x.dtype in _FAST_SOFTMAX and x.size:
        # The common case, with as few numpy calls as possible (small inputs are call-bound);
        # over the last axis of a large input, row chunks run in parallel across cores.
        if axis == x.ndim - 1 and x.flags.c_contiguous and x.size >= _SMALL_SOFTMAX:
            return softmax_last_axis(x)
        if x.size == x.shape[axis]:
            # One row (a classifier's 1x10 head): the flat max and sum are that row's, and skip
            # the keepdims reductions' setup (~0.6 us each, most of a 10-value softmax). The
            # ufuncs' own reduce is what ndarray.max/sum call, minus their Python wrapper (~0.2
            # us each): same values, bit for bit.
            y = np.subtract(x, np.maximum.reduce(x, axis=None))
            np.exp(y, out=y)
            np.true_divide(y, np.add.reduce(y, axis=None), out=y)
            return y
        y = np.subtract(x, x.max(axis=axis, keepdims=True))
        np.exp(y, out=y)
        y /= y.sum(axis=axis, keepdims=True)
        return y
    xp = xp_fast(x)
    if x.size == 0:
        return xp.array(x, copy=True)
    if x.dtype == np.float16 and not log:
        # Softmax-13's function body computes each step in the input type; for float16 we follow
        # it step by step (numpy rounds every float16 op), as the spec and the reference do.
        y = xp.exp(x - x.max(axis=axis, keepdims=True))
        return (y / y.sum(axis=axis, keepdims=True)).astype(np.float16, copy=False)
    w, dt = _work(x)
    y = xp.subtract(w, w.max(axis=axis, keepdims=True))  # fresh buffer, exp cannot overflow
    if log:
        e = xp.exp(y)
        y -= xp.log(e.sum(axis=axis, keepdims=True))
    else:
        xp.exp(y, out=y)
        y /= y.sum(axis=axis, keepdims=True)
    return _done(y, dt)


_FAST_SOFTMAX = (np.dtype(np.float32), np.dtype(np.float64))
_SMALL_SOFTMAX = 4096  # below, the fewest numpy calls win (a classifier's head is call-bound)


# Rows whose exp-sum against the block's maximum falls below this are redone against their own
# maximum: e**-16 keeps every element within e**-71 of its row's maximum a normal float32.
_LOW_SUM = math.exp(-16.0)


_NATIVE_MIN = 1 << 13  # backends.cpu.norm.MIN_ELEMENTS, checked here first to skip the import


_norm_mod = None


def _native_softmax(x2, y2) -> bool:
    """oneDNN's softmax (backends/cpu/norm.py, imported on first use: not at ``import ziggurat``)."""
    global _norm_mod
    if _norm_mod is None:
        from ..backends.cpu import norm

        _norm_mod = norm
    return _norm_mod.softmax(x2, y2)


def softmax_last_axis(x, nan_to_zero: bool = False, inplace: bool = False):
    """Softmax over the last axis of a C-contiguous float32/float64 numpy array, into a new array
    (``inplace``: into ``x`` itself, a fresh buffer of the caller's that nobody else reads).

    ``nan_to_zero``: NaN results (a row all -inf, or holding NaN) become 0, as the
    ``Where(IsNaN(p), 0, p)`` exporters append to masked attention does. Large inputs are split by
    rows across cores. In place saves the output's allocation (0.75 MiB for BERT-base's
    12 x 128 x 128 scores) and its first-touch page faults: FusedAttention measured 1-2 % faster
    (2 busy cores, between bf16 GEMMs as in the model).
    """
    x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
    y2 = x2 if inplace else np.empty_like(x2)
    if x2.dtype == np.float32 and x2.size >= _NATIVE_MIN and _native_softmax(x2, y2):
        if nan_to_zero and np.isnan(y2.max()):
            y2[np.isnan(y2)] = 0
        return y2.reshape(x.shape)
    if x2.size:
        ones = np.ones(x2.shape[1], dtype=x2.dtype)
        parallel.for_rows(
            lambda lo, hi: _softmax_block(x2[lo:hi], y2[lo:hi], ones, nan_to_zero, inplace),
            x2.shape[0],
            x2.shape[1],
        )
    return y2.reshape(x.shape)


def _softmax_block(x2, y2, ones, nan_to_zero: bool, inplace: bool = False) -> None:
    """y2 <- softmax of each row of x2 (``inplace``: y2 is x2).

    The maximum subtracted is the block's, not each row's: numpy's per-row max over short rows
    (128 keys) costs more than the rest of the softmax together, while a flat max is one SIMD
    pass. exp(x - g) / sum keeps softmax's value; only rows far below g could underflow, and
    those (sum < _LOW_SUM) are recomputed against their own maximum. The subtraction's rounding
    is at most one ulp of max(|x|, |g|), the input's own resolution. Row sums run as one BLAS
    matrix-vector product (faster than a short-row reduction).
    """
    g = x2.max()
    if not np.isfinite(g):  # NaN or +-inf present: the exact per-row path decides
        _softmax_exact(x2, y2, nan_to_zero)
        return
    saved = _low_row_candidates(x2, g) if inplace else None
    np.subtract(x2, g, out=y2)
    np.exp(y2, out=y2)
    s = y2 @ ones
    low = s < _LOW_SUM
    if low.any():
        rows = np.flatnonzero(low)
        if saved is None:
            src = x2[rows]
        else:  # in place: the inputs of these rows were kept (low rows are among the candidates)
            cand, kept = saved
            src = kept[np.searchsorted(cand, rows)]
        redo = np.empty((rows.size, x2.shape[1]), dtype=x2.dtype)
        _softmax_exact(src, redo, nan_to_zero)
        y2[rows] = redo
        s[rows] = 1
    np.reciprocal(s, out=s)
    y2 *= s[:, None]


def _low_row_candidates(x2, g):
    """Indices and copies of the rows that could come out low, taken before an in-place softmax
    overwrites them. A row's exp-sum is at least e**(its max - g), so a low row (sum < e**-16)
    has every element below g - 16 (less its rounding, far under the margin of 1 used here):
    its first and last elements, always finite and read exactly, are. With a padding mask the
    first key (CLS) is unmasked, with a causal one the first, so few rows are ever copied."""
    edge = np.maximum(x2[:, 0], x2[:, -1])
    cand = np.flatnonzero(edge < g - (-math.log(_LOW_SUM) - 1))
    return (cand, x2[cand]) if cand.size else (cand, x2[:0].copy())


def _softmax_exact(x2, y2, nan_to_zero: bool) -> None:
    with np.errstate(invalid="ignore"):
        np.subtract(x2, x2.max(axis=1, keepdims=True), out=y2)  # all -inf rows give NaN
        np.exp(y2, out=y2)
        y2 /= y2.sum(axis=1, keepdims=True)
    if nan_to_zero:
        y2[np.isnan(y2)] = 0


def _hardmax(x, axis: int):
    xp = xp_fast(x)
    y = xp.zeros_like(x)
    if x.size:
        idx = xp.argmax(x, axis=axis, keepdims=True)  # first maximum wins, as the spec says
        xp.put_along_axis(y, idx, 1, axis=axis)
    return y


@kernel("Softmax", since=13)
def Softmax(x, /, *, axis=-1):
    """exp(X) / sum(exp(X)) along ``axis``."""
    return (_softmax(x, _norm_axis(axis, x.ndim), log=False),)


@kernel("Softmax", since=1)
def Softmax_1(x, /, *, axis=1):
    """Softmax before opset 13: over the 2-D view [prod(dims < axis), prod(dims >= axis)]."""
    return (_softmax(_flatten_2d(x, axis), 1, log=False).reshape(x.shape),)


@kernel("LogSoftmax", since=13)
def LogSoftmax(x, /, *, axis=-1):
    """log(softmax(X)) along ``axis``, computed stably."""
    return (_softmax(x, _norm_axis(axis, x.ndim), log=True),)


@kernel("LogSoftmax", since=1)
def LogSoftmax_1(x, /, *, axis=1):
    """LogSoftmax before opset 13: over the 2-D view at ``axis`` (see Softmax_1)."""
    return (_softmax(_flatten_2d(x, axis), 1, log=True).reshape(x.shape),)


@kernel("Hardmax", since=13)
def Hardmax(x, /, *, axis=-1):
    """1 at the first maximum along ``axis``, 0 elsewhere."""
    return (_hardmax(x, _norm_axis(axis, x.ndim)),)


@kernel("Hardmax", since=1)
def Hardmax_1(x, /, *, axis=1):
    """Hardmax before opset 13: over the 2-D view at ``axis`` (see Softmax_1)."""
    return (_hardmax(_flatten_2d(x, axis), 1).reshape(x.shape),)
