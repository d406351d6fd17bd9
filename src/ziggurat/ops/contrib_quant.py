"""``com.microsoft`` quantized ops (onnxruntime's ContribOperators.md) written by its quantization
tools: MatMulNBits (``MatMulNBitsQuantizer``), DynamicQuantizeMatMul and MatMulIntegerToFloat
(``quantize_dynamic``), QGemm and the QLinear* elementwise / pooling / concat / softmax ops
(``quantize_static``), and the contrib forms of QuantizeLinear / DequantizeLinear.

Integer products go through ``quant.int8_matmul_to_float`` (oneDNN's int8 matmul where the CPU has
VNNI/AMX, else ``matmul.MatMulInteger`` in float64; both exact), (de)quantization through
``quant.py``.
The QLinear* ops compute in float32 between a dequantize and a requantize with round-half-even;
onnxruntime uses lookup tables and fixed-point arithmetic for some, so results may differ from its
by one quantization step at rounding ties.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .activation import LeakyRelu, Sigmoid, Softmax
from .matmul import MatMul, MatMulInteger
from .pool import AveragePool, GlobalAveragePool
from .quant import DequantizeLinear as _dq
from .quant import DynamicQuantizeLinear, int8_matmul_to_float
from .quant import QuantizeLinear as _q
from .registry import kernel

MS = "com.microsoft"
_DEQUANT_CHUNK = 1 << 20  # float32 elements of dequantized weight alive at once (4 MiB)


def _unpack_bits(packed, bits: int, count: int):
    """uint8 bytes (rows, n_bytes) -> (rows, count) unsigned values, lowest bits first."""
    if bits == 8:
        return packed[:, :count]
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * i)) & mask for i in range(per)]
    return np.stack(parts, axis=-1).reshape(packed.shape[0], -1)[:, :count]


def _nbits_blocks(b, scales, zero_points, rows: slice, bits: int, out):
    """Dequantized rows ``rows`` of MatMulNBits' weight into ``out`` (rows, blocks, block) float32,
    for whole blocks without g_idx: each code unpacked once into a uint8 buffer, then one
    multiply by the block's scale and one subtraction of zp * scale, broadcast over the block
    (no per-element gathers of scales or zero points): about 4x the generic path's speed."""
    n_blocks = b.shape[1]
    packed = b[rows]  # (r, blocks, blob)
    per = 8 // bits
    mask = (1 << bits) - 1
    codes = np.empty(packed.shape + (per,), np.uint8)
    for i in range(per):  # lowest bits first
        np.bitwise_and(packed >> (bits * i) if i else packed, mask, out=codes[..., i])
    codes = codes.reshape(out.shape)
    sc = scales.reshape(-1, n_blocks)[rows].astype(np.float32)
    if zero_points is not None and zero_points.dtype != np.uint8:  # float zero points
        zp = zero_points.reshape(-1, n_blocks)[rows].astype(np.float32)
        np.multiply(codes, sc[:, :, None], out=out)
        out -= (zp * sc)[:, :, None]
        return out
    if zero_points is None:
        zp = np.uint8(1 << (bits - 1))
    else:
        zrow = zero_points.reshape(scales.reshape(-1, n_blocks).shape[0], -1)[rows]
        zp = _unpack_bits(zrow, bits, n_blocks)[:, :, None]
    if bits <= 4:
        # code - zero point in [-15, 15]: exact as int8 (uint8 arithmetic wraps to the same
        # bytes), so the float pass is one multiply, (q - zp) * scale as onnxruntime's formula
        np.subtract(codes, zp, out=codes)
        np.multiply(codes.view(np.int8), sc[:, :, None], out=out)
        return out
    np.multiply(codes, sc[:, :, None], out=out)
    out -= (zp.astype(np.float32) * sc[:, :, None]) if np.ndim(zp) else zp * sc[:, :, None]
    return out


def _nbits_weight(b, scales, zero_points, g_idx, rows: slice, K: int, bits: int, block: int):
    """Dequantized float32 rows ``rows`` of the (N, K) weight of MatMulNBits."""
    n_blocks = b.shape[1]
    q = _unpack_bits(b[rows].reshape(-1, b.shape[1] * b.shape[2]), bits, n_blocks * block)
    q = q[:, :K].astype(np.float32)
    sc = scales.reshape(-1, n_blocks)[rows].astype(np.float32)
    group = np.asarray(g_idx).astype(np.int64) if g_idx is not None else np.arange(K) // block
    if zero_points is None:
        zp = np.float32(1 << (bits - 1))
    elif zero_points.dtype == np.uint8:  # packed like the weights, each row padded to a byte
        zrow = zero_points.reshape(scales.reshape(-1, n_blocks).shape[0], -1)[rows]
        zp = _unpack_bits(zrow, bits, n_blocks).astype(np.float32)[:, group]
    else:  # float zero points, one per block
        zp = zero_points.reshape(-1, n_blocks)[rows].astype(np.float32)[:, group]
    return (q - zp) * sc[:, group]


@kernel("MatMulNBits", domain=MS, since=1)
def MatMulNBits(
    a, b, scales, zero_points=None, g_idx=None, bias=None, /, *, K, N, bits=4, block_size,
    accuracy_level=0,
):  # fmt: skip
    """A (..., K) @ W^T for W (N, K) stored as ``bits``-bit blocks along K: B (N, K/block, blob)
    uint8 packed lowest bits first, one scale (and zero point, default 2^(bits-1)) per block.

    The weight stays packed; it is dequantized a few output columns at a time (4 MiB of float32
    at most), each slab multiplied by BLAS.
    """
    if b.dtype == np.int8 and a.shape[-1] == K:  # codes unpacked at load (passes/pack_nbits.py)
        y = _matmul_codes(a, b, bias, K, N)
        if y is not None:
            return (y,)
    if bits not in (2, 4, 8) or b.dtype != np.uint8 or b.shape[0] != N:
        raise ExecutionError(
            f"MatMulNBits: expected uint8 B of shape ({N}, blocks, blob) and bits in 2/4/8, got "
            f"B {b.dtype}{tuple(b.shape)}, bits={bits}"
        )
    if a.shape[-1] != K:
        raise ExecutionError(f"MatMulNBits: A's last dim is {a.shape[-1]}, expected K={K}")
    xp = xp_of(a)
    dt = a.dtype
    a2 = a.reshape(-1, K).astype(np.float32, copy=False)
    y = xp.empty((a2.shape[0], N), dtype=np.float32)
    step = max(1, _DEQUANT_CHUNK // max(K, 1))
    n_blocks = b.shape[1]
    blocked = g_idx is None and K == n_blocks * block_size and xp is np
    buf = np.empty((min(step, N), n_blocks, block_size), np.float32) if blocked else None
    for n0 in range(0, N, step):
        rows = slice(n0, min(N, n0 + step))
        if blocked:
            w = _nbits_blocks(b, scales, zero_points, rows, bits, buf[: rows.stop - n0])
            w = w.reshape(-1, K)
        else:
            w = _nbits_weight(b, scales, zero_points, g_idx, rows, K, bits, block_size)
        (y[:, rows],) = MatMul(a2, xp.asarray(w).T)
    if bias is not None:
        y += bias.astype(np.float32)
    return (y.reshape(a.shape[:-1] + (N,)).astype(dt, copy=False),)


def _matmul_codes(a, b, bias, K: int, N: int):
    """MatMulNBits on ``backends.cpu.nbits.NBitsCodes`` (centred int8 codes + scales): each slab
    dequantized by one oneDNN reorder into the same float32 weights as ``_nbits_blocks`` gives,
    then the same float32 product (in bfloat16 on AMX for ``precision="bf16"`` sessions: ``b.bf16``,
    set by passes/pack_nbits.py); None for any other int8 array."""
    from ..backends.cpu import nbits

    if not isinstance(b, nbits.NBitsCodes) or b.shape[0] != N:
        return None
    a2 = a.reshape(-1, K).astype(np.float32, copy=False)
    step = max(1, _DEQUANT_CHUNK // max(K, 1))
    if b.bf16:
        y = _codes_dense(a2, b, None, "", K, N)
    else:
        y = np.empty((a2.shape[0], N), dtype=np.float32)
        buf = np.empty((min(step, N),) + b.shape[1:], np.float32)
        for n0 in range(0, N, step):
            n1 = min(N, n0 + step)
            w = nbits.dequantize(b, n0, n1, buf[: n1 - n0]).reshape(-1, K)
            (y[:, n0:n1],) = MatMul(a2, w.T)
    if bias is not None:
        y += bias.astype(np.float32)
    return y.reshape(a.shape[:-1] + (N,)).astype(a.dtype, copy=False)


def _codes_dense(a2, b, bias, activation: str, K: int, N: int):
    """``activation(a2 @ W.T + bias)`` (float32 (M, N)) on NBitsCodes, slab by slab through
    ``nbits.matmul_slab`` (bfloat16 products where ``b.bf16``)."""
    from ..backends.cpu import gemm, nbits

    if b.bf16:
        a2 = gemm.to_bf16(np.ascontiguousarray(a2))
        step = max(1, 2 * _DEQUANT_CHUNK // max(K, 1))  # the float32 slabs' bytes
    else:
        a2 = np.ascontiguousarray(a2)
        step = max(1, _DEQUANT_CHUNK // max(K, 1))
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
    y = np.empty((a2.shape[0], N), np.float32)
    if step >= N:  # one slab: the product lands in y itself
        nbits.matmul_slab(a2, b, 0, N, y, np.empty(N * K, a2.dtype), bias, activation)
        return y
    buf = np.empty(step * K, a2.dtype)
    part = np.empty((a2.shape[0], step), np.float32)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        dense = part if n1 - n0 == step else np.empty((a2.shape[0], n1 - n0), np.float32)
        nbits.matmul_slab(a2, b, n0, n1, dense, buf, bias, activation)
        y[:, n0:n1] = dense
    return y


@kernel("NBitsDense", domain="ziggurat")
def NBitsDense(a, b, bias=None, /, *, K, N, activation=""):
    """``activation(A @ W.T + bias)`` for a MatMulNBits weight held as centred int8 codes
    (``backends.cpu.nbits.NBitsCodes``): what ``passes/pack_nbits.py`` makes of a MatMulNBits
    followed by its bias Add and its GELU/ReLU, so the bias and the activation run in the
    product's oneDNN epilogue instead of two more passes (numpy's erf GELU: ~1.8 ms for BERT-base's
    128 x 3072). Float32 products (bfloat16 on AMX in ``precision="bf16"`` sessions)."""
    from ..backends.cpu import nbits

    if not isinstance(b, nbits.NBitsCodes) or a.shape[-1] != K or b.shape[0] != N:
        raise ExecutionError(
            f"NBitsDense: expected A (..., {K}) and the unpacked codes of a {N}-row MatMulNBits "
            f"weight (passes/pack_nbits.py makes both), got A {tuple(a.shape)} and B "
            f"{type(b).__name__}{tuple(b.shape)}; run the model's MatMulNBits instead"
        )
    y = _codes_dense(a.reshape(-1, K).astype(np.float32, copy=False), b, bias, activation, K, N)
    return (y.reshape(a.shape[:-1] + (N,)).astype(a.dtype, copy=False),)


# bitsandbytes' NF4 code book (normal-float quantiles of [-1, 1]), indexed by the 4-bit code
_NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
], dtype=np.float32)  # fmt: skip


@kernel("MatMulBnb4", domain=MS, since=1)
def MatMulBnb4(a, b, absmax, /, *, K, N, block_size, quant_type, training_mode=0,
               transB=1):  # fmt: skip
    """A (..., K) @ W^T for W (N, K) in bitsandbytes' 4-bit NF4 format: W flattened row-major
    into blocks of ``block_size``, each value a code-book entry times its block's absmax, two
    codes per byte (first in the high nibble). The weight stays packed; dequantized per slab.

    quant_type 0 (FP4) is refused: onnxruntime's CPU results for it (1.32) do not follow its
    own documented FP4 code book, so no reproduction is claimed.
    """
    if quant_type != 1:
        raise ExecutionError(
            f"MatMulBnb4: quant_type {quant_type} (FP4) is not supported, only 1 (NF4); "
            f"re-quantize with quant_type=1 (MatMulBnb4Quantizer's NF4)"
        )
    if a.shape[-1] != K:
        raise ExecutionError(f"MatMulBnb4: A's last dim is {a.shape[-1]}, expected K={K}")
    xp = xp_of(a)
    a2 = a.reshape(-1, K).astype(np.float32, copy=False)
    y = xp.empty((a2.shape[0], N), dtype=np.float32)
    step = max(1, _DEQUANT_CHUNK // max(K, 1))
    scale = absmax.astype(np.float32)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        lo, hi = n0 * K, n1 * K  # element range of these rows (K even: whole bytes)
        packed = b[lo // 2 : (hi + 1) // 2]
        codes = np.stack([packed >> 4, packed & 15], axis=-1).reshape(-1)[: hi - lo]
        w = _NF4[codes] * np.repeat(scale, block_size)[lo:hi]
        (y[:, n0:n1],) = MatMul(a2, xp.asarray(w.reshape(n1 - n0, K)).T)
    return (y.reshape(a.shape[:-1] + (N,)).astype(a.dtype, copy=False),)


def _scaled_int_matmul(a, b, a_zp, b_zp, a_scale, b_scale, bias, out_dt):
    y = int8_matmul_to_float(a, b, a_scale, b_scale, a_zp, b_zp, bias)
    return (y.astype(out_dt, copy=False),)


@kernel("MatMulIntegerToFloat", domain=MS, since=1)
def MatMulIntegerToFloat(
    a, b, a_scale, b_scale, a_zero_point=None, b_zero_point=None, bias=None, /
):
    """``(A - a_zp) @ (B - b_zp) * a_scale * b_scale + bias`` in float (b_scale/b_zp per column);
    uint8 x int8 runs on oneDNN's integer GEMM where the CPU has VNNI/AMX (``quant.py``)."""
    return _scaled_int_matmul(
        a, b, a_zero_point, b_zero_point, a_scale, b_scale, bias, a_scale.dtype
    )


@kernel("DynamicQuantizeMatMul", domain=MS, since=1)
def DynamicQuantizeMatMul(a, b, b_scale, b_zero_point=None, bias=None, /):
    """A float quantized to uint8 from its own range (DynamicQuantizeLinear), then the integer
    product with the int8/uint8 B and its scales (per tensor or per column) back in float."""
    qa, a_scale, a_zp = DynamicQuantizeLinear(a)
    return _scaled_int_matmul(qa, b, a_zp, b_zero_point, a_scale, b_scale, bias, a.dtype)


def _deq(x, scale, zp):
    (v,) = _dq(x, scale, zp)
    return v.astype(np.float32, copy=False)


def _req(v, scale, zp):
    """Requantize float32 ``v`` to zp's dtype (uint8 without one), round half to even."""
    (q,) = _q(v.astype(np.float32, copy=False), scale, zp)
    return q


@kernel("QGemm", domain=MS, since=1)
def QGemm(
    a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None, y_zero_point=None,
    /, *, alpha=1.0, transA=0, transB=0,
):  # fmt: skip
    """``alpha * a_scale * b_scale * ((A - a_zp)' @ (B - b_zp)' + C)``, C int32 at that scale;
    requantized to y_scale / y_zero_point when given, else float32. b_scale/b_zp per column."""
    if transA:
        a = a.T
    if transB:
        b = b.T
        if b_zero_point is not None and b_zero_point.size > 1:
            b_zero_point = b_zero_point.reshape(-1)
    (acc,) = MatMulInteger(a, b, a_zero_point, b_zero_point)
    acc = acc.astype(np.float64)
    if c is not None:
        acc = acc + c.astype(np.float64)
    y = acc * (np.float32(alpha) * a_scale.astype(np.float32) * b_scale.astype(np.float32))
    y = y.astype(np.float32)
    if y_scale is None:
        return (y,)
    return (_req(y, y_scale, y_zero_point),)


def _binary(a, a_s, a_zp, b, b_s, b_zp, c_s, c_zp, op):
    return (_req(op(_deq(a, a_s, a_zp), _deq(b, b_s, b_zp)), c_s, c_zp),)


@kernel("QLinearAdd", domain=MS, since=1)
def QLinearAdd(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point=None, /):
    """Quantized broadcasting Add: requantize(dequant(A) + dequant(B))."""
    return _binary(
        a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point, np.add
    )


@kernel("QLinearMul", domain=MS, since=1)
def QLinearMul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point=None, /):
    """Quantized broadcasting Mul: requantize(dequant(A) * dequant(B))."""
    return _binary(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point,
                   np.multiply)  # fmt: skip


@kernel("QLinearSigmoid", domain=MS, since=1)
def QLinearSigmoid(x, x_scale, x_zero_point, y_scale, y_zero_point=None, /):
    """Quantized Sigmoid."""
    (v,) = Sigmoid(_deq(x, x_scale, x_zero_point))
    return (_req(v, y_scale, y_zero_point),)


@kernel("QLinearLeakyRelu", domain=MS, since=1)
def QLinearLeakyRelu(x, x_scale, x_zero_point, y_scale, y_zero_point=None, /, *, alpha=0.01):
    """Quantized LeakyRelu."""
    (v,) = LeakyRelu(_deq(x, x_scale, x_zero_point), alpha=alpha)
    return (_req(v, y_scale, y_zero_point),)


@kernel("QLinearConv", domain=MS, since=1)
def QLinearConv(
    x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None, /, *,
    auto_pad="NOTSET", channels_last=0, dilations=None, group=1, kernel_shape=None, pads=None,
    strides=None,
):  # fmt: skip
    """``quant.QLinearConv`` with onnxruntime's ``channels_last`` (X and Y in NHWC; W stays
    (M, C/group, *K)), the form its NHWC layout transformer writes."""
    from .quant import QLinearConv as _onnx_qconv

    (y,) = _onnx_qconv(
        np.ascontiguousarray(_channels_first(x, channels_last)), x_scale, x_zero_point, w,
        w_scale, w_zero_point, y_scale, y_zero_point, B, auto_pad=auto_pad, dilations=dilations,
        group=group, kernel_shape=kernel_shape, pads=pads, strides=strides,
    )  # fmt: skip
    return (_channels_back(y, channels_last),)


@kernel("QLinearWhere", domain=MS, since=1)
def QLinearWhere(condition, x, x_scale, x_zero_point, y, y_scale, y_zero_point, z_scale,
                 z_zero_point, /):  # fmt: skip
    """Quantized Where: X or Y (each requantized to Z's scale and zero point) by condition."""
    v = np.where(condition, _deq(x, x_scale, x_zero_point), _deq(y, y_scale, y_zero_point))
    return (_req(v, z_scale, z_zero_point),)


@kernel("QLinearConcat", domain=MS, since=1)
def QLinearConcat(y_scale, y_zero_point, *inputs, axis):
    """Concatenate (X, scale, zero point) triples along ``axis``, requantized to Y's parameters."""
    if len(inputs) % 3:
        raise ExecutionError(
            f"QLinearConcat: after Y's scale and zero point the inputs come in (X, scale, zero "
            f"point) triples; got {len(inputs)} inputs"
        )
    parts = [_deq(inputs[i], inputs[i + 1], inputs[i + 2]) for i in range(0, len(inputs), 3)]
    return (_req(np.concatenate(parts, axis=axis), y_scale, y_zero_point),)


def _channels_first(x, channels_last: int):
    return np.moveaxis(x, -1, 1) if channels_last else x


def _channels_back(y, channels_last: int):
    return np.ascontiguousarray(np.moveaxis(y, 1, -1)) if channels_last else y


@kernel("QLinearAveragePool", domain=MS, since=1)
def QLinearAveragePool(
    x, x_scale, x_zero_point, y_scale, y_zero_point=None, /, *, auto_pad="NOTSET", ceil_mode=0,
    channels_last=0, count_include_pad=0, kernel_shape, pads=None, strides=None,
):  # fmt: skip
    """Quantized AveragePool (NCHW, or NHWC with ``channels_last``)."""
    v = np.ascontiguousarray(_channels_first(_deq(x, x_scale, x_zero_point), channels_last))
    (y,) = AveragePool(v, auto_pad=auto_pad, ceil_mode=ceil_mode, kernel_shape=kernel_shape,
                       count_include_pad=count_include_pad, pads=pads, strides=strides)  # fmt: skip
    return (_req(_channels_back(y, channels_last), y_scale, y_zero_point),)


@kernel("QLinearGlobalAveragePool", domain=MS, since=1)
def QLinearGlobalAveragePool(x, x_scale, x_zero_point, y_scale, y_zero_point=None, /, *,
                             channels_last=0):  # fmt: skip
    """Quantized GlobalAveragePool (NCHW, or NHWC with ``channels_last``)."""
    v = np.ascontiguousarray(_channels_first(_deq(x, x_scale, x_zero_point), channels_last))
    (y,) = GlobalAveragePool(v)
    return (_req(_channels_back(y, channels_last), y_scale, y_zero_point),)


@kernel("QLinearSoftmax", domain=MS, since=1)
def QLinearSoftmax(x, x_scale, x_zero_point, y_scale, y_zero_point=None, /, *, axis=-1):
    """Quantized Softmax over ``axis`` (Softmax-13's semantics).

    The node's ``opset`` attribute (Softmax-1's flatten-at-axis semantics below 13) collides with
    the registry's reserved ``opset`` parameter and cannot reach the kernel; the two semantics
    agree for the last axis, what onnxruntime's quantizer writes, so other axes are refused.
    """
    v = _deq(x, x_scale, x_zero_point)
    if axis % v.ndim != v.ndim - 1:
        raise ExecutionError(
            f"QLinearSoftmax: axis {axis} of a rank-{v.ndim} input; only the last axis is "
            f"supported (its result is the same under every opset)"
        )
    (y,) = Softmax(v, axis=-1)
    return (_req(y, y_scale, y_zero_point),)


@kernel("QuantizeLinear", domain=MS, since=1)
def QuantizeLinear(x, y_scale, y_zero_point=None, /, *, axis=1):
    """The contrib QuantizeLinear: per tensor or per ``axis``; 8/16-bit and 4-bit outputs."""
    return _q(x, y_scale, y_zero_point, axis=axis)


@kernel("DequantizeLinear", domain=MS, since=1)
def DequantizeLinear(x, x_scale, x_zero_point=None, /, *, axis=1):
    """The contrib DequantizeLinear: per tensor or per ``axis``; 8/16-bit and 4-bit inputs."""
    return _dq(x, x_scale, x_zero_point, axis=axis)


def _dequant_lstm_weight(w, scale, zp, what: str):
    """int8/uint8 (D, in, 4H) with per-direction or per-(direction, column) scale -> float32
    (D, 4H, in), the ai.onnx LSTM layout."""
    d = w.shape[0]
    s = scale.astype(np.float32).reshape(d, 1, -1)
    z = np.zeros((d, 1, 1), np.float32) if zp is None else zp.astype(np.float32).reshape(d, 1, -1)
    if s.shape[-1] not in (1, w.shape[-1]):
        raise ExecutionError(
            f"DynamicQuantizeLSTM: {what}_scale has shape {tuple(scale.shape)}; expected "
            f"({d},) or ({d}, {w.shape[-1]})"
        )
    return np.ascontiguousarray(np.swapaxes((w.astype(np.float32) - z) * s, 1, 2))


def _fake_quant(x):
    """x through uint8 dynamic quantization and back (what an integer GEMM on it sees)."""
    q, scale, zp = DynamicQuantizeLinear(x)
    return ((q.astype(np.float32) - zp.astype(np.float32)) * scale).astype(x.dtype, copy=False)


def _quantized_h(cell):
    """An LSTM step whose recurrent product sees h quantized to uint8 from the whole batch's
    range, finished rows' held states included. onnxruntime on one thread does this (measured;
    with both sequence_lens and initial_h its steps after rows finish differ by about one
    quantization step of h); on several threads it splits the batch between them and quantizes
    each part from its own range, so its results depend on the thread count."""

    def step(xw, st, R_T, rb, xp):
        return cell(xw, [_fake_quant(st[0]), st[1]], R_T, rb, xp)

    return step


@kernel("DynamicQuantizeLSTM", domain=MS, since=1)
def DynamicQuantizeLSTM(
    X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, W_scale=None,
    W_zero_point=None, R_scale=None, R_zero_point=None, /, *, activation_alpha=None,
    activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
    input_forget=0,
):  # fmt: skip
    """LSTM with int8 weights W (D, input, 4H) and R (D, H, 4H) stored transposed against
    ai.onnx's LSTM, each with scales / zero points per direction or per output column.

    As onnxruntime computes it on one thread: X is quantized to uint8 once (over the whole
    sequence) and the hidden state at every step, each from its own range, before the products
    with the (dequantized, exactly representable) weights. The LSTM step and driver are ``rnn.py``'s
    (its private ``_lstm_cell`` / ``_run`` / ``_activations``, shared rather than copied).
    """
    if W_scale is None or R_scale is None:
        raise ExecutionError("DynamicQuantizeLSTM: W_scale and R_scale are required")
    from .rnn import _activations, _lstm_cell, _n_dirs, _run

    w = _dequant_lstm_weight(W, W_scale, W_zero_point, "W")
    r = _dequant_lstm_weight(R, R_scale, R_zero_point, "R")
    n_dirs = _n_dirs(direction)
    funcs = _activations(
        activations, ["Sigmoid", "Tanh", "Tanh"], n_dirs, activation_alpha, activation_beta
    )
    H = r.shape[-1]
    cells = [
        _quantized_h(
            _lstm_cell(
                funcs[d],
                clip,
                None if P is None else P[d].astype(np.float32).reshape(3, H),
                input_forget,
            ),
        )  # fmt: skip
        for d in range(n_dirs)
    ]
    return _run(
        cells, _fake_quant(X), w, r, B, sequence_lens, [initial_h, initial_c], n_gates=4,
        direction=direction, layout=0, fold_rb=True,
    )  # fmt: skip
