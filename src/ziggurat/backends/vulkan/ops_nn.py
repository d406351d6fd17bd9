"""Row-wise and spatial device kernels: Softmax/LogSoftmax, LayerNormalization and the fused
LayerNorm/SkipLayerNorm forms, Reduce{Sum,Mean,Max,Min,SumSquare,L1,L2,Prod,LogSumExp},
Conv/FusedConv (direct; groups and depthwise, pads, strides, dilations, fused bias + residual +
activation), Max/Average pooling and their global forms. Reductions sum in a fixed tree order
of 64 partial sums, so results differ from numpy's by float32 rounding only."""

from __future__ import annotations

import math

import numpy as np

from ._backend import TABLE, VkTensor, VulkanBackend
from ._common import FLOAT, bits, check, contiguous

# -- rows ----------------------------------------------------------------------------------------


def _rows_dispatch(be: VulkanBackend, shader: str, meta: list[int], bufs: list, rows: int) -> None:
    if rows:
        be.dispatch(shader, meta, bufs, be.groups_1d(rows, 1))


def softmax_rows(
    be: VulkanBackend, x: VkTensor, *, log: bool = False, nan_to_zero: bool = False
) -> VkTensor:
    """Softmax over the last axis."""
    out = be.empty(x.shape, np.float32)
    R = x.shape[-1] if x.ndim else 1
    rows = x.size // R if R else 0
    _rows_dispatch(be, "softmax", [rows, R, int(log), int(nan_to_zero)], [x, out], rows)
    return out


def _moved_last(be, x: VkTensor, axis: int, fn):
    """fn applied over ``axis`` by moving it last (a transposing copy) and back."""
    if axis == x.ndim - 1:
        return fn(x)
    perm = [d for d in range(x.ndim) if d != axis] + [axis]
    xt = contiguous(be, x, perm)
    try:
        yt = fn(xt)
    finally:
        be.release(xt)
    inv = list(np.argsort(perm))
    try:
        return contiguous(be, yt, inv)
    finally:
        be.release(yt)


def _softmax(log: bool, coerce_2d: bool):
    def fn(be, inputs, attrs):
        x = inputs[0]
        axis = attrs.get("axis", 1 if coerce_2d else -1)
        axis = axis + x.ndim if axis < 0 else axis
        if coerce_2d:  # opset < 13: rows are the flattened [:axis] x [axis:] matrix
            v = be.view(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))
            try:
                y = softmax_rows(be, v, log=log)
            finally:
                be.release(v)
            out = be.view(y, x.shape)
            be.release(y)
            return [out]
        return [_moved_last(be, x, axis, lambda t: softmax_rows(be, t, log=log))]

    return fn


def _float_supports(inputs, attrs):
    return check(inputs, FLOAT, math.prod(inputs[0][0]))


for _op, _log in (("Softmax", False), ("LogSoftmax", True)):
    TABLE.kernel(_op, since=1, supports=_float_supports)(_softmax(_log, True))
    TABLE.kernel(_op, since=13, supports=_float_supports)(_softmax(_log, False))


def layer_norm(be, x, gamma, beta, eps, *, axis=-1, skip=None, bias=None, want_sum=False):
    """LayerNormalization of (x + skip + bias) over axes [axis, rank); optionally also returns
    that sum (SkipLayerNorm's second output)."""
    axis = axis + x.ndim if axis < 0 else axis
    R = math.prod(x.shape[axis:])
    rows = x.size // R if R else 0
    out = be.empty(x.shape, np.float32)
    s = be.empty(x.shape, np.float32) if want_sum else None
    meta = [rows, R, bits(eps), int(skip is not None), int(beta is not None),
            int(bias is not None), int(want_sum)]  # fmt: skip
    _rows_dispatch(be, "layernorm", meta, [x, skip, gamma, beta, bias, out, s], rows)
    return [out, s] if want_sum else [out]


def _ln_supports(inputs, attrs):
    x = inputs[0][0]
    axis = attrs.get("axis", -1)
    axis = axis + len(x) if axis < 0 else axis
    R = math.prod(x[axis:])
    for p in inputs[1:]:
        if p is not None and math.prod(p[0]) != R:
            return f"scale/bias of {p[0]} for {R} normalized values"
    if attrs.get("stash_type", 1) != 1:
        return "LayerNormalization stash_type other than float32"
    return check(inputs, FLOAT, math.prod(x))


@TABLE.kernel("LayerNormalization", since=17, supports=_ln_supports)
def LayerNormalization(be, inputs, attrs):
    x, gamma = inputs[0], inputs[1]
    beta = inputs[2] if len(inputs) > 2 else None
    eps, axis = attrs.get("epsilon", 1e-5), attrs.get("axis", -1)
    outs = layer_norm(be, x, gamma, beta, eps, axis=axis)
    if attrs.get("n_outputs", 1) > 1:
        outs += _ln_stats(be, x, axis, eps)
    return outs


def _ln_stats(be, x: VkTensor, axis: int, eps: float) -> list[VkTensor]:
    """LayerNormalization's Mean and InvStdDev outputs (the same two passes as the fused row
    kernel, from the reduction and elementwise kernels), shaped [..., 1, ...] as ONNX asks."""
    from ._common import F32
    from .ops_elementwise import _broadcast

    axis = axis + x.ndim if axis < 0 else axis
    rows, R = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
    stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
    x2 = be.view(x, (rows, R))
    mean = reduce(be, x2, [1], "Mean", True)
    d = _broadcast(be, "a0 - a1", [x2, mean], F32)
    ss = reduce(be, d, [1], "SumSquare", True)
    inv = _broadcast(be, "1.0 / sqrt(a0 / p0 + p1)", [ss], F32, float(R), eps)
    out = [be.view(mean, stat_shape), be.view(inv, stat_shape)]
    for t in (x2, mean, d, ss, inv):
        be.release(t)
    return out


@TABLE.kernel("LayerNorm", domain="ziggurat", supports=_ln_supports)
def LayerNorm(be, inputs, attrs):
    x, gamma = inputs[0], inputs[1]
    beta = inputs[2] if len(inputs) > 2 else None
    return layer_norm(be, x, gamma, beta, attrs.get("epsilon", 1e-5))


def _skip_supports(inputs, attrs):
    a, b = inputs[0][0], inputs[1][0]
    if tuple(a) != tuple(b):
        return f"SkipLayerNorm of differently shaped {a} and {b}"
    for p in inputs[2:]:
        if p is not None and math.prod(p[0]) != a[-1]:
            return f"SkipLayerNorm parameter of {p[0]} for {a[-1]} features"
    if attrs.get("axis", -1) not in (-1, len(a) - 1):
        return "SkipLayerNorm over several axes"
    return check(inputs, FLOAT, math.prod(a))


@TABLE.kernel("SkipLayerNorm", domain="ziggurat", supports=_skip_supports)
def SkipLayerNorm(be, inputs, attrs):
    a, b, gamma = inputs[:3]
    beta = inputs[3] if len(inputs) > 3 else None
    want = attrs.get("n_outputs", 1) >= 2
    return layer_norm(be, a, gamma, beta, attrs.get("epsilon", 1e-5), skip=b, want_sum=want)


def _ms_skip_supports(inputs, attrs):
    if attrs.get("n_outputs", 1) in (2, 3):
        return "SkipLayerNormalization's mean/inv_std_var outputs"
    return _skip_supports(inputs, {})


@TABLE.kernel("SkipLayerNormalization", domain="com.microsoft", supports=_ms_skip_supports)
def SkipLayerNormalization(be, inputs, attrs):
    a, b, gamma = inputs[:3]
    beta = inputs[3] if len(inputs) > 3 else None
    bias = inputs[4] if len(inputs) > 4 else None
    want = attrs.get("n_outputs", 1) >= 4
    outs = layer_norm(be, a, gamma, beta, attrs.get("epsilon", 1e-12), skip=b, bias=bias,
                      want_sum=want)  # fmt: skip
    return [outs[0], None, None, outs[1]] if want else outs


# -- reductions ----------------------------------------------------------------------------------
_REDUCE = {"Sum": 0, "Mean": 1, "Max": 2, "Min": 3, "SumSquare": 4, "L1": 5, "L2": 6, "Prod": 7,
           "LogSumExp": 8}  # fmt: skip


def reduce(be, x: VkTensor, axes: list[int], op: str, keepdims: bool) -> VkTensor:
    axes = sorted({a + x.ndim if a < 0 else a for a in axes})
    kept = [d for d in range(x.ndim) if d not in axes]
    perm = kept + axes
    src = x if perm == list(range(x.ndim)) else contiguous(be, x, perm)
    R = math.prod(x.shape[a] for a in axes)
    rows = math.prod(x.shape[d] for d in kept)
    shape = (
        tuple(1 if d in axes else n for d, n in enumerate(x.shape))
        if keepdims
        else tuple(x.shape[d] for d in kept)
    )
    out = be.empty(shape, np.float32)
    try:
        _rows_dispatch(be, "reduce", [rows, R, _REDUCE[op]], [src, out], rows)
    finally:
        if src is not x:
            be.release(src)
    return out


def _reduce_kernel(op: str):
    def fn(be, inputs, attrs):
        x = inputs[0]
        axes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("axes")
        axes = [] if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [contiguous(be, x, list(range(x.ndim)))]
            axes = list(range(x.ndim))
        return [reduce(be, x, axes, op, bool(attrs.get("keepdims", 1)))]

    return fn


def _reduce_supports(inputs, attrs):
    return check(inputs[:1], FLOAT, math.prod(inputs[0][0]))


for _op in _REDUCE:
    TABLE.kernel(f"Reduce{_op}", since=1, supports=_reduce_supports)(_reduce_kernel(_op))


def _global_pool(op: str):
    def fn(be, inputs, attrs):
        x = inputs[0]
        return [reduce(be, x, list(range(2, x.ndim)), op, True)]

    return fn


TABLE.kernel("GlobalAveragePool", since=1, supports=_reduce_supports)(_global_pool("Mean"))
TABLE.kernel("GlobalMaxPool", since=1, supports=_reduce_supports)(_global_pool("Max"))


# -- arg reductions ------------------------------------------------------------------------------
def _arg(is_min: bool):
    def fn(be, inputs, attrs):
        x = inputs[0]
        axis = attrs.get("axis", 0)
        axis = axis + x.ndim if axis < 0 else axis
        keep = bool(attrs.get("keepdims", 1))
        perm = [d for d in range(x.ndim) if d != axis] + [axis]
        src = x if axis == x.ndim - 1 else contiguous(be, x, perm)
        shape = (
            tuple(1 if d == axis else n for d, n in enumerate(x.shape))
            if keep
            else tuple(n for d, n in enumerate(x.shape) if d != axis)
        )
        out = be.empty(shape, np.int64)
        rows = out.size
        meta = [rows, x.shape[axis], int(is_min), int(attrs.get("select_last_index", 0))]
        try:
            _rows_dispatch(be, "argmax", meta, [src, out], rows)
        finally:
            if src is not x:
                be.release(src)
        return [out]

    return fn


def _arg_supports(inputs, attrs):
    x = inputs[0][0]
    axis = attrs.get("axis", 0)
    if not x or x[axis] == 0:
        return "ArgMax/ArgMin over an empty axis"
    return check(inputs, FLOAT, math.prod(x))


TABLE.kernel("ArgMax", since=1, supports=_arg_supports)(_arg(False))
TABLE.kernel("ArgMin", since=1, supports=_arg_supports)(_arg(True))
