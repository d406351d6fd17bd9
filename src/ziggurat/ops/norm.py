"""Normalizations: BatchNormalization, LayerNormalization, InstanceNormalization, GroupNormalization, LRN, RMSNormalization, ...

Statistics are computed on a 2-D (rows, reduced) view so every reduction runs over contiguous memory,
and in float32 (or the ``stash_type``) for half-precision inputs, as the spec asks.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from . import _jit
from .registry import kernel

# ONNX TensorProto element types that stash_type may name.
_STASH = {1: np.dtype(np.float32), 10: np.dtype(np.float16), 11: np.dtype(np.float64)}


def _stash_dtype(stash_type):
    if stash_type == 16:
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if stash_type not in _STASH:
        raise ExecutionError(f"stash_type {stash_type} is not a float type (1, 10, 11 or 16)")
    return _STASH[stash_type]


def _compute_dtype(dt):
    """float32/float64 as is; float16, bfloat16 (and anything else) computed in float32."""
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float32)


def _row_stats(x2, eps, xp):
    """Centered rows and 1/sqrt(var + eps) of each row of the 2-D ``x2`` (mean and inv as (rows, 1)).

    The row sums run as a BLAS matrix-vector product and the squared sums as an einsum: both are
    faster than numpy's reduction machinery on the (rows, features) shapes transformers use.
    """
    cols = max(x2.shape[1], 1)
    scale = x2.dtype.type(1 / cols)
    mean = (x2 @ xp.ones(x2.shape[1], dtype=x2.dtype))[:, None] * scale
    d = x2 - mean
    var = xp.einsum("ij,ij->i", d, d)[:, None] * scale
    var += x2.dtype.type(eps)
    return mean, d, 1 / xp.sqrt(var)


def _scale_shift(y2, x_shape, axis, scale, bias):
    """``y * scale + bias`` with unidirectional broadcasting; in place on the 2-D view when possible."""
    cols = y2.shape[1]
    flat_ok = all(
        v is None or (v.size == cols and v.ndim <= len(x_shape) - axis and v.dtype == y2.dtype)
        for v in (scale, bias)
    )
    if flat_ok:
        y2 *= scale.reshape(-1)
        if bias is not None:
            y2 += bias.reshape(-1)
        return y2.reshape(x_shape)
    y = y2.reshape(x_shape) * scale
    return y if bias is None else y + bias


def _norm_axis(axis, rank):
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ExecutionError(
            f"axis {axis} is out of range for an input of rank {rank}; expected [-{rank}, {rank})"
        )
    return a


@kernel("BatchNormalization", since=1)
def BatchNormalization(
    x, scale, b, mean, var, /, *,
    epsilon=1e-5, momentum=0.9, training_mode=0, spatial=1, is_test=0, consumed_inputs=None, n_outputs=1,
):  # fmt: skip
    """``(x - mean) / sqrt(var + eps) * scale + b`` per channel (axis 1).

    In training mode (``training_mode=1``, or an old-opset node that declares the extra outputs) the
    batch statistics are used and the updated running mean and variance are returned too.
    ``spatial``/``is_test``/``consumed_inputs`` of old opsets are accepted; non-spatial scale/mean
    of shape (C, D1, ...) broadcast per element.
    """
    xp = xp_of(x)
    if x.ndim < 2:
        raise ExecutionError(
            f"BatchNormalization needs input of rank >= 2 (N, C, ...), got shape {x.shape}"
        )
    dt = x.dtype
    cdt = _compute_dtype(dt)
    c = x.shape[1]
    tail = (1,) * (x.ndim - 2)

    def per_channel(v):
        v = v.astype(cdt, copy=False)
        return v.reshape((c,) + tail) if v.ndim <= 1 else v

    xc = x.astype(cdt, copy=False)
    training = bool(training_mode) or n_outputs > 1
    if training:
        axes = (0,) + tuple(range(2, x.ndim))
        cur_mean = xc.mean(axis=axes)
        cur_var = xc.var(axis=axes)
        use_mean, use_var = cur_mean, cur_var
    else:
        use_mean, use_var = mean, var
    a = per_channel(scale) / xp.sqrt(per_channel(use_var) + cdt.type(epsilon))
    shift = per_channel(b) - per_channel(use_mean) * a
    y = xc * a
    y += shift
    y = y.astype(dt, copy=False)
    if not training:
        return (y,)
    mom = cdt.type(momentum)
    run_mean = (mean.astype(cdt) * mom + cur_mean * (1 - mom)).astype(mean.dtype, copy=False)
    run_var = (var.astype(cdt) * mom + cur_var * (1 - mom)).astype(var.dtype, copy=False)
    saved_inv_std = (1 / xp.sqrt(cur_var + cdt.type(epsilon))).astype(mean.dtype, copy=False)
    return y, run_mean, run_var, cur_mean.astype(mean.dtype, copy=False), saved_inv_std


@kernel("LayerNormalization", since=17)
def LayerNormalization(x, scale, b=None, /, *, axis=-1, epsilon=1e-5, stash_type=1, n_outputs=3):
    """Normalize over axes ``[axis, rank)`` then scale and shift; also returns Mean and InvStdDev."""
    xp = xp_of(x)
    a = _norm_axis(axis, x.ndim)
    rows = math.prod(x.shape[:a])
    if n_outputs == 1 and _row_parallel_ok(x, scale, b, a, stash_type):
        return (layer_norm_last_axes(x, scale, b, x.ndim - a, float(epsilon)),)
    sdt = _stash_dtype(stash_type)
    cdt = _compute_dtype(sdt)
    x2 = x.astype(cdt, copy=False).reshape(rows, -1)
    mean, d, inv = _row_stats(x2, epsilon, xp)
    d *= inv  # d is a fresh temporary: normalize in place
    if d.dtype != x.dtype:
        d = d.astype(x.dtype)  # the second stage runs in X's precision
    y = _scale_shift(d, x.shape, a, scale, b)
    stat_shape = x.shape[:a] + (1,) * (x.ndim - a)
    return (
        y.astype(x.dtype, copy=False),
        mean.reshape(stat_shape).astype(sdt, copy=False),
        inv.reshape(stat_shape).astype(sdt, copy=False),
    )


def _row_parallel_ok(x, scale, b, a, stash_type) -> bool:
    """Plain float32/float64 numpy rows with per-feature scale/bias: the fast path."""
    if type(x) is not np.ndarray or x.dtype not in (np.float32, np.float64) or x.size == 0:
        return False
    if _STASH.get(stash_type) not in (np.dtype(np.float32), x.dtype) or not x.flags.c_contiguous:
        return False
    cols = math.prod(x.shape[a:])
    return all(
        v is None or (type(v) is np.ndarray and v.size == cols and v.dtype == x.dtype)
        for v in (scale, b)
    )


_native_mod = None


def _native():
    """backends.cpu.norm (oneDNN's LayerNorm), imported on first use: not at ``import ziggurat``."""
    global _native_mod
    if _native_mod is None:
        from ..backends.cpu import norm

        _native_mod = norm
    return _native_mod


def layer_norm_last_axes(x, scale, b, n_axes: int, eps: float, *, inplace: bool = False):
    """LayerNormalization of a float32/float64 numpy ``x`` over its last ``n_axes`` axes, with
    per-element ``scale`` and optional ``b``; ``inplace`` normalises ``x`` itself (a fresh buffer
    of the caller's).

    Three passes over memory beyond the statistics: the centered rows are written once into the
    output, the variance comes from them by an einsum (two-pass variance: no cancellation), and
    the per-row 1/std, scale and shift are applied in place. Row sums run as a BLAS gemv. One
    thread: splitting rows across cores measured slower here (a few short passes per row; the
    hand-off and GIL cost more than the second core gives back). float32 runs on oneDNN's layer
    normalization from 2^13 elements (backends/cpu/norm.py: up to 2x faster), else as one numba loop per
    row where ``_jit`` has loaded it, with the same two-pass statistics.
    """
    if type(x) is not np.ndarray or x.dtype not in (np.float32, np.float64):
        xp = xp_of(x)
        a = x.ndim - n_axes
        cdt = _compute_dtype(x.dtype)
        x2 = x.astype(cdt, copy=False).reshape(math.prod(x.shape[:a]), -1)
        _, d, inv = _row_stats(x2, eps, xp)
        d *= inv
        d = d.astype(x.dtype, copy=False).reshape(x.shape)
        d = d * scale
        return d if b is None else d + b
    x = np.ascontiguousarray(x)
    cols = math.prod(x.shape[x.ndim - n_axes :])
    x2 = x.reshape(-1, cols)
    y2 = x2 if inplace else np.empty_like(x2)
    if x.dtype == np.float32 and x.size >= 1 << 13 and _native().layer_norm(x2, scale, b, eps, y2):
        return y2.reshape(x.shape)
    t = x.dtype.type
    jit = _jit.kernels(x.size) if x.dtype == np.float32 and x2.size else None
    if jit is not None and scale.dtype == x.dtype and (b is None or b.dtype == x.dtype):
        bias = np.zeros(cols, x.dtype) if b is None else np.ascontiguousarray(b).reshape(-1)
        jit.layer_norm(x2, np.ascontiguousarray(scale).reshape(-1), bias, t(eps), y2)
    elif x2.size:
        mean = x2 @ np.full(cols, 1 / cols, dtype=x.dtype)
        np.subtract(x2, mean[:, None], out=y2)
        var = np.einsum("ij,ij->i", y2, y2)
        var *= t(1 / cols)
        var += t(eps)
        np.sqrt(var, out=var)
        np.reciprocal(var, out=var)
        y2 *= var[:, None]
        y2 *= scale.reshape(-1)
        if b is not None:
            y2 += b.reshape(-1)
    return y2.reshape(x.shape)


@kernel("RMSNormalization", since=23)
def RMSNormalization(x, scale, /, *, axis=-1, epsilon=1e-5, stash_type=1):
    """``x / sqrt(mean(x^2 over [axis, rank)) + eps) * scale``; the output has scale's dtype."""
    xp = xp_of(x)
    a = _norm_axis(axis, x.ndim)
    rows = math.prod(x.shape[:a])
    cdt = _compute_dtype(_stash_dtype(stash_type))
    x2 = x.astype(cdt, copy=False).reshape(rows, -1)
    ms = xp.einsum("ij,ij->i", x2, x2)[:, None] / cdt.type(max(x2.shape[1], 1))
    normalized = (x2 / xp.sqrt(ms + cdt.type(epsilon))).reshape(x.shape).astype(x.dtype, copy=False)
    return ((normalized * scale).astype(scale.dtype, copy=False),)


@kernel("InstanceNormalization", since=1)
def InstanceNormalization(x, scale, b, /, *, epsilon=1e-5, consumed_inputs=None):
    """Normalize each (instance, channel) over the spatial axes, then scale and shift per channel."""
    xp = xp_of(x)
    if x.ndim < 3:
        raise ExecutionError(f"InstanceNormalization needs input of rank >= 3, got shape {x.shape}")
    n, c = x.shape[:2]
    cdt = _compute_dtype(x.dtype)
    _, d, inv = _row_stats(x.astype(cdt, copy=False).reshape(n * c, -1), epsilon, xp)
    tail = (1,) * (x.ndim - 2)
    d *= inv
    y = d.reshape(x.shape)
    y *= scale.astype(cdt, copy=False).reshape((c,) + tail)
    y += b.astype(cdt, copy=False).reshape((c,) + tail)
    return (y.astype(x.dtype, copy=False),)


def _group_norm(x, scale, bias, num_groups, epsilon, stash_type, per_group):
    xp = xp_of(x)
    n, c = x.shape[:2]
    if num_groups <= 0 or c % num_groups:
        raise ExecutionError(
            f"GroupNormalization: {c} channels are not divisible into num_groups={num_groups}"
        )
    cdt = _compute_dtype(_stash_dtype(stash_type))
    _, d, inv = _row_stats(x.astype(cdt, copy=False).reshape(n * num_groups, -1), epsilon, xp)
    d *= inv
    normalized = d.reshape(x.shape).astype(x.dtype, copy=False)
    if per_group:
        # opset 18: one scale/bias per group, shared by the group's channels.
        scale = xp.repeat(scale, c // num_groups)
        bias = xp.repeat(bias, c // num_groups)
    tail = (1,) * (x.ndim - 2)
    y = normalized * scale.reshape((c,) + tail)
    y += bias.reshape((c,) + tail)
    return (y.astype(x.dtype, copy=False),)


@kernel("GroupNormalization", since=18)
def GroupNormalization_18(x, scale, bias, /, *, epsilon=1e-5, num_groups):
    """Normalize each (instance, group of channels); ``scale``/``bias`` have one value per group."""
    return _group_norm(x, scale, bias, num_groups, epsilon, 1, per_group=True)


@kernel("GroupNormalization", since=21)
def GroupNormalization(x, scale, bias, /, *, epsilon=1e-5, num_groups, stash_type=1):
    """Normalize each (instance, group of channels); ``scale``/``bias`` have one value per channel."""
    return _group_norm(x, scale, bias, num_groups, epsilon, stash_type, per_group=False)


@kernel("LRN", since=1)
def LRN(x, /, *, alpha=1e-4, beta=0.75, bias=1.0, size):
    """Local response normalization across channels: ``x / (bias + alpha/size * sum x^2)^beta``."""
    xp = xp_of(x)
    dt = x.dtype
    cdt = _compute_dtype(dt)
    xc = x.astype(cdt, copy=False)
    c = x.shape[1]
    before = (size - 1) // 2  # the window is [c - before, c + size - 1 - before]
    sq = xc * xc
    padded = xp.zeros((x.shape[0], c + size - 1) + x.shape[2:], dtype=cdt)
    padded[:, before : before + c] = sq
    acc = padded[:, 0:c].copy()
    for k in range(1, size):  # size is small (e.g. 5): a loop over channel shifts, not elements
        acc += padded[:, k : k + c]
    acc *= cdt.type(alpha / size)
    acc += cdt.type(bias)
    y = xc / acc ** cdt.type(beta)
    return (y.astype(dt, copy=False),)


@kernel("LpNormalization", since=1)
def LpNormalization(x, /, *, axis=-1, p=2):
    """``x / ||x||_p`` along ``axis`` (p = 1 or 2); all-zero slices give zeros."""
    xp = xp_of(x)
    if p not in (1, 2):
        raise ExecutionError(f"LpNormalization supports p=1 or p=2, got p={p}")
    a = _norm_axis(axis, x.ndim)
    dt = x.dtype
    xc = x.astype(_compute_dtype(dt), copy=False)
    norm = (
        xp.abs(xc).sum(axis=a, keepdims=True)
        if p == 1
        else xp.sqrt((xc * xc).sum(axis=a, keepdims=True))
    )
    safe = xp.where(norm == 0, 1, norm)
    y = xp.where(norm == 0, 0, xc / safe)
    return (y.astype(dt, copy=False),)


@kernel("MeanVarianceNormalization", since=9)
def MeanVarianceNormalization(x, /, *, axes=(0, 2, 3)):
    """``(x - mean) / (std + 1e-9)`` with the statistics taken over ``axes``."""
    xp = xp_of(x)
    dt = x.dtype
    xc = x.astype(_compute_dtype(dt), copy=False)
    ax = tuple(_norm_axis(int(a), x.ndim) for a in axes)
    mean = xc.mean(axis=ax, keepdims=True)
    d = xc - mean
    std = xp.sqrt((d * d).mean(axis=ax, keepdims=True))
    y = d / (std + xc.dtype.type(1e-9))
    return (y.astype(dt, copy=False),)
