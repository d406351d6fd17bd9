"""4-bit (and 2-bit) ``MatMulNBits`` weights held as signed int8 codes, dequantized per slab by
oneDNN (CPU only).

onnxruntime's ``MatMulNBits`` stores W (N, K) as unsigned codes packed two (four) to a byte, one
float scale and one zero point per block of ``block_size`` along K; W = (q - zp) * scale. The
kernel (``ops/contrib_quant.py``) multiplies in float32 with the weight dequantized a slab of
output columns at a time. Unpacking the nibbles, subtracting the zero points and scaling took
about as long as the product itself, every call (numpy: five passes with uint8/int8 temporaries).

Here, once, at session creation (``passes/pack_nbits.py``), the codes are unpacked and centred:
``q - zp`` is in [-15, 15] for 4 bits, exact in int8, one byte a weight (the packed file holds
half a byte: BERT-base's 85 M weights take 42 MB more, still far under the fp32 weights' 340 MB).
Per call, each slab is dequantized by one oneDNN reorder, int8 -> float32 with one scale per
(row, block) (scales mask over the first two dims of the (rows, blocks, block) view): the same
products ``(q - zp) * scale`` in float32 as the unpacking path, so the same weights bit for bit,
in one multi-threaded pass (measured, 1365 x 768 slab, 2 threads: 0.5 ms vs 1.4 ms).
"""

from __future__ import annotations

import threading

import numpy as np

from . import dnnl
from .gemm import _Plan

_F32 = np.dtype(np.float32)
_S8 = np.dtype(np.int8)
_ARG_ATTR_SCALES = 4096
_lock = threading.Lock()


class NBitsCodes(np.ndarray):
    """int8 (N, blocks, block) centred codes ``q - zp`` of a MatMulNBits weight, with ``scales``
    (N * blocks float32, C-contiguous), ``bf16`` (multiply in bfloat16 on AMX: sessions with
    ``precision="bf16"``) and the primitives of its slabs."""

    scales: np.ndarray
    bf16: bool
    _plans: dict


def pack(b: np.ndarray, scales: np.ndarray, zero_points, bits: int, n: int, block: int):
    """NBitsCodes for MatMulNBits' B (N, blocks, blob) uint8 with ``bits`` in (2, 4), whole blocks
    (K == blocks * block, no g_idx: the caller checks), float scales (N * blocks) and uint8
    packed zero points (or None: 2^(bits-1)); None where oneDNN is absent or the types differ."""
    if bits not in (2, 4) or b.dtype != np.uint8 or not dnnl.available():
        return None
    if zero_points is not None and zero_points.dtype != np.uint8:
        return None  # float zero points: q - zp is no integer
    n_blocks = b.shape[1]
    if scales.size != n * n_blocks or scales.dtype.kind != "f":
        return None
    per, mask = 8 // bits, (1 << bits) - 1
    out = np.empty((n, n_blocks, block), _S8)
    step = max(1, (1 << 22) // max(1, n_blocks * block))  # 4 MiB of codes at a time
    for r0 in range(0, n, step):
        rows = slice(r0, min(n, r0 + step))
        packed = b[rows]
        codes = np.empty(packed.shape + (per,), np.uint8)
        for i in range(per):  # lowest bits first
            np.bitwise_and(packed >> (bits * i) if i else packed, mask, out=codes[..., i])
        codes = codes.reshape(packed.shape[0], n_blocks, -1)[:, :, :block]
        if zero_points is None:
            zp = np.uint8(1 << (bits - 1))
        else:
            zrow = zero_points.reshape(n, -1)[rows]
            zp = np.stack([(zrow >> (bits * i)) & mask for i in range(per)], axis=-1)
            zp = zp.reshape(zrow.shape[0], -1)[:, :n_blocks, None]
        # q - zp in [-(2^bits - 1), 2^bits - 1]: the uint8 difference wraps to the int8 bytes
        np.subtract(codes, zp, out=out[rows].view(np.uint8), casting="unsafe")
    res = out.view(NBitsCodes)
    res.scales = np.ascontiguousarray(scales, _F32).reshape(-1)
    res.bf16 = False
    res._plans = {}
    res.flags.writeable = False
    return res


def _reorder(codes: NBitsCodes, rows: int, dt=_F32) -> _Plan:
    plan = codes._plans.get((rows, dt))
    if plan is None:
        shape = (rows,) + codes.shape[1:]
        src = dnnl.MemoryDesc.strided(shape, _S8)
        dst = dnnl.MemoryDesc.strided(shape, dt)
        attr = dnnl.Attr()
        dnnl.call("dnnl_primitive_attr_set_scales_mask", attr.handle, dnnl.ARG_SRC, 0b011)
        attr.finish()
        pd = dnnl.PrimitiveDesc(
            "dnnl_reorder_primitive_desc_create", src, dnnl.engine(), dst, dnnl.engine(), attr
        )
        sc = dnnl.MemoryDesc.strided((rows * shape[1],), _F32)
        plan = _Plan(
            pd, {dnnl.ARG_FROM: src, dnnl.ARG_TO: dst, _ARG_ATTR_SCALES | dnnl.ARG_SRC: sc}
        )
        with _lock:
            plan = codes._plans.setdefault((rows, dt), plan)
    return plan


def dequantize(codes: NBitsCodes, r0: int, r1: int, out: np.ndarray) -> np.ndarray:
    """Rows r0:r1 of the weight as float32 into ``out`` (r1 - r0, blocks, block), C-contiguous."""
    nb = codes.shape[1]
    src = np.asarray(codes[r0:r1])  # a plain view: contiguous rows
    _reorder(codes, r1 - r0, out.dtype).run(src, out, codes.scales[r0 * nb : r1 * nb])
    return out


def matmul_slab(a, codes: NBitsCodes, r0: int, r1: int, out, buf, bias=None, activation="") -> None:
    """``out = activation(a @ W[r0:r1].T + bias[r0:r1])`` for ``a`` (M, K) float32 or bfloat16
    and float32 ``out`` (M, r1 - r0), both C-contiguous: the slab dequantized into ``buf`` (of
    a's dtype, (r1 - r0) * K elements: for bfloat16 one rounding of (q - zp) * scale), then one
    oneDNN matmul with the bias and the activation ('', 'relu', erf 'gelu') as its epilogue
    (bfloat16: AMX, float32 accumulation). A dense ``out`` matters: with a strided one (columns
    of a wider matrix) oneDNN falls back from AMX to its slower bf16 GEMM. Measured, 128 x 768 by
    a 1365-row slab, 2 threads, busy machine: bf16 0.6 ms dequantization + 0.5 ms product,
    float32 0.5 + 1.5 ms."""
    m, k = a.shape
    rows = r1 - r0
    w = dequantize(codes, r0, r1, buf[: rows * k].reshape((rows,) + codes.shape[1:]))
    key = ("gemm", a.dtype, m, rows, bias is not None, activation)
    plan = codes._plans.get(key)
    if plan is None:
        from .gemm import _ACTIVATIONS

        src = dnnl.MemoryDesc.strided((m, k), a.dtype)
        wmd = dnnl.MemoryDesc.strided((k, rows), a.dtype, (1, k))  # W[r0:r1].T, read in place
        dst = dnnl.MemoryDesc.strided((m, rows), _F32)
        bmd = dnnl.MemoryDesc.strided((1, rows), _F32) if bias is not None else None
        attr = dnnl.Attr()
        if activation:
            attr.eltwise(_ACTIVATIONS[activation])
        pd = dnnl.PrimitiveDesc(
            "dnnl_matmul_primitive_desc_create", dnnl.engine(), src, wmd, bmd, dst, attr.finish()
        )
        mds = {dnnl.ARG_SRC: src, dnnl.ARG_WEIGHTS: wmd, dnnl.ARG_DST: dst}
        if bmd is not None:
            mds[dnnl.ARG_BIAS] = bmd
        plan = _Plan(pd, mds)
        with _lock:
            plan = codes._plans.setdefault(key, plan)
    if bias is None:
        plan.run(a, w, out)
    else:
        plan.run(a, w, out, bias[r0:r1])
