"""Tensor construction and selection: Constant, ConstantOfShape, Range, EyeLike, OneHot, Trilu,
CumSum, CumProd, TopK, Unique, NonZero, Compress.

Gather and Scatter ops live in ``ops/indexing.py``.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends import xp_of
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
    raise ValueError(
        "Constant: no value attribute is set; expected exactly one of value, sparse_value, "
        "value_float(s), value_int(s), value_string(s)"
    )


@kernel("ConstantOfShape", since=9)
def ConstantOfShape(shape, /, *, value=None):
    """A tensor of the given shape filled with ``value``'s single element (float32 0 by default)."""
    dims = host_ints(shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"ConstantOfShape: shape {dims} has a negative dimension")
    if value is None:
        return (np.zeros(dims, dtype=np.float32),)
    fill = np.asarray(value).reshape(-1)
    if fill.size != 1:
        raise ValueError(f"ConstantOfShape: value must hold one element, got {fill.size}")
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
            raise ValueError("Range: delta is 0; it must be non-zero")
        n = max(-((s - lim) // d), 0)  # ceil((lim - s) / d) in exact integer arithmetic
        return ((s + xp.arange(n, dtype=np.int64) * d).astype(dtype),)
    s, lim, d = float(s), float(lim), float(d)
    if d == 0.0:
        raise ValueError("Range: delta is 0; it must be non-zero")
    n = max(math.ceil((lim - s) / d), 0)
    # start + i*delta in float64, rounded once to the output dtype.
    return ((s + xp.arange(n, dtype=np.float64) * d).astype(dtype),)


@kernel("EyeLike", since=9)
def EyeLike(x, /, *, dtype=None, k=0):
    """A 2-D tensor shaped like ``x`` with ones on diagonal ``k``; dtype from the attribute or ``x``."""
    if x.ndim != 2:
        raise ValueError(f"EyeLike: input must be 2-D, got shape {list(x.shape)}")
    out_dtype = x.dtype if dtype is None else dtypes.to_numpy(dtype)
    return (xp_of(x).eye(x.shape[0], x.shape[1], k=k, dtype=out_dtype),)


# -- OneHot / Trilu / CumSum / CumProd -------------------------------------------------------------


@kernel("OneHot", since=9)
def OneHot(indices, depth, values, /, *, axis=-1):
    """One-hot encode ``indices`` along a new ``axis`` of size ``depth`` with [off, on] ``values``;
    negative indices count from ``depth``, out-of-range ones give an all-off row."""
    d = int(host_scalar(depth))
    if d < 1:
        raise ValueError(f"OneHot: depth must be >= 1, got {d}")
    xp = xp_of(indices, values)
    axis = norm_axis(axis, indices.ndim + 1)
    idx = indices.astype(np.int64)  # float indices truncate, as in onnxruntime
    idx = xp.where(idx < 0, idx + d, idx)
    hot = idx[..., None] == xp.arange(d, dtype=np.int64)
    hot = xp.moveaxis(hot, -1, axis)
    vals = values.reshape(-1)
    if vals.shape[0] != 2:
        raise ValueError(
            f"OneHot: values must hold [off_value, on_value], got {vals.shape[0]} elements"
        )
    return (xp.where(hot, vals[1], vals[0]),)


@kernel("Trilu", since=14)
def Trilu(x, k=None, /, *, upper=1):
    """Keep the upper (or lower) triangle of the last two dims from diagonal ``k``; zero the rest."""
    if x.ndim < 2:
        raise ValueError(f"Trilu: input must have rank >= 2, got shape {list(x.shape)}")
    diag = 0 if k is None else int(host_scalar(k))
    xp = xp_of(x)
    return ((xp.triu if upper else xp.tril)(x, diag),)


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


# -- TopK / Unique / NonZero / Compress ------------------------------------------------------------


def _sort_keys(a):
    """An array that sorts like ``a``: ml_dtypes floats (bfloat16, float8) widen exactly to float32."""
    return a.astype(np.float32) if a.dtype.kind == "V" else a


def _topk(x, k: int, axis: int, largest: int):
    ax = norm_axis(axis, x.ndim)
    n = x.shape[ax]
    if not 0 <= k <= n:
        raise ValueError(
            f"TopK: k={k} is out of range for axis {ax} of length {n}; expected 0 <= k <= {n}"
        )
    xp = xp_of(x)
    keys = _sort_keys(x)
    head = [slice(None)] * x.ndim
    head[ax] = slice(0, k)
    if largest:
        # Descending with ties in ascending index order: stable-sort the reversed axis ascending,
        # then read it backwards (never negate: that breaks unsigned types).
        order = xp.flip(xp.argsort(xp.flip(keys, ax), axis=ax, kind="stable"), ax)
        idx = (n - 1) - order[tuple(head)]
    else:
        idx = xp.argsort(keys, axis=ax, kind="stable")[tuple(head)]
    idx = idx.astype(np.int64, copy=False)
    return xp.take_along_axis(x, idx, axis=ax), idx


@kernel("TopK", since=10)
def TopK(x, k, /, *, axis=-1, largest=1, sorted=1):
    """The ``k`` largest (or smallest) elements along ``axis`` and their int64 indices, sorted;
    equal values keep ascending index order."""
    return _topk(x, int(host_scalar(k)), axis, largest)


@kernel("TopK", since=1)
def TopK_1(x, /, *, k, axis=-1):
    """TopK-1: ``k`` is an attribute and the largest elements are returned."""
    return _topk(x, k, axis, 1)


@kernel("Unique", since=11)
def Unique(x, /, *, axis=None, sorted=1):
    """Unique elements (or sub-tensors along ``axis``), with first-occurrence indices, inverse
    indices and counts; ascending, or in order of first occurrence when ``sorted`` is 0."""
    xp = xp_of(x)
    if axis is None:
        data, ax = x.reshape(-1), 0
        rows = _sort_keys(data)[:, None]
    else:
        ax = norm_axis(axis, x.ndim)
        data = x
        rows = _sort_keys(xp.moveaxis(x, ax, 0).reshape(x.shape[ax], -1))
    n = rows.shape[0]
    if n == 0:
        empty = xp.zeros(0, dtype=np.int64)
        return data[:0] if axis is None else data, empty, empty, empty
    if rows.shape[1] == 0:
        perm = xp.arange(n)
    else:
        # lexsort's last key is the primary one; it is stable, so ties keep input order.
        perm = xp.lexsort(rows.T[::-1])
    ordered = rows[perm]
    new = xp.concatenate([xp.ones(1, dtype=bool), xp.any(ordered[1:] != ordered[:-1], axis=1)])
    group = xp.cumsum(new) - 1
    starts = xp.flatnonzero(new)
    first = perm[starts]  # stable order: the first element of each run is the first occurrence
    counts = xp.diff(xp.concatenate([starts, xp.asarray([n])]))
    inverse = xp.empty(n, dtype=np.int64)
    inverse[perm] = group
    if not sorted:
        order = xp.argsort(first, kind="stable")
        first, counts = first[order], counts[order]
        rank = xp.empty_like(order)
        rank[order] = xp.arange(order.shape[0])
        inverse = rank[inverse]
    y = xp.take(data, first, axis=ax)
    return y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)


@kernel("NonZero", since=9)
def NonZero(x, /):
    """Indices of the non-zero elements, shape (rank, count), int64 (a scalar counts as 1-D, as in
    onnxruntime)."""
    xp = xp_of(x)
    if x.ndim == 0:
        x = x.reshape(1)
    return (xp.stack(xp.nonzero(x)).astype(np.int64),)


@kernel("Compress", since=9)
def Compress(x, condition, /, *, axis=None):
    """Slices of ``x`` along ``axis`` (of the flattened ``x`` without one) where ``condition`` is true;
    a shorter condition leaves out the remaining slices."""
    xp = xp_of(x)
    cond = condition.reshape(-1).astype(bool)
    if axis is None:
        x, ax = x.reshape(-1), 0
    else:
        ax = norm_axis(axis, x.ndim)
    if cond.shape[0] > x.shape[ax]:
        raise ValueError(
            f"Compress: condition has {cond.shape[0]} entries but axis {ax} has length {x.shape[ax]}"
        )
    return (xp.compress(cond, x, axis=ax),)
