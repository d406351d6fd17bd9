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


def _gpt2_like_model():
    """GPT-2's shape of things: 2-D Gemm-style MatMuls between Reshapes, the tanh GELU in its
    decomposed export form, and the residual added to the Reshape of the projection."""
    rng = np.random.default_rng(2)
    k3 = np.sqrt(2 / np.pi)
    consts = {
        "w1": (rng.standard_normal((K, N)) * 0.05), "b1": rng.standard_normal(N),
        "w2": (rng.standard_normal((N, K)) * 0.05), "b2": rng.standard_normal(K),
        "g": rng.uniform(0.5, 1.5, K), "beta": rng.standard_normal(K),
        "three": np.array(3.0), "c3": np.array(0.044715), "k": np.array(k3),
        "one": np.array(1.0), "half": np.array(0.5),
    }  # fmt: skip
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in consts.items()]
    inits += [numpy_helper.from_array(np.array(s, np.int64), n)
              for n, s in (("rows", [-1, K]), ("back", [2, 16, K]))]  # fmt: skip
    n = helper.make_node
    nodes = [
        n("Reshape", ["x", "rows"], ["x2"]),
        n("MatMul", ["x2", "w1"], ["m1"]), n("Add", ["m1", "b1"], ["h2"]),
        n("Reshape", ["h2", "back"], ["h"]),
        n("Pow", ["h", "three"], ["cube"]), n("Mul", ["cube", "c3"], ["t3"]),
        n("Add", ["h", "t3"], ["inner"]), n("Mul", ["inner", "k"], ["u"]), n("Tanh", ["u"], ["th"]),
        n("Add", ["th", "one"], ["a"]), n("Mul", ["h", "half"], ["hx"]), n("Mul", ["hx", "a"], ["act"]),
        n("Reshape", ["act", "rows"], ["act2"]),
        n("MatMul", ["act2", "w2"], ["m2"]), n("Add", ["m2", "b2"], ["p2"]),
        n("Reshape", ["p2", "back"], ["p"]),
        n("Add", ["p", "x"], ["s"]),
        n("LayerNormalization", ["s", "g", "beta"], ["y"], epsilon=1e-5),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@needs_dnnl
def test_gpt2_like_tanh_gelu_and_residual_through_reshapes():
    data = _gpt2_like_model()
    x = np.random.default_rng(3).standard_normal((2, 16, K)).astype(np.float32)
    sess = zg.InferenceSession(data)
    nodes = sess._compiled.graph.nodes
    ops = [n.op_type for n in nodes]
    assert "GeluTanh" not in ops and "SkipLayerNorm" not in ops and "LayerNorm" in ops
    dense = [n for n in nodes if n.op_type == "Dense"]
    assert [d.attrs["activation"] for d in dense] == ["gelu_tanh", ""]
    assert len(dense[1].inputs) == 4
    (got,) = sess.run(None, {"x": x})
    (ref,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    # two chained length-K reductions and a tanh GELU (a few ulps): tests/models' bound
    atol = 5 * 2.0**-23 * np.sqrt(2 * K) * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


@needs_dnnl
def test_dense_gelu_tanh_numpy_fallback_matches_the_native_one():
    """Where oneDNN cannot run it (here: a float64 input), the Dense kernel gives the same
    activation(x @ w + b) + r by numpy and GeluTanh's kernel."""
    from ziggurat.ops.fused import Dense

    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, K)).astype(np.float32)
    w = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
    b, r = rng.standard_normal(N).astype(np.float32), rng.standard_normal((1, 8, N))
    (native,) = Dense(x, gemm.pack_weight(w), b, r.astype(np.float32), activation="gelu_tanh")
    (portable,) = Dense(x.astype(np.float64), w.astype(np.float64), b, r, activation="gelu_tanh")
    z = x.astype(np.float64) @ w + b
    exact = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))) + r.reshape(8, N)
    atol = 5 * 2.0**-23 * np.sqrt(K) * max(1.0, float(np.abs(exact).max()))
    np.testing.assert_allclose(native, exact, rtol=0, atol=atol)
    np.testing.assert_allclose(portable, exact, rtol=0, atol=1e-12 * np.abs(exact).max() * K)


@needs_dnnl
def test_a_dense_output_a_subgraph_reads_is_left_alone():
    """A name read inside an If branch keeps its value: no residual folded into its Dense."""
    w = gemm.pack_weight(np.ones((4, 4), np.float32))
    branch = ir.Graph(
        nodes=[ir.Node("Identity", ["d"], ["o"])], outputs=[ir.ValueInfo("o")], name="then"
    )
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
            ir.Node("If", ["c"], ["z"], {"then_branch": branch, "else_branch": branch}),
        ],  # fmt: skip
        inputs=[ir.ValueInfo("x"), ir.ValueInfo("c")],
        outputs=[ir.ValueInfo("y"), ir.ValueInfo("z")],
        initializers={"w": w, "g": np.ones(4, np.float32)},
    )
    fuse_residual.run(g)
    assert [n.op_type for n in g.nodes] == ["Dense", "SkipLayerNorm", "If"]
