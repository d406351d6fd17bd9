"""Kernels for the ``ziggurat`` domain: ops made by the fusion passes in ``passes/``.

Each computes into its first result's own fresh buffer, so the bias, residual and activation steps
allocate nothing (the op-by-op graph allocates one full tensor per op).
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from ._ewmath import erf, gelu_erf, gelu_erf_fast
from .activation import relu_inplace
from .conv import Conv, native_conv
from .registry import kernel

DOMAIN = "ziggurat"
_SQRT1_2 = 0.7071067811865476


def _epilogue(y, bias, activation: str, bounds=(None, None), residual=None) -> None:
    """y <- activation(y + residual + bias) in place.

    On one thread: splitting these passes across cores measured no faster (GELU 3.7 vs 3.9 ms
    on a BERT FFN activation, bias/ReLU slower), as numpy holds the GIL between its many short
    calls and BLAS's idle threads still occupy the other core right after the GEMM.
    """
    if activation not in ("", "relu", "gelu", "clip"):
        raise ExecutionError(
            f"unknown fused activation {activation!r}; expected '', 'relu', 'gelu' or 'clip'"
        )
    if residual is not None:
        y += residual
    _epilogue_part(y, bias, activation, bounds)


def _epilogue_part(y, bias, activation: str, bounds=(None, None)) -> None:
    xp = np if type(y) is np.ndarray else xp_of(y)
    if bias is not None:
        y += bias
    if activation == "relu":
        if xp is np and y.dtype.kind == "f":
            relu_inplace(y)
        else:
            xp.maximum(y, 0, out=y)
    elif activation == "clip":
        lo, hi = y.dtype.type(bounds[0]), y.dtype.type(bounds[1])
        xp.clip(y, lo, hi, out=y)
    elif activation == "gelu":
        if xp is np and y.dtype == np.float32 and y.flags.c_contiguous:
            gelu_erf_fast(y)
        elif xp is np and y.flags.c_contiguous:
            gelu_erf(y, out=y)
        else:
            t = erf(xp.multiply(y, y.dtype.type(_SQRT1_2)))
            t += 1
            t *= y.dtype.type(0.5)
            y *= t


@kernel("Gelu", domain=DOMAIN)
def Gelu(x, /):
    """Exact (erf) GELU."""
    xp = xp_of(x)
    y = xp.array(x, copy=True)
    _epilogue(y, None, "gelu")
    return (y,)


def _gemm():
    """backends.cpu.gemm, imported on first use (keeps ctypes work off ``import ziggurat``)."""
    global _gemm_mod
    if _gemm_mod is None:
        from ..backends.cpu import gemm

        _gemm_mod = gemm
    return _gemm_mod


_gemm_mod = None
_NATIVE_MIN_MACS = 1 << 18  # backends.cpu.gemm.MIN_MACS, without importing it at startup


@kernel("Dense", domain=DOMAIN)
def Dense(x, w, b=None, r=None, /, *, activation="", out_dtype=""):
    """activation(x @ w + b) [+ r] for a 2-D constant ``w``; batch dims of x flattened into one
    GEMM. ``r`` (a residual with the result's elements, added after the activation) and the
    ``gelu_tanh`` activation are given by ``passes/fuse_residual.py`` to Dense nodes with packed
    weights; ``out_dtype="bf16"`` (passes/bf16_activations.py) writes a bfloat16 result for a
    consumer that is itself a bf16 GEMM, and ``x`` may then be bfloat16.

    oneDNN runs it (bias and activation fused) when the product is big enough to pay for its
    call (backends/cpu/gemm.py has the measurements) or when ``w`` was packed for it
    (``precision="bf16"``); numpy otherwise, and wherever oneDNN is absent."""
    if r is not None or activation == "gelu_tanh" or out_dtype:
        return (_dense_extended(x, w, b, r, activation, out_dtype),)
    if type(x) is np.ndarray:
        # Inline size test first: the tiny-MLP path pays no call (gemm.MIN_MACS, a test checks).
        if type(w) is not np.ndarray or (
            x.size * w.shape[-1] >= _NATIVE_MIN_MACS
            and x.dtype == np.float32
            and _gemm().worth_it(x.size // x.shape[-1], *w.shape)
        ):
            y = _gemm().dense(x, w, b, activation)
            if y is not None:
                return (y,)
            if type(w) is not np.ndarray:  # a packed weight that oneDNN cannot use for this x
                w = w.unpacked()
                if w.dtype.kind == "V" or x.dtype.kind == "V":  # bfloat16: numpy in float32
                    x, w = x.astype(np.float32), w.astype(np.float32)
        if x.ndim == 2 and x.shape[0] == 1:
            # One row: a vector-matrix product (BLAS gemv) costs ~40% less than a 1-row GEMM.
            y = np.dot(x[0], w)
            if activation in ("", "relu") and (b is None or b.ndim == 1) and y.dtype.kind == "f":
                # The tiny-MLP path: the epilogue inline (its generic form costs ~1.5 us of
                # checks and calls on a 128-wide row, as much as the bias and ReLU themselves).
                if b is not None:
                    y += b
                if activation:
                    np.maximum(y, 0, out=y)
                return (y.reshape(1, -1),)
            y = y.reshape(1, -1)
        elif x.ndim > 2 and x.flags.c_contiguous:
            y = np.matmul(x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], w.shape[1])
        else:
            y = np.matmul(x, w)
    else:
        y = xp_of(x, w).matmul(x, w)
    _epilogue(y, b, activation)
    return (y,)


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def _dense_extended(x, w, b, r, activation, out_dtype=""):
    """Dense with a residual, the tanh GELU or a bfloat16 result: one oneDNN primitive (post-ops,
    bf16 destination) where it runs; else the product and epilogue, the GELU (GeluTanh's
    kernel), the add, then the rounding to bfloat16."""
    if out_dtype not in ("", "bf16"):
        raise ExecutionError(f"Dense: out_dtype {out_dtype!r}; expected '' or 'bf16'")
    if type(x) is np.ndarray and type(w) is not np.ndarray:
        y = _gemm().dense(x, w, b, activation, residual=r, out_bf16=out_dtype == "bf16")
        if y is not None:
            return y
    tanh = activation == "gelu_tanh"
    (y,) = Dense(x, w, b, activation="" if tanh else activation)
    if tanh:
        from .fused_transformer import GeluTanh

        (y,) = GeluTanh(y)
    if r is not None:
        r = r.astype(y.dtype, copy=False)
        if r.size == y.size:  # the native path's contract: the same elements, any shape
            y += r.reshape(y.shape)
        elif _broadcasts_to(r.shape, y.shape):  # an Add's residual broadcast over the batch
            y += r
        else:
            raise ExecutionError(
                f"Dense: residual of shape {r.shape} neither matches nor broadcasts to the "
                f"result's {y.shape}"
            )
    if out_dtype == "bf16":
        import ml_dtypes

        y = y.astype(ml_dtypes.bfloat16)
    return y


@kernel("FusedConv", domain=DOMAIN)
def FusedConv(
    x, w, b=None, skip=None, /, *, activation="", auto_pad="NOTSET", dilations=None, group=1,
    kernel_shape=None, pads=None, strides=None, clip_min=None, clip_max=None, layout="",
    precision="fp32", out_dtype="", inplace_skip=0,
):  # fmt: skip
    """activation(Conv(x, w, b) + skip); activation '', 'relu' or 'clip' (to [clip_min, clip_max]).

    On oneDNN (float32): bias, skip and activation run as the convolution's post-ops; ``layout``
    'nhwc' returns the (N, C, H, W) result channels-last in memory (set by passes/fuse_conv.py when
    every consumer is another convolution or a pool); ``precision`` 'bf16' computes in bf16 with
    float32 accumulation, and ``out_dtype`` 'bf16' hands the result on in bfloat16 (only to other
    bf16 convolutions). ``inplace_skip`` 1: ``skip`` dies here and oneDNN may write the result
    into its buffer. Elsewhere: numpy, then the epilogue in place.
    """
    attrs = (auto_pad, dilations, group, kernel_shape, pads, strides)
    post = (activation, clip_min, clip_max, layout, precision, out_dtype, inplace_skip)
    y = native_conv(x, w, b, skip, attrs, "FusedConv", post)
    if y is not None:
        return (y,)
    (y,) = Conv(
        x, w, b, auto_pad=auto_pad, dilations=dilations, group=group,
        kernel_shape=kernel_shape, pads=pads, strides=strides,
    )  # fmt: skip
    xp = xp_of(y)
    if not y.flags.writeable or not y.flags.owndata and y.base is x:
        y = xp.array(y, copy=True)
    _epilogue(y, None, activation, (clip_min, clip_max), residual=skip)
    return (y,)
