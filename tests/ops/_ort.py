"""onnxruntime as the reference for one operator: the single-node model the op-family tests build."""

from __future__ import annotations

import onnxruntime as ort
from onnx import helper


def ort_outputs(op, inputs, n_outputs=1, opset=21, ir_version=None, **attrs) -> list:
    """All outputs of one ``op`` node (ai.onnx, ``opset``) run by onnxruntime on ``inputs``
    (None in ``inputs`` = an omitted optional input), graph optimizations off."""
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
    while names and names[-1] == "":
        names.pop()
    feeds = {n: a for n, a in zip(names, inputs) if n}
    vis = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in feeds.items()
    ]
    outs = [f"y{k}" for k in range(n_outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "g", vis, [helper.make_empty_tensor_value_info(o) for o in outs]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir_version is not None:
        model.ir_version = ir_version
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)
