"""Structural checks and topological ordering for ``ir.Graph``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GraphError

if TYPE_CHECKING:
    from .graph import Graph, Node


def toposort(graph: Graph) -> list[Node]:
    """Nodes in dependency order, keeping the given order where it is already valid."""
    producers = graph.producers()
    state: dict[int, int] = {}  # id(node) -> 1 visiting, 2 done
    order: list[Node] = []

    def deps(node: Node) -> list[Node]:
        names = [i for i in node.inputs if i]
        for g in node.subgraphs():
            names.extend(sorted(g.free_names()))
        return [producers[n] for n in names if n in producers]

    for root in graph.nodes:
        if state.get(id(root)) == 2:
            continue
        stack = [(root, iter(deps(root)))]
        state[id(root)] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[id(node)] = 2
                order.append(node)
            elif state.get(id(nxt)) == 1:
                raise GraphError(
                    f"graph '{graph.name}' has a cycle through node '{nxt.label}' ({nxt.op_type})"
                )
            elif state.get(id(nxt)) is None:
                state[id(nxt)] = 1
                stack.append((nxt, iter(deps(nxt))))
    return order


def lint(graph: Graph, outer: set[str]) -> None:
    """Check that every read name is defined before use, once, in this or an outer scope."""
    seen: set[str] = set()
    for v in graph.inputs:
        if v.name in seen:
            raise GraphError(f"graph '{graph.name}': input '{v.name}' is declared twice")
        seen.add(v.name)
    seen.update(graph.initializers)
    for node in graph.nodes:
        for name in node.inputs:
            if name and name not in seen and name not in outer:
                raise GraphError(
                    f"graph '{graph.name}': node '{node.label}' ({node.op_type}) reads '{name}', "
                    "which is not defined before it (not an input, initializer or earlier output)"
                )
        for g in node.subgraphs():
            g.lint(outer | seen)
        for name in node.outputs:
            if not name:
                continue
            if name in seen:
                raise GraphError(
                    f"graph '{graph.name}': value '{name}' is assigned twice "
                    f"(again by node '{node.label}' ({node.op_type}))"
                )
            seen.add(name)
    for v in graph.outputs:
        if v.name not in seen and v.name not in outer:
            raise GraphError(f"graph '{graph.name}': output '{v.name}' is never produced")
