"""Small ONNX models for the server tests, built with onnx.helper from ops every build has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear(path: Path, *, scale: float = 1.0, in_dim: int = 4, out_dim: int = 3) -> Path:
    """y = x @ W + b (FP32 [batch, out_dim]) and label = argmax(y) (INT64 [batch])."""
    w = (np.arange(in_dim * out_dim, dtype=np.float32).reshape(in_dim, out_dim) - 5) * scale
    b = np.linspace(-1, 1, out_dim, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["y"]),
            helper.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_dim])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_dim]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    _save(graph, path)
    return path


def linear_reference(x: np.ndarray, *, scale: float = 1.0, in_dim: int = 4, out_dim: int = 3):
    w = (np.arange(in_dim * out_dim, dtype=np.float32).reshape(in_dim, out_dim) - 5) * scale
    b = np.linspace(-1, 1, out_dim, dtype=np.float32)
    y = x.astype(np.float32) @ w + b
    return y, y.argmax(1).astype(np.int64)


def identity(path: Path, elem: int, shape: list) -> Path:
    """out = Identity(x) for any element type: strings, ints, bools."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])],
        "identity",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("out", elem, shape)],
    )
    _save(graph, path)
    return path


def row_sum(path: Path) -> Path:
    """total = ReduceSum(x) over everything: mixes rows, so it must never be batched."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=1)],
        "rowsum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 1])],
    )
    _save(graph, path)
    return path


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
