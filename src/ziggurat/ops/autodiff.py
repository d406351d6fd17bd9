"""Kernels for the ``ziggurat`` domain that the Gradient pass (``passes/gradient.py``) emits.

They are the pieces of backward graphs that standard ONNX ops express badly: undoing broadcasting
(the input's rank and shape are only known at run time), constants shaped and typed like a tensor,
and the vector-Jacobian products of a few activations, MatMul and Pow. Each keeps the dtype of the
gradient it is given.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel

DOMAIN = "ziggurat"


def _sum_to_shape(grad, shape: tuple[int, ...]):
    """Sum ``grad`` over the axes broadcasting added or stretched so it has ``shape``."""
    if tuple(grad.shape) == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0 or any(d not in (1, g) for d, g in zip(shape, grad.shape[lead:])):
        raise ExecutionError(
            f"cannot reduce a gradient of shape {tuple(grad.shape)} to shape {shape}: the shape "
            "does not broadcast to it; the forward graph's shapes and the gradient disagree"
        )
    stretched = [lead + i for i, d in enumerate(shape) if d == 1 and grad.shape[lead + i] != 1]
    axes = tuple(range(lead)) + tuple(stretched)
    xp = xp_of(grad)
    return xp.reshape(xp.sum(grad, axis=axes, dtype=grad.dtype), shape)


@kernel("ReduceToShape", domain=DOMAIN)
def ReduceToShape(grad, like, /):
    """``grad`` summed over broadcast axes so that it has the shape of ``like``."""
    return (_sum_to_shape(grad, tuple(like.shape)),)


@kernel("OnesLike", domain=DOMAIN)
def OnesLike(x, /):
    """Ones with the shape and dtype of ``x`` (the seed of a backward pass)."""
    return (xp_of(x).ones_like(x),)


@kernel("ZerosLike", domain=DOMAIN)
def ZerosLike(x, /):
    """Zeros with the shape and dtype of ``x`` (the gradient of an unreached input)."""
    return (xp_of(x).zeros_like(x),)


@kernel("CastLike", domain=DOMAIN)
def CastLike(x, like, /):
    """``x`` in the dtype of ``like`` (ONNX CastLike needs opset 15; this one works at any)."""
    return (x.astype(like.dtype, copy=False),)


@kernel("Scale", domain=DOMAIN)
def Scale(x, /, *, alpha=1.0):
    """``alpha * x`` in the dtype of ``x``."""
    return (x * x.dtype.type(alpha),)


@kernel("ReluGrad", domain=DOMAIN)
def ReluGrad(dy, x, /):
    """Gradient of Relu: ``dy`` where ``x > 0``, else 0."""
    xp = xp_of(dy, x)
    return (xp.where(x > 0, dy, dy.dtype.type(0)),)


@kernel("LeakyReluGrad", domain=DOMAIN)
def LeakyReluGrad(dy, x, /, *, alpha=0.01):
    """Gradient of LeakyRelu: ``dy`` where ``x > 0``, else ``alpha * dy``."""
    xp = xp_of(dy, x)
    return (xp.where(x > 0, dy, dy * dy.dtype.type(alpha)),)


@kernel("SigmoidGrad", domain=DOMAIN)
def SigmoidGrad(dy, y, /):
    """Gradient of Sigmoid from its output: ``dy * y * (1 - y)``."""
    return (dy * (y * (y.dtype.type(1) - y)),)


@kernel("TanhGrad", domain=DOMAIN)
def TanhGrad(dy, y, /):
    """Gradient of Tanh from its output: ``dy * (1 - y²)``."""
    return (dy * (y.dtype.type(1) - y * y),)


def _softmax_view(t, axis: int, legacy: int):
    """``t`` and the axis softmax ran over; before opset 13 that is axis 1 of a 2-D view."""
    axis = axis + t.ndim if axis < 0 else axis
    if not legacy:
        return t, axis
    rows = int(np.prod(t.shape[:axis], dtype=np.int64))
    return t.reshape(rows, -1), 1


@kernel("SoftmaxGrad", domain=DOMAIN)
def SoftmaxGrad(dy, y, /, *, axis=-1, legacy=0):
    """Gradient of Softmax from its output: ``y * (dy - sum(dy * y))`` along the softmax axis.
    ``legacy=1`` gives the opset < 13 meaning (input flattened to 2-D at ``axis``)."""
    xp = xp_of(dy, y)
    d2, ax = _softmax_view(dy, axis, legacy)
    y2, _ = _softmax_view(y, axis, legacy)
    dot = xp.sum(d2 * y2, axis=ax, keepdims=True, dtype=dy.dtype)
    return (xp.reshape(y2 * (d2 - dot), dy.shape),)


@kernel("LogSoftmaxGrad", domain=DOMAIN)
def LogSoftmaxGrad(dy, y, /, *, axis=-1, legacy=0):
    """Gradient of LogSoftmax from its output: ``dy - exp(y) * sum(dy)`` along the axis."""
    xp = xp_of(dy, y)
    d2, ax = _softmax_view(dy, axis, legacy)
    y2, _ = _softmax_view(y, axis, legacy)
    total = xp.sum(d2, axis=ax, keepdims=True, dtype=dy.dtype)
    return (xp.reshape(d2 - xp.exp(y2) * total, dy.shape),)


@kernel("MatMulGrad", domain=DOMAIN)
def MatMulGrad(dy, a, b, /, *, wrt=0):
    """Gradient of ``MatMul(a, b)`` with respect to ``a`` (``wrt=0``) or ``b`` (``wrt=1``),
    with numpy's 1-D promotion and batch broadcasting undone."""
    xp = xp_of(dy, a, b)
    a2 = a[None, :] if a.ndim == 1 else a  # 1-D operands act as a row / a column
    b2 = b[:, None] if b.ndim == 1 else b
    d2 = dy
    if a.ndim == 1:
        d2 = xp.expand_dims(d2, -2 if b.ndim > 1 else 0)
    if b.ndim == 1:
        d2 = xp.expand_dims(d2, -1)
    if wrt == 0:
        g = xp.matmul(d2, xp.swapaxes(b2, -1, -2))
        return (xp.reshape(_sum_to_shape(g, a2.shape), a.shape),)
    g = xp.matmul(xp.swapaxes(a2, -1, -2), d2)
    return (xp.reshape(_sum_to_shape(g, b2.shape), b.shape),)


@kernel("PowGrad", domain=DOMAIN)
def PowGrad(dy, a, b, y, /, *, wrt=0):
    """Gradient of ``y = Pow(a, b)`` (broadcast shape, not yet reduced) with respect to the base
    (``wrt=0``: ``dy * b * a^(b-1)``, in a's dtype) or the exponent (``wrt=1``:
    ``dy * y * log(a)``, in b's dtype)."""
    xp = xp_of(dy, a, b)
    if wrt == 0:
        e = b.astype(a.dtype, copy=False)
        # b == 0 makes a^(b-1) infinite at a == 0, but a^0 is constant: its slope is 0
        g = xp.where(e == 0, a.dtype.type(0), e * xp.power(a, e - a.dtype.type(1)))
        return ((dy * g).astype(a.dtype, copy=False),)
    # y == 0 (a == 0, b > 0): the limit of y * log(a) is 0, not 0 * -inf
    with np.errstate(divide="ignore", invalid="ignore"):
        g = xp.where(y == 0, y.dtype.type(0), y * xp.log(a).astype(y.dtype, copy=False))
    return ((dy * g).astype(b.dtype, copy=False),)


@kernel("ReduceGrad", domain=DOMAIN)
def ReduceGrad(dy, x, axes_input=None, /, *, axes=None, keepdims=1, noop_with_empty_axes=0, mean=0):
    """Gradient of ReduceSum (``mean=0``) or ReduceMean (``mean=1``) over ``x``: ``dy`` put back
    on the reduced axes and broadcast to ``x``'s shape (divided by the count for a mean). Axes come
    from the input (opset 13+/18+) or the attribute, as the forward node had them."""
    xp = xp_of(dy, x)
    if axes_input is not None:
        axes = [int(a) for a in axes_input.reshape(-1).tolist()]
    axes = list(axes or [])
    if not axes:
        if noop_with_empty_axes:
            return (dy,)
        axes = list(range(x.ndim))
    axes = sorted({a + x.ndim if a < 0 else a for a in axes})
    g = dy if keepdims else xp.reshape(dy, [1 if i in axes else d for i, d in enumerate(x.shape)])
    if mean:
        count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        g = g / dy.dtype.type(max(count, 1))
    return (xp.array(xp.broadcast_to(g, x.shape), dtype=dy.dtype),)
