"""Shape manipulation: Reshape, Transpose, Squeeze, Unsqueeze, Flatten, Concat, Split, Slice, Tile,
Expand, Shape, Size, DepthToSpace, SpaceToDepth, Identity.

Padding (Pad, CenterCropPad) lives in ``pad.py``, ReverseSequence in ``indexing.py``, Dropout in
``random.py``.

Shape-like inputs (Reshape's ``shape``, Slice's ``starts`` ...) are read on the host with
``host_ints``; the data itself stays in its array namespace, so these kernels serve numpy and CuPy.
Most kernels return views (reshape, transpose, slice, split) rather than copies: kernels never write
into their inputs, so sharing buffers is safe and saves a copy per node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel


def host_ints(a) -> list[int]:
    """A small integer tensor (shape, axes, pads ...) as a list of Python ints, read on the host."""
    if a is None:
        return []
    if not isinstance(a, np.ndarray) and hasattr(a, "get"):  # CuPy: one device->host copy
        a = a.get()
    return [int(v) for v in np.asarray(a).reshape(-1).tolist()]


def host_scalar(a):
    """The single element of a scalar (or one-element) tensor as a numpy scalar, read on the host."""
    if not isinstance(a, np.ndarray) and hasattr(a, "get"):
        a = a.get()
    a = np.asarray(a)
    if a.size != 1:
        raise ExecutionError(f"expected a scalar or one-element tensor, got shape {list(a.shape)}")
    return a.reshape(-1)[0]


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` in [-rank, rank-1] made non-negative, or an ExecutionError naming the valid range."""
    if not -rank <= axis < rank:
        raise ExecutionError(
            f"{what} {axis} is out of range for a tensor of rank {rank}; expected a value in [{-rank}, {rank - 1}]"
        )
    return axis + rank if axis < 0 else axis


def norm_axes(axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    """Each of ``axes`` made non-negative; duplicates are an error."""
    out = [norm_axis(int(a), rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise ExecutionError(f"{what} {list(axes)} repeats an axis; each axis may appear once")
    return out


# -- Reshape / Transpose / Squeeze / Unsqueeze / Flatten -------------------------------------------


def _reshape(data, shape: list[int], allowzero: int):
    if not allowzero:
        # 0 copies the input's dimension at the same index (ONNX, unlike numpy).
        shape = [data.shape[i] if s == 0 and i < data.ndim else s for i, s in enumerate(shape)]
    if shape.count(-1) > 1:
        raise ExecutionError(
            f"Reshape: shape {shape} has more than one -1; at most one dimension can be inferred"
        )
    try:
        return xp_of(data).reshape(data, shape)
    except ValueError:
        raise ExecutionError(
            f"Reshape: cannot reshape a tensor of shape {list(data.shape)} ({data.size} elements) "
            f"to {shape}; the target must hold the same number of elements"
        ) from None


@kernel("Reshape", since=5)
def Reshape(data, shape, /, *, allowzero=0):
    """Reshape to ``shape``: 0 keeps the input's dimension (unless allowzero), -1 is inferred."""
    return (_reshape(data, host_ints(shape), allowzero),)


@kernel("Reshape", since=1)
def Reshape_1(data, /, *, shape):
    """Reshape-1..4: the target shape is an attribute."""
    return (_reshape(data, list(shape), 0),)


@kernel("Transpose", since=1)
def Transpose(data, /, *, perm=None):
    """Permute the axes; without ``perm`` the axes are reversed."""
    if perm is not None and sorted(perm) != list(range(data.ndim)):
        raise ExecutionError(
            f"Transpose: perm {list(perm)} is not a permutation of range({data.ndim})"
        )
    return (xp_of(data).transpose(data, perm),)


def _squeeze(data, axes):
    if not axes:
        return xp_of(data).reshape(data, [d for d in data.shape if d != 1])
    axes = norm_axes(axes, data.ndim)
    bad = [a for a in axes if data.shape[a] != 1]
    if bad:
        raise ExecutionError(
            f"Squeeze: axes {bad} of shape {list(data.shape)} are not of size 1; only size-1 axes can be squeezed"
        )
    return xp_of(data).reshape(data, [d for i, d in enumerate(data.shape) if i not in axes])


@kernel("Squeeze", since=13)
def Squeeze(data, axes=None, /):
    """Remove size-1 axes (all of them when ``axes`` is omitted or, as in onnxruntime, empty)."""
    return (_squeeze(data, host_ints(axes) or None),)


@kernel("Squeeze", since=1)
def Squeeze_1(data, /, *, axes=None):
    """Squeeze-1/11: ``axes`` is an attribute."""
    return (_squeeze(data, axes),)


def _unsqueeze(data, axes: list[int]):
    rank = data.ndim + len(axes)
    axes = norm_axes(axes, rank)
    dims = iter(data.shape)
    shape = [1 if i in axes else next(dims) for i in range(rank)]
    return xp_of(data).reshape(data, shape)


@kernel("Unsqueeze", since=13)
def Unsqueeze(data, axes, /):
    """Insert size-1 axes at ``axes`` (indices into the output's rank)."""
    return (_unsqueeze(data, host_ints(axes)),)


@kernel("Unsqueeze", since=1)
def Unsqueeze_1(data, /, *, axes):
    """Unsqueeze-1/11: ``axes`` is an attribute."""
    return (_unsqueeze(data, list(axes)),)


@kernel("Flatten", since=1)
def Flatten(data, /, *, axis=1):
    """Flatten to 2-D: dimensions before ``axis`` form the rows, the rest the columns."""
    rank = data.ndim
    if not -rank <= axis <= rank:
        raise ExecutionError(
            f"Flatten: axis {axis} is out of range for rank {rank}; expected [{-rank}, {rank}]"
        )
    if axis < 0:
        axis += rank
    rows = math.prod(data.shape[:axis])
    return (xp_of(data).reshape(data, (rows, math.prod(data.shape[axis:]))),)


# -- Concat / Split --------------------------------------------------------------------------------


@kernel("Concat", since=1)
def Concat(*inputs, axis=1):
    """Join the inputs along ``axis`` (Concat-1 defaulted axis to 1; later versions require it)."""
    if not inputs:
        raise ExecutionError("Concat needs at least one input")
    axis = norm_axis(axis, inputs[0].ndim)
    if len(inputs) == 1:
        return (inputs[0],)
    return (xp_of(*inputs).concatenate(inputs, axis=axis),)


def _split(data, axis: int, sizes: list[int]):
    axis = norm_axis(axis, data.ndim)
    if any(s < 0 for s in sizes) or sum(sizes) != data.shape[axis]:
        raise ExecutionError(
            f"Split: sizes {sizes} must be non-negative and add up to the split axis' length "
            f"{data.shape[axis]} (axis {axis} of shape {list(data.shape)})"
        )
    bounds = np.cumsum([0] + sizes).tolist()
    index = [slice(None)] * data.ndim
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        index[axis] = slice(lo, hi)
        parts.append(data[tuple(index)])
    return tuple(parts)


def _equal_sizes(length: int, parts: int, uneven: bool) -> list[int]:
    if parts <= 0:
        raise ExecutionError(f"Split: cannot split into {parts} outputs")
    if length % parts == 0:
        return [length // parts] * parts
    if not uneven:
        raise ExecutionError(
            f"Split: axis length {length} does not divide into {parts} equal outputs; "
            "pass 'split' sizes explicitly"
        )
    # num_outputs (opset 18): chunks of ceil(length/parts), the last one smaller.
    chunk = -(-length // parts)
    return [min(chunk, max(length - i * chunk, 0)) for i in range(parts)]


@kernel("Split", since=13)
def Split(data, split=None, /, *, axis=0, num_outputs=None, n_outputs=1):
    """Split along ``axis`` into ``split`` sizes, ``num_outputs`` chunks, or as many equal parts as
    the node has outputs."""
    sizes = host_ints(split)  # an empty split input means "not given", as in onnxruntime
    if not sizes:
        length = data.shape[norm_axis(axis, data.ndim)]
        if num_outputs is not None:
            sizes = _equal_sizes(length, num_outputs, uneven=True)
        else:
            sizes = _equal_sizes(length, n_outputs, uneven=False)
    return _split(data, axis, sizes)


@kernel("Split", since=1)
def Split_1(data, split_input=None, /, *, axis=0, split=None, n_outputs=1):
    """Split-1/2/11: sizes from the ``split`` attribute (Split-1 also took them as an input)."""
    if split is None and split_input is not None:
        split = host_ints(split_input)
    if split is None:
        split = _equal_sizes(data.shape[norm_axis(axis, data.ndim)], n_outputs, uneven=False)
    return _split(data, axis, list(split))


# -- Slice -----------------------------------------------------------------------------------------


def _slice(
    data, starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None
):
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ExecutionError(
            f"Slice: starts ({len(starts)}), ends ({len(ends)}), axes ({len(axes)}) and steps "
            f"({len(steps)}) must all have the same length"
        )
    axes = norm_axes(axes, data.ndim)
    index = [slice(None)] * data.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            raise ExecutionError(f"Slice: step for axis {a} is 0; steps must be non-zero")
        index[a] = _effective_slice(s, e, st, data.shape[a])
    return data[tuple(index)]


def _effective_slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX's effective bounds for one axis, as a Python slice that means the same.

    The spec adds ``dim`` to negative starts and ends, then clamps start to [0, dim] and end to
    [0, dim] for a positive step, or start to [0, dim-1] and end to [-1, dim-1] for a negative
    one. Python's own slice clamping differs for a negative step: it clamps a start below -dim to
    -1 (select nothing) where ONNX clamps it to 0 (start at the first element), so the bounds are
    resolved here. INT64_MIN/MAX sentinels resolve like any other out-of-range value.
    """
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    if dim == 0:
        return slice(0, 0, step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    # An end of -1 means "through index 0"; as a Python slice bound -1 would mean dim - 1.
    return slice(start, None if end < 0 else end, step)


@kernel("Slice", since=10)
def Slice(data, starts, ends, axes=None, steps=None, /):
    """numpy-style slicing with per-axis starts, ends, axes and steps given as inputs."""
    return (
        _slice(
            data,
            host_ints(starts),
            host_ints(ends),
            None if axes is None else host_ints(axes),
            None if steps is None else host_ints(steps),
        ),
    )


@kernel("Slice", since=1)
def Slice_1(data, /, *, starts, ends, axes=None):
    """Slice-1: starts, ends and axes are attributes; the step is always 1."""
    return (_slice(data, list(starts), list(ends), None if axes is None else list(axes), None),)


# -- Tile / Expand ---------------------------------------------------------------------------------


@kernel("Tile", since=6)
def Tile(data, repeats, /):
    """Repeat the whole tensor ``repeats[i]`` times along each axis i."""
    reps = host_ints(repeats)
    if len(reps) != data.ndim:
        raise ExecutionError(
            f"Tile: repeats has {len(reps)} values but the input has rank {data.ndim}; give one per axis"
        )
    if any(r < 0 for r in reps):  # checked first: numpy would tile the other axes, then fail
        raise ExecutionError(f"Tile: repeats must be >= 0, got {reps}")
    if 0 in reps or data.size == 0:  # empty result: numpy's tile would still build every axis
        shape = tuple(d * r for d, r in zip(data.shape, reps, strict=True))  # (hangs on 2^62)
        return (xp_of(data).empty(shape, dtype=data.dtype),)
    return (xp_of(data).tile(data, reps),)


@kernel("Tile", since=1)
def Tile_1(data, tiles, axis, /):
    """Tile-1: repeat ``tiles`` times along the single axis ``axis`` (both scalar inputs)."""
    reps = [1] * data.ndim
    reps[norm_axis(host_ints(axis)[0], data.ndim)] = host_ints(tiles)[0]
    return (xp_of(data).tile(data, reps),)


@kernel("Expand", since=8)
def Expand(data, shape, /):
    """Broadcast ``data`` against ``shape`` (numpy rules, in both directions)."""
    target = host_ints(shape)
    try:
        out_shape = np.broadcast_shapes(data.shape, tuple(target))
    except ValueError:
        raise ExecutionError(
            f"Expand: input shape {list(data.shape)} cannot broadcast with shape {target}"
        ) from None
    xp = xp_of(data)
    # A copy, not the read-only zero-stride view: outputs may reach the caller or a writing kernel.
    # (.copy(), not ascontiguousarray, which turns a 0-d result into shape (1,).)
    return (xp.broadcast_to(data, out_shape).copy(),)


# -- Shape / Size / Identity -----------------------------------------------------------------------


@kernel("Shape", since=1)
def Shape(data, /, *, start=0, end=None):
    """The input's shape as int64, optionally only dims [start, end) (clamped, Python-style)."""
    return (xp_of(data).asarray(np.array(data.shape[start:end], dtype=np.int64)),)


@kernel("Size", since=1)
def Size(data, /):
    """The number of elements, as an int64 scalar."""
    return (xp_of(data).asarray(np.array(math.prod(data.shape), dtype=np.int64)),)


@kernel("Identity", since=1)
def Identity(x, /):
    """The input itself: a tensor, a sequence (list) or an optional (None when empty)."""
    return (x,)


# -- DepthToSpace / SpaceToDepth -------------------------------------------------------------------


def _check_4d(op: str, x, blocksize: int) -> tuple[int, int, int, int]:
    if x.ndim != 4:
        raise ExecutionError(f"{op}: expected a 4-D NCHW input, got shape {list(x.shape)}")
    if blocksize < 1:
        raise ExecutionError(f"{op}: blocksize must be >= 1, got {blocksize}")
    return x.shape


@kernel("DepthToSpace", since=1)
def DepthToSpace(x, /, *, blocksize, mode="DCR"):
    """Move channel blocks into (blocksize x blocksize) spatial tiles; DCR or CRD channel order."""
    n, c, h, w = _check_4d("DepthToSpace", x, blocksize)
    b = blocksize
    if c % (b * b):
        raise ExecutionError(
            f"DepthToSpace: channels {c} are not divisible by blocksize^2 = {b * b}"
        )
    xp = xp_of(x)
    if mode == "DCR":
        tmp = xp.reshape(x, (n, b, b, c // (b * b), h, w)).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        tmp = xp.reshape(x, (n, c // (b * b), b, b, h, w)).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise ExecutionError(f"DepthToSpace: mode must be 'DCR' or 'CRD', got {mode!r}")
    return (xp.reshape(tmp, (n, c // (b * b), h * b, w * b)),)


@kernel("SpaceToDepth", since=1)
def SpaceToDepth(x, /, *, blocksize, mode="DCR"):
    """Move (blocksize x blocksize) spatial tiles into channels; the inverse of DepthToSpace."""
    n, c, h, w = _check_4d("SpaceToDepth", x, blocksize)
    b = blocksize
    if h % b or w % b:
        raise ExecutionError(
            f"SpaceToDepth: spatial dims {h}x{w} are not divisible by blocksize {b}"
        )
    xp = xp_of(x)
    tmp = xp.reshape(x, (n, c, h // b, b, w // b, b))
    if mode == "DCR":  # output channel = (row in block, column in block, input channel)
        tmp = tmp.transpose(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":  # output channel = (input channel, row in block, column in block)
        tmp = tmp.transpose(0, 1, 3, 5, 2, 4)
    else:
        raise ExecutionError(f"SpaceToDepth: mode must be 'DCR' or 'CRD', got {mode!r}")
    return (xp.reshape(tmp, (n, c * b * b, h // b, w // b)),)
