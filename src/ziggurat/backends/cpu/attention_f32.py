"""Scaled dot-product attention in float32 on oneDNN: three primitives, no copies of q, k or v.

``softmax(scale * q @ k_t + mask) @ v`` for the exporters' per-head views (q [B, H, S, D] and
v [B, H, T, Dv] as transposed views of the projections, k_t [B, H, D, T]) as

1. one batched matmul over every head reading q and k_t in place (any strides), with the scale
   as oneDNN's source scale and the additive mask as a binary post-op (broadcast over batch and
   heads), into a fresh float32 scores buffer;
2. oneDNN's softmax over the scores' rows, in place;
3. the second matmul writing into a (B, S, H, Dv) buffer, returned as its [B, H, S, Dv] view: the
   exporters' Transpose(0, 2, 1, 3) + Reshape that merge the heads then cost no copy.

Why: the op-by-op float32 path (ops/fused_transformer.py) makes the same two products but adds
the mask with numpy in a separate pass, goes through the generic matmul and softmax entry points
(shape checks and plan look-ups per call) and returns a head-major result that the head merge
copies. bert-tiny (2 heads x 128 x 64, 2 cores, medians in one process, same minutes):
see ``tests/backends/test_attention_f32.py``'s docstring for the figures.

Numerics: the same float32 products as the op-by-op path (the mask added to the scaled product
in float32: one rounding, as ``scores += mask``), softmax with the row maximum subtracted. Rows
whose every key is -inf give NaN from oneDNN's softmax; ``nan_to_zero`` turns them into zeros,
as the exporters' ``Where(IsNaN(p), 0, p)`` does.

``attention`` returns None wherever a case is not one of these (other ranks or dtypes, batch
dims that broadcast, a mask that is not float32 or not broadcastable per axis, oneDNN absent or
refusing a primitive): the caller then runs its own path.
"""

from __future__ import annotations

import threading

import numpy as np

from . import dnnl
from .gemm import _Plan, worth_it

_F32 = np.dtype(np.float32)
_ARG_MASK = dnnl.ARG_POST_OP(0) | dnnl.ARG_SRC_1
# Above this many scores the op-by-op path measured as fast or a few % faster (12 heads x 384^2,
# one thread, CPU time: 4.29-4.35 vs 4.37-4.67 ms; x 256^2 and 197^2 within noise; x 128^2
# 530 vs 645 us for this path): the mask post-op gains nothing once the passes are memory-bound.
MAX_SCORES = 1 << 20
_lock = threading.Lock()
_plans: dict[tuple, _Plans] = {}
_scales: dict[float, np.ndarray] = {}


class _Plans:
    """The three primitives of one set of shapes, strides, mask shape and scale presence."""

    __slots__ = ("qk", "softmax", "pv", "scores", "out", "rows")

    def __init__(self, q, k_t, v, mask_shape, has_scale: bool):
        md = dnnl.MemoryDesc.from_array
        b, h, s, _ = q.shape
        t, dv = k_t.shape[3], v.shape[3]
        self.scores, self.out, self.rows = (b, h, s, t), (b, s, h, dv), (b * h * s, t)
        scores = dnnl.MemoryDesc.strided(self.scores, _F32)
        mds = {dnnl.ARG_SRC: md(q), dnnl.ARG_WEIGHTS: md(k_t), dnnl.ARG_DST: scores}
        attr = dnnl.Attr()
        if has_scale:
            dnnl.call("dnnl_primitive_attr_set_scales_mask", attr.handle, dnnl.ARG_SRC, 0)
            mds[dnnl.ARG_SRC_SCALES] = dnnl.MemoryDesc.strided((1,), _F32)
        if mask_shape is not None:
            mds[_ARG_MASK] = dnnl.MemoryDesc.strided(mask_shape, _F32)
            attr.binary(dnnl.BINARY_ADD, mds[_ARG_MASK])
        attr.finish()
        pd = dnnl.PrimitiveDesc(
            "dnnl_matmul_primitive_desc_create", dnnl.engine(), mds[dnnl.ARG_SRC],
            mds[dnnl.ARG_WEIGHTS], None, scores, attr,
        )  # fmt: skip
        self.qk = _Plan(pd, mds)
        rows = dnnl.MemoryDesc.strided(self.rows, _F32)
        pd = dnnl.PrimitiveDesc(
            "dnnl_softmax_forward_primitive_desc_create", dnnl.engine(), dnnl.FORWARD_INFERENCE,
            dnnl.SOFTMAX_ACCURATE, rows, rows, 1, None,
        )  # fmt: skip
        self.softmax = _Plan(pd, {dnnl.ARG_SRC: rows, dnnl.ARG_DST: rows})
        # the result [B, H, S, Dv] laid out as (B, S, H, Dv): the heads come out merged
        out = dnnl.MemoryDesc.strided((b, h, s, dv), _F32, (s * h * dv, dv, h * dv, 1))
        pd = dnnl.PrimitiveDesc(
            "dnnl_matmul_primitive_desc_create", dnnl.engine(), scores, md(v), None, out, None
        )
        self.pv = _Plan(pd, {dnnl.ARG_SRC: scores, dnnl.ARG_WEIGHTS: md(v), dnnl.ARG_DST: out})

    def run(self, q, k_t, v, mask, scale, nan_to_zero: bool) -> np.ndarray:
        scores = np.empty(self.scores, _F32)
        args = [q, k_t, scores]
        if scale is not None:
            args.append(scale)
        if mask is not None:
            args.append(mask)
        self.qk.run(*args)
        self.softmax.run(scores, scores)
        if nan_to_zero and np.isnan(scores.max()):  # rows with every key masked: zeros
            scores[np.isnan(scores)] = 0
        out = np.empty(self.out, _F32)
        self.pv.run(scores, v, out)
        return out.transpose(0, 2, 1, 3)


def operands(q, k_t, v, mask):
    """``(mask shape at rank 4 or None, mask C-contiguous or None)`` when q [B, H, S, D],
    k_t [B, H, D, T] and v [B, H, T, Dv] (rank-4 numpy arrays) agree, none is empty, and the
    mask (if any) is float32 and broadcasts per axis to the scores [B, H, S, T]; None otherwise.
    The checks the float32 and bf16 attention paths share."""
    b, h, s, d = q.shape
    if k_t.shape[:3] != (b, h, d) or v.shape[:2] != (b, h) or v.shape[2] != k_t.shape[3]:
        return None
    if min(q.size, k_t.size, v.size) == 0:
        return None
    if mask is None:
        return None, None
    if type(mask) is not np.ndarray or mask.dtype != _F32 or mask.ndim > 4:
        return None
    shape = (1,) * (4 - mask.ndim) + mask.shape
    if any(m not in (1, n) for m, n in zip(shape, (b, h, s, k_t.shape[3]))):
        return None
    return shape, np.ascontiguousarray(mask)


def scale_array(scale: float):
    """The scale as a read-only float32 [1] array, one per value (the same buffer every call,
    so a plan's scale memory is not re-pointed), or None for 1.0."""
    if scale == 1.0:
        return None
    sc = _scales.get(scale)
    if sc is None:
        sc = np.array([scale], _F32)
        sc.flags.writeable = False
        with _lock:
            if len(_scales) > 256:
                _scales.clear()
            _scales[scale] = sc
    return sc


def _strides_ok(a: np.ndarray) -> bool:
    return all(st >= 0 and st % 4 == 0 for st in a.strides)


def attention(q, k_t, v, mask, scale: float, nan_to_zero: bool = False):
    """``softmax(scale * (q @ k_t) + mask) @ v`` for float32 numpy q [B, H, S, D], k_t
    [B, H, D, T], v [B, H, T, Dv] in any (non-negative) strides and an optional float32 mask
    broadcastable per axis to [B, H, S, T]: a float32 [B, H, S, Dv] view of a fresh (B, S, H, Dv)
    buffer, or None when this path does not take the case (see the module docstring)."""
    if not (
        type(q) is np.ndarray
        and type(k_t) is np.ndarray
        and type(v) is np.ndarray
        and q.dtype == _F32
        and k_t.dtype == _F32
        and v.dtype == _F32
        and q.ndim == k_t.ndim == v.ndim == 4
    ):
        return None
    checked = operands(q, k_t, v, mask)
    if checked is None:
        return None
    mshape, mask = checked
    b, h, s, d = q.shape
    if not worth_it(b * h * s, d, k_t.shape[3]):
        return None  # small products: numpy's call costs less than oneDNN's
    if b * h * s * k_t.shape[3] > MAX_SCORES:
        return None
    if not (_strides_ok(q) and _strides_ok(k_t) and _strides_ok(v)):
        return None
    has_scale = scale != 1.0
    key = (q.shape, q.strides, k_t.shape, k_t.strides, v.shape, v.strides, mshape, has_scale)
    plan = _plans.get(key)
    if plan is None:
        if not dnnl.available():
            return None
        try:
            plan = _Plans(q, k_t, v, mshape, has_scale)
        except dnnl.DnnlError:  # a layout or post-op oneDNN will not take: the caller's path
            return None
        with _lock:
            if len(_plans) > 256:  # sequence lengths vary: stay bounded
                _plans.clear()
            plan = _plans.setdefault(key, plan)
    return plan.run(q, k_t, v, mask, scale_array(scale), bool(nan_to_zero))
