"""Direct numpy expressions in signature plans (runtime/direct.py): same results as the kernels."""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat import ir
from ziggurat.errors import ExecutionError
from ziggurat.runtime.direct import direct_call
from ziggurat.runtime.executor import CompiledGraph
from ziggurat.runtime.plan import Plan

OPSETS = {"": 17}


def _vi(name, shape=None, elem=ir.dtypes.FLOAT):
    return ir.ValueInfo(name, ir.Type("tensor", elem, shape))


def _graph(nodes, inputs, outputs, inits=None):
    return ir.Graph(nodes=nodes, inputs=inputs, outputs=outputs, initializers=inits or {}, name="t")


def _mask_graph():
    """bert-tiny's attention-mask arithmetic and the heads' Split/Transpose, in small."""
    nodes = [
        ir.Node("Cast", ["m"], ["mb"], {"to": ir.dtypes.BOOL}),
        ir.Node("Gather", ["mb", "idx"], ["g"], {"axis": -1}),
        ir.Node("Not", ["g"], ["ng"]),
        ir.Node("And", ["ng", "rowok"], ["a"]),
        ir.Node("Expand", ["a", "shape"], ["e"]),
        ir.Node("Where", ["e", "zero", "neg"], ["bias"]),
        ir.Node("Expand", ["e", "shape"], ["e2"], name="same_shape"),
        ir.Node("Split", ["x", "sizes"], ["p", "q", "r"], {"axis": 1}),
        ir.Node("Transpose", ["q"], ["qt"], {"perm": [1, 0]}),
        ir.Node("Transpose", ["r"], ["rt"]),
        ir.Node("Cast", ["m"], ["mf"], {"to": ir.dtypes.FLOAT}),
    ]
    inits = {
        "idx": np.array([3, 0, 1, 2], np.int64),
        "rowok": np.array([[True], [False], [True]]),
        "shape": np.array([2, 3, 4], np.int64),
        "zero": np.array(0, np.float32),
        "neg": np.array(np.finfo(np.float32).min, np.float32),
        "sizes": np.array([1, 2, 3], np.int64),
    }
    inputs = [_vi("m", [4], ir.dtypes.INT64), _vi("x", [4, 6])]
    outputs = [_vi(n) for n in ("bias", "p", "qt", "rt", "mf", "e2")]
    return _graph(nodes, inputs, outputs, inits)


def test_direct_expressions_give_the_kernels_results():
    g = _mask_graph()
    planned, generic = CompiledGraph(g, OPSETS), CompiledGraph(g, OPSETS, specialize=False)
    rng = np.random.default_rng(0)
    m = np.array([1, 0, 2, 0], np.int64)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    spec = planned.signature_plan([m, x])
    kinds = {s.node.op_type: spec.fast[s.index][0] for s in spec.kept if s.index in spec.fast}
    assert kinds == {op: "split" if op == "Split" else "expr" for op in kinds}
    assert set(kinds) == {"Cast", "Gather", "Not", "And", "Expand", "Where", "Split", "Transpose"}
    same = next(s for s in spec.kept if s.node.name == "same_shape")
    assert spec.fast[same.index][1] == "{0}.copy()"  # nothing to broadcast
    for _ in range(3):  # new values, same signature: the specialised code
        m = rng.integers(0, 3, 4).astype(np.int64)
        x = rng.standard_normal((4, 6)).astype(np.float32)
        got, want = planned.run([m, x]), generic.run([m, x])
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    assert got[2].base is not None  # Split and Transpose stay views, as the kernels return


@pytest.mark.parametrize(
    "src,to,values",
    [
        (ir.dtypes.FLOAT, ir.dtypes.INT32, [1.5, np.nan, 1e30]),
        (ir.dtypes.DOUBLE, ir.dtypes.FLOAT, [1.5, np.nan, 1e300]),
        (ir.dtypes.INT64, ir.dtypes.FLOAT16, [1, -(2**40), 2**40]),
    ],
)
def test_casts_numpy_would_warn_on_keep_their_kernel(src, to, values):
    """The kernel silences NaN/overflow warnings (float -> int, narrowing float, -> float16):
    no direct astype there, and the run warns nothing."""
    nodes = [ir.Node("Cast", ["x"], ["y"], {"to": to})]
    cg = CompiledGraph(_graph(nodes, [_vi("x", [3], src)], [_vi("y")]), OPSETS)
    x = np.array(values, ir.dtypes.to_numpy(src))
    spec = cg.signature_plan([x])
    assert not spec.fast
    with np.errstate(all="raise"):
        assert cg.run([x])[0].dtype == ir.dtypes.to_numpy(to)


@pytest.mark.parametrize("axis,expected", [(-2, 0), (1, 1), (2, None), (-3, None)])
def test_gather_axis_is_normalised_or_left_to_the_kernel(axis, expected):
    """An axis out of range gets no expression (the kernel raises its own error)."""
    nodes = [ir.Node("Gather", ["x", "i"], ["y"], {"axis": axis})]
    g = _graph(nodes, [_vi("x", [3, 2]), _vi("i", [1], ir.dtypes.INT64)], [_vi("y")])
    step = Plan.build(g, OPSETS).steps[0]
    f32, i64 = np.dtype(np.float32), np.dtype(np.int64)
    fast = direct_call(step, [((3, 2), f32), ((1,), i64)], ((1, 2), f32), set())
    if expected is None:
        assert fast is None
    else:
        assert fast[1] == f"__np_take({{0}}, {{1}}, axis={expected})"


def test_gather_out_of_range_still_names_the_node():
    nodes = [ir.Node("Gather", ["x", "i"], ["y"], {"axis": 0}, name="gather_me")]
    g = _graph(nodes, [_vi("x", [3]), _vi("i", [2], ir.dtypes.INT64)], [_vi("y")])
    cg = CompiledGraph(g, OPSETS)
    spec = cg.signature_plan([np.zeros(3, np.float32), np.array([0, 2], np.int64)])
    assert spec.fast[0][0] == "expr"
    with pytest.raises(ExecutionError, match="gather_me"):
        cg.run([np.zeros(3, np.float32), np.array([0, 7], np.int64)])


def test_split_from_a_runtime_input_is_not_baked_in():
    """Split sizes fed as an input are not signature-static: the kernel keeps reading them."""
    nodes = [ir.Node("Split", ["x", "s"], ["a", "b"], {"axis": 0})]
    g = _graph(nodes, [_vi("x", [5]), _vi("s", [2], ir.dtypes.INT64)], [_vi("a"), _vi("b")])
    cg = CompiledGraph(g, OPSETS)
    x = np.arange(5, dtype=np.float32)
    for _ in range(4):
        cg.run([x, np.array([2, 3], np.int64)])
    a, b = cg.run([x, np.array([4, 1], np.int64)])
    assert a.tolist() == [0, 1, 2, 3] and b.tolist() == [4]
