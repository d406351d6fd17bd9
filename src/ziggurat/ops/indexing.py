"""Gather and scatter: Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND;
selection along an axis: Compress, ReverseSequence.

Indices may be negative, counted from the end of their axis: numpy's (and CuPy's) integer indexing
already reads them that way, so no normalising pass is needed; numpy also bounds-checks them.
Scatter reductions use the ufuncs' unbuffered ``.at`` so repeated indices accumulate.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel
from .shape import norm_axis


@contextmanager
def _index_errors(op: str, data, indices):
    """Turn numpy's IndexError (an index outside [-dim, dim-1]) into a message naming the op."""
    try:
        yield
    except IndexError as e:
        raise ExecutionError(
            f"{op}: {e} (data shape {list(data.shape)}, indices shape {list(indices.shape)}); "
            "indices must lie in [-dim, dim-1] of the axis they address"
        ) from None


@kernel("Gather", since=1)
def Gather(data, indices, /, *, axis=0):
    """Entries of ``data`` along ``axis`` at ``indices``; the output shape replaces that axis with
    the indices' shape."""
    ax = norm_axis(axis, data.ndim)
    with _index_errors("Gather", data, indices):
        return (xp_of(data).take(data, indices, axis=ax),)


@kernel("GatherElements", since=11)
def GatherElements(data, indices, /, *, axis=0):
    """out[i][j][k] = data[indices[i][j][k]][j][k] (for axis 0; likewise for other axes)."""
    ax = norm_axis(axis, data.ndim)
    if indices.ndim != data.ndim:
        raise ExecutionError(
            f"GatherElements: indices rank {indices.ndim} differs from data rank {data.ndim}"
        )
    # Other axes of indices may be shorter than data's: gather from the matching corner.
    corner = tuple(slice(None) if i == ax else slice(0, s) for i, s in enumerate(indices.shape))
    with _index_errors("GatherElements", data, indices):
        return (xp_of(data).take_along_axis(data[corner], indices, axis=ax),)


@kernel("GatherND", since=11)
def GatherND(data, indices, /, *, batch_dims=0):
    """Slices of ``data`` addressed by the last axis of ``indices`` (each row a partial index),
    with the first ``batch_dims`` axes of both shared as batch axes."""
    b = batch_dims
    k = indices.shape[-1]
    if data.shape[:b] != indices.shape[:b]:
        raise ExecutionError(
            f"GatherND: the first {b} batch dims differ: data {list(data.shape)}, indices {list(indices.shape)}"
        )
    if b + k > data.ndim:
        raise ExecutionError(
            f"GatherND: index rows of length {k} (+{b} batch dims) exceed data rank {data.ndim}"
        )
    xp = xp_of(data)
    batch = math.prod(data.shape[:b])
    flat_data = xp.reshape(data, (batch, *data.shape[b:]))
    flat_idx = xp.reshape(indices, (batch, math.prod(indices.shape[b:-1]), k))
    rows = xp.arange(batch).reshape(batch, 1)
    with _index_errors("GatherND", data, indices):
        out = flat_data[(rows, *(flat_idx[..., i] for i in range(k)))]
    return (xp.reshape(out, (*indices.shape[:-1], *data.shape[b + k :])),)


_REDUCE = {"add": "add", "mul": "multiply", "max": "maximum", "min": "minimum"}


def _scatter_into(op: str, data, indices, index: tuple, updates, reduction: str):
    if reduction != "none" and reduction not in _REDUCE:
        raise ExecutionError(
            f"{op}: reduction must be one of none, add, mul, max, min; got {reduction!r}"
        )
    out = data.copy()
    with _index_errors(op, data, indices):
        if reduction == "none":
            out[index] = updates
        else:
            getattr(xp_of(data), _REDUCE[reduction]).at(out, index, updates)
    return out


@kernel("ScatterElements", since=11)
def ScatterElements(data, indices, updates, /, *, axis=0, reduction="none"):
    """A copy of ``data`` with out[indices[i][j]][j] = updates[i][j] (axis 0); repeated indices
    combine with ``reduction``."""
    ax = norm_axis(axis, data.ndim)
    if indices.shape != updates.shape or indices.ndim != data.ndim:
        raise ExecutionError(
            f"ScatterElements: indices {list(indices.shape)} and updates {list(updates.shape)} must "
            f"have the same shape, of data's rank {data.ndim}"
        )
    xp = xp_of(data)
    index = []
    for i, s in enumerate(indices.shape):
        if i == ax:
            index.append(indices)
        else:  # an open grid: arange along axis i, broadcast over the others
            shape = [1] * indices.ndim
            shape[i] = s
            index.append(xp.arange(s).reshape(shape))
    return (_scatter_into("ScatterElements", data, indices, tuple(index), updates, reduction),)


@kernel("Scatter", since=9)
def Scatter(data, indices, updates, /, *, axis=0):
    """Scatter-9/11, the deprecated name of ScatterElements without reduction."""
    return ScatterElements(data, indices, updates, axis=axis)


@kernel("ScatterND", since=11)
def ScatterND(data, indices, updates, /, *, reduction="none"):
    """A copy of ``data`` with the slices addressed by the rows of ``indices`` replaced by (or
    combined with) ``updates``."""
    k = indices.shape[-1]
    expect = (*indices.shape[:-1], *data.shape[k:])
    if k > data.ndim or updates.shape != expect:
        raise ExecutionError(
            f"ScatterND: updates shape {list(updates.shape)} does not match indices "
            f"{list(indices.shape)} and data {list(data.shape)}; expected {list(expect)}"
        )
    index = tuple(indices[..., i] for i in range(k))
    return (_scatter_into("ScatterND", data, indices, index, updates, reduction),)


# -- ReverseSequence, Compress --------------------------------------------------------------------


@kernel("ReverseSequence", since=10)
def ReverseSequence(data, sequence_lens, /, *, batch_axis=1, time_axis=0):
    """Reverse the first ``sequence_lens[b]`` steps along ``time_axis`` of each batch item ``b``."""
    rank = data.ndim
    batch_axis = norm_axis(batch_axis, rank, "batch_axis")
    time_axis = norm_axis(time_axis, rank, "time_axis")
    if batch_axis == time_axis:
        raise ExecutionError(
            f"ReverseSequence: batch_axis and time_axis are both {batch_axis}; they must differ"
        )
    xp = xp_of(data)
    steps, batch = data.shape[time_axis], data.shape[batch_axis]
    lens = xp.asarray(sequence_lens, dtype=np.int64).reshape(-1)
    if lens.shape[0] != batch:
        raise ExecutionError(
            f"ReverseSequence: sequence_lens has {lens.shape[0]} entries for a batch of {batch}"
        )
    t_shape = [1] * rank
    t_shape[time_axis] = steps
    b_shape = [1] * rank
    b_shape[batch_axis] = batch
    t = xp.arange(steps, dtype=np.int64).reshape(t_shape)
    n = lens.reshape(b_shape)
    # Source time index per (time, batch): reversed inside the sequence, unchanged past its end.
    src = xp.where(t < n, n - 1 - t, t)
    return (xp.take_along_axis(data, src, axis=time_axis),)


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
        raise ExecutionError(
            f"Compress: condition has {cond.shape[0]} entries but axis {ax} has length {x.shape[ax]}"
        )
    return (xp.compress(cond, x, axis=ax),)
