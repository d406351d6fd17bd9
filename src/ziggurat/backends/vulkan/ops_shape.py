"""Shape and data-movement device kernels. Reshape, Flatten, Squeeze, Unsqueeze and Identity are
metadata only (a view sharing the block, no copy); Transpose, Slice, Expand, Concat and Split are
strided copies; Gather reads through its indices (int32, or int64 carried as int32). Shape,
Size, ConstantOfShape and Range make small tensors from host-known values and upload them.
"""

from __future__ import annotations

import math

import numpy as np

from ...ops import registry
from ._backend import TABLE, VulkanBackend
from ._common import CARRIED, I64, check, contiguous_strides, copy_into

_ANY = CARRIED


def _data_supports(inputs, attrs):
    """Data movement: exact on every carried dtype; host inputs (shapes, starts) are not bound."""
    return check(inputs[:1], _ANY, None)


def _host_ints(v, attr=None) -> list[int] | None:
    if v is not None:
        return [int(i) for i in np.asarray(v).reshape(-1)]
    return None if attr is None else [int(i) for i in attr]


def _norm_axes(axes, rank: int) -> list[int]:
    return sorted(a + rank if a < 0 else a for a in axes)


# -- views ---------------------------------------------------------------------------------------
def _reshape(be: VulkanBackend, inputs, attrs):
    x, shape = inputs[0], _host_ints(inputs[1])
    allowzero = attrs.get("allowzero", 0)
    dims = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(shape)]
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = x.size // known if known else 0
    return [be.view(x, tuple(dims))]


def _flatten(be, inputs, attrs):
    x = inputs[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return [be.view(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))]


def _squeeze(be, inputs, attrs):
    x = inputs[0]
    axes = _host_ints(inputs[1] if len(inputs) > 1 else None, attrs.get("axes"))
    if axes is None:
        shape = tuple(d for d in x.shape if d != 1)
    else:
        drop = set(_norm_axes(axes, x.ndim))
        shape = tuple(d for i, d in enumerate(x.shape) if i not in drop)
    return [be.view(x, shape)]


def _unsqueeze(be, inputs, attrs):
    x = inputs[0]
    axes = _host_ints(inputs[1] if len(inputs) > 1 else None, attrs.get("axes"))
    rank = x.ndim + len(axes)
    shape = list(x.shape)
    for a in _norm_axes(axes, rank):
        shape.insert(a, 1)
    return [be.view(x, tuple(shape))]


def _identity(be, inputs, attrs):
    return [be.view(inputs[0], inputs[0].shape)]


TABLE.kernel("Reshape", since=5, supports=_data_supports)(_reshape)
TABLE.kernel("Flatten", since=1, supports=_data_supports)(_flatten)
TABLE.kernel("Squeeze", since=1, supports=_data_supports)(_squeeze)
TABLE.kernel("Unsqueeze", since=1, supports=_data_supports)(_unsqueeze)
TABLE.kernel("Identity", since=1, supports=_data_supports)(_identity)


# -- strided copies ------------------------------------------------------------------------------
def _transpose(be, inputs, attrs):
    x = inputs[0]
    perm = attrs.get("perm") or list(range(x.ndim))[::-1]
    st = contiguous_strides(x.shape)
    shape = tuple(x.shape[p] for p in perm)
    out = be.empty(shape, x.dtype)
    return [copy_into(be, x, 0, [st[p] for p in perm], out, shape)]


def _slice(be, inputs, attrs):
    x = inputs[0]
    if len(inputs) > 1 and inputs[1] is not None:  # opset >= 10: inputs
        starts, ends = _host_ints(inputs[1]), _host_ints(inputs[2])
        axes = _host_ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
        steps = _host_ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else None
    else:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    st = contiguous_strides(x.shape)
    shape, strides, offset = list(x.shape), list(st), 0
    for s, e, a, k in zip(starts, ends, axes, steps):
        a = a + x.ndim if a < 0 else a
        lo, _, step = slice(s, e, k).indices(x.shape[a])
        shape[a] = len(range(*slice(s, e, k).indices(x.shape[a])))
        offset += lo * st[a]
        strides[a] = st[a] * step
    out = be.empty(tuple(shape), x.dtype)
    return [copy_into(be, x, offset, strides, out, shape)]


def _expand(be, inputs, attrs):
    from ._common import broadcast_strides

    x = inputs[0]
    shape = tuple(np.broadcast_shapes(x.shape, tuple(_host_ints(inputs[1]))))
    out = be.empty(shape, x.dtype)
    return [copy_into(be, x, 0, broadcast_strides(x.shape, shape), out, shape)]


def _concat(be, inputs, attrs):
    xs = [x for x in inputs if x is not None]
    axis = attrs["axis"]
    axis = axis + xs[0].ndim if axis < 0 else axis
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    out = be.empty(tuple(shape), xs[0].dtype)
    ost = contiguous_strides(shape)
    at = 0
    for x in xs:
        copy_into(be, x, 0, contiguous_strides(x.shape), out, x.shape, at * ost[axis], ost)
        at += x.shape[axis]
    return [out]


def _split(be, inputs, attrs):
    x = inputs[0]
    axis = attrs.get("axis", 0)
    axis = axis + x.ndim if axis < 0 else axis
    sizes = _host_ints(inputs[1] if len(inputs) > 1 else None, attrs.get("split"))
    if not sizes:
        n = attrs.get("num_outputs") or attrs.get("n_outputs")
        dim = x.shape[axis]
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    st = contiguous_strides(x.shape)
    outs, at = [], 0
    for s in sizes:
        shape = list(x.shape)
        shape[axis] = s
        out = be.empty(tuple(shape), x.dtype)
        outs.append(copy_into(be, x, at * st[axis], st, out, shape))
        at += s
    return outs


def _concat_supports(inputs, attrs):
    return check(inputs, _ANY, None)


TABLE.kernel("Transpose", since=1, supports=_data_supports)(_transpose)
TABLE.kernel("Slice", since=1, supports=_data_supports)(_slice)
TABLE.kernel("Expand", since=8, supports=_data_supports)(_expand)
TABLE.kernel("Concat", since=4, supports=_concat_supports)(_concat)
TABLE.kernel("Split", since=2, supports=_data_supports)(_split)


# -- gather --------------------------------------------------------------------------------------
def _gather(be, inputs, attrs):
    data, idx = inputs
    axis = attrs.get("axis", 0)
    axis = axis + data.ndim if axis < 0 else axis
    shape = data.shape[:axis] + idx.shape + data.shape[axis + 1 :]
    out = be.empty(shape, data.dtype)
    total = math.prod(shape)
    if total:
        outer, inner = math.prod(data.shape[:axis]), math.prod(data.shape[axis + 1 :])
        meta = [total, outer, data.shape[axis], inner, max(idx.size, 1)]
        from ._backend import wgsl_type

        be.dispatch("gather", meta, [data, idx, out], be.groups_1d(total),
                    {"T": wgsl_type(data.dtype)})  # fmt: skip
    return [out]


def _gather_supports(inputs, attrs):
    if np.dtype(inputs[1][1]) not in (np.dtype(np.int32), I64):
        return f"Gather indices of dtype {inputs[1][1]}"
    data_shape, idx_shape = inputs[0][0], inputs[1][0]
    axis = attrs.get("axis", 0)
    axis = axis + len(data_shape) if axis < 0 else axis
    out = math.prod(data_shape[:axis]) * math.prod(idx_shape) * math.prod(data_shape[axis + 1 :])
    return check(inputs, _ANY, out)


TABLE.kernel("Gather", since=1, supports=_gather_supports)(_gather)


# -- small host-known tensors --------------------------------------------------------------------
def _shape(be, inputs, attrs):
    shape = inputs[0].shape
    start, end = attrs.get("start", 0), attrs.get("end")
    return [be.to_device(np.array(shape[start:end], dtype=np.int64))]


def _size(be, inputs, attrs):
    return [be.to_device(np.array(inputs[0].size, dtype=np.int64))]


def _cpu_then_upload(op: str, since: int):
    """Ops whose every input is a host value: the CPU kernel's result, uploaded."""

    def fn(be, inputs, attrs):
        kdef = registry.lookup(op, "", since)
        return [be.to_device(y) for y in kdef.fn(*inputs, **attrs)]

    def supports(inputs, attrs):
        if op == "ConstantOfShape":
            value = attrs.get("value")
            dt = np.dtype(np.float32) if value is None else np.asarray(value).dtype
        else:
            dt = np.dtype(inputs[0][1])
        return check([((1,), dt)], _ANY)

    fn.__name__ = op
    TABLE.kernel(op, since=since, supports=supports)(fn)


TABLE.kernel("Shape", since=1, supports=lambda i, a: None)(_shape)
TABLE.kernel("Size", since=1, supports=lambda i, a: None)(_size)
_cpu_then_upload("ConstantOfShape", 9)
_cpu_then_upload("Range", 11)


# -- pad and tile --------------------------------------------------------------------------------
_PAD_MODES = {"constant": 0, "edge": 1, "reflect": 2, "wrap": 3}


def _pad_dispatch(be, x, out_shape, begin, mode: int, value: float, end=None):
    from ._backend import wgsl_type
    from ._common import bits

    end = [0] * x.ndim if end is None else end
    start = [max(-b, 0) for b in begin]  # negative pads crop the input first
    dims = [d - s - max(-e, 0) for d, s, e in zip(x.shape, start, end)]
    begin = [max(b, 0) for b in begin]

    out = be.empty(tuple(out_shape), x.dtype)
    total = out.size
    if total:
        t = wgsl_type(x.dtype)
        const = {"f32": "bitcast<f32>(prm[3])", "i32": "prm[3]", "u32": "u32(prm[3])"}[t]
        vbits = bits(value) if t == "f32" else int(value)
        strides = contiguous_strides(x.shape)
        meta = [total, x.ndim, mode, vbits, *out_shape, *dims, *begin, *start, *strides]
        be.dispatch("pad", meta, [x, out], be.groups_1d(total), {"T": t, "CONST": const})
    return out


def _pad(be, inputs, attrs):
    x = inputs[0]
    if len(inputs) > 1 and inputs[1] is not None:  # opset >= 11: pads (and value, axes) inputs
        pads = _host_ints(inputs[1])
        value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else 0
        axes = _host_ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    else:
        pads, value, axes = list(attrs.get("pads") or []), attrs.get("value", 0.0), None
    value = np.asarray(value).reshape(-1)[0] if np.size(value) else 0
    axes = list(range(x.ndim)) if axes is None else [a + x.ndim if a < 0 else a for a in axes]
    begin, end = [0] * x.ndim, [0] * x.ndim
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    out_shape = [d + b + e for d, b, e in zip(x.shape, begin, end)]
    mode = _PAD_MODES[attrs.get("mode", "constant")]
    return [_pad_dispatch(be, x, out_shape, begin, mode, float(value), end)]


def _pad_supports(inputs, attrs):
    """Negative pads (crops) need nothing special: c - begin stays inside the input."""
    if attrs.get("mode", "constant") not in _PAD_MODES:
        return f"Pad mode {attrs.get('mode')!r}"
    return check(inputs[:1], _ANY, None)


def _tile(be, inputs, attrs):
    x, reps = inputs[0], _host_ints(inputs[1])
    out_shape = [d * r for d, r in zip(x.shape, reps)]
    return [_pad_dispatch(be, x, out_shape, [0] * x.ndim, 3, 0.0)]


TABLE.kernel("Pad", since=2, supports=_pad_supports)(_pad)
TABLE.kernel("Tile", since=6, supports=_data_supports)(_tile)
