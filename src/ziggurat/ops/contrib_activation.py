"""``com.microsoft`` activations (onnxruntime's ContribOperators.md): the GELU family that
onnxruntime's transformers optimizer and offline optimizer emit, BiasAdd, BiasSplitGelu, BiasSoftmax.

The math is the ``ai.onnx`` kernels' (``activation.py``); these add the fused bias / skip inputs.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .activation import Gelu as _onnx_gelu
from .activation import Sigmoid, Softmax
from .fused import _epilogue  # private to fused.py: its in-place bias/activation epilogue
from .fused_transformer import GeluTanh
from .registry import kernel

MS = "com.microsoft"


def _bias_add(x, bias, op: str):
    """x + bias over the last axis (a fresh array), checking bias's length."""
    if bias is None:
        return x
    if bias.shape[-1:] != x.shape[-1:]:
        raise ExecutionError(
            f"{op}: bias has shape {tuple(bias.shape)}, expected ({x.shape[-1]},) — one value per "
            f"element of the input's last axis {tuple(x.shape)}"
        )
    return xp_of(x).add(x, bias)


def _numpy_float(x) -> bool:
    return type(x) is np.ndarray and x.dtype in (np.float32, np.float64)


@kernel("Gelu", domain=MS, since=1)
def Gelu(x, /):
    """Exact GELU, 0.5 * x * (1 + erf(x / sqrt(2)))."""
    return _onnx_gelu(x)


@kernel("BiasGelu", domain=MS, since=1)
def BiasGelu(a, b, /):
    """Exact GELU of ``a + b`` (``b`` a bias over the last axis)."""
    y = _bias_add(a, b, "BiasGelu")
    if _numpy_float(y) and y.flags.c_contiguous:
        # the sum is a fresh buffer: fused.py's in-place GELU epilogue (one pass, no temporaries)
        _epilogue(y, None, "gelu")
        return (y,)
    return _onnx_gelu(y)


@kernel("FastGelu", domain=MS, since=1)
def FastGelu(x, bias=None, /):
    """Tanh-approximated GELU of ``x (+ bias)``: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))."""
    y = _bias_add(x, bias, "FastGelu")
    if _numpy_float(y):
        return GeluTanh(y)  # fused_transformer's chunked in-cache kernel
    return _onnx_gelu(y, approximate="tanh")


@kernel("QuickGelu", domain=MS, since=1)
def QuickGelu(x, /, *, alpha=1.702):
    """``x * sigmoid(alpha * x)`` (CLIP's GELU approximation)."""
    (s,) = Sigmoid(x * x.dtype.type(alpha))
    return ((x * s).astype(x.dtype, copy=False),)


@kernel("BiasAdd", domain=MS, since=1)
def BiasAdd(x, bias, skip, /):
    """``x + bias + skip`` for x, skip (N, S, C) and bias (C) (the SD UNet's residual add)."""
    if x.ndim != 3 or skip.shape != x.shape:
        raise ExecutionError(
            f"BiasAdd: X and skip must be 3-D (N, S, C) of one shape; got {tuple(x.shape)} "
            f"and {tuple(skip.shape)}"
        )
    y = _bias_add(x, bias, "BiasAdd")
    y += skip
    return (y,)


@kernel("BiasSplitGelu", domain=MS, since=1)
def BiasSplitGelu(x, bias, /):
    """Split ``x + bias`` (N, S, D) in halves on the last axis: ``left * gelu(right)`` (N, S, D/2)."""
    if x.shape[-1] % 2:
        raise ExecutionError(
            f"BiasSplitGelu: the last axis ({x.shape[-1]}) must be even to split in halves"
        )
    y = _bias_add(x, bias, "BiasSplitGelu")
    half = y.shape[-1] // 2
    (g,) = _onnx_gelu(y[..., half:])
    return ((y[..., :half] * g).astype(x.dtype, copy=False),)


@kernel("BiasSoftmax", domain=MS, since=1)
def BiasSoftmax(data, bias, /, *, axis=1, is_inner_broadcast=0):
    """``Softmax(data + bias)`` over axes [axis, rank) flattened: onnxruntime's fusion of Add +
    Softmax, so the bias broadcasts as Add's inputs do. ``is_inner_broadcast`` only records
    which of the bias's axes are 1 (inner: same rank, 1s from the first differing axis up to
    ``axis``; outer: the leading ones), which numpy broadcasting covers either way.
    """
    s = xp_of(data).add(data, bias)
    if s.shape != data.shape:
        raise ExecutionError(
            f"BiasSoftmax: bias {tuple(bias.shape)} must broadcast to data {tuple(data.shape)}"
        )
    a = axis % data.ndim
    flat = s.reshape(int(np.prod(s.shape[:a])), -1)
    (y,) = Softmax(flat, axis=-1)
    return (y.reshape(s.shape).astype(data.dtype, copy=False),)
