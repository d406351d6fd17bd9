"""passes/fuse_residual.py: Dense(packed W) -> SkipLayerNorm becomes Dense(+ residual) -> LayerNorm."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ziggurat as zg
from ziggurat import ir
from ziggurat.backends.cpu import dnnl, gemm
from ziggurat.passes import fuse_residual

needs_dnnl = pytest.mark.skipif(not dnnl.available(), reason=f"oneDNN: {dnnl.unavailable_reason()}")
K = N = 512  # 2^18 weight elements: packed (passes/pack_weights.py MIN_ELEMENTS)


def _model(keep_sum: bool, dense_read_twice: bool = False):
    """x -> MatMul(W) + b -> Add(x) -> LayerNormalization [the sum also an output]."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((K, N)) * 0.05).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "b"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, N).astype(np.float32), "g"),
        numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["d"]),
        helper.make_node("Add", ["x", "d"], ["s"]),  # the Dense output as the second addend
        helper.make_node("LayerNormalization", ["s", "g", "beta"], ["y"], epsilon=1e-6),
    ]
    outs = ["y"] + (["s"] if keep_sum else []) + (["d2"] if dense_read_twice else [])
    if dense_read_twice:
        nodes.append(helper.make_node("Relu", ["d"], ["d2"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16, K])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _ops(sess) -> list[str]:
    return [n.op_type for n in sess._compiled.graph.nodes]


@needs_dnnl
@pytest.mark.parametrize("keep_sum", [False, True])
def test_residual_moves_into_the_dense_fp32(keep_sum):
    data = _model(keep_sum)
    x = np.random.default_rng(1).standard_normal((2, 16, K)).astype(np.float32)
    sess = zg.InferenceSession(data)
    assert _ops(sess) == ["Dense", "LayerNorm"]
    (dense,) = [n for n in sess._compiled.graph.nodes if n.op_type == "Dense"]
    assert dense.inputs[3] == "x" and (dense.outputs[0] == "s") == keep_sum
    got = sess.run(None, {"x": x})
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    # float32 reductions of length K + the add and normalization: tests/models' 5 eps sqrt(K) bound
    for g, r in zip(got, ref, strict=True):
        atol = 5 * 2.0**-23 * np.sqrt(K) * max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=0, atol=atol)


@needs_dnnl
def test_a_dense_read_elsewhere_keeps_its_skip_layer_norm():
    sess = zg.InferenceSession(_model(False, dense_read_twice=True))
    assert "SkipLayerNorm" in _ops(sess) and "LayerNorm" not in _ops(sess)


def test_unpacked_weight_is_left_alone():
    """Only Dense nodes whose weight pack_weights packed (oneDNN runs them) take the residual."""
    w = np.ones((4, 4), np.float32)
    g = ir.Graph(
        nodes=[
            ir.Node("Dense", ["x", "w"], ["d"], {"activation": ""}, domain="ziggurat"),
            ir.Node(
                "SkipLayerNorm",
                ["d", "x", "g"],
                ["y"],
                {"axis": -1, "epsilon": 1e-5},
                domain="ziggurat",
            ),
        ],  # fmt: skip
        inputs=[ir.ValueInfo("x")],
        outputs=[ir.ValueInfo("y")],
        initializers={"w": w, "g": np.ones(4, np.float32)},
    )
    fuse_residual.run(g)
    assert [n.op_type for n in g.nodes] == ["Dense", "SkipLayerNorm"]
    if dnnl.available():
        g.initializers["w"] = gemm.pack_weight(w)
        fuse_residual.run(g)
        assert [n.op_type for n in g.nodes] == ["Dense", "LayerNorm"]
        assert g.nodes[0].inputs == ["x", "w", "", "x"]
        g.lint()
