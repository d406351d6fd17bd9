"""Device kernels written once against an array namespace, shared by the CUDA and fake backends.

Each function here is ``fn(ns, arrays, attrs) -> list[array]``: ``ns`` is an ``ArrayNS`` (the
array module ``xp`` — numpy on the fake device, CuPy on a GPU — plus the few functions the array
API lacks, like ``erf``), ``arrays`` the node's inputs as that module's arrays (host numpy arrays
for the inputs ``kernels.HOST_INPUTS`` lists, ``None`` for omitted optional inputs), ``attrs`` the
bound attributes as the CPU kernel receives them. ``ARRAY_KERNELS`` lists them with their opset
ranges and ``supports`` checks; a backend turns them into ``KernelTable`` entries through its own
adapter (``build_table``), which moves its tensor type in and out, and may replace the hot ones
with native kernels (cuBLAS, CUDA raw kernels).

Semantics follow the ONNX spec of each op for the cases ``supports`` accepts; anything else is
refused with a reason and runs on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .kernels import Backend, DeviceKernel, KernelTable
from .xp_spatial import SPATIAL_KERNELS

Arrays = list[Any]
Meta = list[tuple[tuple[int, ...], np.dtype] | None]


@dataclass(frozen=True)
class ArrayNS:
    """An array module and the functions it lacks (``erf``: neither numpy nor the array API has
    it; CuPy's is in ``cupyx.scipy.special``)."""

    xp: Any
    erf: Callable[[Any], Any]


# -- supports() checks: None when the kernel can run these inputs, else the reason ----------------
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def floats_only(inputs: Meta, attrs: dict[str, Any]) -> str | None:
    """The data input (the first) must be floating point; the others are read as they are."""
    m = inputs[0] if inputs else None
    if m is not None and m[1] not in _FLOATS:
        return f"dtype {m[1]} (device kernel takes float16/32/64)"
    return None


def numeric(inputs: Meta, attrs: dict[str, Any]) -> str | None:
    for m in inputs:
        if m is not None and m[1].kind not in "fiub":
            return f"dtype {m[1]} (device kernel takes numeric tensors)"
    return None


# -- elementwise ---------------------------------------------------------------------------------
def _binary(name: str) -> Callable:
    def fn(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
        return [getattr(ns.xp, name)(a[0], a[1])]

    fn.__name__ = name
    return fn


def _div(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x, y = a
    if x.dtype.kind in "iu":  # ONNX integer division truncates toward zero (C semantics)
        q = ns.xp.abs(x) // ns.xp.abs(y)
        return [ns.xp.where((x < 0) != (y < 0), -q, q).astype(x.dtype)]
    return [ns.xp.divide(x, y)]


def _unary(fn: Callable[[ArrayNS, Any], Any]) -> Callable:
    def k(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
        return [fn(ns, a[0])]

    return k


def _relu(ns: ArrayNS, x: Any) -> Any:
    return ns.xp.maximum(x, x.dtype.type(0))


def _sigmoid(ns: ArrayNS, x: Any) -> Any:
    one = x.dtype.type(1)
    return one / (one + ns.xp.exp(-x))


def _gelu_erf(ns: ArrayNS, x: Any) -> Any:
    t = x.dtype.type
    return x * t(0.5) * (t(1) + ns.erf(x * t(1 / math.sqrt(2.0))))


def _gelu_tanh(ns: ArrayNS, x: Any) -> Any:
    t = x.dtype.type
    return t(0.5) * x * (t(1) + ns.xp.tanh(t(math.sqrt(2 / math.pi)) * (x + t(0.044715) * x**3)))


def _gelu(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    approx = attrs.get("approximate", "none")
    return [_gelu_tanh(ns, a[0]) if approx == "tanh" else _gelu_erf(ns, a[0])]


def _clip(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x = a[0]
    lo = a[1] if len(a) > 1 and a[1] is not None else None
    hi = a[2] if len(a) > 2 and a[2] is not None else None
    y = x
    if lo is not None:
        y = ns.xp.maximum(y, lo.astype(x.dtype))
    if hi is not None:
        y = ns.xp.minimum(y, hi.astype(x.dtype))
    return [y if y is not x else x.copy()]


def _where(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    return [ns.xp.where(a[0], a[1], a[2])]


def _cast(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    from ..ir import dtypes

    return [a[0].astype(dtypes.to_numpy(attrs["to"]))]


def _cast_supports(inputs: Meta, attrs: dict[str, Any]) -> str | None:
    from ..ir import dtypes

    try:
        to = np.dtype(dtypes.to_numpy(attrs["to"]))
    except Exception:
        return f"Cast to ONNX type {attrs.get('to')} has no device dtype"
    if to.kind not in "fiub" or (inputs[0] is not None and inputs[0][1].kind not in "fiub"):
        return f"Cast {inputs[0][1] if inputs[0] else '?'} -> {to} (numeric casts only)"
    if to.kind == "f" and to.itemsize == 2 and to != np.float16:
        return f"Cast to {to} (no bfloat16 on the device)"
    return None


# -- products ------------------------------------------------------------------------------------
def _matmul(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    return [ns.xp.matmul(a[0], a[1])]


def _gemm(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x, w = a[0], a[1]
    c = a[2] if len(a) > 2 else None
    if attrs.get("transA", 0):
        x = x.T
    if attrs.get("transB", 0):
        w = w.T
    t = x.dtype.type
    y = ns.xp.matmul(x, w)
    if attrs.get("alpha", 1.0) != 1.0:
        y = y * t(attrs["alpha"])
    if c is not None:
        beta = attrs.get("beta", 1.0)
        y = y + (c * t(beta) if beta != 1.0 else c)
    return [y]


def epilogue(ns: ArrayNS, y: Any, activation: str, lo: Any = None, hi: Any = None) -> Any:
    """The fused activations of ``ziggurat::Dense`` / ``FusedConv`` ('', relu, gelu, clip)."""
    if activation == "relu":
        return _relu(ns, y)
    if activation == "gelu":
        return _gelu_erf(ns, y)
    if activation == "clip":
        t = y.dtype.type
        return ns.xp.clip(y, t(lo), t(hi))
    return y


def _dense(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    y = ns.xp.matmul(a[0], a[1])
    if len(a) > 2 and a[2] is not None:
        y = y + a[2]
    return [epilogue(ns, y, attrs.get("activation", ""))]


def _dense_supports(inputs: Meta, attrs: dict[str, Any]) -> str | None:
    if attrs.get("activation", "") not in ("", "relu", "gelu", "clip"):
        return f"fused activation {attrs['activation']!r}"
    return floats_only(inputs, attrs)


# -- normalization, softmax, attention -----------------------------------------------------------
def _normalize(ns: ArrayNS, x: Any, n_axes: int, eps: float) -> tuple[Any, Any, Any]:
    """(normalized x, mean, 1/std) over the last ``n_axes`` axes, statistics in float32 at least."""
    xp = ns.xp
    cdt = np.float32 if x.dtype == np.float16 else x.dtype.type
    xc = x.astype(cdt)
    axes = tuple(range(x.ndim - n_axes, x.ndim))
    mean = xp.mean(xc, axis=axes, keepdims=True)
    d = xc - mean
    var = xp.mean(d * d, axis=axes, keepdims=True)
    inv = cdt(1) / xp.sqrt(var + cdt(eps))
    return (d * inv).astype(x.dtype), mean, inv


def _layer_norm(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x, scale = a[0], a[1]
    bias = a[2] if len(a) > 2 else None
    axis = attrs.get("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    y, mean, inv = _normalize(ns, x, x.ndim - axis, float(attrs.get("epsilon", 1e-5)))
    y = y * scale
    if bias is not None:
        y = y + bias
    return [y, mean, inv]


def _zig_layer_norm(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    y, _, _ = _normalize(ns, a[0], 1, float(attrs.get("epsilon", 1e-5)))
    y = y * a[1]
    return [y if len(a) < 3 or a[2] is None else y + a[2]]


def _skip_layer_norm(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    s = a[0] + a[1]
    axis = attrs.get("axis", -1)
    axis = axis + s.ndim if axis < 0 else axis
    y, _, _ = _normalize(ns, s, s.ndim - axis, float(attrs.get("epsilon", 1e-5)))
    y = y * a[2].reshape(s.shape[axis:])
    if len(a) > 3 and a[3] is not None:
        y = y + a[3].reshape(s.shape[axis:])
    return [y, s] if attrs.get("n_outputs", 1) >= 2 else [y]


def softmax(ns: ArrayNS, x: Any, axis: int = -1) -> Any:
    xp = ns.xp
    m = xp.max(x, axis=axis, keepdims=True)
    e = xp.exp(x - m)
    return e / xp.sum(e, axis=axis, keepdims=True)


def _softmax(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    return [softmax(ns, a[0], attrs.get("axis", -1))]


def _attention(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    q, k_t, v = a[0], a[1], a[2]
    mask = a[3] if len(a) > 3 else None
    scale = attrs.get("scale", 1.0)
    s = ns.xp.matmul(q * q.dtype.type(scale) if scale != 1.0 else q, k_t)
    if mask is not None:
        s = s + mask
    p = softmax(ns, s)
    if attrs.get("nan_to_zero", 0):
        p = ns.xp.where(ns.xp.isnan(p), p.dtype.type(0), p)
    return [ns.xp.matmul(p, v)]


# -- shape and indexing --------------------------------------------------------------------------
def _reshape(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x, shape = a[0], [int(d) for d in a[1]]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


def _flatten(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x = a[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


def _axes(a: Arrays, attrs: dict[str, Any], rank: int) -> list[int]:
    """Squeeze/Unsqueeze axes: input 1 (opset 13+) or the attribute, made non-negative."""
    vals = a[1] if len(a) > 1 and a[1] is not None else attrs.get("axes") or []
    return sorted(int(v) + rank if int(v) < 0 else int(v) for v in vals)


def _unsqueeze(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x = a[0]
    n = len(a[1]) if len(a) > 1 and a[1] is not None else len(attrs.get("axes") or [])
    shape = list(x.shape)
    for ax in _axes(a, attrs, x.ndim + n):
        shape.insert(ax, 1)
    return [x.reshape(shape)]


def _squeeze(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x = a[0]
    axes = _axes(a, attrs, x.ndim) or [i for i, d in enumerate(x.shape) if d == 1]
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in axes])]


def _transpose(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    perm = attrs.get("perm") or list(range(a[0].ndim))[::-1]
    return [ns.xp.ascontiguousarray(ns.xp.transpose(a[0], perm))]


def _concat(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    return [ns.xp.concatenate([x for x in a if x is not None], axis=attrs["axis"])]


def _gather(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x, idx = a
    axis = attrs.get("axis", 0)
    axis = axis + x.ndim if axis < 0 else axis
    idx = ns.xp.where(idx < 0, idx + x.shape[axis], idx)  # ONNX allows negative indices
    return [ns.xp.take(x, idx, axis=axis)]


def _gather_elements(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x, idx = a
    axis = attrs.get("axis", 0)
    axis = axis + x.ndim if axis < 0 else axis
    idx = ns.xp.where(idx < 0, idx + x.shape[axis], idx)
    return [ns.xp.take_along_axis(x, idx, axis=axis)]


def _expand(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x = a[0]
    shape = np.broadcast_shapes(tuple(x.shape), tuple(int(d) for d in a[1]))
    return [ns.xp.ascontiguousarray(ns.xp.broadcast_to(x, shape))]


def _slice(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    x = a[0]
    starts, ends = a[1], a[2]
    axes = a[3] if len(a) > 3 and a[3] is not None else range(len(starts))
    steps = a[4] if len(a) > 4 and a[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        ax = int(ax) + x.ndim if int(ax) < 0 else int(ax)
        lo, hi, step = slice(int(s), int(e), int(st)).indices(x.shape[ax])
        index[ax] = slice(lo, hi if hi >= 0 else None, step)
    return [ns.xp.ascontiguousarray(x[tuple(index)])]


def _split(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
    """Split-13/18: sizes from input 1 (host), else ``num_outputs`` chunks (the last may be
    smaller), else equal parts, one per node output."""
    x = a[0]
    axis = attrs.get("axis", 0)
    axis = axis + x.ndim if axis < 0 else axis
    length = x.shape[axis]
    sizes = [int(v) for v in a[1]] if len(a) > 1 and a[1] is not None and len(a[1]) else []
    if not sizes:
        n = attrs.get("num_outputs") or attrs.get("n_outputs", 1)
        chunk = -(-length // n) if attrs.get("num_outputs") else length // n
        sizes = [chunk] * (n - 1) + [length - chunk * (n - 1)]
    out, start = [], 0
    for size in sizes:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + size)
        out.append(ns.xp.ascontiguousarray(x[tuple(index)]))
        start += size
    return out


def _reduce(name: str) -> Callable:
    def fn(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
        x = a[0]
        axes = a[1] if len(a) > 1 and a[1] is not None else attrs.get("axes")
        if axes is None or len(axes) == 0:
            if attrs.get("noop_with_empty_axes", 0):
                return [x.copy()]
            axes = range(x.ndim)
        axes = tuple(int(v) + x.ndim if int(v) < 0 else int(v) for v in axes)
        keep = bool(attrs.get("keepdims", 1))
        return [getattr(ns.xp, name)(x, axis=axes, keepdims=keep).astype(x.dtype)]

    return fn


def _arg(name: str) -> Callable:
    def fn(ns: ArrayNS, a: Arrays, attrs: dict[str, Any]) -> Arrays:
        x = a[0]
        axis = attrs.get("axis", 0)
        axis = axis + x.ndim if axis < 0 else axis
        y = getattr(ns.xp, name)(x, axis=axis).astype(np.int64)
        return [ns.xp.expand_dims(y, axis) if attrs.get("keepdims", 1) else y]

    return fn


def _arg_supports(inputs: Meta, attrs: dict[str, Any]) -> str | None:
    if attrs.get("select_last_index", 0):
        return "select_last_index=1"
    return numeric(inputs, attrs)


KernelSpec = tuple[str, str, int, Callable, Callable | None]  # op, domain, since, fn, supports
_EW = {
    "Add": "add", "Sub": "subtract", "Mul": "multiply", "Equal": "equal", "Less": "less",
    "Greater": "greater", "LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal",
    "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor", "Max": "maximum",
    "Min": "minimum", "Pow": "power",
}  # fmt: skip
_UNARY: dict[str, Callable[[ArrayNS, Any], Any]] = {
    "Relu": _relu,
    "Sigmoid": _sigmoid,
    "Tanh": lambda ns, x: ns.xp.tanh(x),
    "Exp": lambda ns, x: ns.xp.exp(x),
    "Log": lambda ns, x: ns.xp.log(x),
    "Sqrt": lambda ns, x: ns.xp.sqrt(x),
    "Neg": lambda ns, x: -x,
    "Abs": lambda ns, x: ns.xp.abs(x),
    "Reciprocal": lambda ns, x: x.dtype.type(1) / x,
    "Erf": lambda ns, x: ns.erf(x),
    "Not": lambda ns, x: ns.xp.logical_not(x),
    "Identity": lambda ns, x: x.copy(),
}
_FLOAT_UNARY = {"Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Erf"}

ARRAY_KERNELS: list[KernelSpec] = [
    *[(op, "", 7 if op not in ("Max", "Min") else 8, _binary(n), numeric) for op, n in _EW.items()],
    ("Div", "", 7, _div, numeric),
    *[(op, "", 6, _unary(f), floats_only if op in _FLOAT_UNARY else numeric)
      for op, f in _UNARY.items()],
    ("Gelu", "", 20, _gelu, floats_only),
    ("Gelu", "ziggurat", 1, _unary(_gelu_erf), floats_only),
    ("GeluTanh", "ziggurat", 1, _unary(_gelu_tanh), floats_only),
    ("Clip", "", 11, _clip, numeric),
    ("Where", "", 9, _where, numeric),
    ("Cast", "", 6, _cast, _cast_supports),
    ("MatMul", "", 1, _matmul, floats_only),
    ("Gemm", "", 7, _gemm, floats_only),
    ("Dense", "ziggurat", 1, _dense, _dense_supports),
    ("LayerNormalization", "", 17, _layer_norm, floats_only),
    ("LayerNorm", "ziggurat", 1, _zig_layer_norm, floats_only),
    ("SkipLayerNorm", "ziggurat", 1, _skip_layer_norm, floats_only),
    ("Softmax", "", 13, _softmax, floats_only),
    ("FusedAttention", "ziggurat", 1, _attention, floats_only),
    ("Reshape", "", 5, _reshape, None),
    ("Flatten", "", 1, _flatten, None),
    ("Unsqueeze", "", 1, _unsqueeze, None),
    ("Squeeze", "", 1, _squeeze, None),
    ("Transpose", "", 1, _transpose, None),
    ("Concat", "", 4, _concat, numeric),
    ("Gather", "", 1, _gather, numeric),
    ("GatherElements", "", 11, _gather_elements, numeric),
    ("Expand", "", 8, _expand, numeric),
    ("Slice", "", 10, _slice, numeric),
    ("Split", "", 13, _split, numeric),
    ("ReduceMean", "", 1, _reduce("mean"), floats_only),
    ("ReduceSum", "", 1, _reduce("sum"), numeric),
    ("ReduceMax", "", 1, _reduce("max"), numeric),
    ("ArgMax", "", 1, _arg("argmax"), _arg_supports),
    ("ArgMin", "", 1, _arg("argmin"), _arg_supports),
    *SPATIAL_KERNELS,
]  # fmt: skip


def build_table(
    kind: str,
    adapt: Callable[[Callable], DeviceKernel],
    extra_supports: Callable[[Meta, dict[str, Any]], str | None] | None = None,
) -> KernelTable:
    """A ``KernelTable`` of every array kernel, each turned into a device kernel by ``adapt``
    (the backend's tensor in/out); ``extra_supports`` adds a backend-wide check (e.g. no f64)."""
    table = KernelTable(kind)
    for op, domain, since, fn, supports in ARRAY_KERNELS:
        table.kernel(op, domain=domain, since=since, supports=_both(supports, extra_supports))(
            adapt(fn)
        )
    return table


def _both(a: Callable | None, b: Callable | None) -> Callable | None:
    if a is None or b is None:
        return a or b

    def check(inputs: Meta, attrs: dict[str, Any]) -> str | None:
        return a(inputs, attrs) or b(inputs, attrs)

    return check


__all__ = ["ARRAY_KERNELS", "ArrayNS", "Backend", "build_table", "epilogue", "softmax"]
