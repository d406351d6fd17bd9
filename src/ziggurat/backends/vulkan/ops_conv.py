"""Convolution and pooling on the device: direct kernels (``shaders/conv.wgsl``, ``pool.wgsl``)
over NCHW, 1-D and 2-D. A group-1, 1x1, stride-1, unpadded convolution is a plain product and
runs on the tiled matmul instead. FusedConv's ``layout='nhwc'`` is a CPU memory-layout hint (the
logical tensor is NCHW either way): the device keeps NCHW."""

from __future__ import annotations

import math

import numpy as np

from ._backend import TABLE, VkTensor, VulkanBackend
from ._common import FLOAT, bits, check

_ACT = {"": 0, "relu": 1, "clip": 4}


def _geometry(in_sp, k, attrs):
    """(out dims, begin pads, end pads, strides, dilations) of one conv/pool."""
    n = len(in_sp)
    strides = list(attrs.get("strides") or [1] * n)
    dil = list(attrs.get("dilations") or [1] * n)
    pads = list(attrs.get("pads") or [0] * (2 * n))
    auto = attrs.get("auto_pad", "NOTSET")
    ceil = bool(attrs.get("ceil_mode", 0))
    outs, begin, end = [], [], []
    for i in range(n):
        span = (k[i] - 1) * dil[i] + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-in_sp[i] // strides[i])
            total = max((o - 1) * strides[i] + span - in_sp[i], 0)
            b = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begin.append(b)
            end.append(total - b)
            outs.append(o)
            continue
        b, e = (0, 0) if auto == "VALID" else (pads[i], pads[i + n])
        num = in_sp[i] + b + e - span
        o = (-(-num // strides[i]) if ceil else num // strides[i]) + 1
        if ceil and (o - 1) * strides[i] >= in_sp[i] + b:
            o -= 1  # the last window must start inside the input or its begin pad
        outs.append(o)
        begin.append(b)
        end.append(e)
    return outs, begin, end, strides, dil


def _as_2d(shape, ks):
    """1-D problems as 2-D ones with H = 1."""
    return (
        (list(shape[:2]) + [1] + list(shape[2:]), [1, *ks])
        if len(ks) == 1
        else (list(shape), list(ks))
    )


def conv(be: VulkanBackend, x: VkTensor, w: VkTensor, bias, skip, attrs, act="", p0=0.0, p1=0.0):
    ks = list(attrs.get("kernel_shape") or w.shape[2:])
    outs, begin, end, strides, dil = _geometry(list(x.shape[2:]), ks, attrs)
    group = int(attrs.get("group", 1))
    N, C = x.shape[:2]
    Co = w.shape[0]
    out_shape = (N, Co, *outs)
    total = math.prod(out_shape)
    if len(ks) == 1:
        outs, begin, strides, dil, ks = [1, *outs], [0, *begin], [1, *strides], [1, *dil], [1, *ks]
    H, W = (x.shape[2], x.shape[3]) if x.ndim == 4 else (1, x.shape[2])
    if _pointwise(group, ks, strides, begin, end, skip) and total:
        return _pointwise_conv(be, x, w, bias, out_shape, act, p0, p1)
    out = be.empty(out_shape, np.float32)
    if total == 0:
        return out
    meta = [total, N, C, H, W, Co, outs[0], outs[1], ks[0], ks[1], strides[0], strides[1],
            dil[0], dil[1], begin[0], begin[1], group, int(bias is not None),
            int(skip is not None), _ACT[act], bits(p0), bits(p1)]  # fmt: skip
    be.dispatch("conv", meta, [x, w, bias, skip, out], be.groups_1d(total))
    return out


def _pointwise(group, ks, strides, begin, end, skip) -> bool:
    return (group == 1 and skip is None and all(k == 1 for k in ks)
            and all(s == 1 for s in strides) and not any(begin) and not any(end))  # fmt: skip


def _pointwise_conv(be, x, w, bias, out_shape, act, p0, p1):
    """A 1x1 convolution as the product W[Co, C] @ X[n, C, H*W], bias broadcast per row."""
    from .ops_matmul import matmul

    N, C = x.shape[:2]
    Co = w.shape[0]
    views = [be.view(x, (N, C, x.size // (N * C) if N * C else 0)), be.view(w, (Co, C))]
    if bias is not None:
        views.append(be.view(bias, (Co, 1)))
    try:
        y = matmul(be, views[1], views[0], c=views[2] if bias is not None else None,
                   act=act, p0=p0, p1=p1)  # fmt: skip
    finally:
        for v in views:
            be.release(v)
    out = be.view(y, out_shape)
    be.release(y)
    return out


def _conv_supports(inputs, attrs):
    x, w = inputs[0][0], inputs[1][0]
    if len(x) not in (3, 4):
        return f"Conv of rank {len(x)} (1-D and 2-D only)"
    if attrs.get("precision", "fp32") != "fp32" or attrs.get("out_dtype", ""):
        return "FusedConv in bf16"
    if attrs.get("activation", "") not in _ACT:
        return f"FusedConv activation {attrs.get('activation')!r}"
    ks = list(attrs.get("kernel_shape") or w[2:])
    outs = _geometry(list(x[2:]), ks, attrs)[0]
    if min(outs, default=1) <= 0:
        return "Conv output of size 0"
    return check(inputs, FLOAT, x[0] * w[0] * math.prod(outs))


@TABLE.kernel("Conv", since=1, supports=_conv_supports)
def Conv(be, inputs, attrs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    return [conv(be, x, w, b, None, attrs)]


@TABLE.kernel("FusedConv", domain="ziggurat", supports=_conv_supports)
def FusedConv(be, inputs, attrs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    skip = inputs[3] if len(inputs) > 3 else None
    act = attrs.get("activation", "")
    lo, hi = attrs.get("clip_min"), attrs.get("clip_max")
    p0 = -math.inf if lo is None else lo
    p1 = math.inf if hi is None else hi
    return [conv(be, x, w, b, skip, attrs, act, p0, p1)]


def pool(be: VulkanBackend, x: VkTensor, attrs, mode: int) -> VkTensor:
    ks = list(attrs["kernel_shape"])
    outs, begin, end, strides, dil = _geometry(list(x.shape[2:]), ks, attrs)
    out_shape = (*x.shape[:2], *outs)
    if len(ks) == 1:
        outs, begin, end, strides, dil, ks = ([1, *outs], [0, *begin], [0, *end], [1, *strides],
                                              [1, *dil], [1, *ks])  # fmt: skip
    H, W = (x.shape[2], x.shape[3]) if x.ndim == 4 else (1, x.shape[2])
    out = be.empty(out_shape, np.float32)
    total = math.prod(out_shape)
    if total:
        meta = [total, x.shape[1], H, W, outs[0], outs[1], ks[0], ks[1], strides[0], strides[1],
                dil[0], dil[1], begin[0], begin[1], mode, int(attrs.get("count_include_pad", 0)),
                end[0], end[1]]  # fmt: skip
        be.dispatch("pool", meta, [x, out], be.groups_1d(total))
    return out


def _pool_supports(inputs, attrs):
    x = inputs[0][0]
    if len(x) not in (3, 4):
        return f"pooling of rank {len(x)} (1-D and 2-D only)"
    if attrs.get("n_outputs", 1) > 1:
        return "MaxPool's Indices output"
    if attrs.get("storage_order", 0):
        return "MaxPool storage_order=1"
    outs = _geometry(list(x[2:]), list(attrs.get("kernel_shape") or []), attrs)[0]
    return check(inputs, FLOAT, x[0] * x[1] * math.prod(outs))


@TABLE.kernel("MaxPool", since=1, supports=_pool_supports)
def MaxPool(be, inputs, attrs):
    return [pool(be, inputs[0], attrs, 0)]


@TABLE.kernel("AveragePool", since=1, supports=_pool_supports)
def AveragePool(be, inputs, attrs):
    return [pool(be, inputs[0], attrs, 1)]
