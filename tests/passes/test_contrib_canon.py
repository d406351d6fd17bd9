"""passes/contrib_canon.py: onnxruntime-optimizer contrib ops after a MatMul become the forms the
fusions fold into one Dense; results checked against onnxruntime, which implements the contrib ops."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ziggurat as zg
from ziggurat.backends.cpu import dnnl, gemm

K = N = 512  # 2^18 weight elements: packed (passes/pack_weights.py), so fuse_residual applies
S = 16


def _model(nodes, outs, extra_inits=(), opset=17):
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((K, N)) * 0.05).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "b"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, N).astype(np.float32), "g"),
        numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "beta"),
        *extra_inits,
    ]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), *nodes], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", S, K]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", S, N])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _feeds(batch=2):
    rng = np.random.default_rng(1)
    return {
        "x": rng.standard_normal((batch, S, K)).astype(np.float32),
        "r": rng.standard_normal((batch, S, N)).astype(np.float32),
    }


def _ops(sess) -> list[str]:
    return [n.op_type for n in sess._compiled.graph.nodes]


def _check_against_onnxruntime(data, feeds, sess=None):
    sess = sess or zg.InferenceSession(data)
    got = sess.run(None, feeds)
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    # float32 products of length K, then the GELU / the add and a normalization over N values:
    # tests/models' bound of 5 float32 eps * sqrt(K) of the output's scale
    for g, r in zip(got, ref, strict=True):
        atol = 5 * 2.0**-23 * np.sqrt(K) * max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=0, atol=atol)
    return sess


needs_dnnl = pytest.mark.skipif(not dnnl.available(), reason=f"oneDNN: {dnnl.unavailable_reason()}")

GELUS = {
    "BiasGelu": helper.make_node("BiasGelu", ["m", "b"], ["y"], domain="com.microsoft"),
    "FastGelu+bias": helper.make_node("FastGelu", ["m", "b"], ["y"], domain="com.microsoft"),
    "FastGelu": helper.make_node("FastGelu", ["m"], ["y"], domain="com.microsoft"),
    "ms-Gelu": helper.make_node("Gelu", ["m"], ["y"], domain="com.microsoft"),
}


@pytest.mark.parametrize("name", list(GELUS))
def test_contrib_gelu_after_a_matmul_becomes_one_dense(name):
    data = _model([GELUS[name]], ["y"])
    sess = _check_against_onnxruntime(data, _feeds())
    assert _ops(sess) == ["Dense"]
    (dense,) = sess._compiled.graph.nodes
    want = "gelu_tanh" if "Fast" in name else "gelu"
    assert dense.attrs["activation"] == want
    assert (len(dense.inputs) > 2 and dense.inputs[2] == "b") == (
        "bias" in name or name == "BiasGelu"
    )


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_onnx_gelu_20_after_a_matmul_becomes_one_dense(approximate):
    node = helper.make_node("Add", ["m", "b"], ["a"])
    gelu = helper.make_node("Gelu", ["a"], ["y"], approximate=approximate)
    data = _model([node, gelu], ["y"], opset=20)
    sess = _check_against_onnxruntime(data, _feeds())
    assert _ops(sess) == ["Dense"]
    want = "gelu_tanh" if approximate == "tanh" else "gelu"
    assert sess._compiled.graph.nodes[0].attrs["activation"] == want


@needs_dnnl
@pytest.mark.parametrize("with_sum", [False, True])
def test_skip_layer_normalization_with_bias_moves_into_the_dense(with_sum):
    outs = ["y", "", "", "s"] if with_sum else ["y"]
    node = helper.make_node(
        "SkipLayerNormalization", ["m", "r", "g", "beta", "b"], outs, domain="com.microsoft",
        epsilon=1e-6,
    )  # fmt: skip
    data = _model([node], ["y", "s"] if with_sum else ["y"])
    sess = _check_against_onnxruntime(data, _feeds())
    assert _ops(sess) == ["Dense", "LayerNorm"]
    dense = sess._compiled.graph.nodes[0]
    assert isinstance(sess._compiled.graph.initializers[dense.inputs[1]], gemm.PackedWeight)
    assert dense.inputs[2] == "b" and dense.inputs[3] == "r"


@needs_dnnl
def test_skip_broadcast_over_the_batch_still_matches():
    """The contrib op's skip may be (S, H) for an input (B, S, H): the fused residual then
    broadcasts (the Dense's numpy epilogue), with the same values."""
    node = helper.make_node(
        "SkipLayerNormalization", ["m", "r2", "g", "beta", "b"], ["y"], domain="com.microsoft"
    )
    skip = numpy_helper.from_array(
        np.random.default_rng(2).standard_normal((S, N)).astype(np.float32), "r2"
    )
    data = _model([node], ["y"], extra_inits=[skip])
    feeds = _feeds(batch=3)
    _check_against_onnxruntime(data, feeds)


def test_statistics_read_keep_the_contrib_op():
    node = helper.make_node(
        "SkipLayerNormalization",
        ["m", "r", "g", "beta", "b"],
        ["y", "mean"],
        domain="com.microsoft",
    )
    sess = zg.InferenceSession(_model([node], ["y", "mean"]))
    assert "SkipLayerNormalization" in _ops(sess)


def test_a_gelu_of_a_graph_input_is_left_alone():
    node = helper.make_node("BiasGelu", ["r", "b"], ["y"], domain="com.microsoft")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(N, np.float32), "b")],
    )  # fmt: skip
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("com.microsoft", 1)])  # fmt: skip
    assert _ops(zg.InferenceSession(m.SerializeToString())) == ["BiasGelu"]


@pytest.mark.skipif(not gemm.bf16_supported(), reason="needs AVX512-BF16 or AMX")
def test_bf16_session_of_a_contrib_model_runs_on_packed_bf16_weights():
    node = helper.make_node(
        "SkipLayerNormalization", ["m", "r", "g", "beta", "b"], ["y"], domain="com.microsoft"
    )
    data = _model([node], ["y"])
    so = zg.SessionOptions()
    so.precision = "bf16"
    sess = zg.InferenceSession(data, so)
    dense = sess._compiled.graph.nodes[0]
    assert dense.op_type == "Dense"
    assert sess._compiled.graph.initializers[dense.inputs[1]].dtype.name == "bfloat16"
    feeds = _feeds()
    (got,) = sess.run(None, feeds)
    (ref,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    # The bound from the computation: x and W rounded to bf16 (relative error <= 2^-8 per
    # product) over a K-long sum is <= 2^-8 * (|x| @ |W|) before the add; LayerNorm then scales
    # it by gamma / (the row's standard deviation).
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
    b = rng.standard_normal(N)
    gamma = rng.uniform(0.5, 1.5, N)
    x, r = feeds["x"].astype(np.float64), feeds["r"].astype(np.float64)
    total = x @ w + b + r
    pre = 2.0**-8 * (np.abs(x) @ np.abs(w)).max()
    atol = pre * gamma.max() / total.std(axis=-1).min()
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


# --------------------------------------------------------------------------- contrib Attention
HEADS, HID, SEQ = 4, 64, 8


def _attention_model(mask_shape=None, **attrs):
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((HID, 3 * HID)) * 0.2).astype(np.float32), "wqkv"
        ),
        numpy_helper.from_array((rng.standard_normal(3 * HID) * 0.1).astype(np.float32), "bqkv"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SEQ, HID])]
    names = ["x", "wqkv", "bqkv"]
    if mask_shape is not None:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, mask_shape))
        names.append("mask")
    node = helper.make_node(
        "Attention", names, ["y"], domain="com.microsoft", num_heads=HEADS, **attrs
    )
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


B = 2
MASKS = {
    "none": (None, None),
    "lengths": ([B], np.array([SEQ, 5], np.int32)),
    "raw 2-D": ([B, SEQ], np.array([[1] * SEQ, [1] * 3 + [0] * (SEQ - 3)], np.int32)),
    "3-D": ([B, SEQ, SEQ], np.tril(np.ones((SEQ, SEQ), np.int32))[None].repeat(B, 0)),
    "left padding": ([2 * B], np.array([SEQ, SEQ, 0, 2], np.int32)),
}


def _attention_check(data, feeds, sess):
    (got,) = sess.run(None, feeds)
    (ref,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    # The projections' float32 bound, 5 eps sqrt(HID) of the scale, enters four times: in v,
    # in q and in k (the scores' relative error, which the softmax passes on to the weights),
    # and once more for the scores' own D-long sums; a convex combination adds nothing.
    atol = 5 * 2.0**-23 * np.sqrt(HID) * max(1.0, float(np.abs(ref).max())) * 4
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


@pytest.mark.parametrize("mask", list(MASKS))
def test_attention_becomes_dense_and_fused_attention(mask):
    shape, value = MASKS[mask]
    data = _attention_model(shape)
    feeds = {"x": np.random.default_rng(4).standard_normal((B, SEQ, HID)).astype(np.float32)}
    if value is not None:
        feeds["mask"] = value
    sess = zg.InferenceSession(data)
    ops = _ops(sess)
    assert "Attention" not in ops and "FusedAttention" in ops and "Dense" in ops
    _attention_check(data, feeds, sess)


def test_attention_scale_and_mask_filter_value_carry_over():
    shape, value = MASKS["raw 2-D"]
    data = _attention_model(shape, scale=0.3, mask_filter_value=-50.0)
    feeds = {"x": np.random.default_rng(5).standard_normal((B, SEQ, HID)).astype(np.float32)}
    feeds["mask"] = value
    sess = zg.InferenceSession(data)
    assert "FusedAttention" in _ops(sess)
    _attention_check(data, feeds, sess)


@pytest.mark.parametrize("mask", ["none", "lengths", "raw 2-D"])
def test_causal_attention_masks_the_future_keys(mask):
    """unidirectional=1: future keys excluded, padded ones get mask_filter_value (a query whose
    only causal keys are padded still attends to them, as onnxruntime's)."""
    shape, value = MASKS[mask]
    data = _attention_model(shape, unidirectional=1)
    feeds = {"x": np.random.default_rng(7).standard_normal((B, SEQ, HID)).astype(np.float32)}
    if value is not None:
        feeds["mask"] = value
    sess = zg.InferenceSession(data)
    assert "Attention" not in _ops(sess) and "FusedAttention" in _ops(sess)
    _attention_check(data, feeds, sess)


def test_attention_with_past_state_keeps_the_contrib_kernel():
    data = _attention_model(None, unidirectional=1)
    import onnx

    model = onnx.load_from_string(data)
    model.graph.node[0].output.append("present")
    model.graph.output.append(helper.make_tensor_value_info("present", TensorProto.FLOAT, None))
    sess = zg.InferenceSession(model.SerializeToString())
    assert "Attention" in _ops(sess) and "FusedAttention" not in _ops(sess)


def test_layers_share_one_additive_mask():
    """Two Attention nodes reading one mask_index: one AttentionMask for both."""
    shape, value = MASKS["lengths"]
    m = _attention_model(shape)
    import onnx

    model = onnx.load_from_string(m)
    second = onnx.helper.make_node(
        "Attention", ["y", "wqkv", "bqkv", "mask"], ["y2"], domain="com.microsoft", num_heads=HEADS
    )
    model.graph.node.append(second)
    model.graph.output[0].name = "y2"
    data = model.SerializeToString()
    sess = zg.InferenceSession(data)
    assert _ops(sess).count("AttentionMask") == 1 and _ops(sess).count("FusedAttention") == 2
    feeds = {"x": np.random.default_rng(6).standard_normal((B, SEQ, HID)).astype(np.float32)}
    feeds["mask"] = value
    _attention_check(data, feeds, sess)


def test_a_float16_model_keeps_its_contrib_ops_and_dtypes():
    """onnxruntime's optimizer with float16=True: weights in float16. The rewrite is float32-only;
    the contrib kernels run the float16 model as onnxruntime does (float16 out)."""
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(8)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]),
         helper.make_node("BiasGelu", ["m", "b"], ["y"], domain="com.microsoft")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
        [nh.from_array((rng.standard_normal((64, 64)) * 0.1).astype(np.float16), "w"),
         nh.from_array(rng.standard_normal(64).astype(np.float16), "b")],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    sess = zg.InferenceSession(helper.make_model(graph, opset_imports=opsets).SerializeToString())
    assert "BiasGelu" in _ops(sess)
    (y,) = sess.run(None, {"x": rng.standard_normal((2, 8, 64)).astype(np.float16)})
    assert y.dtype == np.float16
