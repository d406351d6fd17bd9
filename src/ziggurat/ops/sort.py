"""Sorting and selection by value: TopK, Unique.

Ties keep the lower index first, as onnxruntime does; ml_dtypes floats (bfloat16, float8) are
compared through an exact float32 widening.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel
from .shape import host_scalar, norm_axis


def _sort_keys(a):
    """An array that sorts like ``a``: ml_dtypes floats (bfloat16, float8) widen exactly to float32."""
    return a.astype(np.float32) if a.dtype.kind == "V" else a


def _topk(x, k: int, axis: int, largest: int):
    ax = norm_axis(axis, x.ndim)
    n = x.shape[ax]
    if not 0 <= k <= n:
        raise ExecutionError(
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
