"""Matrix products on the device (``shaders/matmul.wgsl``): MatMul (batched, broadcasting, numpy's
1-D rules), Gemm (alpha, beta, transA/B, a broadcast C), the fusion passes' Dense (bias and
ReLU/GELU epilogue fused) and FusedAttention (scaled scores + mask in one product's epilogue, a
row softmax, a second product)."""

from __future__ import annotations

import math

import numpy as np

from ._backend import TABLE, VkTensor, VulkanBackend
from ._common import FLOAT, bits, broadcast_strides, check, product_reason
from .ops_nn import softmax_rows

ACT = {"": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "clip": 4, "sigmoid": 5, "leaky": 6}


def matmul(
    be: VulkanBackend,
    a: VkTensor,
    b: VkTensor,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    alpha: float = 1.0,
    c: VkTensor | None = None,
    beta: float = 1.0,
    act: str = "",
    p0: float = 0.0,
    p1: float = 0.0,
) -> VkTensor:
    """``act(alpha * a @ b + beta * c)``; a is [..., M, K] ([..., K, M] with ``trans_a``), b is
    [..., K, N] ([..., N, K] with ``trans_b``), c broadcasts to the output [..., M, N]."""
    a_shape, b_shape = list(a.shape), list(b.shape)
    drop_m, drop_n = len(a_shape) == 1, len(b_shape) == 1
    if drop_m:
        a_shape = [1, *a_shape]
    if drop_n:
        b_shape = [*b_shape, 1]
    M, K = (a_shape[-1], a_shape[-2]) if trans_a else (a_shape[-2], a_shape[-1])
    N = b_shape[-2] if trans_b else b_shape[-1]
    batch = list(np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2])))
    a_st = broadcast_strides(a_shape, batch + a_shape[-2:])
    b_st = broadcast_strides(b_shape, batch + b_shape[-2:])
    s_am, s_ak = (a_st[-1], a_st[-2]) if trans_a else (a_st[-2], a_st[-1])
    s_bk, s_bn = (b_st[-1], b_st[-2]) if trans_b else (b_st[-2], b_st[-1])
    out_full = batch + [M, N]
    if c is not None:
        c_st = broadcast_strides(c.shape, out_full)
        s_cm, s_cn, c_batch = c_st[-2], c_st[-1], c_st[:-2]
    else:
        s_cm = s_cn = 0
        c_batch = [0] * len(batch)
    out_shape = list(batch)
    if not drop_m:
        out_shape.append(M)
    if not drop_n:
        out_shape.append(N)
    out = be.empty(tuple(out_shape), np.float32)
    nbatch = math.prod(batch)
    if M * N * nbatch == 0:
        return out
    meta = [M, N, K, len(batch), s_am, s_ak, s_bk, s_bn, s_cm, s_cn, ACT[act], bits(p0), bits(p1),
            bits(alpha), bits(beta), int(c is not None), *batch, *a_st[:-2], *b_st[:-2], *c_batch]  # fmt: skip
    groups = (-(-N // 64), -(-M // 64), nbatch)  # 64x64 output tiles
    be.dispatch("matmul", meta, [a, b, c, out], groups)
    return out


def _mm_supports(inputs, attrs):
    (a, _), (b, _) = inputs[0], inputs[1]
    try:
        batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    except ValueError as e:
        return f"batch shapes do not broadcast: {e}"
    m = a[-2] if len(a) > 1 else 1
    n = b[-1] if len(b) > 1 else 1
    return product_reason(math.prod(batch), m, n) or check(inputs, FLOAT, math.prod(batch) * m * n)


@TABLE.kernel("MatMul", since=1, supports=_mm_supports)
def MatMul(be, inputs, attrs):
    return [matmul(be, inputs[0], inputs[1])]


def _gemm_supports(inputs, attrs):
    (a, _), (b, _) = inputs[0], inputs[1]
    if len(a) != 2 or len(b) != 2:
        return "Gemm needs 2-D A and B"
    m = a[1] if attrs.get("transA", 0) else a[0]
    n = b[0] if attrs.get("transB", 0) else b[1]
    return check(inputs, FLOAT, m * n)


@TABLE.kernel("Gemm", since=7, supports=_gemm_supports)
def Gemm(be, inputs, attrs):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    return [
        matmul(be, a, b, trans_a=bool(attrs.get("transA", 0)), trans_b=bool(attrs.get("transB", 0)),
               alpha=attrs.get("alpha", 1.0), c=c, beta=attrs.get("beta", 1.0))
    ]  # fmt: skip


def _dense_supports(inputs, attrs):
    if attrs.get("activation", "") not in ("", "relu", "gelu"):
        return f"Dense activation {attrs.get('activation')!r}"
    x, w = inputs[0][0], inputs[1][0]
    if len(w) != 2 or not x:
        return "Dense needs a 2-D weight"
    return check(inputs, FLOAT, math.prod(x[:-1]) * w[1])


@TABLE.kernel("Dense", domain="ziggurat", supports=_dense_supports)
def Dense(be, inputs, attrs):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    x2 = be.view(x, (math.prod(x.shape[:-1]), x.shape[-1]))
    try:
        y = matmul(be, x2, w, c=bias, act=attrs.get("activation", ""))
    finally:
        be.release(x2)
    out = be.view(y, (*x.shape[:-1], w.shape[1]))
    be.release(y)
    return [out]


def _attention_supports(inputs, attrs):
    q, k = inputs[0][0], inputs[1][0]
    if len(q) < 2 or len(k) < 2:
        return "FusedAttention needs [..., S, D] operands"
    try:
        batch = np.broadcast_shapes(tuple(q[:-2]), tuple(k[:-2]))
    except ValueError as e:
        return f"batch shapes do not broadcast: {e}"
    if len(inputs) > 3 and inputs[3] is not None:
        try:
            full = np.broadcast_shapes((*batch, q[-2], k[-1]), tuple(inputs[3][0]))
        except ValueError as e:
            return f"mask does not broadcast to the scores: {e}"
        if len(full) != len(batch) + 2 or full[:-2] != tuple(batch):
            return f"mask {inputs[3][0]} widens the scores {(*batch, q[-2], k[-1])}"
    nb = math.prod(batch)
    return product_reason(nb, q[-2], k[-1]) or check(inputs, FLOAT, nb * q[-2] * k[-1])


@TABLE.kernel("FusedAttention", domain="ziggurat", supports=_attention_supports)
def FusedAttention(be, inputs, attrs):
    q, k_t, v = inputs[:3]
    mask = inputs[3] if len(inputs) > 3 else None
    scores = matmul(be, q, k_t, alpha=attrs.get("scale", 1.0), c=mask)
    try:
        p = softmax_rows(be, scores, nan_to_zero=bool(attrs.get("nan_to_zero", 0)))
    finally:
        be.release(scores)
    try:
        return [matmul(be, p, v)]
    finally:
        be.release(p)
