"""Small real models built with onnx.helper and seeded weights, for tests (no downloads, no torch)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _model(nodes, inputs, outputs, inits, opset=17, name="m"):
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def mlp(seed: int = 0) -> onnx.ModelProto:
    """784-128-10 MLP with softmax, dynamic batch: the 'tiny MLP' of the benchmarks."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((784, 128)) * 0.05).astype(np.float32)
    b1 = (rng.standard_normal(128) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((128, 10)) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 784])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])
    inits = [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2)]
    return _model(nodes, [x], [y], inits, name="mlp")


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool, a depthwise conv, a residual add, global pool and a classifier."""
    rng = np.random.default_rng(seed)

    def w(*shape, s=0.2):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    inits = [
        _init("c1w", w(16, 3, 3, 3)), _init("c1b", w(16)),
        _init("bn_s", 1 + w(16, s=0.1)), _init("bn_b", w(16)), _init("bn_m", w(16, s=0.1)),
        _init("bn_v", 1 + np.abs(w(16, s=0.1))),
        _init("dww", w(16, 1, 3, 3)), _init("pww", w(16, 16, 1, 1)),
        _init("fcw", w(16, 10)), _init("fcb", w(10)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Conv", ["p1", "dww"], ["dw"], group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["dw", "", ""], ["dwr"]),
        helper.make_node("Conv", ["dwr", "pww"], ["pw"]),
        helper.make_node("Add", ["pw", "p1"], ["res"]),
        helper.make_node("GlobalAveragePool", ["res"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fcw", "fcb"], ["logits"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    return _model(nodes, [x], [y], inits, name="small_cnn")


def transformer_block(seed: int = 0, hidden: int = 64, heads: int = 4) -> onnx.ModelProto:
    """One BERT-style encoder layer as transformers exports it (opset 17): attention with a mask,
    erf-GELU feed-forward, LayerNormalization, shape arithmetic through Shape/Gather/Concat."""
    rng = np.random.default_rng(seed)
    dh = hidden // heads

    def w(*shape, s=0.1):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    inits = [
        _init("wq", w(hidden, hidden)), _init("bq", w(hidden)),
        _init("wk", w(hidden, hidden)), _init("bk", w(hidden)),
        _init("wv", w(hidden, hidden)), _init("bv", w(hidden)),
        _init("wo", w(hidden, hidden)), _init("bo", w(hidden)),
        _init("w1", w(hidden, 4 * hidden)), _init("b1", w(4 * hidden)),
        _init("w2", w(4 * hidden, hidden)), _init("b2", w(hidden)),
        _init("g1", 1 + w(hidden)), _init("be1", w(hidden)),
        _init("g2", 1 + w(hidden)), _init("be2", w(hidden)),
        _init("heads_dh", np.array([heads, dh], np.int64)),
        _init("minus1", np.array([-1], np.int64)), _init("zero", np.array(0, np.int64)),
        _init("one", np.array(1, np.int64)), _init("sqrt_dh", np.array(np.sqrt(dh), np.float32)),
        _init("one_f", np.array(1.0, np.float32)), _init("neg_big", np.array(-1e9, np.float32)),
        _init("half", np.array(0.5, np.float32)), _init("sqrt2", np.array(np.sqrt(2.0), np.float32)),
        _init("ax12", np.array([1, 2], np.int64)),
    ]  # fmt: skip
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["xs"]),
        n("Gather", ["xs", "zero"], ["B"], axis=0),
        n("Gather", ["xs", "one"], ["S"], axis=0),
        n("Unsqueeze", ["B", "minus1"], ["B1"]),
        n("Unsqueeze", ["S", "minus1"], ["S1"]),
        n("Concat", ["B1", "S1", "heads_dh"], ["split_shape"], axis=0),
    ]
    for p in "qkv":
        nodes += [
            n("MatMul", ["x", f"w{p}"], [f"{p}m"]),
            n("Add", [f"{p}m", f"b{p}"], [f"{p}a"]),
            n("Reshape", [f"{p}a", "split_shape"], [f"{p}r"]),
            n("Transpose", [f"{p}r"], [f"{p}t"], perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3]),
        ]
    nodes += [
        n("MatMul", ["qt", "kt"], ["scores"]),
        n("Div", ["scores", "sqrt_dh"], ["scaled"]),
        n("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        n("Sub", ["one_f", "maskf"], ["inv"]),
        n("Mul", ["inv", "neg_big"], ["bias"]),
        n("Unsqueeze", ["bias", "ax12"], ["bias4"]),
        n("Add", ["scaled", "bias4"], ["masked"]),
        n("Softmax", ["masked"], ["probs"], axis=-1),
        n("MatMul", ["probs", "vt"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        n("Concat", ["B1", "S1", "minus1"], ["merge_shape"], axis=0),
        n("Reshape", ["ctx_t", "merge_shape"], ["ctx_m"]),
        n("MatMul", ["ctx_m", "wo"], ["om"]),
        n("Add", ["om", "bo"], ["oa"]),
        n("Add", ["oa", "x"], ["res1"]),
        n("LayerNormalization", ["res1", "g1", "be1"], ["ln1"], axis=-1, epsilon=1e-12),
        n("MatMul", ["ln1", "w1"], ["f1m"]),
        n("Add", ["f1m", "b1"], ["f1"]),
        n("Div", ["f1", "sqrt2"], ["gd"]),
        n("Erf", ["gd"], ["ge"]),
        n("Add", ["ge", "one_f"], ["gp"]),
        n("Mul", ["f1", "gp"], ["gm"]),
        n("Mul", ["gm", "half"], ["gelu"]),
        n("MatMul", ["gelu", "w2"], ["f2m"]),
        n("Add", ["f2m", "b2"], ["f2"]),
        n("Add", ["f2", "ln1"], ["res2"]),
        n("LayerNormalization", ["res2", "g2", "be2"], ["y"], axis=-1, epsilon=1e-12),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])
    return _model(nodes, [x, mask], [y], inits, name="transformer_block")
