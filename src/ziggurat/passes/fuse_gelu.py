"""Fuse the erf form of GELU, 0.5 * x * (1 + erf(x / sqrt(2))), into one ``ziggurat::Gelu``.

Exporters (PyTorch, transformers at opset < 20) emit it as five nodes — Div, Erf, Add, Mul, Mul —
each allocating a tensor as large as the FFN activation. The three multiply orders seen in the wild
are all recognised.
"""

from __future__ import annotations

import math

from .. import ir
from ._match import FUSED_DOMAIN, Index, close, other_input


def run(graph: ir.Graph) -> ir.Graph:
    idx = Index(graph)
    replaced: dict[int, ir.Node] = {}
    for erf in graph.nodes:
        if erf.op_type != "Erf" or erf.domain not in ("", "ai.onnx"):
            continue
        x = _scaled_input(idx, erf.inputs[0])
        add = idx.only_use(erf.outputs[0])
        if x is None or add is None or add.op_type != "Add":
            continue
        if not close(idx.scalar(other_input(add, erf.outputs[0]) or ""), 1.0):
            continue
        found = _match_muls(idx, x, add.outputs[0])
        if found is None:
            continue
        last, out = found
        replaced[id(last)] = ir.Node(
            "Gelu", [x], [out], name=f"{last.label}/gelu", domain=FUSED_DOMAIN
        )
    graph.nodes = [replaced.get(id(n), n) for n in graph.nodes]
    return graph


def _scaled_input(idx: Index, name: str) -> str | None:
    """x for erf's input being x / sqrt(2) or x * (1 / sqrt(2))."""
    node = idx.producer.get(name)
    if node is None or len(node.inputs) != 2:
        return None
    if node.op_type == "Div" and close(idx.scalar(node.inputs[1]), math.sqrt(2.0)):
        return node.inputs[0]
    if node.op_type == "Mul":
        for a, b in (node.inputs, node.inputs[::-1]):
            if close(idx.scalar(b), 1 / math.sqrt(2.0)):
                return a
    return None


def _match_muls(idx: Index, x: str, a: str) -> tuple[ir.Node, str] | None:
    """The final Mul of 0.5 * x * a in any association, and its output."""
    m1 = idx.only_use(a)
    if m1 is None or m1.op_type != "Mul":
        return None
    other = other_input(m1, a)
    if other == x:  # (x * a) * 0.5
        m2 = idx.only_use(m1.outputs[0])
        if m2 is not None and m2.op_type == "Mul":
            if close(idx.scalar(other_input(m2, m1.outputs[0]) or ""), 0.5):
                return m2, m2.outputs[0]
        return None
    if close(idx.scalar(other or ""), 0.5):  # x * (a * 0.5)
        m2 = idx.only_use(m1.outputs[0])
        if m2 is not None and m2.op_type == "Mul" and other_input(m2, m1.outputs[0]) == x:
            return m2, m2.outputs[0]
        return None
    half = idx.made_by(other or "", "Mul")  # (x * 0.5) * a
    if half is not None and x in half.inputs and close(idx.scalar(other_input(half, x) or ""), 0.5):
        return m1, m1.outputs[0]
    return None
