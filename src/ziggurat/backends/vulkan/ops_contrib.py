"""onnxruntime's fused BERT ops (``com.microsoft``), as its transformers optimizer writes them,
composed from this backend's kernels: EmbedLayerNormalization (gathers, one add, LayerNorm) and
Attention (the merged QKV product, heads split by strided copies, masked scaled scores in one
product's epilogue, softmax, the value product, heads merged). Attention runs without past state
(``present`` is refused) with no mask, a (B, T) 0/1 mask or (B,) valid lengths, and
``unidirectional`` (causal) - the forms BERT-style encoders use; other forms stay on the CPU.
"""

from __future__ import annotations

import math

import numpy as np

from ._backend import TABLE, VkTensor, VulkanBackend
from ._common import CARRIED, F32, FLOAT, I32, check, copy_into, elementwise
from .ops_elementwise import _broadcast
from .ops_matmul import matmul
from .ops_nn import layer_norm, reduce, softmax_rows
from .ops_shape import _gather

MS = "com.microsoft"
NEG_INF = float("-inf")


def _release(be: VulkanBackend, *ts) -> None:
    for t in ts:
        if t is not None:
            be.release(t)


# -- EmbedLayerNormalization -----------------------------------------------------------------------
def _embed_supports(inputs, attrs):
    ids = inputs[0]
    if ids is None or len(ids[0]) != 2 or inputs[5] is None:
        return "EmbedLayerNormalization needs 2-D input_ids and gamma"
    for i in (0, 1, 7, 8):
        if i < len(inputs) and inputs[i] is not None and np.dtype(inputs[i][1]) != I32:
            return f"EmbedLayerNormalization input {i} of dtype {inputs[i][1]} (int32 expected)"
    floats = [p for i, p in enumerate(inputs) if i in (2, 3, 4, 5, 6)]
    B, S = ids[0]
    return check(floats, FLOAT, B * S * inputs[2][0][-1])


@TABLE.kernel("EmbedLayerNormalization", domain=MS, supports=_embed_supports)
def EmbedLayerNormalization(be, inputs, attrs):
    ids, seg_ids, word, pos_table = inputs[:4]
    seg_table, gamma, beta = (inputs + [None] * 9)[4:7]
    mask, pos_ids = (inputs + [None] * 9)[7:9]
    B, S = ids.shape
    made = [_gather(be, [word, ids], {"axis": 0})[0]]
    if pos_ids is not None:
        made.append(_gather(be, [pos_table, pos_ids], {"axis": 0})[0])
    else:  # positions 0..S-1: the table's first S rows, read in place
        made.append(be.view(pos_table, pos_table.shape))
    if seg_ids is not None and seg_table is not None:
        made.append(_gather(be, [seg_table, seg_ids], {"axis": 0})[0])
    try:
        terms = [made[0]]
        if pos_ids is None:
            H = pos_table.shape[1]
            pos = be.empty((S, H), np.float32)
            copy_into(be, made[1], 0, [H, 1], pos, (S, H))
            terms.append(pos)
            made.append(pos)
        else:
            terms.append(made[1])
        terms += made[2:3] if seg_ids is not None and seg_table is not None else []
        expr = " + ".join(f"a{k}" for k in range(len(terms)))
        emb = _broadcast(be, expr, terms, F32)  # (word + position) + segment, as the CPU adds
    finally:
        _release(be, *made)
    try:
        (y,) = layer_norm(be, emb, gamma, beta, attrs.get("epsilon", 1e-12))
    except Exception:
        be.release(emb)
        raise
    if mask is not None:
        ones = _broadcast(be, "f32(a0 != 0)", [mask], F32)
        counts = reduce(be, ones, [1], "Sum", False)
        mask_index = _broadcast(be, "i32(a0)", [counts], I32)  # counts < 2^24: exact
        _release(be, ones, counts)
    else:
        mask_index = be.to_device(np.zeros(B, np.int32))
    n = max(int(attrs.get("n_outputs", 2)), 1)
    outs = [y, mask_index, emb]
    _release(be, *outs[n:])
    return outs[:n]


# -- Attention -----------------------------------------------------------------------------------
def _attention_supports(inputs, attrs):
    x, w = inputs[0], inputs[1]
    if x is None or len(x[0]) != 3 or len(w[0]) != 2:
        return "Attention needs a 3-D input and 2-D weights"
    extra = inputs[4:]
    if any(p is not None for p in extra):
        return "Attention with past state or attention_bias"
    if attrs.get("n_outputs", 1) > 1:
        return "Attention's present output"
    if attrs.get("do_rotary", 0):
        return "Attention do_rotary"
    B, S, _ = x[0]
    heads = int(attrs.get("num_heads", 0) or 0)
    dq, dk, dv = attrs.get("qkv_hidden_sizes") or (w[0][1] // 3,) * 3
    if not heads or dq + dk + dv != w[0][1] or dq != dk or dq % heads or dv % heads:
        return "Attention's qkv_hidden_sizes / num_heads do not split the weights"
    mask = inputs[3] if len(inputs) > 3 else None
    if mask is not None:
        if np.dtype(mask[1]) != I32:
            return f"Attention mask_index of dtype {mask[1]}"
        if tuple(mask[0]) not in ((B, S), (B,)):
            return f"Attention mask_index of shape {mask[0]} (only ({B}, {S}) and ({B},))"
    return check(inputs[:3], FLOAT, B * heads * S * S) or check(inputs[3:4], CARRIED)


def _heads(be, qkv: VkTensor, offset: int, heads: int, size: int) -> VkTensor:
    """(B, S, width) columns [offset, offset + heads * size) as contiguous (B, N, S, H)."""
    B, S, width = qkv.shape
    H = size // heads
    out = be.empty((B, heads, S, H), np.float32)
    return copy_into(be, qkv, offset, [S * width, H, width, 1], out, (B, heads, S, H))


def _additive_mask(be, mask, B: int, S: int, causal: bool, fill: float) -> VkTensor | None:
    """The float additive mask broadcasting to the scores (B, N, S, S): ``fill`` on padded
    keys, -inf on future keys (as the CPU's where(allowed, scores, -inf))."""
    parts = []
    if mask is not None and mask.ndim == 2:  # (B, T) zeros and ones
        view = be.view(mask, (B, 1, 1, S))
        parts.append(_broadcast(be, "select(p0, 0.0, a0 != 0)", [view], F32, fill))
        be.release(view)
    elif mask is not None:  # (B,) valid lengths: key j is kept while j < length
        view = be.view(mask, (B, 1, 1, 1))
        j = be.to_device(np.arange(S, dtype=np.int32).reshape(1, 1, 1, S))
        parts.append(_broadcast(be, "select(p0, 0.0, a1 < a0)", [view, j], F32, fill))
        _release(be, view, j)
    if causal:
        i = be.to_device(np.arange(S, dtype=np.int32).reshape(S, 1))
        j = be.to_device(np.arange(S, dtype=np.int32).reshape(1, S))
        parts.append(_broadcast(be, "select(p0, 0.0, a1 <= a0)", [i, j], F32, NEG_INF))
        _release(be, i, j)
    if len(parts) < 2:
        return parts[0] if parts else None
    both = _broadcast(be, "a0 + a1", parts, F32)
    _release(be, *parts)
    return both


@TABLE.kernel("Attention", domain=MS, supports=_attention_supports)
def Attention(be, inputs, attrs):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    mask = inputs[3] if len(inputs) > 3 else None
    heads = int(attrs["num_heads"])
    dq, dk, dv = attrs.get("qkv_hidden_sizes") or (w.shape[1] // 3,) * 3
    B, S, _ = x.shape
    qkv = matmul(be, x, w, c=bias)
    try:
        q = _heads(be, qkv, 0, heads, dq)
        k = _heads(be, qkv, dq, heads, dk)
        v = _heads(be, qkv, dq + dk, heads, dv)
    finally:
        be.release(qkv)
    add = None
    try:
        add = _additive_mask(be, mask, B, S, bool(attrs.get("unidirectional", 0)),
                             float(attrs.get("mask_filter_value", -10000.0)))  # fmt: skip
        scale = float(attrs.get("scale", 0.0) or 0.0) or 1.0 / math.sqrt(dq // heads)
        scores = matmul(be, q, k, trans_b=True, alpha=scale, c=add)
    finally:
        _release(be, q, k, add)
    try:
        p = softmax_rows(be, scores)
    finally:
        be.release(scores)
    try:
        y = matmul(be, p, v)  # (B, N, S, Hv)
    finally:
        _release(be, p, v)
    Hv = dv // heads
    out = be.empty((B, S, dv), np.float32)
    try:  # merge heads: out[b, s, n * Hv + h] = y[b, n, s, h]
        elementwise(be, "a0", [(y, 0, [heads * S * Hv, Hv, S * Hv, 1])], out, (B, S, heads, Hv))
    finally:
        be.release(y)
    return [out]
