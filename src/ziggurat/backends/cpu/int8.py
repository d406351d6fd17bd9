"""Integer GEMMs through oneDNN: uint8 activations x int8 weights, int32 accumulation.

What runs them. The quantized kernels (``ops/quant.py``, ``ops/contrib_quant.py``) compute
``(a_scale * w_scale) * ((A - a_zp) @ W) + bias`` with A uint8 (dynamically quantized
activations, onnxruntime's ``DynamicQuantizeLinear``) and W int8 (symmetric weights). Two oneDNN
entry points can do the integer product; measured with ``benchmarks/gemm.py`` (``u8s8-*``
variants) on the 2-core Xeon with AMX this was written on, 2 threads, median of 60 at a moderately
busy moment (medians in ms; the float32 packed and bf16 rows of the same run for scale):

  GEMM (M x K x N)       gemm_u8s8s32 +    matmul u8s8->f32   matmul u8s8->f32   fp32     bf16
                         numpy epilogue    plain weights      packed weights     packed   packed
  128x768x768            0.28              0.107              0.094              0.51     0.18
  128x768x3072 + GELU    2.51              0.56               0.44               1.60     0.48
  128x3072x768           0.47              0.49               0.17               1.57     0.44

- ``dnnl_gemm_u8s8s32`` writes int32 only: the dequantizing epilogue (cast, scale, bias) is three
  more numpy passes over the output, and it runs VNNI code, not AMX tiles.
- The matmul primitive with ``u8`` source, ``s8`` weights and a float32 destination applies the
  source zero point (exact, in int32), both scales, the bias and an erf-GELU as part of the
  product, on AMX where present, and is the one used. Weights are reordered once, at session
  creation, into oneDNN's blocked layout (``PackedInt8``, ``passes/pack_int8.py``): still one
  byte each, and the 3072x768 product runs 2.9x faster than on the plain matrix.

Integer accumulation is exact (no 16-bit intermediate saturation) only on CPUs with VNNI or AMX
(``vpdpbusd``); without them oneDNN's int8 kernels may saturate pairs of products, so
``native()`` is False there and callers take their exact numpy path (float64 BLAS), as they do
with ``ZIGGURAT_DNNL=0``.
"""

from __future__ import annotations

import threading

import numpy as np

from . import dnnl
from .gemm import _ACTIVATIONS, BlockedArray, _Plan

# dnnl_cpu_isa_t masks of the ISAs whose int8 dot products accumulate in int32 directly.
ISA_AVX2_VNNI = 0xF
ISA_AVX512_CORE_VNNI = 0x67
# DNNL_ARG_ATTR_SCALES / DNNL_ARG_ATTR_ZERO_POINTS, OR-ed with the argument they apply to.
_ARG_ATTR_SCALES = 4096
_ARG_ATTR_ZERO_POINTS = 8192
_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)
_S8 = np.dtype(np.int8)
_S32 = np.dtype(np.int32)
_lock = threading.Lock()


def native() -> bool:
    """Whether int8 GEMMs run natively and exactly here: oneDNN loaded on a CPU with VNNI/AMX."""
    if not dnnl.available():
        return False
    return dnnl.has_isa(ISA_AVX512_CORE_VNNI) or dnnl.has_isa(ISA_AVX2_VNNI)


class PackedInt8(BlockedArray):
    """A constant (K, N) int8 weight matrix in the blocked layout oneDNN's int8 matmul prefers
    (see ``gemm.BlockedArray``); only this module reads ``_buf``, ``unpacked()`` gives the plain
    matrix back (for fallbacks and tests)."""

    def unpacked(self) -> np.ndarray:
        """The weights as a plain C-contiguous (K, N) int8 array."""
        out = np.empty(self.shape, _S8)
        plain = dnnl.MemoryDesc.strided(self.shape, _S8)
        pd = dnnl.PrimitiveDesc(
            "dnnl_reorder_primitive_desc_create", self.md, dnnl.engine(), plain, dnnl.engine(), None
        )
        dnnl.Primitive(pd).execute(
            {dnnl.ARG_FROM: dnnl.Memory(self.md, self._buf), dnnl.ARG_TO: dnnl.Memory(plain, out)}
        )
        return out


def plain(w: np.ndarray) -> np.ndarray:
    """``w`` as a plain array (unpacks a PackedInt8; anything else as is)."""
    return w.unpacked() if isinstance(w, PackedInt8) else w


def pack(w: np.ndarray, m_hint: int = 128) -> PackedInt8:
    """Copy a (K, N) int8 matrix into oneDNN's preferred layout for u8 x s8 matmuls (the layout
    depends on K, N and the types only, not on M)."""
    k, n = w.shape
    src = np.ascontiguousarray(w, dtype=_S8)
    pd = _matmul_pd(m_hint, dnnl.MemoryDesc.any((k, n), _S8), n, 1, False, "")
    md = pd.query_md(dnnl.QUERY_WEIGHTS_MD, (k, n))
    buf = dnnl.reorder(src, dnnl.MemoryDesc.from_array(src), md)
    out = buf[: k * n].view(_S8).reshape(k, n).view(PackedInt8)
    out.md, out._buf, out._plans = md, buf, {}
    out.flags.writeable = False
    return out


def _matmul_pd(m: int, wmd: dnnl.MemoryDesc, n: int, n_scales: int, bias: bool, activation: str):
    k = wmd.shape[0]
    attr = dnnl.Attr()
    dnnl.call("dnnl_primitive_attr_set_scales_mask", attr.handle, dnnl.ARG_SRC, 0)
    wmask = 0 if n_scales == 1 else 1 << 1  # per output column: dimension 1 of the (K, N) weight
    dnnl.call("dnnl_primitive_attr_set_scales_mask", attr.handle, dnnl.ARG_WEIGHTS, wmask)
    dnnl.call("dnnl_primitive_attr_set_zero_points_mask", attr.handle, dnnl.ARG_SRC, 0)
    if activation:
        attr.eltwise(_ACTIVATIONS[activation])
    attr.finish()
    return dnnl.PrimitiveDesc(
        "dnnl_matmul_primitive_desc_create",
        dnnl.engine(),
        dnnl.MemoryDesc.strided((m, k), _U8),
        wmd,
        dnnl.MemoryDesc.strided((1, n), _F32) if bias else None,
        dnnl.MemoryDesc.strided((m, n), _F32),
        attr,
    )


_plain_plans: dict[tuple, _Plan] = {}


def _plan(w: np.ndarray, m: int, n_scales: int, bias: bool, activation: str) -> _Plan:
    packed = isinstance(w, PackedInt8)
    if packed:
        key, table = (m, n_scales, bias, activation), w._plans
    else:
        key, table = (w.shape, w.strides, m, n_scales, bias, activation), _plain_plans
    plan = table.get(key)
    if plan is None:
        k, n = w.shape
        wmd = w.md if packed else dnnl.MemoryDesc.from_array(w)
        pd = _matmul_pd(m, wmd, n, n_scales, bias, activation)
        mds = {
            dnnl.ARG_SRC: dnnl.MemoryDesc.strided((m, k), _U8),
            dnnl.ARG_WEIGHTS: wmd,
            dnnl.ARG_DST: dnnl.MemoryDesc.strided((m, n), _F32),
            _ARG_ATTR_SCALES | dnnl.ARG_SRC: dnnl.MemoryDesc.strided((1,), _F32),
            _ARG_ATTR_SCALES | dnnl.ARG_WEIGHTS: dnnl.MemoryDesc.strided((n_scales,), _F32),
            _ARG_ATTR_ZERO_POINTS | dnnl.ARG_SRC: dnnl.MemoryDesc.strided((1,), _S32),
        }
        if bias:
            mds[dnnl.ARG_BIAS] = dnnl.MemoryDesc.strided((1, n), _F32)
        plan = _Plan(pd, mds)
        with _lock:
            # bounded however many shapes a model sees (a server's sequence lengths vary)
            if len(table) > (64 if packed else 512):
                table.clear()
            plan = table.setdefault(key, plan)
    return plan


def matmul_u8s8(qa, a_zp, a_scale, w, w_scale, bias=None, activation: str = ""):
    """``activation((a_scale * w_scale) * ((qa - a_zp) @ w) + bias)`` in float32 on oneDNN.

    ``qa``: uint8 (..., K); ``a_zp``: its uint8 zero point (one value); ``a_scale``: one float;
    ``w``: int8 (K, N), plain (any strides) or ``PackedInt8``, zero point 0; ``w_scale``: one
    float or N (per output column); ``bias``: None or N floats; ``activation``: '', 'relu' or
    'gelu' (erf). Returns a fresh float32 (..., N) array, or None when this cannot run here
    (the caller then computes it exactly with numpy)."""
    if qa.dtype != _U8 or w.dtype != _S8 or w.ndim != 2 or qa.ndim < 1 or not native():
        return None
    if not isinstance(w, PackedInt8) and min(w.strides) < 0:
        return None
    k, n = w.shape
    if qa.shape[-1] != k or np.size(a_zp) != 1 or np.size(a_scale) != 1:
        return None
    ws = np.ascontiguousarray(w_scale, _F32).reshape(-1)
    if ws.size not in (1, n):
        return None
    a2 = np.ascontiguousarray(qa).reshape(-1, k)
    m = a2.shape[0]
    plan = _plan(w, m, ws.size, bias is not None, activation)
    y = np.empty((m, n), _F32)
    arrays = [
        a2,
        w._buf if isinstance(w, PackedInt8) else w,
        y,
        np.asarray(a_scale, _F32).reshape(1),
        ws,
        np.asarray(a_zp, _S32).reshape(1),
    ]
    if bias is not None:
        arrays.append(np.ascontiguousarray(bias, _F32).reshape(-1))
    plan.run(*arrays)
    return y.reshape(*qa.shape[:-1], n)


def gemm_u8s8s32(qa: np.ndarray, a_zp: int, w: np.ndarray) -> np.ndarray | None:
    """``(qa - a_zp) @ w`` as int32 through ``dnnl_gemm_u8s8s32`` (row-major, VNNI), for 2-D
    C-contiguous uint8 ``qa`` (M, K) and int8 ``w`` (K, N); None when it cannot run here.

    Kept beside ``matmul_u8s8`` for ``benchmarks/gemm.py``'s comparison (see the module doc): it
    returns the exact int32 accumulator, but the dequantizing epilogue is then numpy's."""
    if qa.dtype != _U8 or w.dtype != _S8 or qa.ndim != 2 or w.ndim != 2 or not native():
        return None
    qa = np.ascontiguousarray(qa)
    w = np.ascontiguousarray(w)
    m, k = qa.shape
    n = w.shape[1]
    c = np.empty((m, n), _S32)
    co = np.zeros(1, _S32)
    dnnl._apply_threads()
    dnnl.call(
        "dnnl_gemm_u8s8s32", b"N", b"N", b"F", m, n, k, 1.0, qa.ctypes.data, k, int(a_zp),
        w.ctypes.data, n, 0, 0.0, c.ctypes.data, n, co.ctypes.data,
    )  # fmt: skip
    return c


_ELTWISE_ROUND = 0x32  # dnnl_eltwise_round (v3): round half to even (the default MXCSR mode)
_BINARY_DIV = 0x1FFF4  # dnnl_binary_div
_q_plans: dict[int, _Plan] = {}


def quantize_pd(n: int):
    """(primitive descriptor, argument -> memory descriptor) of the quantizing pass over ``n``
    float32 values: binary division by a one-element scale, then round half to even and the
    addition of a one-element zero point as post-ops, saturated into uint8 by the store."""
    src = dnnl.MemoryDesc.strided((n,), _F32)
    one = dnnl.MemoryDesc.strided((1,), _F32)
    dst = dnnl.MemoryDesc.strided((n,), _U8)
    attr = dnnl.Attr().eltwise(_ELTWISE_ROUND).binary(dnnl.BINARY_ADD, one).finish()
    pd = dnnl.PrimitiveDesc(
        "dnnl_binary_primitive_desc_create", dnnl.engine(), _BINARY_DIV, src, one, dst, attr
    )
    mds = {
        dnnl.ARG_SRC: src,
        dnnl.ARG_SRC_1: one,
        dnnl.ARG_DST: dst,
        dnnl.ARG_POST_OP(1) | dnnl.ARG_SRC_1: one,
    }
    return pd, mds


def quantize_u8(x: np.ndarray, scale, zp) -> np.ndarray | None:
    """``saturate_uint8(round_half_even(x / scale) + zp)`` for a C-contiguous float32 ``x``: the
    quantizing step of DynamicQuantizeLinear, as onnxruntime's MLAS computes it (a true division,
    not a multiplication by 1/scale, so ties round the same way), in one pass of oneDNN's binary
    primitive (division, then round and add as post-ops, then the saturating conversion) instead
    of numpy's five. Exact: the zero point is added to an already rounded value. None when oneDNN
    is absent (the caller uses numpy).

    Measured (2 cores, AMX Xeon, median of 200): 128x768: 29 us vs numpy's 74 us; 128x3072:
    87 vs 332 us."""
    if x.dtype != _F32 or not x.flags.c_contiguous or not dnnl.available():
        return None
    n = x.size
    plan = _q_plans.get(n)
    if plan is None:
        plan = _Plan(*quantize_pd(n))
        with _lock:
            if len(_q_plans) > 512:
                _q_plans.clear()
            plan = _q_plans.setdefault(n, plan)
    out = np.empty(x.shape, _U8)
    plan.run(x, np.array([scale], _F32), out, np.array([zp], _F32))
    return out
