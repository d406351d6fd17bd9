"""2-D convolution and pooling written against an array namespace (see ``xp_kernels``).

Convolution is im2col + one batched GEMM per group (CuPy 14 has no cuDNN): the padded input's
``kh * kw`` strided windows are stacked into a (N, G, C/G * kh * kw, OH * OW) matrix that the
(G, M/G, C/G * kh * kw) weights multiply. Pools take the maximum / sum over the same windows.
Only 2-D (NCHW) cases are accepted; the rest runs on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Meta = list[tuple[tuple[int, ...], np.dtype] | None]


def _geometry(xshape, kshape, attrs: dict[str, Any]):
    """(pads (top, left, bottom, right), strides, dilations, output H, W) by ONNX's rules."""
    strides = list(attrs.get("strides") or [1, 1])
    dil = list(attrs.get("dilations") or [1, 1])
    auto = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    h, w = xshape[2], xshape[3]
    eff = [(k - 1) * d + 1 for k, d in zip(kshape, dil, strict=True)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        outs = [math.ceil(n / s) for n, s in zip((h, w), strides, strict=True)]
        total = [max(0, (o - 1) * s + e - n) for o, s, e, n in zip(outs, strides, eff, (h, w))]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto == "SAME_UPPER" else (big, small)
        pads = [begin[0], begin[1], end[0], end[1]]
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    else:
        pads = list(attrs.get("pads") or [0, 0, 0, 0])
    oh = (h + pads[0] + pads[2] - eff[0]) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - eff[1]) // strides[1] + 1
    return pads, strides, dil, oh, ow


def _windows(ns, x, kshape, attrs: dict[str, Any], fill: float):
    """The kh * kw strided views of the padded input, each (N, C, OH, OW), and (OH, OW)."""
    xp = ns.xp
    pads, strides, dil, oh, ow = _geometry(x.shape, kshape, attrs)
    if any(pads):
        n, c, h, w = x.shape
        xpad = xp.full((n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]), fill, dtype=x.dtype)
        xpad[:, :, pads[0] : pads[0] + h, pads[1] : pads[1] + w] = x
    else:
        xpad = x
    views = []
    for i in range(kshape[0]):
        for j in range(kshape[1]):
            r, c0 = i * dil[0], j * dil[1]
            views.append(
                xpad[
                    :,
                    :,
                    r : r + strides[0] * (oh - 1) + 1 : strides[0],
                    c0 : c0 + strides[1] * (ow - 1) + 1 : strides[1],
                ]
            )
    return views, oh, ow


def conv2d(ns, x, w, b, attrs: dict[str, Any]):
    """ONNX Conv of a (N, C, H, W) input by (M, C/G, kh, kw) weights; output (N, M, OH, OW)."""
    xp = ns.xp
    n, c = x.shape[:2]
    m, cg, kh, kw = w.shape
    g = int(attrs.get("group", 1) or 1)
    views, oh, ow = _windows(ns, x, (kh, kw), attrs, 0.0)
    cols = xp.stack(views, axis=2)  # (N, C, kh*kw, OH, OW)
    cols = cols.reshape(n, g, cg * kh * kw, oh * ow)
    wg = w.reshape(g, m // g, cg * kh * kw)
    y = xp.matmul(wg, cols).reshape(n, m, oh, ow)  # (N, G, M/G, OH*OW) -> (N, M, OH, OW)
    if b is not None:
        y = y + b.reshape(1, m, 1, 1)
    return y


def _conv_supports(inputs: Meta, attrs: dict[str, Any]) -> str | None:
    x, w = inputs[0], inputs[1]
    if x is None or w is None or len(x[0]) != 4 or len(w[0]) != 4:
        return "only 2-D convolution (4-D NCHW input) runs on the device"
    if x[1].kind != "f":
        return f"dtype {x[1]} (device convolution takes floats)"
    if attrs.get("precision", "fp32") != "fp32" or attrs.get("out_dtype", ""):
        return "bf16 convolution is a CPU (oneDNN) format"
    if attrs.get("activation", "") not in ("", "relu", "clip"):
        return f"fused activation {attrs['activation']!r}"
    return None


def _conv(ns, a, attrs):
    return [conv2d(ns, a[0], a[1], a[2] if len(a) > 2 else None, attrs)]


def _fused_conv(ns, a, attrs):
    from .xp_kernels import epilogue

    y = conv2d(ns, a[0], a[1], a[2] if len(a) > 2 else None, attrs)
    if len(a) > 3 and a[3] is not None:
        y = y + a[3]
    act = attrs.get("activation", "")
    return [epilogue(ns, y, act, attrs.get("clip_min"), attrs.get("clip_max"))]


def _pool_supports(inputs: Meta, attrs: dict[str, Any]) -> str | None:
    x = inputs[0]
    if x is None or len(x[0]) != 4 or x[1].kind != "f":
        return "only 2-D float pooling (4-D NCHW input) runs on the device"
    if attrs.get("ceil_mode", 0):
        return "ceil_mode=1"
    if attrs.get("storage_order", 0):
        return "storage_order=1"
    return None


def _max_pool(ns, a, attrs):
    views, _, _ = _windows(ns, a[0], attrs["kernel_shape"], attrs, -np.inf)
    y = views[0]
    for v in views[1:]:
        y = ns.xp.maximum(y, v)
    return [ns.xp.ascontiguousarray(y)]


def _average_pool(ns, a, attrs):
    x = a[0]
    kshape = attrs["kernel_shape"]
    views, oh, ow = _windows(ns, x, kshape, attrs, 0.0)
    total = views[0].astype(x.dtype, copy=True)
    for v in views[1:]:
        total = total + v
    if attrs.get("count_include_pad", 0):
        return [total / x.dtype.type(kshape[0] * kshape[1])]
    # Count the window cells inside the input: the same windows over an all-ones image.
    ones = ns.xp.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
    counts, _, _ = _windows(ns, ones, kshape, attrs, 0.0)
    n = counts[0].copy()
    for v in counts[1:]:
        n = n + v
    return [total / n]


def _global_average_pool(ns, a, attrs):
    x = a[0]
    return [ns.xp.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)]


def _global_supports(inputs: Meta, attrs: dict[str, Any]) -> str | None:
    x = inputs[0]
    return None if x is not None and x[1].kind == "f" else "float inputs only"


SPATIAL_KERNELS = [
    ("Conv", "", 1, _conv, _conv_supports),
    ("FusedConv", "ziggurat", 1, _fused_conv, _conv_supports),
    ("MaxPool", "", 8, _max_pool, _pool_supports),
    ("AveragePool", "", 7, _average_pool, _pool_supports),
    ("GlobalAveragePool", "", 1, _global_average_pool, _global_supports),
]
