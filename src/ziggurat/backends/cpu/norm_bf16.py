"""Layer normalization writing bfloat16, for ``precision="bf16"`` (passes/bf16_activations.py).

oneDNN's layer normalization reads the float32 rows and computes the mean and variance and the
normalized values in float32 (issue 10's rule: normalization statistics in float32); only the
result is rounded to bfloat16 (round to nearest even), for readers that are bf16 GEMMs (the next
block's Q/K/V projection, or the FFN's first) and the residual add in a bf16 GEMM's epilogue.
That saves each of those GEMMs a float32 -> bf16 conversion of its input, and halves the
normalization's writes.

``layer_norm`` returns None where oneDNN does not take the case; the caller then normalizes in
float32 and rounds.
"""

from __future__ import annotations

import threading

import numpy as np

from . import dnnl
from .gemm import _bf16_dtype, _Plan

_F32 = np.dtype(np.float32)
_USE_SCALE, _USE_SHIFT = 0x2, 0x4  # dnnl_normalization_flags_t
_ARG_SCALE, _ARG_SHIFT = 51, 52  # DNNL_ARG_SCALE, DNNL_ARG_SHIFT
_lock = threading.Lock()
_plans: dict[tuple, _Plan] = {}


def _build(shape, eps: float, shift: bool) -> _Plan:
    src = dnnl.MemoryDesc.strided(shape, _F32)
    dst = dnnl.MemoryDesc.strided(shape, _bf16_dtype())
    vec = dnnl.MemoryDesc.strided((shape[1],), _F32)
    pd = dnnl.PrimitiveDesc(
        "dnnl_layer_normalization_forward_primitive_desc_create", dnnl.engine(),
        dnnl.FORWARD_INFERENCE, src, dst, None, float(eps),
        _USE_SCALE | (_USE_SHIFT if shift else 0), None,
    )  # fmt: skip
    mds = {dnnl.ARG_SRC: src, dnnl.ARG_DST: dst, _ARG_SCALE: vec}
    if shift:
        mds[_ARG_SHIFT] = vec
    return _Plan(pd, mds)


def layer_norm(x: np.ndarray, scale: np.ndarray, shift, eps: float) -> np.ndarray | None:
    """LayerNorm over the last axis of a float32 ``x`` with float32 per-column ``scale`` (and
    ``shift``, or None), as a fresh bfloat16 array of x's shape; None where oneDNN can't."""
    if type(x) is not np.ndarray or x.dtype != _F32 or x.ndim < 1 or x.size == 0:
        return None
    cols = x.shape[-1]
    vecs = [scale] + ([] if shift is None else [shift])
    if any(type(v) is not np.ndarray or v.dtype != _F32 or v.size != cols for v in vecs):
        return None
    if not dnnl.available():
        return None
    x2 = np.ascontiguousarray(x).reshape(-1, cols)
    key = (x2.shape, float(eps), shift is not None)
    plan = _plans.get(key)
    if plan is None:
        try:
            plan = _build(x2.shape, eps, shift is not None)
        except dnnl.DnnlError:
            return None
        with _lock:
            if len(_plans) > 256:  # row counts vary with batch and sequence: stay bounded
                _plans.clear()
            plan = _plans.setdefault(key, plan)
    y = np.empty(x.shape, _bf16_dtype())
    plan.run(x2, y, *(np.ascontiguousarray(v).reshape(-1) for v in vecs))
    return y
