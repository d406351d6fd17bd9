"""Scaled dot-product attention in bfloat16 on oneDNN (AMX / AVX512-BF16), for ``precision="bf16"``.

``softmax(scale * q @ k_t + mask) @ v`` as six primitives: q, k and v converted to bfloat16 into
contiguous head-major buffers (one reorder each, straight from the exporters' strided per-head
views), the scores as one batched bf16 matmul over every head with the scale (source-scale
attribute) and the additive mask (binary post-op) applied in its epilogue into float32, oneDNN's
softmax reading the float32 scores and writing bfloat16 probabilities, and the second bf16 matmul
writing float32 straight into a (B, S, H, D) buffer, so the exporters' Transpose + Reshape that
merge the heads cost nothing.

Why this shape. oneDNN 3.2 runs bf16 matmuls on AMX (``brg:avx512_core_amx``) only for dense
head-major operands: on the strided views of the merged Q/K/V projection it picks the
``gemm:jit`` kernels (float32 or bf16 alike), and fpmath-mode bf16 on float32 views does not
reach AMX either. When q, k and v are views of one merged Q/K/V projection (passes/fuse_qkv.py),
one reorder converts all three. Measured on BERT-base's 12 heads x 128 x 64 (2-core AMX Xeon, one
process, medians of 200 calls, load ~1): the float32 kernel 330 us a call, this one 245 us with
three reorders, of which the primitives took q/k/v reorders 26 us each, scores 42, softmax 99
(2-D rows; 65-69 as 4-D), products 59; in the whole model (one thread, CPU time, with
passes/fuse_residual.py) 55.4 -> 48.4 ms a run.

Numerics (issue 10's rule: GEMMs in bf16 with float32 accumulation, softmax in float32): q, k, v
and the probabilities are rounded to bfloat16 (relative error <= 2^-8 each) as GEMM inputs; the
scores, mask add and softmax are float32. Masks with infinities (rows that may be all -inf, which
``nan_to_zero`` must turn into zeros) are left to the float32 path: the caller checks.

``attention`` returns None whenever a case is not one of these (other ranks, broadcast batch
dims, dtypes, a primitive oneDNN will not create); the caller then runs the float32 kernel.
"""

from __future__ import annotations

import threading

import numpy as np

from . import dnnl
from .attention_f32 import operands, scale_array
from .gemm import _bf16_dtype, _Plan

_F32 = np.dtype(np.float32)
_lock = threading.Lock()
_plans: dict[tuple, _AttentionPlan] = {}


def _elems(a: np.ndarray) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


def _reorder(src: dnnl.MemoryDesc, dst: dnnl.MemoryDesc) -> _Plan:
    pd = dnnl.PrimitiveDesc(
        "dnnl_reorder_primitive_desc_create", src, dnnl.engine(), dst, dnnl.engine(), None
    )
    return _Plan(pd, {dnnl.ARG_FROM: src, dnnl.ARG_TO: dst})


class _AttentionPlan:
    """The six primitives for one set of shapes, strides and mask shape."""

    def __init__(self, q, k_t, v, mask_shape, has_scale: bool, merged: int, out_bf16: bool):
        bf = _bf16_dtype()
        b, h, s, d = q.shape
        t, dv = k_t.shape[3], v.shape[3]
        self.shapes = ((b, h, s, d), (b, h, t, d), (b, h, t, dv), (b, h, s, t), (b, s, h, dv))
        self.out_dt = bf if out_bf16 else _F32
        md = dnnl.MemoryDesc.strided
        q_bf = md(q.shape, bf)
        # k is stored (B, H, T, D) and read as its transpose (B, H, D, T): AMX takes that layout
        kt_bf = md(k_t.shape, bf, (h * t * d, t * d, 1, d))
        v_bf = md(v.shape, bf)
        self.merged = merged
        if merged:  # q, k, v: three equal views, ``merged`` elements apart (one Q/K/V projection)
            self.qkv = _reorder(
                md((3,) + q.shape, q.dtype, (merged,) + _elems(q)), md((3,) + q.shape, bf)
            )
        else:
            self.q = _reorder(md(q.shape, q.dtype, _elems(q)), q_bf)
            self.k = _reorder(md(k_t.shape, q.dtype, _elems(k_t)), kt_bf)
            self.v = _reorder(md(v.shape, q.dtype, _elems(v)), v_bf)
        scores = md((b, h, s, t), _F32)
        attr = dnnl.Attr()
        mds = {dnnl.ARG_SRC: q_bf, dnnl.ARG_WEIGHTS: kt_bf, dnnl.ARG_DST: scores}
        if has_scale:
            dnnl.call("dnnl_primitive_attr_set_scales_mask", attr.handle, dnnl.ARG_SRC, 0)
            mds[dnnl.ARG_SRC_SCALES] = md((1,), _F32)
        if mask_shape is not None:
            mask_md = md(mask_shape, _F32)
            attr.binary(dnnl.BINARY_ADD, mask_md)
            mds[dnnl.ARG_POST_OP(0) | dnnl.ARG_SRC_1] = mask_md
        attr.finish()
        pd = dnnl.PrimitiveDesc(
            "dnnl_matmul_primitive_desc_create", dnnl.engine(), q_bf, kt_bf, None, scores, attr
        )
        self.qk = _Plan(pd, mds)
        # over the last axis of the 4-D scores: 15-20 % faster than the same rows as 2-D
        pd = dnnl.PrimitiveDesc(
            "dnnl_softmax_forward_primitive_desc_create", dnnl.engine(), dnnl.FORWARD_INFERENCE,
            dnnl.SOFTMAX_ACCURATE, scores, md((b, h, s, t), bf), 3, None,
        )  # fmt: skip
        self.softmax = _Plan(pd, {dnnl.ARG_SRC: scores, dnnl.ARG_DST: md((b, h, s, t), bf)})
        p_bf = md((b, h, s, t), bf)
        # the output (B, H, S, Dv) written with (B, S, H, Dv) strides: heads already merged
        out = md((b, h, s, dv), self.out_dt, (s * h * dv, dv, h * dv, 1))
        pd = dnnl.PrimitiveDesc(
            "dnnl_matmul_primitive_desc_create", dnnl.engine(), p_bf, v_bf, None, out, None
        )
        self.pv = _Plan(pd, {dnnl.ARG_SRC: p_bf, dnnl.ARG_WEIGHTS: v_bf, dnnl.ARG_DST: out})
        self.impls = [p.prim.pd.impl_name() for p in (self.qk, self.pv)]

    def run(self, q, k_t, v, mask, scale) -> np.ndarray:
        bf = _bf16_dtype()
        sq, sk, sv, ss, so = self.shapes
        if self.merged:
            qkv = np.empty((3,) + sq, bf)
            self.qkv.run(q, qkv)  # q is the lowest of the three views: the 5-D source starts there
            qb, kb, vb = qkv
        else:
            qb, kb, vb = np.empty(sq, bf), np.empty(sk, bf), np.empty(sv, bf)
            self.q.run(q, qb)
            self.k.run(k_t, kb)
            self.v.run(v, vb)
        scores = np.empty(ss, _F32)
        args = [qb, kb, scores]
        if scale is not None:
            args.append(scale)
        if mask is not None:
            args.append(mask)
        self.qk.run(*args)
        p = np.empty(ss, bf)
        self.softmax.run(scores, p)
        out = np.empty(so, self.out_dt)
        self.pv.run(p, vb, out)
        return out.transpose(0, 2, 1, 3)


def _merged_stride(q, k_t, v) -> int:
    """The distance in elements from q to k and from k to v when k (k_t transposed back) and v
    are q's layout shifted by one same positive offset, as the heads of one merged Q/K/V
    projection are (then one reorder converts all three); 0 otherwise."""
    k = k_t.transpose(0, 1, 3, 2)
    if not q.shape == k.shape == v.shape or not q.strides == k.strides == v.strides:
        return 0
    base = q.ctypes.data
    dk, dv = k.ctypes.data - base, v.ctypes.data - base
    if dk <= 0 or dk % q.itemsize or dv != 2 * dk:
        return 0
    return dk // q.itemsize


def attention(q, k_t, v, mask, scale: float, out_bf16: bool = False):
    """``softmax(scale * (q @ k_t) + mask) @ v`` in bf16 (see the module docstring) for float32
    (or all bfloat16: a bf16 projection's output, passes/bf16_activations.py) numpy
    q [B, H, S, D], k_t [B, H, D, T], v [B, H, T, Dv] (any strides) and an optional finite
    float32 mask broadcastable to [B, H, S, T]; a float32 (bfloat16 with ``out_bf16``, for a
    bf16 GEMM reading it) [B, H, S, Dv] view of a (B, S, H, Dv) buffer, or None when this path
    does not take the case."""
    if not all(type(a) is np.ndarray and a.ndim == 4 for a in (q, k_t, v)):
        return None
    if q.dtype not in (_F32, _bf16_dtype()) or not q.dtype == k_t.dtype == v.dtype:
        return None
    checked = operands(q, k_t, v, mask)
    if checked is None or not dnnl.available():
        return None
    mshape, mask = checked
    if any(st < 0 or st % q.itemsize for a in (q, k_t, v) for st in a.strides):
        return None
    merged = _merged_stride(q, k_t, v)
    key = (q.shape, q.strides, k_t.shape, k_t.strides, v.shape, v.strides, mshape, scale != 1.0)
    key += (merged, out_bf16)
    plan = _plans.get(key)
    if plan is None:
        try:
            plan = _AttentionPlan(q, k_t, v, mshape, scale != 1.0, merged, out_bf16)
        except dnnl.DnnlError:
            return None
        with _lock:
            if len(_plans) > 256:  # sequence lengths vary: stay bounded
                _plans.clear()
            plan = _plans.setdefault(key, plan)
    return plan.run(q, k_t, v, mask, scale_array(scale))
