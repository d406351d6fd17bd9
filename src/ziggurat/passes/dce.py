"""Dead code elimination: drop nodes none of whose outputs reach a graph output."""

from __future__ import annotations

from .. import ir

# Ops with effects beyond their outputs would be kept here; ONNX inference ops have none.
_SIDE_EFFECTS: frozenset[str] = frozenset()


def run(graph: ir.Graph) -> ir.Graph:
    """Remove unused nodes and initializers (recursing into subgraphs)."""
    live = {v.name for v in graph.outputs}
    kept: list[ir.Node] = []
    for node in reversed(graph.nodes):
        if node.op_type in _SIDE_EFFECTS or any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(i for i in node.inputs if i)
            for sub in node.subgraphs():
                run(sub)
                live |= sub.free_names()
    kept.reverse()
    graph.nodes = kept
    for name in [n for n in graph.initializers if n not in live]:
        del graph.initializers[name]
    return graph
