"""Reductions: Reduce*, ArgMax, ArgMin; cumulative scans: CumSum, CumProd.

Every Reduce* op takes its axes as an attribute in older opsets and as an optional second input
later (ReduceSum from 13, the others from 18), so one kernel per op serves every version: the
positional ``axes_in`` and the keyword ``axes`` never both appear in a valid node.

Outputs keep the input dtype. Low-precision floats accumulate in float32 and integer means and
norms are computed in float64, then cast back, because numpy either drifts the dtype (``np.mean``
of ints is float64, ``np.sum`` of int32 is int64) or loses precision (float16 sums).
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel
from .shape import host_scalar, norm_axis


def _axes(x, axes_in, axes, noop_with_empty_axes: int) -> tuple[int, ...]:
    """The normalized, sorted reduction axes.

    No axes with ``noop_with_empty_axes`` gives ``()``: like numpy's ``axis=()`` the reduction
    step is then the identity, but composite ops still apply their elementwise part (the spec:
    ReduceLogSum returns Log(x), ReduceSumSquare returns Square(x)).
    """
    if axes_in is not None:
        host = axes_in.get() if hasattr(axes_in, "get") else axes_in  # CuPy -> host
        axes = [int(a) for a in np.asarray(host).reshape(-1)]
    if axes is None or len(axes) == 0:
        return () if noop_with_empty_axes else tuple(range(x.ndim))
    # A rank-0 input is treated as rank 1 for validation (axis 0 or -1), as onnxruntime does;
    # reducing a scalar over its one "axis" reduces nothing.
    rank, vrank = x.ndim, max(x.ndim, 1)
    for a in axes:
        if not -vrank <= a < vrank:
            raise ExecutionError(
                f"reduction axis {a} is out of range for an input of rank {rank}; "
                f"expected an axis in [{-vrank}, {vrank - 1}]"
            )
    return tuple(sorted({a % rank for a in axes})) if rank else ()


def _out_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: int) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _is_narrow_float(dtype: np.dtype) -> bool:
    """float16 or an ml_dtypes float (bfloat16, float8...): these accumulate in float32."""
    return (dtype.kind == "f" and dtype.itemsize < 4) or dtype.kind == "V"


def _work_dtype(dtype: np.dtype, ints_as_float: bool = False) -> np.dtype:
    """The dtype to accumulate in for ``dtype`` inputs."""
    if _is_narrow_float(np.dtype(dtype)):
        return np.dtype(np.float32)
    if ints_as_float and np.dtype(dtype).kind in "iub":
        return np.dtype(np.float64)
    return np.dtype(dtype)


def _reduce(x, axes_in, axes, keepdims, noop, fn, *, ints_as_float=False, pure=False):
    """Shared driver: resolve axes, compute ``fn(xp, work, axes)`` and restore shape and dtype.

    ``pure``: ``fn`` is a plain reduction (no elementwise part), so reducing over no axes returns
    the input itself.
    """
    ax = _axes(x, axes_in, axes, noop)
    if pure and not ax:
        return (x,)
    xp = xp_of(x)
    work = x.astype(_work_dtype(x.dtype, ints_as_float), copy=False)
    y = fn(xp, work, ax)
    y = xp.asarray(y).reshape(_out_shape(x.shape, ax, keepdims))
    return (y.astype(x.dtype, copy=False),)


def _sum(xp, w, ax):
    return xp.sum(w, axis=ax, dtype=w.dtype)


def _sum_square(xp, w, ax):
    return _sum(xp, w * w, ax)


def _l1(xp, w, ax):
    return _sum(xp, xp.abs(w), ax)


def _l2(xp, w, ax):
    return xp.sqrt(_sum(xp, w * w, ax))


def _mean(xp, w, ax):
    count = int(np.prod([w.shape[a] for a in ax], dtype=np.int64))
    total = _sum(xp, w, ax)
    if count == 0:
        return total * w.dtype.type(np.nan)  # the mean of an empty set is 0/0
    return total / w.dtype.type(count)


def _prod(xp, w, ax):
    return xp.prod(w, axis=ax, dtype=w.dtype)


def _extreme(xp, w, ax, largest: bool):
    """max/min over ``ax``; for an empty set the identity (-inf/+inf, or the dtype's min/max)."""
    if w.size == 0:
        dt = np.dtype(w.dtype)
        if dt.kind == "b":
            fill = not largest
        elif dt.kind in "iu":
            fill = np.iinfo(dt).min if largest else np.iinfo(dt).max
        else:
            fill = -np.inf if largest else np.inf
        return xp.full(_out_shape(w.shape, ax, 0), fill, dtype=dt)
    return xp.max(w, axis=ax) if largest else xp.min(w, axis=ax)


def _max(xp, w, ax):
    return _extreme(xp, w, ax, True)


def _min(xp, w, ax):
    return _extreme(xp, w, ax, False)


def _log_sum(xp, w, ax):
    with np.errstate(divide="ignore", invalid="ignore"):
        return xp.log(_sum(xp, w, ax))


def _log_sum_exp(xp, w, ax):
    if w.size == 0:
        return xp.full(_out_shape(w.shape, ax, 0), -np.inf, dtype=w.dtype)
    # Shift by the max so exp never overflows; a max of +-inf would give inf-inf = NaN, so those
    # slices are shifted by 0 instead.
    m = xp.max(w, axis=ax, keepdims=True)
    m = xp.where(xp.isfinite(m), m, w.dtype.type(0))
    with np.errstate(divide="ignore"):
        s = xp.log(_sum(xp, xp.exp(w - m), ax))
    return s + m.reshape(s.shape)


@kernel("ReduceSum", since=1)
def ReduceSum(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Sum over ``axes`` (all axes when none are given, unless ``noop_with_empty_axes``)."""
    return _reduce(data, axes_in, axes, keepdims, noop_with_empty_axes, _sum, pure=True)


@kernel("ReduceSumSquare", since=1)
def ReduceSumSquare(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Sum of squares over ``axes``."""
    return _reduce(data, axes_in, axes, keepdims, noop_with_empty_axes, _sum_square)


@kernel("ReduceL1", since=1)
def ReduceL1(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Sum of absolute values over ``axes``."""
    return _reduce(data, axes_in, axes, keepdims, noop_with_empty_axes, _l1)


@kernel("ReduceL2", since=1)
def ReduceL2(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Euclidean norm over ``axes``."""
    return _reduce(data, axes_in, axes, keepdims, noop_with_empty_axes, _l2, ints_as_float=True)


@kernel("ReduceMean", since=1)
def ReduceMean(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Arithmetic mean over ``axes`` (NaN for an empty set of floats; ints truncate)."""
    if np.dtype(data.dtype).kind in "iu":
        # Exact sum in int64/uint64, then divide and truncate like a C cast.
        ax = _axes(data, axes_in, axes, noop_with_empty_axes)
        if not ax:
            return (data,)
        xp = xp_of(data)
        acc = np.int64 if np.dtype(data.dtype).kind == "i" else np.uint64
        total = xp.asarray(xp.sum(data, axis=ax, dtype=acc))
        count = max(int(np.prod([data.shape[a] for a in ax], dtype=np.int64)), 1)
        y = (total.astype(np.float64) / count).astype(data.dtype)
        return (y.reshape(_out_shape(data.shape, ax, keepdims)),)
    return _reduce(data, axes_in, axes, keepdims, noop_with_empty_axes, _mean, pure=True)


@kernel("ReduceProd", since=1)
def ReduceProd(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Product over ``axes`` (1 for an empty set)."""
    return _reduce(data, axes_in, axes, keepdims, noop_with_empty_axes, _prod, pure=True)


@kernel("ReduceMax", since=1)
def ReduceMax(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Maximum over ``axes`` (-inf, the dtype's minimum, or False for an empty set)."""
    return _reduce(data, axes_in, axes, keepdims, noop_with_empty_axes, _max, pure=True)


@kernel("ReduceMin", since=1)
def ReduceMin(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Minimum over ``axes`` (+inf, the dtype's maximum, or True for an empty set)."""
    return _reduce(data, axes_in, axes, keepdims, noop_with_empty_axes, _min, pure=True)


@kernel("ReduceLogSum", since=1)
def ReduceLogSum(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """log(sum(x)) over ``axes`` (-inf for an empty set)."""
    return _reduce(
        data, axes_in, axes, keepdims, noop_with_empty_axes, _log_sum, ints_as_float=True
    )


@kernel("ReduceLogSumExp", since=1)
def ReduceLogSumExp(data, axes_in=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """log(sum(exp(x))) over ``axes``, computed stably (-inf for an empty set)."""
    return _reduce(
        data, axes_in, axes, keepdims, noop_with_empty_axes, _log_sum_exp, ints_as_float=True
    )


def _arg(x, axis: int, keepdims: int, select_last_index: int, largest: bool, op: str):
    xp = xp_of(x)
    rank, vrank = x.ndim, max(x.ndim, 1)  # a scalar acts as rank 1, as in onnxruntime
    if not -vrank <= axis < vrank:
        raise ExecutionError(
            f"{op}: axis {axis} is out of range for rank {rank}; expected [{-vrank}, {vrank - 1}]"
        )
    if rank == 0:
        return (xp.zeros((), dtype=np.int64),)
    axis %= rank
    if x.shape[axis] == 0:
        out_shape = _out_shape(x.shape, (axis,), keepdims)
        if 0 in x.shape[:axis] + x.shape[axis + 1 :]:
            # Nothing to index: the output is empty too (onnxruntime agrees).
            return (xp.zeros(out_shape, dtype=np.int64),)
        raise ExecutionError(
            f"{op}: axis {axis} is empty in the input (shape {x.shape}) but the output (shape "
            f"{out_shape}) is not, so there is no index to return; use a non-empty axis"
        )
    if _is_narrow_float(np.dtype(x.dtype)):
        x = x.astype(np.float32)
    find = xp.argmax if largest else xp.argmin
    if select_last_index:
        # Search the reversed axis: the first hit there is the last hit in the original order.
        n = x.shape[axis]
        idx = (n - 1) - find(xp.flip(x, axis=axis), axis=axis)
    else:
        idx = find(x, axis=axis)
    idx = idx.astype(np.int64, copy=False)
    if keepdims:
        idx = xp.expand_dims(idx, axis)
    return (idx,)


@kernel("ArgMax", since=1)
def ArgMax(data, /, *, axis=0, keepdims=1, select_last_index=0):
    """Index (int64) of the largest element along ``axis``; ties go to the first unless select_last_index."""
    return _arg(data, axis, keepdims, select_last_index, True, "ArgMax")


@kernel("ArgMin", since=1)
def ArgMin(data, /, *, axis=0, keepdims=1, select_last_index=0):
    """Index (int64) of the smallest element along ``axis``; ties go to the first unless select_last_index."""
    return _arg(data, axis, keepdims, select_last_index, False, "ArgMin")


# -- CumSum, CumProd -----------------------------------------------------------------------------


def _cumulative(op: str, x, axis, exclusive: int, reverse: int):
    ax = norm_axis(int(host_scalar(axis)), x.ndim)
    xp = xp_of(x)
    if x.shape[ax] == 0:
        return x.copy()
    y = xp.flip(x, ax) if reverse else x
    if exclusive:
        # Shift by one along the axis, filling with the identity, so the scan skips each element.
        first = [slice(None)] * x.ndim
        first[ax] = slice(0, 1)
        head = xp.zeros_like(y[tuple(first)]) if op == "sum" else xp.ones_like(y[tuple(first)])
        rest = [slice(None)] * x.ndim
        rest[ax] = slice(0, -1)
        y = xp.concatenate([head, y[tuple(rest)]], axis=ax)
    # dtype= keeps int32 from widening to the platform integer.
    out = (xp.cumsum if op == "sum" else xp.cumprod)(y, axis=ax, dtype=x.dtype)
    return xp.flip(out, ax) if reverse else out


@kernel("CumSum", since=11)
def CumSum(x, axis, /, *, exclusive=0, reverse=0):
    """Running sum along ``axis``; ``exclusive`` leaves out the current element, ``reverse`` runs
    from the end."""
    return (_cumulative("sum", x, axis, exclusive, reverse),)


@kernel("CumProd", since=26)
def CumProd(x, axis, /, *, exclusive=0, reverse=0):
    """Running product along ``axis``; same options as CumSum."""
    return (_cumulative("prod", x, axis, exclusive, reverse),)
