"""Constant folding: constant subgraphs become initializers with the right values; random ops,
subgraph ops and oversized results stay as nodes; a small file cannot make folding allocate much."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ziggurat.formats.onnx import load_model
from ziggurat.passes import constant_fold


def _fold(nodes, inits, outputs=("y",), inputs=()):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model = load_model(m.SerializeToString())
    graph = constant_fold.run(model.graph, model.opsets)
    graph.lint()
    return graph


def test_constant_chain_becomes_an_initializer_with_its_value():
    a = np.array([1.0, -2.0, 3.0], np.float32)
    nodes = [
        helper.make_node("Add", ["a", "a"], ["b"]),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Mul", ["x", "c"], ["y"]),  # depends on the input: kept
    ]
    g = _fold(nodes, {"a": a}, inputs=["x"])
    assert [n.op_type for n in g.nodes] == ["Mul"]
    np.testing.assert_array_equal(g.initializers["c"], np.maximum(a + a, 0))
    assert g.initializers["c"].dtype == np.float32


def test_random_and_oversized_results_are_not_folded():
    shape = np.array([constant_fold.MAX_FOLDED_BYTES // 4 + 1], np.int64)  # one element too many
    nodes = [
        helper.make_node("RandomNormal", [], ["r"], shape=[2], dtype=TensorProto.FLOAT),
        helper.make_node("ConstantOfShape", ["s"], ["big"]),
        helper.make_node("ConstantOfShape", ["huge"], ["y"]),  # 2^62 elements: never evaluated
    ]
    g = _fold(nodes, {"s": shape, "huge": np.array([2**62], np.int64)}, outputs=("r", "big", "y"))
    assert [n.op_type for n in g.nodes] == ["RandomNormal", "ConstantOfShape", "ConstantOfShape"]


def test_total_folded_bytes_are_capped():
    n = constant_fold.MAX_FOLDED_TOTAL // (16 << 20) + 3  # 16 MiB each: 3 more than the cap holds
    shape = np.array([4 << 20], np.int64)
    nodes = [helper.make_node("ConstantOfShape", ["s"], [f"c{i}"]) for i in range(n)]
    g = _fold(nodes, {"s": shape}, outputs=[f"c{i}" for i in range(n)])
    folded = [k for k in g.initializers if k.startswith("c")]
    assert len(folded) == n - 3 and len(g.nodes) == 3
