"""Fusion passes fire on the patterns exporters emit, keep the graph valid, and change no result."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import ziggurat as zg
from tests.models import builders
from ziggurat.formats.onnx import load_model
from ziggurat.passes import optimize


def _optimized_ops(model: onnx.ModelProto) -> list[str]:
    m = load_model(model.SerializeToString())
    g = optimize(m.graph, m.opsets)
    g.lint()
    return [n.op_type for n in g.nodes]


def _same_results(model: onnx.ModelProto, feeds: dict) -> None:
    data = model.SerializeToString()
    off = zg.SessionOptions(graph_optimization_level=zg.GraphOptimizationLevel.ORT_DISABLE_ALL)
    ref = zg.InferenceSession(data, sess_options=off).run(None, feeds)
    got = zg.InferenceSession(data).run(None, feeds)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()))


def test_transformer_block_fuses_gelu_and_dense():
    ops = _optimized_ops(builders.transformer_block())
    assert "Erf" not in ops and "Gelu" not in ops  # GELU folded into the FFN's Dense
    # q, k and v merged into one (passes/fuse_qkv.py, then a Split), out, ffn1 (+gelu), ffn2
    assert ops.count("Dense") == 4 and ops.count("Split") == 1
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((2, 9, 64)).astype(np.float32),
        "mask": np.ones((2, 9), np.int64),
    }
    _same_results(builders.transformer_block(), feeds)


def test_cnn_folds_batchnorm_and_fuses_conv_epilogues():
    ops = _optimized_ops(builders.small_cnn())
    assert "BatchNormalization" not in ops and "Relu" not in ops and "Clip" not in ops
    assert "Add" not in ops  # the residual add went into the pointwise conv
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    _same_results(builders.small_cnn(), {"x": x})


def test_mlp_gemms_become_dense():
    assert _optimized_ops(builders.mlp()) == ["Dense", "Dense", "Softmax"]


def _pad_conv_model(pad_value: float) -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Pad", ["x", "pads", "value"], ["xp"], mode="constant"),
        helper.make_node("Conv", ["xp", "w"], ["y"], strides=[2, 2]),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.array([0, 0, 0, 1, 0, 0, 1, 2], np.int64), "pads"),
         numpy_helper.from_array(np.array(pad_value, np.float32), "value")],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_zero_pad_folds_into_conv_but_nonzero_pad_does_not():
    x = {"x": np.random.default_rng(3).standard_normal((1, 3, 9, 9)).astype(np.float32)}
    assert "Pad" not in _optimized_ops(_pad_conv_model(0.0))
    _same_results(_pad_conv_model(0.0), x)
    assert "Pad" in _optimized_ops(_pad_conv_model(1.5))
    _same_results(_pad_conv_model(1.5), x)


def test_fusion_can_be_turned_off():
    m = load_model(builders.mlp().SerializeToString())
    g = optimize(m.graph, m.opsets, fusion=False)
    assert [n.op_type for n in g.nodes] == ["Gemm", "Relu", "Gemm", "Softmax"]


def test_weight_quantization_shrinks_weights_and_stays_close():
    model = builders.transformer_block()
    m = load_model(model.SerializeToString())
    g = optimize(m.graph, m.opsets, quantize=True)
    g.lint()
    # q, k, v merged (fuse_qkv); each input's quantization inside its layer (fuse_dynamic)
    assert [n.op_type for n in g.nodes].count("DynamicQDense") == 4
    assert all(
        g.initializers[n.inputs[1]].dtype == np.int8
        for n in g.nodes
        if n.op_type == "DynamicQDense"
    )
    rng = np.random.default_rng(5)
    feeds = {
        "x": rng.standard_normal((2, 9, 64)).astype(np.float32),
        "mask": np.ones((2, 9), np.int64),
    }
    data = model.SerializeToString()
    ref = zg.InferenceSession(data).run(None, feeds)[0]
    q = zg.InferenceSession(data, sess_options=zg.SessionOptions(enable_quantization=True))
    got = q.run(None, feeds)[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=0.05 * float(np.abs(ref).max()))
    assert not np.array_equal(got, ref)  # it really ran the quantized weights
