"""Synthetic models for benchmarks that isolate one kind of work (built in-process, seeded)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def ffn_chain(layers: int = 12, hidden: int = 768, inner: int = 3072, rows: int = 128):
    """``layers`` BERT-base feed-forward blocks back to back, nothing else: x (rows, hidden) ->
    [MatMul + bias -> erf GELU (as exported: Div, Erf, Add, Mul, Mul) -> MatMul + bias] x layers.
    2 x layers GEMMs of BERT-base's FFN shapes with their fused epilogues: the GEMM kernels' speed
    alone, next to another engine's, without attention, normalization or many small ops."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes, cur = [], "x"
    for i in range(layers):
        for name, shape in ((f"w1_{i}", (hidden, inner)), (f"w2_{i}", (inner, hidden))):
            inits.append(
                numpy_helper.from_array(
                    (rng.standard_normal(shape) * 0.02).astype(np.float32), name
                )
            )
        inits.append(numpy_helper.from_array(np.zeros(inner, np.float32), f"b1_{i}"))
        inits.append(numpy_helper.from_array(np.zeros(hidden, np.float32), f"b2_{i}"))
        n = helper.make_node
        nodes += [
            n("MatMul", [cur, f"w1_{i}"], [f"m1_{i}"]), n("Add", [f"m1_{i}", f"b1_{i}"], [f"a_{i}"]),
            n("Div", [f"a_{i}", "sqrt2"], [f"d_{i}"]), n("Erf", [f"d_{i}"], [f"e_{i}"]),
            n("Add", [f"e_{i}", "one"], [f"p_{i}"]), n("Mul", [f"a_{i}", f"p_{i}"], [f"q_{i}"]),
            n("Mul", [f"q_{i}", "half"], [f"g_{i}"]),
            n("MatMul", [f"g_{i}", f"w2_{i}"], [f"m2_{i}"]), n("Add", [f"m2_{i}", f"b2_{i}"], [f"y_{i}"]),
        ]  # fmt: skip
        cur = f"y_{i}"
    graph = helper.make_graph(
        nodes, "ffn_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, hidden])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
