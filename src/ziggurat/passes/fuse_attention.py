"""Fuse scaled dot-product attention into one ``ziggurat::FusedAttention``.

The core that BERT, GPT-2 and ViT exports share, between the per-head Reshape/Transpose of Q, K, V
and the merge of the heads::

    MatMul(q [* sq], kT [* sk]) [* s | / s] [+ mask] -> Softmax(axis=-1)
        [-> Where(IsNaN(p), 0, p)] -> MatMul(p, v)

(``Mul`` by scalar constants on q, on kT or on the scores, in any combination; ``Div`` by one on the
scores). The kernel computes the same product with one scaling of q, the mask added in place into
the scores buffer and one softmax, instead of six or more full-size temporaries. Every intermediate
must be read by this chain only; otherwise nothing is fused.
"""

from __future__ import annotations

from .. import ir
from ._match import FUSED_DOMAIN, Index

_ONNX = ("", "ai.onnx")


def run(graph: ir.Graph, opsets: dict[str, int] | None = None) -> ir.Graph:
    """Fuse every attention core in ``graph`` (``opsets``: the model's, for Softmax's default
    axis, -1 from opset 13 on; before, an absent axis means 1 and nothing is fused)."""
    idx = Index(graph)
    default_axis = -1 if (opsets or {}).get("", 1) >= 13 else 1
    replace: dict[int, ir.Node] = {}
    for sm in graph.nodes:
        if sm.op_type != "Softmax" or sm.domain not in _ONNX:
            continue
        if sm.attrs.get("axis", default_axis) != -1:
            continue
        found = _match(idx, sm)
        if found is None:
            continue
        last, inputs, scale, nan_to_zero = found
        replace[id(last)] = ir.Node(
            "FusedAttention", inputs, [last.outputs[0]],
            {"scale": scale, "nan_to_zero": int(nan_to_zero)},
            name=f"{last.label}/attention", domain=FUSED_DOMAIN,
        )  # fmt: skip
    graph.nodes = [replace.get(id(n), n) for n in graph.nodes]
    return graph


def _match(idx: Index, sm: ir.Node):
    """(final MatMul, [q, kT, v(, mask)], scale, nan_to_zero) for the chain around ``sm``."""
    probs, nan_to_zero = _after_softmax(idx, sm.outputs[0])
    if probs is None:
        return None
    pv = idx.only_use(probs)
    if pv is None or pv.op_type != "MatMul" or pv.domain not in _ONNX or pv.inputs[0] != probs:
        return None
    if not _single(idx, sm.inputs[0]):
        return None
    scores, mask = _before_softmax(idx, sm.inputs[0])
    if scores is None:
        return None
    scores, scale = _unscale(idx, scores, outer=True)
    qk = idx.made_by(scores or "", "MatMul")
    if qk is None or not _single(idx, scores):
        return None
    q, sq = _unscale(idx, qk.inputs[0])
    k, sk = _unscale(idx, qk.inputs[1])
    if q is None or k is None:
        return None
    inputs = [q, k, pv.inputs[1]] + ([mask] if mask else [])
    return pv, inputs, float(scale * sq * sk), nan_to_zero


def _single(idx: Index, name: str) -> bool:
    return idx.only_use(name) is not None


def _after_softmax(idx: Index, p: str) -> tuple[str | None, bool]:
    """The probabilities the second MatMul reads: p itself, or Where(IsNaN(p), 0, p)."""
    readers = idx.consumers.get(p, [])
    if p in idx.outputs:
        return None, False
    if len(readers) == 1:
        return p, False
    if len(readers) != 2:
        return None, False
    isnan = next((r for r in readers if r.op_type == "IsNaN" and r.domain in _ONNX), None)
    where = next((r for r in readers if r.op_type == "Where" and r.domain in _ONNX), None)
    if isnan is None or where is None or idx.only_use(isnan.outputs[0]) is not where:
        return None, False
    if where.inputs[0] != isnan.outputs[0] or where.inputs[2] != p:
        return None, False
    if idx.scalar(where.inputs[1]) != 0.0:
        return None, False
    return where.outputs[0], True


def _before_softmax(idx: Index, s: str) -> tuple[str | None, str | None]:
    """(scores, additive mask or None): the Softmax input is scores or Add(scores, mask)."""
    add = idx.made_by(s, "Add")
    if add is None or len(add.inputs) != 2:
        return s, None
    for scores, mask in (add.inputs, add.inputs[::-1]):
        if _scores_like(idx, scores):
            return scores, mask
    return None, None


def _scores_like(idx: Index, name: str) -> bool:
    """Whether ``name`` is a Q·Kᵀ MatMul, possibly through one scalar Mul/Div."""
    inner, _ = _unscale(idx, name, outer=True)
    return inner is not None and idx.made_by(inner, "MatMul") is not None


def _unscale(idx: Index, name: str, outer: bool = False) -> tuple[str | None, float]:
    """(x, c) for ``name`` being x * c or (scores only) x / c with a scalar constant c, read by
    one node; else (name, 1.0)."""
    node = idx.producer.get(name)
    if node is None or node.domain not in _ONNX or len(node.inputs) != 2:
        return name, 1.0
    if not _single(idx, name):
        return name, 1.0
    if node.op_type == "Mul":
        for a, b in (node.inputs, node.inputs[::-1]):
            c = idx.scalar(b)
            if c is not None and idx.const(a) is None:
                return a, c
    if node.op_type == "Div" and outer:
        c = idx.scalar(node.inputs[1])
        if c is not None and c != 0:
            return node.inputs[0], 1.0 / c
    return name, 1.0
