"""fuse_quant_matmul (quantize_dynamic's MatMulInteger chains -> QDense), pack_int8 and the
enable_quantization pass (quantize_weights), on models written by onnxruntime's quantize_dynamic
and on a float transformer block."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import ziggurat as zg
from tests.models import builders
from ziggurat.backends.cpu import int8
from ziggurat.formats.onnx import load_model
from ziggurat.passes import constant_fold, dce, fuse_gelu, fuse_quant_matmul, pack_int8
from ziggurat.passes.pipeline import optimize

K, H, N = 48, 64, 24


def _float_mlp(rng) -> bytes:
    """x -> MatMul(W1) + b1 -> erf-GELU -> MatMul(W2) + b2 (BERT's FFN shape, small)."""
    inits = {
        "w1": rng.standard_normal((K, H)).astype(np.float32) * 0.2,
        "b1": rng.standard_normal(H).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((H, N)).astype(np.float32) * 0.2,
        "b2": rng.standard_normal(N).astype(np.float32) * 0.1,
        "sqrt2": np.array(np.sqrt(2), np.float32),
        "one": np.array(1, np.float32),
        "half": np.array(0.5, np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["b1", "m1"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["h", "e1"], ["g0"]),
        helper.make_node("Mul", ["g0", "half"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "ffn",
        [helper.make_tensor_value_info("x", 1, ["b", "s", K])],
        [helper.make_tensor_value_info("y", 1, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture
def quantized(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    rng = np.random.default_rng(21)
    src, dst = tmp_path / "ffn.onnx", tmp_path / "ffn.int8.onnx"
    src.write_bytes(_float_mlp(rng))
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    return str(dst), rng.standard_normal((2, 16, K)).astype(np.float32)


def test_chains_become_qdense_with_bias_and_gelu(quantized):
    path, _ = quantized
    m = load_model(path)
    g = m.graph
    constant_fold.run(g, m.opsets)
    dce.run(g)
    fuse_gelu.run(g)
    dce.run(g)
    fuse_quant_matmul.run(g)
    dce.run(g)
    g.lint()
    ops = [n.op_type for n in g.nodes]
    assert "MatMulInteger" not in ops and "Cast" not in ops
    qd = [n for n in g.nodes if n.op_type == "QDense"]
    assert [n.attrs["activation"] for n in qd] == ["gelu", ""]
    assert all(n.inputs[6] for n in qd)  # both biases folded in
    assert ops.count("DynamicQuantizeLinear") == 2


def _tolerance(path: str, x: np.ndarray) -> float:
    """The engines' integer products are exact and their first quantization identical; their
    erf-GELUs differ in float rounding, which may move an element of the re-quantized hidden layer
    g across a rounding tie: one step of g (its scale, read from onnxruntime) times the largest
    weight step of W2 (scale x 127) per flipped element; allow two per output row, plus float32
    rounding of the result."""
    import onnx

    m = onnx.load(path)
    m.graph.output.append(helper.make_tensor_value_info("g_scale", 1, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    y, g_scale = sess.run(None, {"x": x})
    w2_scale = next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name == "w2_scale")
    return 2 * float(g_scale) * float(np.max(w2_scale)) * 127 + 4 * float(
        np.spacing(np.abs(y).max())
    )


@pytest.mark.parametrize("path_kind", ["native", "numpy"])
def test_fused_matches_onnxruntime_and_the_unfused_graph(quantized, path_kind, monkeypatch):
    if path_kind == "numpy":  # the portable integer path (no VNNI/AMX, ZIGGURAT_DNNL=0)
        monkeypatch.setattr(int8, "native", lambda: False)
    elif not int8.native():
        pytest.skip("oneDNN int8 needs VNNI/AMX")
    path, x = quantized
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    fused = zg.InferenceSession(path).run(None, {"x": x})[0]
    so = zg.SessionOptions(graph_optimization_level=zg.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    plain = zg.InferenceSession(path, so).run(None, {"x": x})[0]
    assert fused.dtype == ref.dtype == np.float32 and fused.shape == ref.shape
    tol = _tolerance(path, x)
    assert tol < 0.05 * np.abs(ref).max()  # the bound is tight enough to catch a wrong epilogue
    np.testing.assert_allclose(fused, ref, rtol=0, atol=tol)
    np.testing.assert_allclose(plain, ref, rtol=0, atol=tol)


def test_pack_int8_keeps_results_and_holds_int8():
    if not int8.native():
        pytest.skip("packing needs oneDNN's int8 matmul (VNNI/AMX)")
    rng = np.random.default_rng(22)
    w = rng.integers(-127, 128, (512, 256)).astype(np.int8)  # above pack_int8.MIN_ELEMENTS
    from ziggurat import ir

    g = ir.Graph(
        nodes=[ir.Node("QDense", ["qa", "w", "s", "ws", "zp"], ["y"], {"activation": ""},
                       domain="ziggurat")],
        inputs=[], outputs=[], initializers={"w": w},
    )  # fmt: skip
    pack_int8.run(g)
    p = g.initializers["w"]
    assert isinstance(p, int8.PackedInt8) and p.dtype == np.int8 and p.nbytes == w.nbytes
    np.testing.assert_array_equal(p.unpacked(), w)


def test_enable_quantization_int8_weights_and_dynamic_inputs():
    model = builders.transformer_block().SerializeToString()
    m = load_model(model)
    g = optimize(m.graph, m.opsets, quantize=True)
    g.lint()
    qd = [n for n in g.nodes if n.op_type == "DynamicQDense"]
    assert len(qd) == 4  # q, k and v merged into one (passes/fuse_qkv.py)
    for n in qd:
        w, ws = g.initializers[n.inputs[1]], g.initializers[n.inputs[2]]
        assert w.dtype == np.int8 and np.abs(w).max() == 127  # symmetric, per output column
        assert ws.shape == (w.shape[1],) and ws.dtype == np.float32
        assert not n.inputs[3]  # no weight zero point
    assert not any(v.dtype == np.float32 and v.ndim == 2 for v in g.initializers.values())
    # each activation is read by one layer here: its quantization moved into that layer
    assert len({n.inputs[0] for n in qd}) == 4
    assert not [n for n in g.nodes if n.op_type in ("QDense", "DynamicQuantizeLinear")]


def test_enable_quantization_accuracy_bound():
    """Result within the error of int8 weights and uint8 activations: each product term carries
    at most half a step of each operand; bounded here through the float run's own scale."""
    model = builders.transformer_block().SerializeToString()
    rng = np.random.default_rng(23)
    feeds = {"x": rng.standard_normal((2, 9, 64)).astype(np.float32),
             "mask": np.ones((2, 9), np.int64)}  # fmt: skip
    ref = zg.InferenceSession(model).run(None, feeds)[0]
    so = zg.SessionOptions(enable_quantization=True)
    got = zg.InferenceSession(model, sess_options=so).run(None, feeds)[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    cos = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cos > 0.999, cos
    assert not np.array_equal(got, ref)  # it really ran the quantized weights


def test_realign_copies_misaligned_leftovers():
    from ziggurat import ir
    from ziggurat.passes import quantize_weights

    raw = np.arange(1001, dtype=np.uint8).tobytes()
    v = np.frombuffer(raw, np.float32, 250, 1).reshape(10, 25)  # offset 1: misaligned
    assert not v.flags.aligned
    g = ir.Graph(nodes=[], inputs=[], outputs=[], initializers={"t": v})
    quantize_weights.realign(g)
    t = g.initializers["t"]
    assert t.flags.aligned and t.shape == (10, 25)
    np.testing.assert_array_equal(t.view(np.uint32), v.copy().view(np.uint32))


def test_quantizing_session_from_a_file_holds_aligned_int8(tmp_path):
    """From a file, enable_quantization views misaligned floats in place
    (load_model(view_unaligned=True)); after the passes nothing misaligned or float 2-D is left."""
    path = tmp_path / "block.onnx"
    path.write_bytes(builders.transformer_block().SerializeToString())
    sess = zg.InferenceSession(str(path), sess_options=zg.SessionOptions(enable_quantization=True))
    inits = sess._compiled.graph.initializers
    arrays = [v for v in inits.values() if isinstance(v, np.ndarray)]
    assert all(v.flags.aligned for v in arrays)
    assert sum(v.dtype == np.int8 and v.ndim == 2 for v in arrays) >= 4
    assert not any(v.dtype == np.float32 and v.ndim == 2 and v.size >= 4096 for v in arrays)


def test_contrib_dynamic_quantize_matmul_weight_is_packed_and_matches_onnxruntime():
    rng = np.random.default_rng(24)
    w = rng.integers(-127, 128, (320, 256)).astype(np.int8)
    ws = rng.uniform(1e-3, 1e-2, 256).astype(np.float32)
    node = helper.make_node(
        "DynamicQuantizeMatMul", ["a", "w", "ws"], ["y"], domain="com.microsoft"
    )
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("a", 1, [4, 320])],
        [helper.make_tensor_value_info("y", 1, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(ws, "ws")],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    ).SerializeToString()
    a = rng.standard_normal((4, 320)).astype(np.float32)
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    sess = zg.InferenceSession(model)
    got = sess.run(None, {"a": a})[0]
    if int8.native():
        assert isinstance(sess._compiled.graph.initializers["w"], int8.PackedInt8)
    # same quantized A (bit-exact DynamicQuantizeLinear), exact integer products: float rounding
    # of the scale product only
    np.testing.assert_array_less(np.abs(got - ref), 2 * np.spacing(np.abs(ref)) + 1e-30)


def test_fuse_dynamic_folds_only_unshared_quantizations():
    """A DynamicQuantizeLinear read by one QDense moves into it; one shared by two stays (the
    activation is quantized once), and an all-zero weight zero point is dropped."""
    from ziggurat import ir

    def qdense(qx, w, out, zp=""):
        ins = [f"{qx}/q", w, f"{qx}/s", "ws", f"{qx}/z", zp, "b"]
        return ir.Node("QDense", ins, [out], {"activation": "gelu"}, domain="ziggurat")

    rng = np.random.default_rng(25)
    inits = {
        "w": rng.integers(-127, 128, (8, 4)).astype(np.int8),
        "ws": np.full(4, 0.01, np.float32),
        "b": np.zeros(4, np.float32),
        "wzp": np.zeros((), np.int8),
    }
    g = ir.Graph(
        nodes=[
            ir.Node("DynamicQuantizeLinear", ["x"], ["x/q", "x/s", "x/z"]),
            qdense("x", "w", "y1"),
            qdense("x", "w", "y2"),
            ir.Node("DynamicQuantizeLinear", ["x2"], ["x2/q", "x2/s", "x2/z"]),
            qdense("x2", "w", "y3", zp="wzp"),
        ],
        inputs=[ir.ValueInfo("x"), ir.ValueInfo("x2")],
        outputs=[ir.ValueInfo("y1"), ir.ValueInfo("y2"), ir.ValueInfo("y3")],
        initializers=inits,
    )
    fuse_quant_matmul.fuse_dynamic(g)
    g.lint()
    ops = [n.op_type for n in g.nodes]
    assert ops == ["DynamicQuantizeLinear", "QDense", "QDense", "DynamicQDense"]
    fused = g.nodes[-1]
    assert fused.inputs == ["x2", "w", "ws", "", "b"] and fused.outputs == ["y3"]
    assert fused.attrs["activation"] == "gelu" and fused.domain == "ziggurat"


@pytest.mark.parametrize("path_kind", ["native", "numpy"])
def test_fuse_dynamic_changes_no_value(quantized, path_kind, monkeypatch):
    """The quantize_dynamic model with and without DynamicQDense: identical outputs."""
    if path_kind == "numpy":
        monkeypatch.setattr(int8, "native", lambda: False)
    elif not int8.native():
        pytest.skip("oneDNN int8 needs VNNI/AMX")
    path, x = quantized
    sess = zg.InferenceSession(path)
    ops = [n.op_type for n in sess._compiled.graph.nodes]
    assert ops.count("DynamicQDense") == 2 and "DynamicQuantizeLinear" not in ops
    fused = sess.run(None, {"x": x})[0]
    monkeypatch.setattr(fuse_quant_matmul, "fuse_dynamic", lambda g: g)
    plain = zg.InferenceSession(path).run(None, {"x": x})[0]
    np.testing.assert_array_equal(fused, plain)
