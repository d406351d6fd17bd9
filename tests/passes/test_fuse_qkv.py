"""passes/fuse_qkv.py: Dense nodes reading one input become one wider Dense and a Split."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import ziggurat as zg
from ziggurat.formats.onnx import load_model
from ziggurat.passes import optimize

EPS32 = float(np.finfo(np.float32).eps)


def _model(activations: list[str], opset: int = 17, shared_weight: bool = False):
    """x -> MatMul(W_i) + b_i [-> act_i] for each i; the outputs read in ways that could go
    wrong if the split views aliased each other: an in-place-able Relu on one, an Add of two."""
    rng = np.random.default_rng(0)
    k, widths = 32, ([16, 16, 16] if shared_weight else [16, 24, 16])[: len(activations)]
    inits, nodes, outs = [], [], []
    for i, (n, act) in enumerate(zip(widths, activations, strict=True)):
        w = "w0" if shared_weight and i else f"w{i}"
        if not (shared_weight and i):
            inits.append(numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), w))
        inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), f"b{i}"))
        nodes += [
            helper.make_node("MatMul", ["x", w], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"] if act else [f"y{i}"]),
        ]
        if act:
            nodes.append(helper.make_node(act, [f"a{i}"], [f"y{i}"]))
        outs.append(f"y{i}")
    nodes.append(helper.make_node("Relu", ["y0"], ["r0"]))  # may run in place on a split view
    nodes.append(helper.make_node("Add", ["y0", "r0"], ["s0"]))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 7, k])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in [*outs, "s0"]],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ops(model):
    m = load_model(model.SerializeToString())
    g = optimize(m.graph, m.opsets)
    g.lint()
    return [n.op_type for n in g.nodes], g


def _against_onnxruntime(model):
    data = model.SerializeToString()
    x = np.random.default_rng(1).standard_normal((3, 7, 32)).astype(np.float32)
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    sess = zg.InferenceSession(data)
    for _ in range(3):  # the generic run, the recording runs and the planned (specialised) one
        got = sess.run(None, {"x": x})
        for g, r in zip(got, ref, strict=True):
            # One K = 32 dot product plus a bias per value: 32 + 1 roundings at most.
            atol = 2 * EPS32 * 33 * float(np.abs(r).max())
            np.testing.assert_allclose(g, r, rtol=0, atol=atol)


def test_three_projections_become_one_dense_and_a_split():
    model = _model(["", "", ""])
    ops, g = _ops(model)
    assert ops.count("Dense") == 1 and ops.count("Split") == 1
    dense = next(n for n in g.nodes if n.op_type == "Dense")
    assert g.initializers[dense.inputs[1]].shape == (32, 56)
    assert not {"w0", "w1", "w2", "b0", "b1", "b2"} & set(g.initializers)  # no second copy
    _against_onnxruntime(model)


def test_split_13_form_and_the_attribute_form_before_it():
    for opset in (11, 17):
        model = _model(["", ""], opset=opset)
        ops, g = _ops(model)
        split = next(n for n in g.nodes if n.op_type == "Split")
        assert (len(split.inputs) == 2) == (opset >= 13)
        _against_onnxruntime(model)


def test_different_activations_stay_separate():
    ops, _ = _ops(_model(["Relu", ""]))
    assert ops.count("Dense") == 2 and "Split" not in ops


def test_a_weight_read_elsewhere_is_kept():
    """w0 is merged into the Q/K/V-like weight but also read by a product of another input: it
    stays (and that product still runs on it)."""
    model = _model(["", ""])
    g = model.graph
    g.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b", 7, 32]))
    g.node.append(helper.make_node("MatMul", ["z", "w0"], ["zw"]))
    g.output.append(helper.make_tensor_value_info("zw", TensorProto.FLOAT, None))
    ops, opt = _ops(model)
    assert ops.count("Split") == 1 and "w0" in opt.initializers
    data = model.SerializeToString()
    rng = np.random.default_rng(2)
    feeds = {n: rng.standard_normal((3, 7, 32)).astype(np.float32) for n in ("x", "z")}
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = zg.InferenceSession(data).run(None, feeds)
    for g_, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g_, r, rtol=0, atol=2 * EPS32 * 33 * float(np.abs(r).max()))


def test_a_shared_weight_is_multiplied_once():
    """Two products of the same input and weight (different biases): common subexpression
    elimination leaves one product, and the results stay onnxruntime's."""
    model = _model(["", ""], shared_weight=True)
    ops, _ = _ops(model)
    assert ops.count("MatMul") + ops.count("Dense") == 1
    _against_onnxruntime(model)


def test_int8_projections_of_quantize_dynamic_merge_too(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tests.models import builders

    src, dst = tmp_path / "block.onnx", tmp_path / "block.int8.onnx"
    src.write_bytes(builders.transformer_block(hidden=64, heads=4).SerializeToString())
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    m = load_model(str(dst))
    g = optimize(m.graph, m.opsets)
    g.lint()
    ops = [n.op_type for n in g.nodes]
    # q, k, v merged; o, ffn1, ffn2 (each with its input's quantization: fuse_dynamic)
    assert ops.count("DynamicQDense") == 4 and ops.count("Split") == 1
    merged = next(
        n for n in g.nodes if n.op_type == "DynamicQDense" and n.outputs[0].endswith("merged")
    )
    assert g.initializers[merged.inputs[2]].shape == (192,)  # one weight scale per column
    rng = np.random.default_rng(4)
    feeds = {
        "x": rng.standard_normal((2, 9, 64)).astype(np.float32),
        "mask": np.ones((2, 9), np.int64),
    }
    ref = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = zg.InferenceSession(str(dst)).run(None, feeds)
    # The integer products are exact in both engines; what differs is float rounding outside
    # them (attention, LayerNorm, GELU), which can move a re-quantized activation across a
    # rounding tie: one quantization step (1/255 of the activation's range) of the output
    # scale at most, as tests/ops/test_contrib_models.py bounds quantized models (2e-2).
    for g_, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g_, r, rtol=0, atol=2e-2 * float(np.abs(r).max()))
