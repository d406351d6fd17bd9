"""Model-local functions are inlined: names bound and made unique, attribute references resolved.

The semantic check runs onnxruntime on the original model (which executes the functions itself) and on
Ziggurat's inlined graph written back to ONNX, and compares the outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from ziggurat.errors import ModelLoadError
from ziggurat.formats.onnx import load_model
from ziggurat.ir import Graph, Model

F32 = TP.FLOAT


def _ref(name: str, ref: str, atype: int) -> onnx.AttributeProto:
    a = onnx.AttributeProto(name=name, ref_attr_name=ref, type=atype)
    return a


def _scale_fn() -> onnx.FunctionProto:
    """Y = X * alpha + S; alpha is a function attribute with default 2.0; 'axis' has no default."""
    c = helper.make_node("Constant", [], ["c"])
    c.attribute.append(_ref("value_float", "alpha", onnx.AttributeProto.FLOAT))
    sm = helper.make_node("Softmax", ["t"], ["u"])
    sm.attribute.append(_ref("axis", "axis", onnx.AttributeProto.INT))
    fn = helper.make_function(
        "local", "Scale", ["X", "S"], ["Y", "T"],
        [c, helper.make_node("Mul", ["X", "c"], ["t"]), sm, helper.make_node("Add", ["u", "S"], ["Y"])],
        [helper.make_opsetid("", 18)], attributes=["axis"],
    )  # fmt: skip
    fn.attribute_proto.append(helper.make_attribute("alpha", 2.0))
    fn.output[1] = "t"  # second output exposes an internal value
    return fn


def _outer_fn() -> onnx.FunctionProto:
    """Calls Scale twice and branches with If on an internal value (a subgraph reading fn scope)."""
    call = helper.make_node("Scale", ["A", "A"], ["b", "unused"], domain="local", alpha=0.5)
    call2 = helper.make_node("Scale", ["b", "A"], ["d", "e"], domain="local", axis=0)
    then = helper.make_graph(
        [helper.make_node("Neg", ["d"], ["r"])],
        "then",
        [],
        [helper.make_tensor_value_info("r", F32, None)],
    )
    els = helper.make_graph(
        [helper.make_node("Identity", ["e"], ["r2"])],
        "else",
        [],
        [helper.make_tensor_value_info("r2", F32, None)],
    )
    cond = helper.make_node("ReduceMax", ["d"], ["m"], keepdims=0)
    gt = helper.make_node("Greater", ["m", "zero"], ["flag"])
    zero = helper.make_node("Constant", [], ["zero"], value_float=0.0)
    iff = helper.make_node("If", ["flag"], ["Z"], then_branch=then, else_branch=els)
    return helper.make_function(
        "local", "Outer", ["A"], ["Z"], [call, call2, zero, cond, gt, iff],
        [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
    )  # fmt: skip


def _model(nodes, functions, inputs=("x",), outputs=("y",)) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "main",
        [helper.make_tensor_value_info(n, F32, [2, 3]) for n in inputs],
        [helper.make_tensor_value_info(n, F32, None) for n in outputs],
    )  # fmt: skip
    return helper.make_model(
        g, functions=functions,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
    )  # fmt: skip


def _to_onnx_graph(g: Graph) -> onnx.GraphProto:
    def attr_value(v):
        if isinstance(v, np.ndarray):
            return numpy_helper.from_array(v)
        if isinstance(v, Graph):
            return _to_onnx_graph(v)
        return v

    nodes = [
        helper.make_node(
            n.op_type,
            n.inputs,
            n.outputs,
            name=n.name,
            domain=n.domain,
            **{k: attr_value(v) for k, v in n.attrs.items()},
        )  # fmt: skip
        for n in g.nodes
    ]

    def vi(v):
        return helper.make_tensor_value_info(
            v.name, v.type.elem_type if v.type else 0, v.type.shape if v.type else None
        )

    return helper.make_graph(
        nodes, g.name, [vi(v) for v in g.inputs], [vi(v) for v in g.outputs],
        [numpy_helper.from_array(a, k) for k, a in g.initializers.items()],
    )  # fmt: skip


def _run_both(mp: onnx.ModelProto, m: Model) -> None:
    assert not any(n.domain == "local" for n in m.graph.nodes)
    m.graph.lint()
    ours = helper.make_model(
        _to_onnx_graph(m.graph),
        opset_imports=[helper.make_opsetid(d, v) for d, v in m.opsets.items()],
    )
    ours.ir_version = mp.ir_version
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal((2, 3)).astype(np.float32) for i in mp.graph.input}
    want = ort.InferenceSession(mp.SerializeToString()).run(None, feeds)
    got = ort.InferenceSession(ours.SerializeToString()).run(None, feeds)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_ref_attrs_caller_default_and_dropped():
    mp = _model(
        [
            helper.make_node("Scale", ["x", "x"], ["y", "t1"], domain="local", alpha=3.0, axis=0),
            helper.make_node("Scale", ["y", "x"], ["y2", ""], domain="local"),  # default, no axis
        ],
        [_scale_fn()],
        outputs=("y2", "t1"),
    )
    m = load_model(mp.SerializeToString())
    consts = [n for n in m.graph.nodes if n.op_type == "Constant"]
    assert [c.attrs for c in consts] == [{"value_float": 3.0}, {"value_float": 2.0}]
    softmaxes = [n for n in m.graph.nodes if n.op_type == "Softmax"]
    assert softmaxes[0].attrs == {"axis": 0} and softmaxes[1].attrs == {}
    muls = [n for n in m.graph.nodes if n.op_type == "Mul"]
    assert muls[0].inputs[0] == "x" and muls[1].inputs[0] == "y"
    assert muls[0].outputs == ["t1"]  # formal output bound to the caller's name
    assert muls[1].outputs[0] != "t" and muls[1].outputs[0] != muls[0].outputs[0]
    _run_both(mp, m)


def test_nested_functions_and_subgraphs_inside_functions():
    mp = _model(
        [helper.make_node("Outer", ["x"], ["y"], domain="local")], [_outer_fn(), _scale_fn()]
    )
    m = load_model(mp.SerializeToString())
    ops = [n.op_type for n in m.graph.nodes]
    assert ops.count("Mul") == 2 and "If" in ops and "Scale" not in ops
    iff = next(n for n in m.graph.nodes if n.op_type == "If")
    names = {n.outputs[0] for n in m.graph.nodes}
    free = iff.attrs["then_branch"].free_names() | iff.attrs["else_branch"].free_names()
    assert free <= names  # subgraph reads were renamed along with the values they read
    assert iff.outputs == ["y"]
    _run_both(mp, m)


def test_call_inside_a_subgraph_of_the_main_graph():
    body = helper.make_graph(
        [helper.make_node("Scale", ["x", "x"], ["r", ""], domain="local", axis=1)], "then", [],
        [helper.make_tensor_value_info("r", F32, None)],
    )  # fmt: skip
    els = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["r2"])], "else", [],
        [helper.make_tensor_value_info("r2", F32, None)],
    )  # fmt: skip
    mp = _model(
        [
            helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
            helper.make_node("Constant", [], ["lo"], value_float=-100.0),
            helper.make_node("Greater", ["m", "lo"], ["c"]),
            helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=els),
        ],
        [_scale_fn()],
    )
    m = load_model(mp.SerializeToString())
    then = m.graph.nodes[-1].attrs["then_branch"]
    assert "Scale" not in [n.op_type for n in then.nodes] and len(then.nodes) == 4
    _run_both(mp, m)


def test_missing_optional_input_and_returned_input():
    fn = helper.make_function(
        "local", "Pass", ["A", "B"], ["A", "C"],
        [helper.make_node("Identity", ["A"], ["C"])], [helper.make_opsetid("", 18)],
    )  # fmt: skip
    mp = _model(
        [helper.make_node("Pass", ["x"], ["y", "z"], domain="local")], [fn], outputs=("y", "z")
    )
    m = load_model(mp.SerializeToString())
    assert [(n.op_type, n.inputs, n.outputs) for n in m.graph.nodes] == [
        ("Identity", ["x"], ["z"]),
        ("Identity", ["x"], ["y"]),
    ]


def test_recursive_function_is_refused():
    fn = helper.make_function(
        "local", "Loop", ["A"], ["B"], [helper.make_node("Loop", ["A"], ["B"], domain="local")],
        [helper.make_opsetid("local", 1)],
    )  # fmt: skip
    mp = _model([helper.make_node("Loop", ["x"], ["y"], domain="local")], [fn])
    with pytest.raises(ModelLoadError, match="recursive"):
        load_model(mp.SerializeToString())


def test_function_opsets_merge_and_uncalled_functions_are_ignored():
    fn = helper.make_function(
        "local", "Ms", ["A"], ["B"], [helper.make_node("Gelu", ["A"], ["B"], domain="com.microsoft")],
        [helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("", 17)],
    )  # fmt: skip
    unused = helper.make_function(
        "local", "Unused", ["A"], ["B"], [], [helper.make_opsetid("x.y", 3)]
    )
    mp = _model([helper.make_node("Ms", ["x"], ["y"], domain="local")], [fn, unused])
    m = load_model(mp.SerializeToString())
    assert m.opsets == {"": 18, "local": 1, "com.microsoft": 1}  # model's ai.onnx version wins
    assert [n.op_type for n in m.graph.nodes] == ["Gelu"]


def test_overloads_pick_the_right_function():
    def fn(overload, op):
        f = helper.make_function(
            "local",
            "F",
            ["A"],
            ["B"],
            [helper.make_node(op, ["A"], ["B"])],
            [helper.make_opsetid("", 18)],
        )
        f.overload = overload
        return f

    n1 = helper.make_node("F", ["x"], ["y"], domain="local")
    n1.overload = "neg"
    n2 = helper.make_node("F", ["y"], ["z"], domain="local")
    n2.overload = "abs"
    mp = _model([n1, n2], [fn("neg", "Neg"), fn("abs", "Abs")], outputs=("z",))
    m = load_model(mp.SerializeToString())
    assert [n.op_type for n in m.graph.nodes] == ["Neg", "Abs"]


def test_attribute_reference_outside_a_function_is_dropped():
    node = helper.make_node("Softmax", ["x"], ["y"])
    node.attribute.append(_ref("axis", "axis", onnx.AttributeProto.INT))
    m = load_model(_model([node], []).SerializeToString())
    assert m.graph.nodes[0].attrs == {}
