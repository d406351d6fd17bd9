"""Constant folding: evaluate nodes whose inputs are all constants at compile time.

Folded results become initializers. Random ops and ops with subgraphs are never folded, nor are
results bigger than ``MAX_FOLDED_BYTES`` (folding e.g. a huge ConstantOfShape would only trade
compute for memory).
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ..ops import registry

MAX_FOLDED_BYTES = 64 << 20
_NEVER = frozenset(
    {
        "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
        "Multinomial", "If", "Loop", "Scan", "SequenceMap", "Dropout",
    }
)  # fmt: skip


def run(graph: ir.Graph, opsets: dict[str, int]) -> ir.Graph:
    """Fold constant nodes of ``graph`` (not of its subgraphs) into initializers."""
    consts = graph.initializers
    kept: list[ir.Node] = []
    for node in graph.nodes:
        if _foldable(node, consts):
            values = _evaluate(node, consts, opsets)
            if values is not None:
                for name, value in zip(node.outputs, values):
                    if name:
                        consts[name] = value
                continue
        kept.append(node)
    graph.nodes = kept
    return graph


def _foldable(node: ir.Node, consts: dict) -> bool:
    if node.op_type in _NEVER or node.domain not in ("", "ai.onnx") or node.subgraphs():
        return False
    return all(i in consts for i in node.inputs if i)


def _evaluate(node: ir.Node, consts: dict, opsets: dict[str, int]) -> list | None:
    kdef = registry.lookup(node.op_type, node.domain, opsets.get(node.domain, 0))
    if kdef is None:
        return None
    if kdef.missing(node.attrs):
        return None  # compilation reports it, naming the node
    kwargs = kdef.kwargs(node.attrs, len(node.outputs), opsets.get(node.domain, 0))
    names = list(node.inputs)
    while names and not names[-1]:
        names.pop()
    try:
        out = kdef.fn(*[consts[n] if n else None for n in names], **kwargs)
    except Exception:  # leave it to run time, where the error names the node properly
        return None
    out = list(out)[: len(node.outputs)]
    if len(out) < sum(1 for o in node.outputs if o):
        return None
    if any(not isinstance(v, np.ndarray) or v.nbytes > MAX_FOLDED_BYTES for v in out):
        return None
    return out
