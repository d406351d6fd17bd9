"""Small helpers for pattern-matching passes."""

from __future__ import annotations

import numpy as np

from .. import ir

FUSED_DOMAIN = "ziggurat"  # ops made by fusion passes; kernels in ops/fused.py


class Index:
    """Producer and consumer lookups over one graph, kept in sync as a pass rewrites it."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.producer = graph.producers()
        self.consumers = graph.consumers()
        self.outputs = {v.name for v in graph.outputs}

    def const(self, name: str) -> np.ndarray | None:
        value = self.graph.initializers.get(name)
        return value if isinstance(value, np.ndarray) else None

    def scalar(self, name: str) -> float | None:
        """The value of a constant holding one number (any shape of size 1), else None."""
        value = self.const(name)
        if value is None or value.size != 1 or value.dtype.kind not in "fiu":
            return None
        return float(value.reshape(-1)[0])

    def only_use(self, name: str) -> ir.Node | None:
        """The single node reading ``name`` if exactly one does and it is not a graph output."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]

    def made_by(self, name: str, op_type: str) -> ir.Node | None:
        node = self.producer.get(name)
        if node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx"):
            return node
        return None


def other_input(node: ir.Node, name: str) -> str | None:
    """For a binary node reading ``name``, the other input's name."""
    if len(node.inputs) != 2 or name not in node.inputs:
        return None
    return node.inputs[1] if node.inputs[0] == name else node.inputs[0]


def close(value: float | None, target: float, tol: float = 1e-4) -> bool:
    return value is not None and abs(value - target) <= tol * max(1.0, abs(target))
