"""Constant folding: evaluate nodes whose inputs are all constants at compile time.

Folded results become initializers. Random ops and ops with subgraphs are never folded, nor are
results bigger than ``MAX_FOLDED_BYTES`` (folding e.g. a huge ConstantOfShape would only trade
compute for memory), nor more than ``MAX_FOLDED_TOTAL`` bytes per graph: a few-KB file must not be
able to make compilation hold gigabytes (many 64 MB ConstantOfShape nodes).
"""

from __future__ import annotations

import math

import numpy as np

from .. import ir
from ..ops import registry

MAX_FOLDED_BYTES = 64 << 20
MAX_FOLDED_TOTAL = 256 << 20
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
    folded = 0  # bytes of results folded so far
    for node in graph.nodes:
        if _foldable(node, consts):
            values = _evaluate(node, consts, opsets)
            if values is not None:
                folded += sum(v.nbytes for v in values)
            if values is not None and folded <= MAX_FOLDED_TOTAL:
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


def _predicted_items(node: ir.Node, consts: dict) -> int:
    """Output elements of the ops whose output size comes from input *values* (a few bytes of
    file can ask for 2^62 elements): checked before evaluating, so folding never allocates it.
    Other ops return 0 (their outputs are checked after evaluation)."""
    ins = [consts[n] if n else None for n in node.inputs]
    try:
        if node.op_type == "Constant" and isinstance(
            node.attrs.get("sparse_value"), ir.SparseTensor
        ):
            return math.prod(node.attrs["sparse_value"].dims)
        if node.op_type == "ConstantOfShape":
            return math.prod(int(d) for d in np.asarray(ins[0]).reshape(-1))
        if node.op_type == "Expand":
            shape = [int(d) for d in np.asarray(ins[1]).reshape(-1)]
            return math.prod(np.broadcast_shapes(np.shape(ins[0]), tuple(shape)))
        if node.op_type == "Tile":
            reps = [int(r) for r in np.asarray(ins[1]).reshape(-1)]
            # Conservative: a 0 counts as 1 (numpy tiles axis by axis); negatives: the kernel refuses.
            return np.size(ins[0]) * math.prod(max(r, 1) for r in reps)
        if node.op_type == "Range":
            start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in ins[:3])
            return max(0, math.ceil((limit - start) / delta)) if delta else 0
    except (ValueError, TypeError, IndexError, OverflowError):
        return 1 << 62  # malformed or unknowable: do not fold; run time reports it with the node
    return 0


def _evaluate(node: ir.Node, consts: dict, opsets: dict[str, int]) -> list | None:
    if _predicted_items(node, consts) > MAX_FOLDED_BYTES:  # >= 1 byte per element
        return None
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
