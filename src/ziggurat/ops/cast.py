"""Cast, CastLike and BitCast.

Numeric casts are numpy/ml_dtypes ``astype`` (round-to-nearest-even for floats, wrap-around for
out-of-range integers, as the spec asks), plus what ``astype`` does not do by itself:

* float8 targets with ``saturate=1`` clamp to the format's largest finite value first (inf and
  values rounding past the maximum saturate; NaN stays NaN); ``saturate=0`` is plain ``astype``,
  which overflows to inf (E5M2) or NaN (the others) as the spec's table says.
* float8e8m0 (a bare power-of-two exponent) follows ``round_mode`` (up/down/nearest) and ``saturate``.
* strings: numbers print as their shortest round-trip text (``INF``, ``-INF``, ``NaN`` for the
  specials; bools as 1/0) and strings parse as numbers (case-insensitive INF/NaN, scientific form).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..errors import ExecutionError
from ..ir import dtypes
from ._ewmath import as_array, xp_fast
from .registry import kernel

# Largest finite value of each float8 format (what saturate=1 clamps to).
_F8_MAX = {
    np.dtype(t): float(ml_dtypes.finfo(t).max)
    for t in (
        ml_dtypes.float8_e4m3fn,
        ml_dtypes.float8_e4m3fnuz,
        ml_dtypes.float8_e5m2,
        ml_dtypes.float8_e5m2fnuz,
    )
}
_E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
_E8M0_NAN, _E8M0_MAX = 255, 254
# Opset-1 Cast names its target as a string ("FLOAT"): TensorProto names -> element type codes.
_TYPE_NAMES = {
    k: v for k, v in vars(dtypes).items() if k.isupper() and isinstance(v, int) and k != "UNDEFINED"
}


def _target_dtype(to) -> np.dtype:
    if isinstance(to, str):
        code = _TYPE_NAMES.get(to.upper())
        if code is None:
            raise ExecutionError(f"Cast: unknown target type name {to!r}; expected e.g. 'FLOAT'")
        to = code
    try:
        return dtypes.to_numpy(int(to))
    except ValueError:
        raise ExecutionError(
            f"Cast: unsupported target element type {to}; expected a TensorProto.DataType code"
        ) from None


def cast_array(x, dtype: np.dtype, saturate: int = 1, round_mode: str = "up"):
    """``x`` converted to ``dtype`` with ONNX Cast semantics (always a new array)."""
    src = x.dtype
    if src == dtype:
        return xp_fast(x).array(x, copy=True)
    if dtype.kind == "O":
        return _to_string(x)
    if src.kind == "O":
        return _from_string(x, dtype, saturate, round_mode)
    if dtype == _E8M0:
        return _to_e8m0(x, saturate, round_mode)
    # NaN/inf/out-of-range to int is undefined in ONNX, not an error: no warnings.
    with np.errstate(all="ignore"):
        if src.kind == "V" and dtype.kind in "biu":
            # ml_dtypes floats -> integers/bool: widen first; float32 holds every such value exactly.
            x = x.astype(np.float32)
        if dtype in _F8_MAX and saturate:
            return _saturate_to_f8(x, dtype)
        return as_array(x.astype(dtype))


def _saturate_to_f8(x, dtype: np.dtype):
    xp = xp_fast(x)
    if x.dtype.kind not in "f":  # ints, bool, bfloat16...: exactly representable in float64
        x = x.astype(np.float64)
    hi = x.dtype.type(_F8_MAX[dtype])
    return as_array(xp.clip(x, -hi, hi).astype(dtype))  # clip keeps NaN


def _to_e8m0(x, saturate: int, round_mode: str):
    """float -> float8e8m0: the value's power-of-two exponent, rounded per ``round_mode``.

    frexp gives |x| = m * 2**e with m in [0.5, 1), so floor(log2|x|) = e - 1 and the biased code is
    e + 126; the value is a power of two exactly when m == 0.5. Negative inputs are undefined by the
    spec; their magnitude is used.
    """
    xp = xp_fast(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    ax = xp.abs(x)
    m, e = xp.frexp(ax)
    code = e.astype(np.int32) + 126
    if round_mode == "up":
        code += m > 0.5
    elif round_mode == "nearest":
        code += m >= 0.75  # 1.5 * 2**k is the midpoint of 2**k and 2**(k+1); ties go up
    elif round_mode != "down":
        raise ExecutionError(
            f"Cast: round_mode must be 'up', 'down' or 'nearest', got {round_mode!r}"
        )
    if saturate:
        code = xp.clip(code, 0, _E8M0_MAX)
        code = xp.where(xp.isinf(ax), _E8M0_MAX, code)
        code = xp.where(ax == 0, 0, code)
    else:
        bad = (code < 0) | (code > _E8M0_MAX) | (ax == 0) | xp.isinf(ax)
        code = xp.where(bad, _E8M0_NAN, code)
    code = xp.where(xp.isnan(ax), _E8M0_NAN, code)
    return as_array(code.astype(np.uint8).view(_E8M0))


def _to_string(x):
    """Numbers -> Python str objects: shortest round-trip text, ONNX spellings for inf/NaN."""
    x = np.asarray(x)  # strings live on the host
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    elif x.dtype.kind == "V":
        x = x.astype(np.float32)
    out = x.astype(str).astype(object)
    if x.dtype.kind == "f":
        out[np.isnan(x)] = "NaN"
        out[x == np.inf] = "INF"
        out[x == -np.inf] = "-INF"
    return out


def _from_string(x, dtype: np.dtype, saturate: int, round_mode: str):
    """Python str objects -> numbers. Python's float() already reads INF/+INF/-INF/NaN in any case."""
    x = np.asarray(x)
    try:
        if dtype.kind in "iu":
            # numpy's str -> int parse is exact (no float64 detour) but refuses "2.5" and values out
            # of the target's range: then try the widest ints (and wrap), then floats.
            text = x.astype(np.str_)
            for via in (dtype, np.int64, np.uint64):
                try:
                    return text.astype(via).astype(dtype)
                except (ValueError, OverflowError):
                    pass
        values = x.astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise ExecutionError(
            f"Cast: a string is not a number ({exc}); expected e.g. '3.14', 'INF'"
        ) from None
    if dtype == np.bool_:
        return values != 0
    return cast_array(values, dtype, saturate, round_mode)


@kernel("Cast", since=1)
def Cast(x, /, *, to, saturate=1, round_mode="up"):
    """Convert X to the element type ``to`` (see the module docstring for the exact rules)."""
    return (cast_array(x, _target_dtype(to), saturate, round_mode),)


@kernel("CastLike", since=15)
def CastLike(x, target_type, /, *, saturate=1, round_mode="up"):
    """Convert X to the element type of ``target_type`` (only its dtype is used)."""
    return (cast_array(x, target_type.dtype, saturate, round_mode),)


@kernel("BitCast", since=26)
def BitCast(x, /, *, to):
    """Reinterpret X's bits as element type ``to`` of the same bit width (little endian)."""
    dtype = _target_dtype(to)
    src_bits, dst_bits = _bit_width(x.dtype), _bit_width(dtype)
    if dtype.kind == "O" or x.dtype.kind == "O" or src_bits != dst_bits:
        raise ExecutionError(
            f"BitCast: cannot reinterpret {x.dtype} ({src_bits} bits) as {dtype} ({dst_bits} bits); "
            "the types must be non-string and of the same bit width"
        )
    # ml_dtypes stores 4- and 2-bit values in the low bits of a byte, so a byte view is exact.
    return (xp_fast(x).array(x, copy=True, order="C").view(dtype),)


def _bit_width(dtype: np.dtype) -> int:
    if dtype.kind == "O":
        return 0
    return dtypes.PACKED_BITS.get(dtypes.from_numpy(dtype), dtype.itemsize * 8)
