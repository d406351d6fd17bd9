"""Benchmark models built with seeded random weights, for GPU machines that cannot carry the
real files (bench-models/ is 540 MB; a lent GPU machine gets 64 MiB of carried files).

- ``bert_base``: the 12-layer BERT-base encoder (hidden 768, 12 heads, FFN 3072) as transformers
  exports it — tests/models/builders.transformer_block stacked 12 times — on [batch, seq, 768]
  hidden states (the embedding lookup in front of it is ~0.1 % of the work and is left out).
- ``resnet50``: ResNet-50 v1 (bottlenecks 3-4-6-3, 224x224 input, 1000 classes) with Conv+bias
  (BatchNorm already folded, as exporters' inference graphs do after fold_batchnorm).

Timings depend on shapes, not on weight values, so these time like the real models; their
numbers are not the real models' outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.models.builders import transformer_block  # noqa: E402


def bert_base(layers: int = 12, hidden: int = 768, heads: int = 12) -> onnx.ModelProto:
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        block = transformer_block(seed=i, hidden=hidden, heads=heads).graph

        def rename(name: str, i: int = i, prev: str = prev) -> str:
            if name in ("mask", ""):
                return name
            return prev if name == "x" else f"l{i}_{name}"

        for node in block.node:
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.name = f"l{i}_{node.name or node.op_type}_{len(nodes)}"
            new.input[:] = [rename(n) for n in node.input]
            new.output[:] = [rename(n) for n in node.output]
            nodes.append(new)
        for t in block.initializer:
            new = onnx.TensorProto()
            new.CopyFrom(t)
            new.name = rename(t.name)
            inits.append(new)
        prev = f"l{i}_y"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])
    graph = helper.make_graph(nodes, "bert_base_encoder", [x, mask], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def resnet50(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    count = [0]

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        i = count[0] = count[0] + 1
        std = np.sqrt(2.0 / (cin * k * k))  # He init keeps activations O(1) through 50 layers
        w = (rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"w{i}"),
                      numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")])  # fmt: skip
        nodes.append(helper.make_node(
            "Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
            strides=[stride, stride], pads=[k // 2] * 4,
        ))  # fmt: skip
        if not relu:
            return f"c{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        return f"r{i}"

    x = conv("x", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1]))  # fmt: skip
    x, cin = "pool", 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 0 else 1
            h = conv(x, cin, width, 1)
            h = conv(h, width, width, 3, stride)
            h = conv(h, width, 4 * width, 1, relu=False)
            skip = conv(x, cin, 4 * width, 1, stride, relu=False) if b == 0 else x
            out = f"s{stage}b{b}"
            nodes += [helper.make_node("Add", [h, skip], [out + "_sum"]),
                      helper.make_node("Relu", [out + "_sum"], [out])]  # fmt: skip
            x, cin = out, 4 * width
    fc = (rng.standard_normal((2048, 1000)) * 0.02).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc_w"),
              numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b")]  # fmt: skip
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "resnet50",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
