"""Differential property tests: Ziggurat against onnxruntime on random inputs.

For elementwise ops (unary, and binary/variadic with numpy broadcasting), reductions (axes,
keepdims) and shape ops (Transpose, Reshape, Concat, Slice, Squeeze, Unsqueeze, Expand, Tile),
hypothesis draws shapes (rank 0-4, dims 0-5, zero-size included), dtypes (float32, float64,
int32, int64, and float16 where onnxruntime has the kernel) and attributes; each example runs
one single-node model in both engines and compares dtype and shape exactly and values within a
per-dtype tolerance. Examples onnxruntime itself rejects are skipped. Deterministic
(``derandomize=True``) and sized to run in well under 20 s.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402
from onnx import helper  # noqa: E402

import ziggurat as zg  # noqa: E402

OPSET = 21
F16, F32, F64, I32, I64 = (np.dtype(t) for t in ("float16", "float32", "float64", "int32", "int64"))
FLOATS = (F32, F64, F16)
NUMERIC = (F32, F64, I32, I64, F16)


def _settings(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# -- building and running one node ------------------------------------------------------------
@functools.cache
def _sessions(op: str, in_dtypes: tuple, attrs: tuple, n_out: int = 1):
    """(ziggurat session, onnxruntime session) for one node; inputs have unknown shapes so a
    session serves every example of the same op, dtypes and attributes. onnxruntime's session
    is None when it has no kernel for the combination."""
    names = [f"x{i}" if t is not None else "" for i, t in enumerate(in_dtypes)]
    inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(t), None)
        for n, t in zip(names, in_dtypes)
        if t is not None
    ]
    while names and names[-1] == "":
        names.pop()
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **dict(attrs))
    graph = helper.make_graph(
        [node], op, inputs, [helper.make_value_info(o, onnx.TypeProto()) for o in outs]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)
    data = onnx.shape_inference.infer_shapes(model, strict_mode=True).SerializeToString()
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        ref = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception:  # NOT_IMPLEMENTED: no onnxruntime kernel for these dtypes
        ref = None
    return zg.InferenceSession(data), ref


def ort_supports(op: str, in_dtypes: tuple, attrs: tuple = ()) -> bool:
    return _sessions(op, in_dtypes, attrs)[1] is not None


TOLERANCE = {  # dtype -> (rtol, atol); reductions accumulate in a different order, so looser
    "float16": (2e-3, 1e-3),
    "float32": (2e-6, 1e-6),
    "float64": (1e-12, 1e-13),
}
REDUCE_TOLERANCE = {"float16": (1e-2, 1e-2), "float32": (1e-5, 1e-5), "float64": (1e-10, 1e-12)}


def check(op: str, inputs: list, attrs: dict | None = None, tol: dict = TOLERANCE, n_out: int = 1):
    """Run ``op`` on both engines and compare; skip the example if onnxruntime rejects it."""
    attrs_key = tuple(sorted((attrs or {}).items(), key=lambda kv: kv[0]))
    attrs_key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs_key)
    in_dtypes = tuple(None if x is None else x.dtype for x in inputs)
    zsess, osess = _sessions(op, in_dtypes, attrs_key, n_out)
    assume(osess is not None)
    feeds = {f"x{i}": x for i, x in enumerate(inputs) if x is not None}
    try:
        with np.errstate(all="ignore"):
            expected = osess.run(None, feeds)
    except Exception:
        assume(False)  # onnxruntime rejects this input (e.g. a zero-size case it does not do)
    with np.errstate(all="ignore"):
        got = zsess.run(None, feeds)
    what = f"{op} {attrs or ''} on {[(x.dtype.name, x.shape) for x in inputs if x is not None]}"
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype, f"{what}: dtype {g.dtype}, onnxruntime gives {e.dtype}"
        assert g.shape == e.shape, f"{what}: shape {g.shape}, onnxruntime gives {e.shape}"
        if e.dtype.kind == "f":
            rtol, atol = tol[e.dtype.name]
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
        else:
            np.testing.assert_array_equal(g, e, err_msg=what)


# -- strategies ---------------------------------------------------------------------------------
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


def elements(dtype: np.dtype, lo: float = -4.0, hi: float = 4.0, nonzero: bool = False):
    if dtype.kind == "f":
        s = st.floats(lo, hi, width=dtype.itemsize * 8, allow_subnormal=False)
        return s.filter(lambda v: abs(v) > 1e-3) if nonzero else s
    if dtype.kind == "b":
        return st.booleans()
    s = st.integers(int(lo), int(hi))
    return s.filter(lambda v: v != 0) if nonzero else s


def array(draw, dtype, shape, **kw) -> np.ndarray:
    return draw(hnp.arrays(dtype, shape, elements=elements(dtype, **kw)))


def supported(op: str, dtypes, arity: int = 1, attrs: tuple = ()) -> list[np.dtype]:
    """The dtypes (of all ``arity`` inputs) for which onnxruntime has a kernel."""
    return [t for t in dtypes if ort_supports(op, (t,) * arity, attrs)]


# -- elementwise unary ------------------------------------------------------------------------
UNARY = {
    **dict.fromkeys(["Abs", "Neg", "Sign", "Relu"], NUMERIC),
    **dict.fromkeys(
        "Exp Log Sqrt Reciprocal Sin Cos Tan Asin Acos Atan Sinh Cosh Tanh Asinh Acosh Atanh Erf "
        "Sigmoid Softplus Softsign Ceil Floor Round Elu Selu Celu HardSigmoid HardSwish Mish "
        "LeakyRelu ThresholdedRelu Gelu IsNaN IsInf".split(),
        FLOATS,
    ),
    "Not": (np.dtype(bool),),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@_settings(8)
@given(data=st.data())
def test_unary(op, data):
    dtypes = supported(op, UNARY[op])
    assume(dtypes)
    dtype = data.draw(st.sampled_from(dtypes))
    check(op, [array(data.draw, dtype, data.draw(shapes))])


# -- elementwise binary and variadic, with numpy broadcasting -----------------------------------
BINARY = {
    **dict.fromkeys(["Add", "Sub", "Mul", "Div", "Pow", "Mod"], NUMERIC),
    **dict.fromkeys(["Max", "Min", "Sum", "Mean"], NUMERIC),  # variadic
    **dict.fromkeys(["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"], NUMERIC),
    **dict.fromkeys(["BitwiseAnd", "BitwiseOr", "BitwiseXor"], (I32, I64)),
    **dict.fromkeys(["And", "Or", "Xor"], (np.dtype(bool),)),
    "BitShift": (np.dtype("uint8"), np.dtype("uint32"), np.dtype("uint64")),
}
VARIADIC = {"Max", "Min", "Sum", "Mean"}


def _binary_attrs(op: str, dtype: np.dtype) -> dict:
    if op == "Mod":
        return {"fmod": int(dtype.kind == "f")}  # float Mod must be fmod
    if op == "BitShift":
        return {"direction": "LEFT"}
    return {}


@pytest.mark.parametrize("op", sorted(BINARY))
@_settings(20)
@given(data=st.data())
def test_binary_broadcast(op, data):
    n = data.draw(st.integers(1, 3)) if op in VARIADIC else 2
    dtypes = [t for t in BINARY[op] if ort_supports(op, (t,) * n, _key(_binary_attrs(op, t)))]
    assume(dtypes)
    dtype = data.draw(st.sampled_from(dtypes))
    bshapes = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=4, max_side=5)
    )
    if op == "Pow":  # keep integer powers small and non-negative: no overflow, no 0**-1
        base = array(data.draw, dtype, bshapes.input_shapes[0], lo=-5, hi=5)
        inputs = [base, array(data.draw, dtype, bshapes.input_shapes[1], lo=0, hi=4)]
    elif op == "BitShift":
        inputs = [
            array(data.draw, dtype, bshapes.input_shapes[0], lo=0, hi=200),
            array(data.draw, dtype, bshapes.input_shapes[1], lo=0, hi=7),
        ]
    else:  # a nonzero divisor: integer division by zero is undefined (and crashes onnxruntime)
        inputs = [
            array(data.draw, dtype, s, lo=-50, hi=50, nonzero=(i == 1 and op in ("Div", "Mod")))
            for i, s in enumerate(bshapes.input_shapes)
        ]
    check(op, inputs, _binary_attrs(op, dtype))


def _key(attrs: dict) -> tuple:
    return tuple(sorted(attrs.items()))


# -- reductions -------------------------------------------------------------------------------
REDUCE = {
    **dict.fromkeys(
        "ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceSumSquare".split(),
        NUMERIC,
    ),
    **dict.fromkeys(["ReduceLogSum", "ReduceLogSumExp"], FLOATS),
    **dict.fromkeys(["ArgMax", "ArgMin"], NUMERIC),
}


@st.composite
def axes_for(draw, rank: int):
    """None (reduce all), or unique axes in [-rank, rank) (possibly empty)."""
    if draw(st.booleans()):
        return None
    picked = draw(st.lists(st.integers(0, max(rank - 1, 0)), unique=True, max_size=rank))
    return [a - rank if draw(st.booleans()) else a for a in picked] if rank else []


@pytest.mark.parametrize("op", sorted(REDUCE))
@_settings(25)
@given(data=st.data())
def test_reduce(op, data):
    shape = data.draw(shapes)
    rank = len(shape)
    if op in ("ArgMax", "ArgMin"):
        assume(rank > 0)
        attrs = {
            "axis": data.draw(st.integers(-rank, rank - 1)),
            "keepdims": data.draw(st.sampled_from([0, 1])),
            "select_last_index": data.draw(st.sampled_from([0, 1])),
        }
        dtypes = supported(op, REDUCE[op], attrs=_key(attrs))
        assume(dtypes)
        dtype = data.draw(st.sampled_from(dtypes))
        check(op, [array(data.draw, dtype, shape, lo=-3, hi=3)], attrs)  # narrow: ties happen
        return
    axes = data.draw(axes_for(rank))
    attrs = {
        "keepdims": data.draw(st.sampled_from([0, 1])),
        "noop_with_empty_axes": data.draw(st.sampled_from([0, 1])),
    }
    dtypes = [t for t in REDUCE[op] if ort_supports(op, (t, I64), _key(attrs))]
    assume(dtypes)
    dtype = data.draw(st.sampled_from(dtypes))
    lo, hi = (-2, 2) if op == "ReduceProd" else (-4, 4)  # products of up to 625 values
    if op in ("ReduceL2", "ReduceSumSquare") and dtype.kind == "f":
        lo, hi = -2, 2
    x = array(data.draw, dtype, shape, lo=lo, hi=hi)
    check(op, [x, None if axes is None else np.array(axes, np.int64)], attrs, REDUCE_TOLERANCE)


# -- shape ops --------------------------------------------------------------------------------
SHAPE_DTYPES = (F32, F64, I32, I64, F16)


def _data(data, shape=None):
    dtype = data.draw(st.sampled_from(SHAPE_DTYPES))
    return array(data.draw, dtype, data.draw(shapes) if shape is None else shape, lo=-9, hi=9)


@_settings(40)
@given(data=st.data())
def test_transpose(data):
    x = _data(data)
    perm = data.draw(st.none() | st.permutations(range(x.ndim)))
    check("Transpose", [x], {} if perm is None else {"perm": list(perm)})


@_settings(40)
@given(data=st.data())
def test_reshape(data):
    x = _data(data)
    dims = list(data.draw(st.permutations(x.shape)))
    if len(dims) >= 2 and data.draw(st.booleans()):  # merge two neighbours
        i = data.draw(st.integers(0, len(dims) - 2))
        dims[i : i + 2] = [dims[i] * dims[i + 1]]
    dims = dims + [1] * data.draw(st.integers(0, 1))
    if dims and x.size and data.draw(st.booleans()):  # -1 is ambiguous for zero-size data
        dims[data.draw(st.integers(0, len(dims) - 1))] = -1
    check("Reshape", [x, np.array(dims, np.int64)])


@_settings(40)
@given(data=st.data())
def test_concat(data):
    base = list(data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)))
    axis = data.draw(st.integers(-len(base), len(base) - 1))
    dtype = data.draw(st.sampled_from(SHAPE_DTYPES))
    inputs = []
    for _ in range(data.draw(st.integers(1, 3))):
        shape = list(base)
        shape[axis] = data.draw(st.integers(0, 5))
        inputs.append(array(data.draw, dtype, tuple(shape), lo=-9, hi=9))
    check("Concat", inputs, {"axis": axis})


BIG = np.iinfo(np.int64).max


@_settings(60)
@given(data=st.data())
def test_slice(data):
    x = _data(data, data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)))
    r = x.ndim
    axes = data.draw(st.lists(st.integers(0, r - 1), unique=True, min_size=1, max_size=r))
    axes = [a - r if data.draw(st.booleans()) else a for a in axes]
    bound = st.integers(-7, 7) | st.sampled_from([BIG, -BIG])
    starts = [data.draw(bound) for _ in axes]
    ends = [data.draw(bound) for _ in axes]
    steps = [data.draw(st.integers(-3, 3).filter(bool)) for _ in axes]
    with_axes = data.draw(st.booleans()) or any(s != 1 for s in steps)
    with_steps = any(s != 1 for s in steps) or data.draw(st.booleans())
    i64 = functools.partial(np.array, dtype=np.int64)
    inputs = [x, i64(starts), i64(ends)]
    if with_axes or with_steps:
        inputs.append(i64(axes) if with_axes else None)
    if with_steps:
        inputs.append(i64(steps))
    check("Slice", inputs)


@_settings(40)
@given(data=st.data())
def test_squeeze(data):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3))
    x = _data(data, shape)
    ones = [i for i, d in enumerate(shape) if d == 1]
    if data.draw(st.booleans()) or not ones:
        check("Squeeze", [x])
        return
    axes = data.draw(st.lists(st.sampled_from(ones), unique=True, min_size=1))
    axes = [a - x.ndim if data.draw(st.booleans()) else a for a in axes]
    check("Squeeze", [x, np.array(axes, np.int64)])


@_settings(40)
@given(data=st.data())
def test_unsqueeze(data):
    x = _data(data, data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
    k = data.draw(st.integers(1, 2))
    out_rank = x.ndim + k
    axes = data.draw(st.lists(st.integers(0, out_rank - 1), unique=True, min_size=k, max_size=k))
    axes = [a - out_rank if data.draw(st.booleans()) else a for a in axes]
    check("Unsqueeze", [x, np.array(axes, np.int64)])


@_settings(40)
@given(data=st.data())
def test_expand(data):
    pair = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=5)
    )
    x = _data(data, pair.input_shapes[0])
    check("Expand", [x, np.array(pair.input_shapes[1], np.int64)])


@_settings(40)
@given(data=st.data())
def test_tile(data):
    x = _data(data, data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4)))
    repeats = [data.draw(st.integers(0, 3)) for _ in range(x.ndim)]
    check("Tile", [x, np.array(repeats, np.int64)])
