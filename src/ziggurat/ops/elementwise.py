"""Elementwise math: arithmetic, unary functions, Max/Min/Sum/Mean, Clip, Where, IsInf/IsNaN.

Comparison, logical and bitwise ops live in ``logical``; Cast/CastLike/BitCast in ``cast``; the erf
numerics and shared helpers in ``_ewmath``.

numpy ufuncs keep the dtype when both operands share it, which ONNX guarantees for these ops, so most
kernels are one ufunc call. The exceptions handled here: integer Div truncates toward zero (numpy's
``//`` floors), Pow's exponent may have another dtype than the base, ml_dtypes floats (bfloat16,
float8) compute in float32 and are cast back, and 0-d results are kept as arrays.
"""

from __future__ import annotations

import numpy as np

from ..errors import ExecutionError
from ._ewmath import as_array, erf, float_compute_dtype, is_exotic_float, xp_fast
from .registry import kernel


def _unary_float(x, ufunc_name: str):
    """Apply the xp ufunc ``ufunc_name``; ml_dtypes floats go through float32 and back."""
    xp = xp_fast(x)
    fn = getattr(xp, ufunc_name)
    if is_exotic_float(x.dtype):
        return (fn(x.astype(np.float32)).astype(x.dtype),)
    return (as_array(fn(x)),)


def _unary_quiet(x, ufunc_name: str):
    """As _unary_float, without warnings for out-of-domain inputs (they give NaN/inf per IEEE)."""
    with np.errstate(all="ignore"):
        return _unary_float(x, ufunc_name)


def legacy_broadcast(a, b, broadcast: int, axis: int | None):
    """Opset < 7 binary ops: with ``broadcast=1`` and ``axis``, B's dims align with A's from ``axis``.

    Without ``axis`` the old rule is suffix matching, which numpy broadcasting already does.
    """
    if broadcast and axis is not None and b.ndim:
        axis = axis + a.ndim if axis < 0 else axis
        trailing = a.ndim - axis - b.ndim
        if trailing < 0:
            raise ExecutionError(
                f"legacy broadcast: B of shape {b.shape} does not fit A of shape {a.shape} from "
                f"axis {axis}; expected B's rank <= {a.ndim - axis}"
            )
        b = b.reshape(b.shape + (1,) * trailing)
    return b


def register_legacy_binary(op_type: str, fn) -> None:
    """Register ``op_type`` since opset 1 with the old ``broadcast``/``axis`` attributes."""

    def legacy(a, b, /, *, broadcast=0, axis=None):
        return fn(a, legacy_broadcast(a, b, broadcast, axis))

    legacy.__name__ = legacy.__qualname__ = f"{op_type}_1"
    legacy.__doc__ = f"{op_type} before opset 7 (explicit ``broadcast``/``axis`` attributes)."
    legacy.__module__ = fn.__module__  # report the family of the op, not this helper's
    kernel(op_type, since=1)(legacy)


# ------------------------------------------------------------------------------ arithmetic


@kernel("Add", since=7)
def Add(a, b, /):
    """A + B with numpy broadcasting."""
    return (as_array(xp_fast(a).add(a, b)),)


@kernel("Sub", since=7)
def Sub(a, b, /):
    """A - B with numpy broadcasting."""
    return (as_array(xp_fast(a).subtract(a, b)),)


@kernel("Mul", since=7)
def Mul(a, b, /):
    """A * B with numpy broadcasting."""
    return (as_array(xp_fast(a).multiply(a, b)),)


@kernel("Div", since=7)
def Div(a, b, /):
    """A / B; integer division truncates toward zero like C (numpy's ``//`` floors)."""
    xp = xp_fast(a)
    kind = a.dtype.kind
    if kind == "f" or kind == "V":
        return (as_array(xp.divide(a, b)),)
    with np.errstate(divide="ignore", invalid="ignore"):  # x / 0 on ints is undefined in ONNX
        q = xp.floor_divide(a, b)
        if kind == "i":
            # Floor and truncation differ when the remainder is nonzero and the signs differ.
            q = q + ((q * b != a) & ((a < 0) != (b < 0))).astype(q.dtype)
    return (as_array(q),)


@kernel("Mod", since=10)
def Mod(a, b, /, *, fmod=0):
    """Remainder: fmod=0 takes the divisor's sign (Python %), fmod=1 the dividend's (C fmod)."""
    xp = xp_fast(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        if is_exotic_float(a.dtype):
            f = xp.fmod if fmod else xp.mod
            return (f(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype),)
        return (as_array(xp.fmod(a, b) if fmod else xp.mod(a, b)),)


# Exponents computed without numpy's general ``power`` (~60 ns per float32 element): x ** 3 of the
# tanh GELU was half of GPT-2's run time. Multiplication chains round once per product, so a cube
# may differ from a correctly rounded pow by 1 ulp; sqrt and reciprocal are correctly rounded.
_POW_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _pow_special(a, e: float):
    """a ** e for a float32/float64 numpy ``a`` and a few exponent values; None for the others."""
    if e == 2.0:
        return np.multiply(a, a)
    if e == 3.0:
        y = np.multiply(a, a)
        y *= a
        return y
    if e == 4.0:
        y = np.multiply(a, a)
        return np.multiply(y, y, out=y)
    if e == 1.0:
        return np.array(a, copy=True)
    if e == 0.0:
        return np.ones_like(a)  # pow(x, 0) is 1 even for NaN
    if e == -1.0:
        return np.reciprocal(a)
    if e == -2.0:
        y = np.multiply(a, a)
        return np.reciprocal(y, out=y)
    if e in (0.5, -0.5):
        # sqrt semantics at -0 and -inf (-0 and NaN, where C's pow gives +0 and +inf), as numpy's
        # power and onnxruntime's Pow (which also specialises 0.5 to sqrt) give.
        y = np.sqrt(a)
        return y if e > 0 else np.reciprocal(y, out=y)
    return None


@kernel("Pow", since=7)
def Pow(a, b, /):
    """A ** B; the output has A's dtype whatever B's dtype (since opset 12 they may differ)."""
    xp = xp_fast(a)
    dt = a.dtype
    with np.errstate(all="ignore"):
        if (
            b.size == 1
            and b.ndim <= a.ndim
            and dt in _POW_FLOATS
            and b.dtype.kind in "fiu"
            and xp is np
        ):
            y = _pow_special(a, float(b.reshape(-1)[0]))
            if y is not None:
                return (as_array(y),)
        if dt == b.dtype and dt.kind == "f":
            return (as_array(xp.power(a, b)),)
        if dt.kind in "iu" and b.dtype.kind in "iu" and not (b < 0).any():
            return (as_array(xp.power(a, b)).astype(dt, copy=False),)
        # Mixed or negative-integer exponents: compute in float64, then cast to A's dtype
        # (truncating toward zero for integer bases, as a C cast would).
        y = xp.power(a.astype(np.float64), b.astype(np.float64))
        return (as_array(y).astype(dt),)


for _op, _fn in (("Add", Add), ("Sub", Sub), ("Mul", Mul), ("Div", Div), ("Pow", Pow)):
    register_legacy_binary(_op, _fn)


@kernel("Neg", since=1)
def Neg(x, /):
    """-X (integers wrap, e.g. -(-128) is -128 for int8)."""
    if is_exotic_float(x.dtype):
        return _unary_float(x, "negative")
    return (as_array(xp_fast(x).negative(x)),)


@kernel("Abs", since=1)
def Abs(x, /):
    """|X|."""
    return _unary_float(x, "abs")


@kernel("Sign", since=9)
def Sign(x, /):
    """-1, 0 or 1 by the sign of X (NaN stays NaN)."""
    return _unary_float(x, "sign")


@kernel("Reciprocal", since=1)
def Reciprocal(x, /):
    """1 / X."""
    return _unary_quiet(x, "reciprocal")


@kernel("Ceil", since=1)
def Ceil(x, /):
    """Round toward +inf."""
    return _unary_float(x, "ceil")


@kernel("Floor", since=1)
def Floor(x, /):
    """Round toward -inf."""
    return _unary_float(x, "floor")


@kernel("Round", since=11)
def Round(x, /):
    """Round to nearest, ties to even (numpy's rint)."""
    return _unary_float(x, "rint")


@kernel("Sqrt", since=1)
def Sqrt(x, /):
    """Square root; NaN for negative inputs."""
    return _unary_quiet(x, "sqrt")


@kernel("Exp", since=1)
def Exp(x, /):
    """e ** X."""
    return _unary_quiet(x, "exp")


@kernel("Log", since=1)
def Log(x, /):
    """Natural log; -inf at 0, NaN below."""
    return _unary_quiet(x, "log")


@kernel("Sin", since=7)
def Sin(x, /):
    """Elementwise sine."""
    return _unary_float(x, "sin")


@kernel("Cos", since=7)
def Cos(x, /):
    """Elementwise cosine."""
    return _unary_float(x, "cos")


@kernel("Tan", since=7)
def Tan(x, /):
    """Elementwise tangent."""
    return _unary_float(x, "tan")


@kernel("Asin", since=7)
def Asin(x, /):
    """Elementwise arcsine; NaN outside [-1, 1]."""
    return _unary_quiet(x, "arcsin")


@kernel("Acos", since=7)
def Acos(x, /):
    """Elementwise arccosine; NaN outside [-1, 1]."""
    return _unary_quiet(x, "arccos")


@kernel("Atan", since=7)
def Atan(x, /):
    """Elementwise arctangent."""
    return _unary_float(x, "arctan")


@kernel("Sinh", since=9)
def Sinh(x, /):
    """Elementwise hyperbolic sine."""
    return _unary_quiet(x, "sinh")


@kernel("Cosh", since=9)
def Cosh(x, /):
    """Elementwise hyperbolic cosine."""
    return _unary_quiet(x, "cosh")


@kernel("Tanh", since=1)
def Tanh(x, /):
    """Hyperbolic tangent."""
    return _unary_float(x, "tanh")


@kernel("Asinh", since=9)
def Asinh(x, /):
    """Elementwise inverse hyperbolic sine."""
    return _unary_float(x, "arcsinh")


@kernel("Acosh", since=9)
def Acosh(x, /):
    """Elementwise inverse hyperbolic cosine; NaN below 1."""
    return _unary_quiet(x, "arccosh")


@kernel("Atanh", since=9)
def Atanh(x, /):
    """Elementwise inverse hyperbolic tangent; NaN outside [-1, 1]."""
    return _unary_quiet(x, "arctanh")


@kernel("Erf", since=9)
def Erf(x, /):
    """Gauss error function (see ``_ewmath`` for the approximations and their accuracy)."""
    if x.dtype.kind in "iu":  # Erf accepts integer tensors; the result is truncated back
        return (erf(x.astype(np.float64)).astype(x.dtype),)
    return (erf(x),)


@kernel("IsNaN", since=9)
def IsNaN(x, /):
    """True where X is NaN."""
    xp = xp_fast(x)
    return (as_array(xp.isnan(x.astype(float_compute_dtype(x.dtype), copy=False))),)


@kernel("IsInf", since=10)
def IsInf(x, /, *, detect_negative=1, detect_positive=1):
    """True where X is +inf (if detect_positive) or -inf (if detect_negative)."""
    xp = xp_fast(x)
    x = x.astype(float_compute_dtype(x.dtype), copy=False)
    if detect_negative and detect_positive:
        return (as_array(xp.isinf(x)),)
    if detect_positive:
        return (as_array(x == np.inf),)
    if detect_negative:
        return (as_array(x == -np.inf),)
    return (xp.zeros(x.shape, dtype=bool),)


# ------------------------------------------------------------------------- variadic ops


def _fold(ufunc_name: str, inputs):
    if not inputs:
        raise ExecutionError("expected at least one input, got none")
    xp = xp_fast(inputs[0])
    if len(inputs) == 1:
        return xp.array(inputs[0], copy=True)  # a fresh buffer: never alias an input
    f = getattr(xp, ufunc_name)
    y = f(inputs[0], inputs[1])
    for x in inputs[2:]:
        y = f(y, x)
    return as_array(y)


@kernel("Max", since=1)
def Max(*inputs):
    """Elementwise maximum of all inputs (broadcast); NaN propagates."""
    return (_fold("maximum", inputs),)


@kernel("Min", since=1)
def Min(*inputs):
    """Elementwise minimum of all inputs (broadcast); NaN propagates."""
    return (_fold("minimum", inputs),)


@kernel("Sum", since=1)
def Sum(*inputs):
    """Elementwise sum of all inputs (broadcast)."""
    return (_fold("add", inputs),)


@kernel("Mean", since=1)
def Mean(*inputs):
    """Elementwise mean of all inputs (broadcast), in the inputs' dtype."""
    y = _fold("add", inputs)
    if len(inputs) > 1:
        y = as_array(y / y.dtype.type(len(inputs)))
    return (y,)


# ------------------------------------------------------------------------- Clip, Where


def _clip(x, lo, hi):
    """max(min(x, hi), lo) ordered so that lo > hi gives hi, as the spec says."""
    xp = xp_fast(x)
    y = x
    if lo is not None:
        y = xp.maximum(y, lo)
    if hi is not None:
        y = xp.minimum(y, hi)
    if y is x:
        y = xp.array(x, copy=True)
    return as_array(y)


@kernel("Clip", since=11)
def Clip(x, lo=None, hi=None, /):
    """Clamp X to [min, max]; an omitted bound does not clamp. min > max gives max everywhere."""
    dt = x.dtype
    if lo is not None:
        lo = lo.reshape(()).astype(dt, copy=False) if lo.size == 1 else lo.astype(dt, copy=False)
    if hi is not None:
        hi = hi.reshape(()).astype(dt, copy=False) if hi.size == 1 else hi.astype(dt, copy=False)
    if is_exotic_float(dt):
        f32 = np.float32
        y = _clip(
            x.astype(f32),
            None if lo is None else lo.astype(f32),
            None if hi is None else hi.astype(f32),
        )
        return (y.astype(dt),)
    return (_clip(x, lo, hi),)


@kernel("Clip", since=1)
def Clip_1(x, /, *, min=None, max=None):
    """Clip before opset 11: the bounds are float attributes (defaults: no bound)."""
    dt = x.dtype
    lo = None if min is None else np.asarray(min, dtype=float_compute_dtype(dt))
    hi = None if max is None else np.asarray(max, dtype=float_compute_dtype(dt))
    if is_exotic_float(dt):
        return (_clip(x.astype(np.float32), lo, hi).astype(dt),)
    return (_clip(x, lo, hi),)


@kernel("Where", since=9)
def Where(condition, x, y, /):
    """X where condition is true, else Y (all three broadcast)."""
    xp = xp_fast(x)
    return (as_array(xp.where(condition, x, y)),)
