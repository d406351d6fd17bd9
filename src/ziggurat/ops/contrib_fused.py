"""``com.microsoft`` fused ops that onnxruntime's offline graph optimizer writes (ORT_ENABLE_EXTENDED):
FusedConv, FusedGemm, FusedMatMul, and NhwcConv (onnxruntime's channels-last convolution).

The arithmetic is the ``ai.onnx`` kernels' (``conv.py``, ``matmul.py``, ``activation.py``); a
FusedConv whose activation oneDNN can apply as a post-op goes through ``fused.py``'s kernel.
"""

from __future__ import annotations

from ..backends import xp_of
from ..errors import ExecutionError
from . import activation as act
from .conv import Conv
from .elementwise import Clip, Tanh
from .fused import FusedConv as _zg_fused_conv
from .matmul import Gemm, MatMul
from .registry import kernel

MS = "com.microsoft"


def _params(params, n: int, defaults: tuple, op: str, name: str) -> tuple:
    vals = tuple(params or ()) + defaults[len(params or ()) :]
    if len(vals) < n:
        raise ExecutionError(f"{op}: activation {name} needs {n} parameter(s), got {params}")
    return vals


# activation name -> (parameter count, defaults, f(y, *params)), with onnxruntime's names
_ACTIVATIONS = {
    "Relu": (0, (), lambda y: act.Relu(y)[0]),
    "Tanh": (0, (), lambda y: Tanh(y)[0]),
    "Sigmoid": (0, (), lambda y: act.Sigmoid(y)[0]),
    "LeakyRelu": (1, (0.01,), lambda y, a: act.LeakyRelu(y, alpha=a)[0]),
    "HardSigmoid": (2, (0.2, 0.5), lambda y, a, b: act.HardSigmoid(y, alpha=a, beta=b)[0]),
    "Elu": (1, (1.0,), lambda y, a: act.Elu(y, alpha=a)[0]),
    "Selu": (2, (1.67326319217681884765625, 1.05070102214813232421875),
             lambda y, a, g: act.Selu(y, alpha=a, gamma=g)[0]),
    "Softplus": (0, (), lambda y: act.Softplus(y)[0]),
    "Softsign": (0, (), lambda y: act.Softsign(y)[0]),
    "ThresholdedRelu": (1, (1.0,), lambda y, a: act.ThresholdedRelu(y, alpha=a)[0]),
    "Clip": (2, (), lambda y, lo, hi: Clip(y, _scalar(y, lo), _scalar(y, hi))[0]),
}  # fmt: skip


def _scalar(y, v):
    return xp_of(y).asarray(v, dtype=y.dtype)


def activate(y, name: str, params, op: str):
    """``name``(y) with onnxruntime's activation parameters (alpha, beta / min, max...)."""
    if not name:
        return y
    if name not in _ACTIVATIONS:
        raise ExecutionError(
            f"{op}: unsupported activation {name!r}; expected one of {sorted(_ACTIVATIONS)}"
        )
    n, defaults, f = _ACTIVATIONS[name]
    return f(y, *_params(params, n, defaults, op, name)[:n])


@kernel("FusedConv", domain=MS, since=1)
def FusedConv(
    x, w, b=None, z=None, /, *, activation="", activation_params=None, auto_pad="NOTSET",
    dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
):  # fmt: skip
    """``activation(Conv(x, w, b) + z)``; z (optional) is a residual of the output's shape."""
    conv = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                pads=pads, strides=strides)  # fmt: skip
    if activation in ("", "Relu") or activation == "Clip" and activation_params:
        lo, hi = (activation_params or (None, None))[:2] if activation == "Clip" else (None, None)
        name = {"": "", "Relu": "relu", "Clip": "clip"}[activation]
        return _zg_fused_conv(x, w, b, z, activation=name, clip_min=lo, clip_max=hi, **conv)
    (y,) = Conv(x, w, b, **conv)
    if z is not None:
        y = y + z
    return (activate(y, activation, activation_params, "FusedConv"),)


@kernel("FusedGemm", domain=MS, since=1)
def FusedGemm(
    a, b, c=None, /, *, alpha=1.0, beta=1.0, transA=0, transB=0, activation="",
    activation_alpha=None, activation_beta=None, activation_gamma=None,
):  # fmt: skip
    """``activation(Gemm(a, b, c))`` with the activation's alpha / beta / gamma attributes."""
    (y,) = Gemm(a, b, c, alpha=alpha, beta=beta, transA=transA, transB=transB)
    params = [p for p in (activation_alpha, activation_beta, activation_gamma) if p is not None]
    if activation == "Selu" and activation_gamma is not None and activation_beta is None:
        params = [activation_alpha, activation_gamma]
    return (activate(y, activation, params, "FusedGemm"),)


def _batch_transposed(x, trans_batch: int, trans: int):
    """op(x) for FusedMatMul: transBatch moves axis 0 behind the batch axes (to -2), then trans
    swaps the last two axes."""
    xp = xp_of(x)
    if trans_batch and x.ndim > 2:
        x = xp.moveaxis(x, 0, -2)
    if trans:
        if x.ndim < 2:
            raise ExecutionError(f"FusedMatMul: cannot transpose a rank-{x.ndim} input")
        x = xp.swapaxes(x, -1, -2)
    return x


@kernel("FusedMatMul", domain=MS, since=1)
def FusedMatMul(a, b, /, *, alpha=1.0, transA=0, transB=0, transBatchA=0, transBatchB=0):
    """``alpha * op(A) @ op(B)`` (MatMul with onnxruntime's folded Transpose and Mul)."""
    a = _batch_transposed(a, transBatchA, transA)
    b = _batch_transposed(b, transBatchB, transB)
    (y,) = MatMul(a, b)
    if alpha != 1.0:
        y = y * y.dtype.type(alpha)
    return (y,)


@kernel("NhwcConv", domain=MS, since=1)
def NhwcConv(
    x, w, b=None, /, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
    pads=None, strides=None,
):  # fmt: skip
    """Conv on channels-last X (N, *S, C) and W (M, *K, C/group), giving (N, *S', M)."""
    xp = xp_of(x)
    if x.ndim < 3 or w.ndim != x.ndim:
        raise ExecutionError(
            f"NhwcConv: X {tuple(x.shape)} and W {tuple(w.shape)} must have one rank >= 3"
        )
    (y,) = Conv(
        xp.moveaxis(x, -1, 1), xp.moveaxis(w, -1, 1), b, auto_pad=auto_pad, dilations=dilations,
        group=group, kernel_shape=kernel_shape, pads=pads, strides=strides,
    )  # fmt: skip
    return (xp.ascontiguousarray(xp.moveaxis(y, 1, -1)),)
