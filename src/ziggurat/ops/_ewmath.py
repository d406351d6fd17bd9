"""Shared helpers of the elementwise/activation kernels, and a vectorized ``erf``.

numpy has no ``erf`` (and scipy is not a dependency), so it is built here:

* float32 and narrower: ``erf(x) = x * P(x²) / Q(x²)`` on ``x`` clamped to [-4, 4] (beyond, erf rounds
  to ±1 in float32). P and Q have degree 5; the coefficients are a weighted least-squares rational
  fit of ``erf(x)/x`` against ``math.erf`` refined by Lawson iterations to near-minimax (relative error
  of the fit 2.5e-8). It is evaluated in float64 on cache-sized chunks: evaluating in float32 costs
  ~6 ulp of Horner rounding (4e-7 absolute near |x|=3), evaluating in float64 keeps the result within
  ~1 ulp (6e-8 absolute) at about twice the time.
* float64: piecewise. |x| < 1: the Taylor series of ``erf(x)/x`` in x² (exact coefficients);
  1 <= |x| < 6: ``erfc(|x|) = exp(-x²) * erfcx(|x|)`` with ``erfcx`` interpolated by Chebyshev
  polynomials on two sub-intervals (built once, lazily, from ``math.erfc``); |x| >= 6: ±1 exactly.
  Max error ~5e-16 absolute.
"""

from __future__ import annotations

import math
from functools import cache
from types import ModuleType

import numpy as np

from ..backends import xp_of


def xp_fast(x: object) -> ModuleType:
    """``xp_of`` with a fast path for plain numpy arrays, the hot case of per-node dispatch."""
    return np if type(x) is np.ndarray else xp_of(x)


def as_array(y):
    """numpy ufuncs return scalars (np.generic) for 0-d inputs; kernels must return arrays."""
    return np.asarray(y) if isinstance(y, np.generic) else y


def is_exotic_float(dtype: np.dtype) -> bool:
    """bfloat16 / float8 / float4 (ml_dtypes, numpy kind 'V'): compute in float32, cast back."""
    return dtype.kind == "V"


def float_compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype to compute a float op in: float32 for ml_dtypes floats, else the dtype itself."""
    return np.dtype(np.float32) if dtype.kind == "V" else dtype


# ---------------------------------------------------------------------------------------- erf
# erf(x)/x ~= P(t)/Q(t), t = x², |x| <= 4 (see module docstring). Ascending powers of t.
_ERF32_P = (
    1.1283791393135403,
    0.1935456157359009,
    0.05310182412063345,
    0.0038833697779937517,
    0.0002845668364808172,
    1.9867824257999674e-06,
)
_ERF32_Q = (
    1.0,
    0.5048578914097896,
    0.11535023369414042,
    0.01520730158267511,
    0.0011855781093044586,
    3.7420225347932207e-05,
)
_SQRT1_2 = math.sqrt(0.5)
_CHUNK = 32768  # elements per float64 work buffer (256 KiB): stays in L2 across the Horner steps


def erf(x):
    """Elementwise erf keeping the input's float dtype (float16/32/64, bfloat16 and ml_dtypes)."""
    xp = xp_fast(x)
    if x.dtype == np.float64:
        return _erf64(x, xp)
    if xp is not np:
        return _erf_rational(x.astype(np.float64), xp).astype(x.dtype)
    out = np.empty(x.shape, dtype=x.dtype)
    _erf_rational_chunked(x, out, gelu=False)
    return out


def gelu_erf_fast(x) -> None:
    """In-place GELU for a contiguous float32 array, computed in float32 (error about 4e-7 x |x|,
    below float32 GEMM rounding): the fused Dense epilogue's path, twice as fast as ``gelu_erf``;
    one numba loop (``_jit``, same rational erf) where numba is available, 10x faster again."""
    from . import _jit  # on demand: it may load numba

    jit = _jit.kernels(x.size)
    if jit is not None and x.dtype == np.float32 and x.flags.c_contiguous:
        flat = x.reshape(-1)
        jit.gelu_erf(flat, flat)
        return
    _erf_rational_chunked(x, x, gelu=True, work_dtype=np.float32)


def gelu_erf(x, out=None):
    """0.5 * x * (1 + erf(x / sqrt(2))), fused chunk by chunk (float64 inputs use ``erf``).

    ``out``, if given, receives the result and is returned; it must have x's shape and dtype and
    may be ``x`` itself (each chunk is read before it is written).
    """
    xp = xp_fast(x)
    if x.dtype == np.float64 or xp is not np:
        xw = x.astype(np.float64)
        y = erf(xw * _SQRT1_2) + 1.0
        y *= xw
        y *= 0.5
        y = y.astype(x.dtype, copy=False)
        if out is None:
            return y
        out[...] = y
        return out
    if out is None:
        out = np.empty(x.shape, dtype=x.dtype)
    elif not out.flags.c_contiguous:  # the chunk loop writes through a flat view
        out[...] = gelu_erf(x)
        return out
    _erf_rational_chunked(x, out, gelu=True)
    return out


def _horner(t, coeffs, out):
    np.multiply(t, coeffs[-1], out=out)
    out += coeffs[-2]
    for c in coeffs[-3::-1]:
        out *= t
        out += c
    return out


def _erf_rational_chunked(
    x: np.ndarray, out: np.ndarray, gelu: bool, work_dtype=np.float64
) -> None:
    """Writes erf(x) (or Gelu(x)) into ``out``, computing in ``work_dtype`` chunk by chunk
    (float64: max error 5.4e-8; float32: about 4e-7 and twice as fast)."""
    src = x.reshape(-1)  # a view when x is contiguous; a copy otherwise
    dst = out.reshape(-1)
    n = src.size
    m = min(n, _CHUNK)
    xc, uc, tc, pc, qc = (np.empty(m, dtype=work_dtype) for _ in range(5))
    satc = np.empty(m, dtype=bool)
    for s in range(0, n, _CHUNK):
        e = min(s + _CHUNK, n)
        k = e - s
        xv, uv, tv, pv, qv, sat = xc[:k], uc[:k], tc[:k], pc[:k], qc[:k], satc[:k]
        xv[...] = src[s:e]
        if gelu:
            np.multiply(xv, _SQRT1_2, out=uv)
            np.clip(uv, -4.0, 4.0, out=uv)
        else:
            np.clip(xv, -4.0, 4.0, out=uv)
        np.multiply(uv, uv, out=tv)
        _horner(tv, _ERF32_P, pv)
        _horner(tv, _ERF32_Q, qv)
        pv *= uv
        np.divide(pv, qv, out=pv)
        if gelu:
            # The fit leaves erf(±4) 1.5e-8 short of ±1, which 1 + erf would scale by x: saturate.
            np.abs(uv, out=tv)
            np.greater_equal(tv, 4.0, out=sat)
            np.copysign(1.0, uv, out=pv, where=sat)
            pv += 1.0
            pv *= xv
            pv *= 0.5
        dst[s:e] = pv


def _erf_rational(x, xp):
    """Whole-array form of the rational erf (for non-numpy array modules)."""
    x = xp.clip(x, -4.0, 4.0)
    t = x * x
    p = xp.zeros_like(t)
    q = xp.zeros_like(t)
    for c in reversed(_ERF32_P):
        p = p * t + c
    for c in reversed(_ERF32_Q):
        q = q * t + c
    return x * p / q


# Taylor coefficients of erf(x)/x in t = x²: 2/sqrt(pi) * (-1)^n / (n! (2n+1)); 19 terms reach
# 1e-18 at t = 1.
_ERF64_TAYLOR = tuple(
    2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(19)
)
# erfcx = exp(x²) erfc(x) is smooth on [1, 6]; (lo, hi, Chebyshev degree) per piece. Higher degrees
# only add interpolated sampling noise (~5e-16 per coefficient) at the interval ends.
_ERFCX_PIECES = ((1.0, 2.5, 19), (2.5, 6.0, 18))


@cache
def _erfcx_chebyshev() -> tuple[tuple[float, float, np.ndarray], ...]:
    """Chebyshev interpolants of erfcx on each piece (built on first float64 erf)."""
    from numpy.polynomial import chebyshev

    pieces = []
    for lo, hi, deg in _ERFCX_PIECES:

        def f(u, lo=lo, hi=hi):
            xs = lo + (hi - lo) * (np.asarray(u) + 1) / 2
            return np.array([math.erfc(v) * math.exp(v * v) for v in xs])

        pieces.append((lo, hi, chebyshev.chebinterpolate(f, deg)))
    return tuple(pieces)


def _erf64(x, xp):
    from numpy.polynomial import chebyshev

    ax = xp.abs(x)
    out = xp.where(ax >= 6.0, 1.0, ax)  # NaN stays NaN; >= 6 rounds to 1
    small = ax < 1.0
    if small.any():
        xs = ax[small]
        t = xs * xs
        acc = xp.full_like(t, _ERF64_TAYLOR[-1])
        for c in _ERF64_TAYLOR[-2::-1]:
            acc *= t
            acc += c
        out[small] = xs * acc
    for lo, hi, coeffs in _erfcx_chebyshev():
        sel = (ax >= lo) & (ax < hi)
        if sel.any():
            xs = ax[sel]
            u = (2.0 * xs - (lo + hi)) / (hi - lo)
            erfcx = chebyshev.chebval(u, coeffs) if xp is np else _chebval(u, coeffs, xp)
            out[sel] = 1.0 - xp.exp(-xs * xs) * erfcx
    return xp.copysign(out, x)


def _chebval(u, coeffs, xp):
    """Clenshaw recurrence (numpy's chebval only takes numpy arrays)."""
    b1 = xp.zeros_like(u)
    b2 = xp.zeros_like(u)
    for c in coeffs[:0:-1]:
        b1, b2 = 2 * u * b1 - b2 + c, b1
    return u * b1 - b2 + coeffs[0]
