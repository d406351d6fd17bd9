"""passes/cse.py: repeated computations are dropped, and only those."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import ziggurat as zg
from ziggurat.formats.onnx import load_model
from ziggurat.passes import cse, optimize


def _graph(nodes, inits, outputs, inputs=("mask",)):
    ins = [helper.make_tensor_value_info(n, TensorProto.BOOL, [1, 1, 4, 4]) for n in inputs]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "g", ins, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _f(name, v):
    return numpy_helper.from_array(np.array(v, np.float32), name)


def _per_layer_masks():
    """A BERT export's per-layer Where(mask, 0, -big) with per-layer copies of the constants,
    each feeding that layer's Add."""
    nodes, inits = [], []
    for layer in range(3):
        inits += [_f(f"zero{layer}", 0.0), _f(f"big{layer}", -3.4e38), _f(f"s{layer}", layer + 1.0)]
        nodes += [
            helper.make_node("Where", ["mask", f"zero{layer}", f"big{layer}"], [f"m{layer}"]),
            helper.make_node("Add", [f"m{layer}", f"s{layer}"], [f"y{layer}"]),
        ]
    return _graph(nodes, inits, [f"y{i}" for i in range(3)])


def test_per_layer_copies_of_one_mask_become_one():
    model = _per_layer_masks()
    m = load_model(model.SerializeToString())
    g = cse.run(m.graph)
    g.lint()
    assert [n.op_type for n in g.nodes].count("Where") == 1
    assert [n.op_type for n in g.nodes].count("Add") == 3  # different constants: kept
    mask = np.array([[[[1, 1, 0, 0]] * 4]], bool)
    data = model.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"mask": mask})
    got = zg.InferenceSession(data).run(None, {"mask": mask})
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_different_attributes_constants_and_signed_zeros_stay_apart():
    inits = [_f("zero", 0.0), _f("negzero", -0.0), _f("one", 1.0)]
    nodes = [
        helper.make_node("Where", ["mask", "zero", "one"], ["a"]),
        helper.make_node("Where", ["mask", "negzero", "one"], ["b"]),  # -0.0 is not 0.0
        helper.make_node("Cast", ["mask"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["mask"], ["d"], to=TensorProto.INT32),  # another attribute
        helper.make_node("Cast", ["d"], ["e"], to=TensorProto.FLOAT),
    ]
    m = load_model(_graph(nodes, inits, ["a", "b", "c", "e"]).SerializeToString())
    g = cse.run(m.graph)
    assert len(g.nodes) == 5


def test_graph_outputs_and_random_ops_are_not_merged():
    inits = [_f("zero", 0.0), _f("one", 1.0)]
    nodes = [
        helper.make_node("Where", ["mask", "zero", "one"], ["a"]),
        helper.make_node("Where", ["mask", "zero", "one"], ["b"]),  # a graph output: kept
        helper.make_node("RandomUniformLike", ["a"], ["r1"]),
        helper.make_node("RandomUniformLike", ["a"], ["r2"]),  # two draws differ
    ]
    m = load_model(_graph(nodes, inits, ["a", "b", "r1", "r2"]).SerializeToString())
    g = cse.run(m.graph)
    assert len(g.nodes) == 4


def test_basic_level_runs_it():
    m = load_model(_per_layer_masks().SerializeToString())
    g = optimize(m.graph, m.opsets, zg.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    assert [n.op_type for n in g.nodes].count("Where") == 1
    m = load_model(_per_layer_masks().SerializeToString())
    g = optimize(m.graph, m.opsets, zg.GraphOptimizationLevel.ORT_DISABLE_ALL)
    assert [n.op_type for n in g.nodes].count("Where") == 3
