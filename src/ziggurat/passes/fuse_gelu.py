"""Fuse GELU subgraphs: the erf form, 0.5 * x * (1 + erf(x / sqrt(2))), into one ``ziggurat::Gelu``;
the tanh form, 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3))), into ``ziggurat::GeluTanh``.

Exporters (PyTorch, transformers at opset < 20) emit them as five and eight nodes, each allocating
a tensor as large as the FFN activation (GPT-2's ``x ** 3`` alone went through numpy's general
power). The three multiply orders of the outer 0.5 * x * (...) seen in the wild are all
recognised; the cube may be ``Pow(x, 3)`` or ``x * x * x``. Every intermediate must have this chain
as its only reader, else nothing is fused (the intermediate would be computed twice).
"""

from __future__ import annotations

import math

from .. import ir
from ._match import FUSED_DOMAIN, Index, close, other_input


def run(graph: ir.Graph) -> ir.Graph:
    idx = Index(graph)
    replaced: dict[int, ir.Node] = {}
    for erf in graph.nodes:
        if erf.op_type == "Tanh" and erf.domain in ("", "ai.onnx"):
            _match_tanh(idx, erf, replaced)
            continue
        if erf.op_type != "Erf" or erf.domain not in ("", "ai.onnx"):
            continue
        x = _scaled_input(idx, erf.inputs[0]) if _only(idx, erf.inputs[0]) else None
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
    if half is None or x not in half.inputs or idx.only_use(half.outputs[0]) is None:
        return None
    if close(idx.scalar(other_input(half, x) or ""), 0.5):
        return m1, m1.outputs[0]
    return None


_K_TANH = math.sqrt(2.0 / math.pi)


def _match_tanh(idx: Index, tanh: ir.Node, replaced: dict[int, ir.Node]) -> None:
    """Record a GeluTanh replacing the last Mul of the tanh form ending at ``tanh``, if it is one."""
    x = _tanh_input(idx, tanh.inputs[0])
    add = idx.only_use(tanh.outputs[0])
    if x is None or add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return
    if not close(idx.scalar(other_input(add, tanh.outputs[0]) or ""), 1.0):
        return
    found = _match_muls(idx, x, add.outputs[0])
    if found is not None:
        last, out = found
        replaced[id(last)] = ir.Node(
            "GeluTanh", [x], [out], name=f"{last.label}/gelu_tanh", domain=FUSED_DOMAIN
        )


def _tanh_input(idx: Index, name: str) -> str | None:
    """x for tanh's input being sqrt(2/pi) * (x + 0.044715 * cube(x)), each step single-use."""
    if not _only(idx, name):
        return None
    scaled = _single_const_mul(idx, name, _K_TANH)
    inner = idx.producer.get(scaled or "")
    if inner is None or inner.op_type != "Add" or len(inner.inputs) != 2 or not _only(idx, scaled):
        return None
    for x, term in (inner.inputs, inner.inputs[::-1]):
        cube = _single_const_mul(idx, term, 0.044715)
        if cube is not None and _only(idx, term) and _only(idx, cube) and _is_cube(idx, cube, x):
            return x
    return None


def _only(idx: Index, name: str | None) -> bool:
    return name is not None and idx.only_use(name) is not None


def _single_const_mul(idx: Index, name: str, value: float) -> str | None:
    """The other factor of ``name = Mul(a, value)`` (either order), else None."""
    node = idx.made_by(name, "Mul")
    if node is None or len(node.inputs) != 2:
        return None
    for a, b in (node.inputs, node.inputs[::-1]):
        if close(idx.scalar(b), value, 1e-5):
            return a
    return None


def _is_cube(idx: Index, name: str, x: str) -> bool:
    """``name`` is Pow(x, 3), Mul(x, Mul(x, x)) or Mul(Mul(x, x), x)."""
    node = idx.producer.get(name)
    if node is None or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return False
    if node.op_type == "Pow":
        return node.inputs[0] == x and idx.scalar(node.inputs[1]) == 3.0
    if node.op_type != "Mul" or x not in node.inputs:
        return False
    sq = idx.made_by(other_input(node, x) or "", "Mul")
    return sq is not None and sq.inputs == [x, x] and _only(idx, sq.outputs[0])
