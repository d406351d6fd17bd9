"""Quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearMatMul, QLinearConv,
``ziggurat::QDense``, the int8 GEMM that quantized MatMuls run as (``int8_matmul_to_float``), and
``ziggurat::DynamicQDense``, the same with its input's DynamicQuantizeLinear folded in.

Integer targets round half to even and saturate to the type's range. Float targets (float8, float6,
float4) rely on ml_dtypes' round-to-nearest-even cast, after clipping to the largest finite value
when saturating. Integer arithmetic of the QLinear ops runs in float64, which is exact for any
product sum below 2**53 and lets BLAS do the work. uint8 x int8 products (DynamicQuantizeLinear's
output times symmetric weights: onnxruntime's ``quantize_dynamic``, ``enable_quantization``) run
on oneDNN's integer matmul where the CPU has VNNI/AMX (``backends/cpu/int8.py``), exactly too.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from ..ir import dtypes as onnx_dtypes
from .registry import kernel

_FLOAT8 = {np.dtype(t) for t in (
    ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz,
)}  # fmt: skip
# Types with no infinity/NaN encoding to fall back to: they always saturate.
_ALWAYS_SATURATE = {np.dtype(t) for t in (
    ml_dtypes.float4_e2m1fn, ml_dtypes.float6_e2m3fn, ml_dtypes.float6_e3m2fn,
)}  # fmt: skip
_SUB_BYTE_INT = {
    np.dtype(t) for t in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2)
}
_SMALL_INT = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16)}
_ARITH_FLOATS = {np.dtype(t) for t in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16)}


def _is_int(dt: np.dtype) -> bool:
    return dt.kind in "iu" or dt in _SUB_BYTE_INT


def _int_range(dt: np.dtype) -> tuple[int, int]:
    info = ml_dtypes.iinfo(dt) if dt in _SUB_BYTE_INT else np.iinfo(dt)
    return int(info.min), int(info.max)


def _to_int(xp, q, dt: np.dtype):
    """Rounded float values -> integer dtype ``dt``, saturating to its range."""
    lo, hi = _int_range(dt)
    q = xp.clip(q, lo, hi)
    if dt in _SUB_BYTE_INT:  # ml_dtypes' sub-byte ints convert reliably from a small int type
        return q.astype(np.int8).astype(dt)
    return q.astype(dt)


def _to_float_type(xp, v, dt: np.dtype, saturate: int):
    """float values -> a float8/float6/float4 dtype (round to nearest even)."""
    if saturate or dt in _ALWAYS_SATURATE:
        fmax = float(ml_dtypes.finfo(dt).max)
        v = xp.clip(v, -fmax, fmax)  # keeps NaN, maps +-inf to +-max
    return v.astype(dt)


def _onnx_dtype(code: int, what: str) -> np.dtype:
    try:
        return onnx_dtypes.to_numpy(int(code))
    except ValueError:
        raise ExecutionError(f"{what}={code} is not a known ONNX element type code") from None


def _param(p, x_shape: tuple[int, ...], axis: int, block_size: int, name: str):
    """Scale or zero point reshaped (and for blocks, repeated) to broadcast against x."""
    xp = xp_of(p)
    rank = len(x_shape)
    if block_size and block_size > 0 and p.ndim == rank and rank > 0:
        ax = axis % rank
        if p.shape[ax] * block_size < x_shape[ax] or (p.shape[ax] - 1) * block_size >= x_shape[ax]:
            raise ExecutionError(
                f"{name} has {p.shape[ax]} blocks on axis {ax} for block_size={block_size}, but x has "
                f"{x_shape[ax]} elements there; expected ceil({x_shape[ax]}/{block_size}) blocks"
            )
        p = xp.repeat(p, block_size, axis=ax)
        return xp.take(p, xp.arange(x_shape[ax]), axis=ax)
    if p.size == 1:
        return p.reshape(())
    if p.ndim != 1 or rank == 0:
        raise ExecutionError(
            f"{name} has shape {tuple(p.shape)}; expected a scalar, a 1-D per-axis tensor, or (with "
            f"block_size) a tensor of x's rank {rank}"
        )
    ax = 0 if rank == 1 else axis % rank
    if p.shape[0] != x_shape[ax]:
        raise ExecutionError(
            f"{name} has {p.shape[0]} values but x has {x_shape[ax]} along axis {ax}; per-axis "
            f"quantization needs one value per element of the axis (set `axis` accordingly)"
        )
    shape = [1] * rank
    shape[ax] = p.shape[0]
    return p.reshape(shape)


def _compute_float(dt: np.dtype) -> np.dtype:
    # float8e8m0 / integer scales are not useful arithmetic types; do their math in float32.
    return dt if dt in _ARITH_FLOATS else np.dtype(np.float32)


@kernel("QuantizeLinear", since=10)
def QuantizeLinear(
    x,
    y_scale,
    y_zero_point=None,
    /,
    *,
    axis=1,
    block_size=0,
    output_dtype=0,
    precision=0,
    saturate=1,
):
    """y = saturate(round_half_even(x / y_scale) + y_zero_point), per tensor, axis or block."""
    xp = xp_of(x)
    if y_zero_point is not None:
        out = y_zero_point.dtype
        if output_dtype and _onnx_dtype(output_dtype, "output_dtype") != out:
            raise ExecutionError(
                f"output_dtype {_onnx_dtype(output_dtype, 'output_dtype')} differs from y_zero_point's "
                f"dtype {out}; they must match (drop output_dtype or change the zero point)"
            )
    else:
        out = _onnx_dtype(output_dtype, "output_dtype") if output_dtype else np.dtype(np.uint8)
    cdt = _compute_float(_onnx_dtype(precision, "precision") if precision else y_scale.dtype)
    scale = _param(y_scale, x.shape, axis, block_size, "y_scale").astype(cdt)
    # Division at the requested precision; the rounding and saturation then run in float64.
    v = (x.astype(cdt) / scale).astype(np.float64)
    zp = (
        None
        if y_zero_point is None
        else _param(y_zero_point, x.shape, axis, block_size, "y_zero_point")
    )
    if _is_int(out):
        q = xp.rint(v)
        if zp is not None:
            q = q + zp.astype(np.float64)
        return (_to_int(xp, q, out),)
    if zp is not None:
        v = v + zp.astype(np.float64)
    return (_to_float_type(xp, v, out, saturate),)


@kernel("DequantizeLinear", since=10)
def DequantizeLinear(x, x_scale, x_zero_point=None, /, *, axis=1, block_size=0, output_dtype=0):
    """y = (x - x_zero_point) * x_scale, per tensor, axis or block; output dtype from x_scale or output_dtype."""
    out = _onnx_dtype(output_dtype, "output_dtype") if output_dtype else x_scale.dtype
    if out not in _ARITH_FLOATS:  # e.g. a float8e8m0 scale without output_dtype
        out = np.dtype(np.float32)
    scale = _param(x_scale, x.shape, axis, block_size, "x_scale")
    if x.dtype in _SMALL_INT and out == np.float32:
        # Exact in float32 (|x - zp| < 2**24), so this gives the int64 path's values in three
        # float32 passes instead of int64 ones: 8-bit embedding tables dequantize per call.
        v = x.astype(np.float32)
        if x_zero_point is not None:
            v -= _param(x_zero_point, x.shape, axis, block_size, "x_zero_point").astype(np.float32)
        v *= scale.astype(np.float32)
        return (v,)
    if _is_int(x.dtype):
        v = x.astype(np.int64)
        if x_zero_point is not None:
            v = v - _param(x_zero_point, x.shape, axis, block_size, "x_zero_point").astype(np.int64)
    else:
        v = x.astype(np.float32)
        if x_zero_point is not None:
            v = v - _param(x_zero_point, x.shape, axis, block_size, "x_zero_point").astype(
                np.float32
            )
    # The output type is also the precision of the multiplication.
    return ((v.astype(out) * scale.astype(out)).astype(out, copy=False),)


@kernel("DynamicQuantizeLinear", since=11)
def DynamicQuantizeLinear(x, /):
    """uint8 quantization with scale and zero point computed from x's range (widened to include 0)."""
    if type(x) is np.ndarray and x.dtype == np.float32 and x.size:
        return dynamic_quantize_u8(x)
    xp = xp_of(x)
    xf = x.astype(np.float32)
    lo = xp.minimum(xf.min(), 0) if xf.size else np.float32(0)
    hi = xp.maximum(xf.max(), 0) if xf.size else np.float32(0)
    scale = ((hi - lo) / np.float32(255)).astype(np.float32)
    if float(scale) == 0:  # all zeros: any scale works; use 1 like onnxruntime instead of 0/0
        return xp.zeros(x.shape, np.uint8), xp.asarray(1, np.float32), xp.asarray(0, np.uint8)
    zp = xp.clip(xp.rint(-lo / scale), 0, 255)
    y = xp.clip(xp.rint(xf / scale) + zp, 0, 255).astype(np.uint8)
    return y, xp.asarray(scale, np.float32), xp.asarray(zp).astype(np.uint8)


_F32_255 = np.float32(255)


def dynamic_quantize_u8(x: np.ndarray):
    """DynamicQuantizeLinear of a non-empty float32 numpy array: (uint8 y, float32 scale, uint8
    zero point), the same values as the generic path (and onnxruntime's MLAS: ``x / scale``
    rounded half to even, plus the zero point, saturated), in fewer passes over x.

    The quantizing pass runs as one oneDNN primitive where oneDNN is loaded
    (``backends/cpu/int8.quantize_u8``), else as numpy's divide, rint, add, clip and cast. NaN
    inputs are unspecified here as in onnxruntime."""
    lo = min(x.min(), np.float32(0))
    hi = max(x.max(), np.float32(0))
    scale = np.float32((np.float32(hi) - np.float32(lo)) / _F32_255)
    if scale == 0:  # all zeros: any scale works; use 1 like onnxruntime instead of 0/0
        return np.zeros(x.shape, np.uint8), np.asarray(1, np.float32), np.asarray(0, np.uint8)
    zp = np.float32(min(max(np.rint(-np.float32(lo) / scale), 0), 255))
    y = _int8().quantize_u8(x, scale, zp)
    if y is None:
        t = np.divide(x, scale, dtype=np.float32)
        np.rint(t, out=t)
        t += zp  # t holds integers: adding the integer zero point is exact
        np.clip(t, 0, 255, out=t)
        y = t.astype(np.uint8)
    return y, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)


def _int8():
    """backends.cpu.int8 (oneDNN's integer GEMMs), imported on first use (``import ziggurat``
    stays light)."""
    global _int8_mod
    if _int8_mod is None:
        from ..backends.cpu import int8

        _int8_mod = int8
    return _int8_mod


_int8_mod = None


def _requantize(xp, acc, multiplier, y_zero_point, out_dt: np.dtype):
    """float accumulator * multiplier -> round half even + zero point -> saturated ``out_dt``."""
    # float32 like onnxruntime's requantization, so rounding ties land the same way.
    v = acc.astype(np.float32) * multiplier
    if not _is_int(out_dt):  # float8 output (QLinearMatMul-21): the cast does the rounding
        if y_zero_point is not None:
            v = v + y_zero_point.astype(np.float32)
        return _to_float_type(xp, v, out_dt, saturate=1)
    q = xp.rint(v).astype(np.float64)
    if y_zero_point is not None:
        q = q + y_zero_point.astype(np.float64)
    return _to_int(xp, q, out_dt)


def _centered(v, zp, shape=None):
    """v - zero_point as exact float64 (zp reshaped to ``shape`` when per-row/column)."""
    v = v.astype(np.float64)
    if zp is None:
        return v
    zp = zp.astype(np.float64)
    return v - (zp.reshape(()) if zp.size == 1 else zp.reshape(shape))


def _f32(v, shape=None):
    v = v.astype(np.float32)
    return v.reshape(()) if v.size == 1 else v.reshape(shape)


@kernel("QLinearMatMul", since=10)
def QLinearMatMul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point, /):
    """Quantized MatMul: requantize((a - a_zp) @ (b - b_zp) * a_scale * b_scale / y_scale) + y_zp.

    Scales and zero points are scalars, per-row of a ([M]) or per-column of b ([N]).
    """
    xp = xp_of(a)
    acc = _centered(a, a_zero_point, (-1, 1)) @ _centered(b, b_zero_point, (-1,))
    # onnxruntime forms the multiplier in float32; matching it keeps rounding ties identical.
    multiplier = _f32(a_scale, (-1, 1)) * _f32(b_scale, (-1,)) / _f32(y_scale)
    out_dt = y_zero_point.dtype if y_zero_point is not None else a.dtype
    return (_requantize(xp, acc, multiplier, y_zero_point, out_dt),)


@kernel("QLinearConv", since=10)
def QLinearConv(
    x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None, /, *,
    auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
):  # fmt: skip
    """Quantized Conv: integer convolution of zero-point-centred x and w, plus int32 bias, requantized.

    w_scale / w_zero_point are scalars or per output channel ([M]).
    """
    from .quant_conv import conv_nd  # a family-local helper, kept apart to keep this file short

    xp = xp_of(x)
    n_spatial = x.ndim - 2
    xc = _centered(x, x_zero_point)
    wc = _centered(w, w_zero_point, (-1,) + (1,) * (w.ndim - 1))
    acc = conv_nd(
        xc,
        wc,
        auto_pad=auto_pad,
        dilations=dilations or [1] * n_spatial,
        group=group,
        pads=pads or [0] * (2 * n_spatial),
        strides=strides or [1] * n_spatial,
    )  # [N, M, *out], exact in float64
    if B is not None:
        acc = acc + B.astype(np.float64).reshape((1, -1) + (1,) * n_spatial)
    channel = (1, -1) + (1,) * n_spatial
    multiplier = _f32(x_scale) * _f32(w_scale, channel) / _f32(y_scale)
    out_dt = y_zero_point.dtype if y_zero_point is not None else x.dtype
    return (_requantize(xp, acc, multiplier, y_zero_point, out_dt),)


def _is_zero(zp) -> bool:
    return zp is None or not np.any(zp)


def int8_matmul_to_float(a, b, a_scale, b_scale, a_zp=None, b_zp=None, bias=None, activation=""):
    """``activation((a_scale * b_scale) * ((A - a_zp) @ (B - b_zp)) + bias)`` in float32.

    The integer product is exact: on oneDNN (``backends/cpu/int8.py``: uint8 A with one zero
    point, int8 B with zero point 0, as onnxruntime's ``quantize_dynamic`` writes them) the
    scales, bias and activation are applied inside the product; elsewhere (other types or zero
    points, no VNNI/AMX, ``ZIGGURAT_DNNL=0``) the int32 result comes from float64 BLAS and the
    float epilogue from numpy, in onnxruntime's order (cast, scale, bias)."""
    if (
        type(a) is np.ndarray
        and a.dtype == np.uint8
        and b.dtype == np.int8
        and np.size(a_scale) == 1
        and (a_zp is None or np.size(a_zp) == 1)
        and a_scale.dtype == np.float32
        and _is_zero(b_zp)
    ):
        y = _int8().matmul_u8s8(
            a, 0 if a_zp is None else a_zp, a_scale, b, b_scale, bias, activation
        )
        if y is not None:
            return y
    from .matmul import MatMulInteger  # the exact integer product (float64 BLAS)

    (acc,) = MatMulInteger(a, _int8_plain(b), a_zp, b_zp)
    y = acc.astype(np.float32)
    y *= a_scale.astype(np.float32) * b_scale.astype(np.float32)
    if bias is not None:
        y += bias.astype(np.float32)
    if activation:
        from .fused import _epilogue

        _epilogue(y, None, activation)
    return y


def _int8_plain(b):
    return _int8().plain(b) if type(b) is not np.ndarray else b


@kernel("QDense", domain="ziggurat")
def QDense(a, b, a_scale, b_scale, a_zp=None, b_zp=None, bias=None, /, *, activation=""):
    """onnxruntime's MatMulIntegerToFloat with an activation ('', 'relu' or erf 'gelu') applied
    to its float result: what ``passes/fuse_quant_matmul.py`` makes of ``quantize_dynamic``'s
    MatMulInteger -> Cast -> Mul [-> Add bias] [-> GELU] chains and ``passes/quantize_weights.py``
    of float Dense layers (``enable_quantization``). B is int8, possibly packed for oneDNN."""
    return (int8_matmul_to_float(a, b, a_scale, b_scale, a_zp, b_zp, bias, activation),)


@kernel("DynamicQDense", domain="ziggurat")
def DynamicQDense(x, b, b_scale, b_zp=None, bias=None, /, *, activation=""):
    """``QDense(DynamicQuantizeLinear(x), b, ...)`` as one step: float32 ``x`` is quantized to
    uint8 from its own range (onnxruntime's rule, exactly as ``DynamicQuantizeLinear``), then
    multiplied with the int8 ``b`` (scales per tensor or per column, optional zero point), bias and
    activation ('', 'relu', erf 'gelu') applied to the float result. What
    ``passes/fuse_quant_matmul.fuse_dynamic`` makes of a DynamicQuantizeLinear read by one QDense
    only: onnxruntime's ``DynamicQuantizeMatMul`` with an activation."""
    if b_zp is None or not np.any(b_zp):
        global _int8_dynamic
        if _int8_dynamic is None:  # imported on first use, with oneDNN's bindings
            from ..backends.cpu import int8_dynamic as _int8_dynamic
        y = _int8_dynamic.dense(x, b, b_scale, bias, activation)
        if y is not None:
            return (y,)
    qa, a_scale, a_zp = DynamicQuantizeLinear(x)
    return (int8_matmul_to_float(qa, b, a_scale, b_scale, a_zp, b_zp, bias, activation),)


_int8_dynamic = None
