"""A two-layer BERT in the classic export form (embeddings with token types, additive -10000 mask,
erf GELU) that onnxruntime's transformers optimizer fuses into EmbedLayerNormalization,
Attention, SkipLayerNormalization and BiasGelu / FastGelu."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB, MAX_POS, HIDDEN, HEADS, LAYERS = 50, 32, 32, 4, 2


def mini_bert(seed: int = 0, seq: int = 8) -> onnx.ModelProto:
    """input_ids, token_type_ids, attention_mask (int64 [batch, seq]) -> last_hidden_state."""
    rng = np.random.default_rng(seed)
    inits: list = []
    n = helper.make_node

    def w(name, *shape, s=0.1, base=0.0):
        inits.append(
            numpy_helper.from_array(
                (base + rng.standard_normal(shape) * s).astype(np.float32), name
            )
        )
        return name

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    dh = HIDDEN // HEADS
    const("pos_ids", np.arange(seq, dtype=np.int64)[None, :])
    const("one", np.array(1.0, np.float32))
    const("neg", np.array(-10000.0, np.float32))
    const("sqrt_dh", np.array(np.sqrt(dh), np.float32))
    const("sqrt2", np.array(np.sqrt(2.0), np.float32))
    const("half", np.array(0.5, np.float32))
    const("split", np.array([0, 0, HEADS, dh], np.int64))
    const("merge", np.array([0, 0, HIDDEN], np.int64))
    const("ax1", np.array([1], np.int64))
    const("ax2", np.array([2], np.int64))
    nodes = [
        n("Gather", [w("word", VOCAB, HIDDEN), "input_ids"], ["we"]),
        n("Gather", [w("pos", MAX_POS, HIDDEN), "pos_ids"], ["pe"]),
        n("Gather", [w("seg", 2, HIDDEN), "token_type_ids"], ["se"]),
        n("Add", ["we", "pe"], ["e1"]),
        n("Add", ["e1", "se"], ["e2"]),
        n("LayerNormalization", ["e2", w("eg", HIDDEN, base=1.0), w("eb", HIDDEN)], ["h0"],
          axis=-1, epsilon=1e-12),
        n("Unsqueeze", ["attention_mask", "ax1"], ["m1"]),
        n("Unsqueeze", ["m1", "ax2"], ["m2"]),
        n("Cast", ["m2"], ["mf"], to=TensorProto.FLOAT),
        n("Sub", ["one", "mf"], ["minv"]),
        n("Mul", ["minv", "neg"], ["mbias"]),
    ]  # fmt: skip
    h = "h0"
    for i in range(LAYERS):
        p = f"l{i}_"
        for t in "qkv":
            nodes += [
                n("MatMul", [h, w(p + "w" + t, HIDDEN, HIDDEN)], [p + t + "m"]),
                n("Add", [p + t + "m", w(p + "b" + t, HIDDEN)], [p + t + "a"]),
                n("Reshape", [p + t + "a", "split"], [p + t + "r"]),
                n("Transpose", [p + t + "r"], [p + t + "t"],
                  perm=[0, 2, 3, 1] if t == "k" else [0, 2, 1, 3]),
            ]  # fmt: skip
        nodes += [
            n("MatMul", [p + "qt", p + "kt"], [p + "s"]),
            n("Div", [p + "s", "sqrt_dh"], [p + "sd"]),
            n("Add", [p + "sd", "mbias"], [p + "sm"]),
            n("Softmax", [p + "sm"], [p + "pr"], axis=-1),
            n("MatMul", [p + "pr", p + "vt"], [p + "c"]),
            n("Transpose", [p + "c"], [p + "ct"], perm=[0, 2, 1, 3]),
            n("Reshape", [p + "ct", "merge"], [p + "cm"]),
            n("MatMul", [p + "cm", w(p + "wo", HIDDEN, HIDDEN)], [p + "om"]),
            n("Add", [p + "om", w(p + "bo", HIDDEN)], [p + "oa"]),
            n("Add", [p + "oa", h], [p + "r1"]),
            n("LayerNormalization", [p + "r1", w(p + "g1", HIDDEN, base=1.0), w(p + "be1", HIDDEN)],
              [p + "ln1"], axis=-1, epsilon=1e-12),
            n("MatMul", [p + "ln1", w(p + "w1", HIDDEN, 4 * HIDDEN)], [p + "f1m"]),
            n("Add", [p + "f1m", w(p + "b1", 4 * HIDDEN)], [p + "f1"]),
            n("Div", [p + "f1", "sqrt2"], [p + "gd"]),
            n("Erf", [p + "gd"], [p + "ge"]),
            n("Add", [p + "ge", "one"], [p + "gp"]),
            n("Mul", [p + "f1", p + "gp"], [p + "gm"]),
            n("Mul", [p + "gm", "half"], [p + "gelu"]),
            n("MatMul", [p + "gelu", w(p + "w2", 4 * HIDDEN, HIDDEN)], [p + "f2m"]),
            n("Add", [p + "f2m", w(p + "b2", HIDDEN)], [p + "f2"]),
            n("Add", [p + "f2", p + "ln1"], [p + "r2"]),
            n("LayerNormalization", [p + "r2", w(p + "g2", HIDDEN, base=1.0), w(p + "be2", HIDDEN)],
              [p + "out"], axis=-1, epsilon=1e-12),
        ]  # fmt: skip
        h = p + "out"
    nodes.append(n("Identity", [h], ["last_hidden_state"]))
    ins = [helper.make_tensor_value_info(k, TensorProto.INT64, ["batch", seq])
           for k in ("input_ids", "token_type_ids", "attention_mask")]  # fmt: skip
    out = helper.make_tensor_value_info(
        "last_hidden_state", TensorProto.FLOAT, ["batch", seq, HIDDEN]
    )
    graph = helper.make_graph(nodes, "mini_bert", ins, [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
