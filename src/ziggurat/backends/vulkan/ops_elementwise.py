"""Elementwise device kernels: unary and binary math with broadcasting, activations (erf is
``z_erf`` of shaders/common.wgsl: absolute error <= 2.5e-7), comparisons, logic, Where, Clip,
Cast and inference BatchNormalization - all one generated shader (``_common.elementwise``).

int64 operands are carried as i32 (see ``_backend``): comparisons, Where and Cast on them are
exact; arithmetic on int64 is refused (it could leave the int32 range silently).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._backend import TABLE, VulkanBackend
from ._common import (
    BOOL,
    CARRIED,
    F32,
    FLOAT,
    I32,
    I64,
    broadcast_strides,
    check,
    dtype_reason,
    elementwise,
)

MS = "com.microsoft"
ZG = "ziggurat"


def _broadcast(be: VulkanBackend, expr: str, xs: list, out_dtype, p0=0.0, p1=0.0):
    shape = tuple(np.broadcast_shapes(*(x.shape for x in xs)))
    out = be.empty(shape, out_dtype)
    ops = [(x, 0, broadcast_strides(x.shape, shape)) for x in xs]
    return elementwise(be, expr, ops, out, shape, p0=p0, p1=p1)


def _out_elems(inputs) -> int:
    return math.prod(np.broadcast_shapes(*(s[0] for s in inputs if s is not None)))


def _supports(allowed: frozenset, positions=None):
    def supports(inputs, attrs):
        try:
            n = _out_elems(inputs)
        except ValueError as e:
            return f"shapes do not broadcast: {e}"
        return check(inputs, allowed, n, positions)

    return supports


def _register(op: str, expr: str, *, domain: str = "", since: int = 1, allowed=FLOAT, out=None,
              params=None, positions=None):  # fmt: skip
    """An elementwise op: ``expr`` over a0.. (inputs) and p0/p1 (``params(attrs)``); the
    output dtype is input 0's unless ``out`` names one."""

    def fn(be: VulkanBackend, inputs: list, attrs: dict[str, Any]) -> list:
        xs = [x for x in inputs if x is not None]
        p0, p1 = params(attrs) if params else (0.0, 0.0)
        return [_broadcast(be, expr, xs, out or xs[0].dtype, p0, p1)]

    fn.__name__ = op
    TABLE.kernel(op, domain=domain, since=since, supports=_supports(allowed, positions))(fn)


_NUM = frozenset({F32, I32})  # arithmetic is exact (wrapping like numpy) on int32
for _op, _e in (("Add", "a0 + a1"), ("Sub", "a0 - a1"), ("Mul", "a0 * a1")):
    _register(_op, _e, since=7, allowed=_NUM)
# int32 division truncates toward zero in WGSL, as ONNX's Div does (dividing by zero is undefined
# in ONNX; WGSL returns the dividend).
_register("Div", "a0 / a1", since=7, allowed=frozenset({F32, I32}))
_register("Pow", "z_pow(a0, a1)", since=7)
_register("PRelu", "select(a0 * a1, a0, a0 >= 0.0)", since=7)
_UNARY = {
    "Relu": "max(a0, 0.0)", "Neg": "-a0", "Abs": "abs(a0)", "Sqrt": "sqrt(a0)", "Exp": "exp(a0)",
    "Log": "log(a0)", "Sigmoid": "z_sigmoid(a0)", "Tanh": "z_tanh(a0)", "Erf": "z_erf(a0)",
    "Reciprocal": "1.0 / a0", "Floor": "floor(a0)", "Ceil": "ceil(a0)", "Round": "round(a0)",
    "Sign": "sign(a0)", "Sin": "sin(a0)", "Cos": "cos(a0)",
}  # fmt: skip
for _op, _e in _UNARY.items():
    _register(_op, _e)
_register("Neg", "-a0", since=6, allowed=_NUM)
_register("Abs", "abs(a0)", since=6, allowed=_NUM)
_register("LeakyRelu", "select(a0 * p0, a0, a0 >= 0.0)", params=lambda a: (a.get("alpha", 0.01), 0))
_register("Elu", "select(p0 * (exp(a0) - 1.0), a0, a0 >= 0.0)", params=lambda a: (a.get("alpha", 1.0), 0))  # fmt: skip
_register("HardSigmoid", "max(0.0, min(1.0, p0 * a0 + p1))",
          params=lambda a: (a.get("alpha", 0.2), a.get("beta", 0.5)))  # fmt: skip
_register("HardSwish", "a0 * max(0.0, min(1.0, a0 / 6.0 + 0.5))", since=14)
_register("Gelu", "z_gelu(a0)", domain=ZG)
_register("GeluTanh", "z_gelu_tanh(a0)", domain=ZG)
_register("Gelu", "z_gelu(a0)", domain=MS)
_register("BiasGelu", "z_gelu(a0 + a1)", domain=MS)
_register("QuickGelu", "a0 * z_sigmoid(p0 * a0)", domain=MS, params=lambda a: (a.get("alpha", 1.702), 0))  # fmt: skip


def _gelu20(be, inputs, attrs):
    expr = "z_gelu_tanh(a0)" if attrs.get("approximate", "none") == "tanh" else "z_gelu(a0)"
    return [_broadcast(be, expr, [inputs[0]], F32)]


TABLE.kernel("Gelu", since=20, supports=_supports(FLOAT))(_gelu20)


def _fast_gelu(be, inputs, attrs):
    xs = [x for x in inputs if x is not None]
    expr = "z_gelu_tanh(a0 + a1)" if len(xs) == 2 else "z_gelu_tanh(a0)"
    return [_broadcast(be, expr, xs, F32)]


TABLE.kernel("FastGelu", domain=MS, supports=_supports(FLOAT))(_fast_gelu)


def _variadic(op: str, combine: str, allowed: frozenset, mean: bool = False):
    def fn(be, inputs, attrs):
        xs = [x for x in inputs if x is not None]
        expr = "a0"
        for k in range(1, len(xs)):
            expr = combine.format(expr, f"a{k}")
        if mean:
            expr = f"({expr}) / {float(len(xs))}"
        return [_broadcast(be, expr, xs, xs[0].dtype)]

    fn.__name__ = op
    TABLE.kernel(op, since=8, supports=_supports(allowed))(fn)


_variadic("Max", "max({}, {})", _NUM)
_variadic("Min", "min({}, {})", _NUM)
_variadic("Sum", "({} + {})", FLOAT)
_variadic("Mean", "({} + {})", FLOAT, mean=True)

# Comparisons and logic: exact on every carried dtype (int64 values are in int32 range).
_CMP = {"Equal": "==", "Less": "<", "Greater": ">", "LessOrEqual": "<=", "GreaterOrEqual": ">="}
for _op, _c in _CMP.items():
    _register(_op, f"u32(a0 {_c} a1)", since=7, allowed=CARRIED, out=BOOL)
_LOGIC = {"And": "a0 & a1", "Or": "a0 | a1", "Xor": "a0 ^ a1"}
for _op, _e in _LOGIC.items():
    _register(_op, _e, since=7, allowed=frozenset({BOOL}), out=BOOL)
_register("Not", "1u - a0", allowed=frozenset({BOOL}), out=BOOL)


def _where(be, inputs, attrs):
    c, x, y = inputs
    return [_broadcast(be, "select(a2, a1, a0 != 0u)", [c, x, y], x.dtype)]


def _where_supports(inputs, attrs):
    if inputs[0] is None or np.dtype(inputs[0][1]) != BOOL:
        return "Where's condition must be bool"
    return _supports(CARRIED)(inputs, attrs)


TABLE.kernel("Where", since=9, supports=_where_supports)(_where)


def _clip(be, inputs, attrs):
    x = inputs[0]
    if len(inputs) == 1 or all(v is None for v in inputs[1:]):  # opset < 11: attributes
        lo, hi = attrs.get("min"), attrs.get("max")
        expr = "a0"
        if lo is not None:
            expr = f"max({expr}, p0)"
        if hi is not None:
            expr = f"min({expr}, p1)"
        return [_broadcast(be, expr, [x], x.dtype, lo or 0.0, hi or 0.0)]
    xs, expr = [x], "a0"
    if inputs[1] is not None:
        xs.append(inputs[1])
        expr = f"max({expr}, a{len(xs) - 1})"
    if len(inputs) > 2 and inputs[2] is not None:
        xs.append(inputs[2])
        expr = f"min({expr}, a{len(xs) - 1})"
    return [_broadcast(be, expr, xs, x.dtype)]


TABLE.kernel("Clip", since=6, supports=_supports(FLOAT))(_clip)
TABLE.kernel("Clip", since=12, supports=_supports(_NUM))(_clip)


# Cast: only conversions that are exact or round as numpy does (ints up to 2^24 in float32).
_TO = {1: F32, 6: I32, 7: I64, 9: BOOL}


def _cast_expr(src: np.dtype, dst: np.dtype) -> str:
    if dst == BOOL:
        zero = {F32: "0.0", BOOL: "0u"}.get(src, "0")
        return f"u32(a0 != {zero})"
    return f"{ {F32: 'f32', BOOL: 'u32'}.get(dst, 'i32') }(a0)"


def _cast(be, inputs, attrs):
    x = inputs[0]
    dst = _TO[int(attrs["to"])]
    return [_broadcast(be, _cast_expr(x.dtype, dst), [x], dst)]


def _cast_supports(inputs, attrs):
    src = np.dtype(inputs[0][1])
    dst = _TO.get(int(attrs.get("to", 0)))
    if dst is None:
        return f"Cast to ONNX type {attrs.get('to')}: not carried (float32, int32, int64, bool)"
    if src not in CARRIED:
        return dtype_reason(src, CARRIED)
    if src == F32 and dst in (I32, I64):
        return "Cast float32 -> int: out-of-range values would differ from numpy"
    return check(inputs, CARRIED, math.prod(inputs[0][0]))


TABLE.kernel("Cast", since=6, supports=_cast_supports)(_cast)


def _batchnorm(be, inputs, attrs):
    """Inference BatchNormalization: (x - mean) * (scale / sqrt(var + eps)) + bias, channels on
    axis 1 (the per-channel vectors broadcast as [C, 1, ...])."""
    x, scale, bias, mean, var = inputs[:5]
    tail = (1,) * (x.ndim - 2)
    params = [be.view(t, (t.size, *tail)) for t in (scale, bias, mean, var)]
    try:
        y = _broadcast(
            be, "(a0 - a3) * (a1 / sqrt(a4 + p0)) + a2", [x, *params], F32,
            attrs.get("epsilon", 1e-5),
        )  # fmt: skip
    finally:
        for p in params:
            be.release(p)
    return [y]


def _bn_supports(inputs, attrs):
    if attrs.get("training_mode", 0):
        return "BatchNormalization training_mode"
    if len(inputs[0][0]) < 2:
        return "BatchNormalization of rank < 2"
    return check(inputs[:5], FLOAT, math.prod(inputs[0][0]))


TABLE.kernel("BatchNormalization", since=9, supports=_bn_supports)(_batchnorm)
