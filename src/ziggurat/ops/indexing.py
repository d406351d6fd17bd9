"""Gather and scatter: Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND.

Indices may be negative, counted from the end of their axis: numpy's (and CuPy's) integer indexing
already reads them that way, so no normalising pass is needed; numpy also bounds-checks them.
Scatter reductions use the ufuncs' unbuffered ``.at`` so repeated indices accumulate.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

from ..backends import xp_of
from .registry import kernel
from .shape import norm_axis


@contextmanager
def _index_errors(op: str, data, indices):
    """Turn numpy's IndexError (an index outside [-dim, dim-1]) into a message naming the op."""
    try:
        yield
    except IndexError as e:
        raise ValueError(
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
        raise ValueError(
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
        raise ValueError(
            f"GatherND: the first {b} batch dims differ: data {list(data.shape)}, indices {list(indices.shape)}"
        )
    if b + k > data.ndim:
        raise ValueError(
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
        raise ValueError(
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
        raise ValueError(
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
        raise ValueError(
            f"ScatterND: updates shape {list(updates.shape)} does not match indices "
            f"{list(indices.shape)} and data {list(data.shape)}; expected {list(expect)}"
        )
    index = tuple(indices[..., i] for i in range(k))
    return (_scatter_into("ScatterND", data, indices, index, updates, reduction),)
