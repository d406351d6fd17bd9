"""Layer normalization and softmax over float32 rows through oneDNN's primitives.

Why: numpy needs five to eight passes over memory for these (statistics, centring, scaling;
max, subtract, exp, sum, divide), each a separate call; oneDNN's vectorized primitives make one
or two, on both cores. Measured (quiet 2-core AMX Xeon, medians, numpy path / oneDNN):
LayerNorm 128 x 128 (bert-tiny) 28 / 18.5 us, 128 x 768 (BERT-base) 113 / 55 us; softmax
256 x 128 (bert-tiny's scores) 31 / 21 us, 1536 x 128 (BERT-base's) 135 / 92 us. In bert-tiny
(LayerNorm 128 x 128 between two-thread GEMMs) the whole run went 1.34-1.39 -> 1.20-1.28 ms.
Running the small ones on one OpenMP thread was tried and lost (1.36 ms): changing the team
size between primitives costs more than the fork it saves. Below ``MIN_ELEMENTS`` the call and
the OpenMP fork cost more than they save (the tiny MLP's 1 x 10 softmax stays on numpy).

Numerics: oneDNN computes the mean and variance (two-pass) and the softmax (row maximum
subtracted) in float32 with its own summation order, so results differ from the numpy path by
float32 rounding (measured max 2e-6 on unit-scale LayerNorm outputs, 3e-8 on probabilities). A
row that is all -inf gives NaN, as in onnxruntime and the numpy path.

Each entry point returns False when oneDNN is absent or the case is not one it takes; the caller
then computes with numpy.
"""

from __future__ import annotations

import threading

import numpy as np

from . import dnnl
from .gemm import _Plan

MIN_ELEMENTS = 1 << 13
_F32 = np.dtype(np.float32)
_USE_SCALE, _USE_SHIFT = 0x2, 0x4  # dnnl_normalization_flags_t
_ARG_SCALE, _ARG_SHIFT = 51, 52  # DNNL_ARG_SCALE, DNNL_ARG_SHIFT
_lock = threading.Lock()
_plans: dict[tuple, object] = {}


def _usable(x: np.ndarray, out: np.ndarray) -> bool:
    return (
        x.dtype == _F32
        and out.dtype == _F32
        and x.ndim == 2
        and x.size >= MIN_ELEMENTS
        and x.flags.c_contiguous
        and out.flags.c_contiguous
        and out.shape == x.shape
        and dnnl.available()
    )


def _plan(key: tuple, build):
    plan = _plans.get(key)
    if plan is None:
        with _lock:
            if len(_plans) > 256:  # row counts vary with the batch and sequence: stay bounded
                _plans.clear()
            plan = _plans.setdefault(key, build())
    return plan


def layer_norm(x: np.ndarray, scale: np.ndarray, shift, eps: float, out: np.ndarray) -> bool:
    """``out`` <- LayerNorm of each row of the 2-D ``x`` with per-column ``scale`` (and
    ``shift``, or None); ``out`` may be ``x``. False (nothing written) where oneDNN can't."""
    cols = x.shape[-1]
    if not _usable(x, out):
        return False
    if scale.size != cols or scale.dtype != _F32:
        return False
    if shift is not None and (shift.size != cols or shift.dtype != _F32):
        return False

    def build():
        md = dnnl.MemoryDesc.strided(x.shape, _F32)
        vec = dnnl.MemoryDesc.strided((cols,), _F32)
        flags = _USE_SCALE | (_USE_SHIFT if shift is not None else 0)
        pd = dnnl.PrimitiveDesc(
            "dnnl_layer_normalization_forward_primitive_desc_create", dnnl.engine(),
            dnnl.FORWARD_INFERENCE, md, md, None, float(eps), flags, None,
        )  # fmt: skip
        mds = {dnnl.ARG_SRC: md, dnnl.ARG_DST: md, _ARG_SCALE: vec}
        if shift is not None:
            mds[_ARG_SHIFT] = vec
        return _Plan(pd, mds)

    plan = _plan(("ln", x.shape, float(eps), shift is not None), build)
    arrays = [x, out, np.ascontiguousarray(scale).reshape(-1)]
    if shift is not None:
        arrays.append(np.ascontiguousarray(shift).reshape(-1))
    plan.run(*arrays)
    return True


def softmax(x: np.ndarray, out: np.ndarray) -> bool:
    """``out`` <- softmax of each row of the 2-D ``x``; ``out`` may be ``x``. False (nothing
    written) where oneDNN can't."""
    if not _usable(x, out):
        return False

    def build():
        md = dnnl.MemoryDesc.strided(x.shape, _F32)
        pd = dnnl.PrimitiveDesc(
            "dnnl_softmax_forward_primitive_desc_create", dnnl.engine(),
            dnnl.FORWARD_INFERENCE, dnnl.SOFTMAX_ACCURATE, md, md, 1, None,
        )  # fmt: skip
        return _Plan(pd, {dnnl.ARG_SRC: md, dnnl.ARG_DST: md})

    _plan(("softmax", x.shape), build).run(x, out)
    return True
