"""Tensor construction: Constant, ConstantOfShape, Range, EyeLike, OneHot, NonZero.

Gather, Scatter and Compress live in ``indexing.py``; TopK and Unique in ``sort.py``; CumSum and
CumProd in ``reduce.py``; Trilu in ``matmul.py``.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from ..ir import dtypes
from .registry import kernel
from .shape import host_ints, host_scalar, norm_axis

# -- Constant / ConstantOfShape / Range / EyeLike --------------------------------------------------


def _densify(sparse) -> np.ndarray:
    if hasattr(sparse, "to_dense"):
        return sparse.to_dense()
    values = np.asarray(sparse.values)
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    idx = np.asarray(sparse.indices, dtype=np.int64)
    if idx.ndim == 2:  # (NNZ, rank) coordinates
        dense[tuple(idx.T)] = values
    else:  # linear indices into the flattened tensor
        dense.reshape(-1)[idx] = values
    return dense


@kernel("Constant", since=1)
def Constant(
    *,
    value=None,
    sparse_value=None,
    value_float=None,
    value_floats=None,
    value_int=None,
    value_ints=None,
    value_string=None,
    value_strings=None,
):
    """The tensor held by whichever one of the ``value*`` attributes is set."""
    if value is not None:
        return (value,)
    if sparse_value is not None:
        return (_densify(sparse_value),)
    if value_float is not None:
        return (np.array(value_float, dtype=np.float32),)
    if value_floats is not None:
        return (np.array(value_floats, dtype=np.float32).reshape(-1),)
    if value_int is not None:
        return (np.array(value_int, dtype=np.int64),)
    if value_ints is not None:
        return (np.array(value_ints, dtype=np.int64).reshape(-1),)
    if value_string is not None:
        return (np.array(value_string, dtype=object),)
    if value_strings is not None:
        out = np.empty(len(value_strings), dtype=object)
        out[:] = list(value_strings)
        return (out,)
    raise ExecutionError(
        "Constant: no value attribute is set; expected exactly one of value, sparse_value, "
        "value_float(s), value_int(s), value_string(s)"
    )


@kernel("ConstantOfShape", since=9)
def ConstantOfShape(shape, /, *, value=None):
    """A tensor of the given shape filled with ``value``'s single element (float32 0 by default)."""
    dims = host_ints(shape)
    if any(d < 0 for d in dims):
        raise ExecutionError(f"ConstantOfShape: shape {dims} has a negative dimension")
    if value is None:
        return (np.zeros(dims, dtype=np.float32),)
    fill = np.asarray(value).reshape(-1)
    if fill.size != 1:
        raise ExecutionError(f"ConstantOfShape: value must hold one element, got {fill.size}")
    return (xp_of(shape).full(dims, fill[0], dtype=fill.dtype),)


@kernel("Range", since=11)
def Range(start, limit, delta, /):
    """start, start+delta, ... up to (excluding) limit, in the inputs' dtype."""
    dtype = start.dtype
    s, lim, d = host_scalar(start), host_scalar(limit), host_scalar(delta)
    xp = xp_of(start)
    if dtype.kind in "iu":
        s, lim, d = int(s), int(lim), int(d)
        if d == 0:
            raise ExecutionError("Range: delta is 0; it must be non-zero")
        n = max(-((s - lim) // d), 0)  # ceil((lim - s) / d) in exact integer arithmetic
        return ((s + xp.arange(n, dtype=np.int64) * d).astype(dtype),)
    s, lim, d = float(s), float(lim), float(d)
    if d == 0.0:
        raise ExecutionError("Range: delta is 0; it must be non-zero")
    n = max(math.ceil((lim - s) / d), 0)
    # start + i*delta in float64, rounded once to the output dtype.
    return ((s + xp.arange(n, dtype=np.float64) * d).astype(dtype),)


@kernel("EyeLike", since=9)
def EyeLike(x, /, *, dtype=None, k=0):
    """A 2-D tensor shaped like ``x`` with ones on diagonal ``k``; dtype from the attribute or ``x``."""
    if x.ndim != 2:
        raise ExecutionError(f"EyeLike: input must be 2-D, got shape {list(x.shape)}")
    out_dtype = x.dtype if dtype is None else dtypes.to_numpy(dtype)
    return (xp_of(x).eye(x.shape[0], x.shape[1], k=k, dtype=out_dtype),)


# -- OneHot / NonZero ----------------------------------------------------------------------------


@kernel("OneHot", since=9)
def OneHot(indices, depth, values, /, *, axis=-1):
    """One-hot encode ``indices`` along a new ``axis`` of size ``depth`` with [off, on] ``values``;
    negative indices count from ``depth``, out-of-range ones give an all-off row."""
    d = int(host_scalar(depth))
    if d < 1:
        raise ExecutionError(f"OneHot: depth must be >= 1, got {d}")
    xp = xp_of(indices, values)
    axis = norm_axis(axis, indices.ndim + 1)
    idx = indices.astype(np.int64)  # float indices truncate, as in onnxruntime
    idx = xp.where(idx < 0, idx + d, idx)
    hot = idx[..., None] == xp.arange(d, dtype=np.int64)
    hot = xp.moveaxis(hot, -1, axis)
    vals = values.reshape(-1)
    if vals.shape[0] != 2:
        raise ExecutionError(
            f"OneHot: values must hold [off_value, on_value], got {vals.shape[0]} elements"
        )
    return (xp.where(hot, vals[1], vals[0]),)


@kernel("NonZero", since=9)
def NonZero(x, /):
    """Indices of the non-zero elements, shape (rank, count), int64 (a scalar counts as 1-D, as in
    onnxruntime)."""
    xp = xp_of(x)
    if x.ndim == 0:
        x = x.reshape(1)
    return (xp.stack(xp.nonzero(x)).astype(np.int64),)
