"""Readable text form of a graph, one node per line: ``%y = Relu(%x)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .graph import Graph


def graph_text(graph: Graph, indent: str = "") -> str:
    ins = ", ".join(str(v) for v in graph.inputs)
    outs = ", ".join(str(v) for v in graph.outputs)
    lines = [f"{indent}graph {graph.name}({ins}) -> ({outs}) {{"]
    for name, t in graph.initializers.items():
        desc = f"tensor({t.dtype},{list(t.shape)})" if hasattr(t, "shape") else type(t).__name__
        lines.append(f"{indent}  %{name} = initializer {desc}")
    for node in graph.nodes:
        lines.append(f"{indent}  {node}")
        for key, g in sorted(node.attrs.items()):
            subs = g if isinstance(g, list) else [g]
            for sub in subs:
                if hasattr(sub, "nodes"):
                    lines.append(f"{indent}    {key}:")
                    lines.append(graph_text(sub, indent + "    "))
    lines.append(f"{indent}}}")
    return "\n".join(lines)
