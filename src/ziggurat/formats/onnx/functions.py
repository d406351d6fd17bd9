"""Inlining of model-local functions (ModelProto.functions).

Every node that calls a local function is replaced by a copy of the function body: formal inputs and
outputs are bound to the caller's actual names, every other name in the body (subgraphs included) gets
a fresh unique name, and attribute references (``ref_attr_name``) take the caller's value, else the
function's default, else are dropped. Expansion is recursive (functions calling functions, calls
inside subgraphs) with a depth limit. The body's nodes run under the model's opsets: if a function
imports a different version of a domain than the model, that is logged (the runtime keeps one opset per
domain), and domains only the function imports are added to the model's opsets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import ModelLoadError
from ...ir import Graph, Node, ValueInfo

if TYPE_CHECKING:
    from ...ir import Model

log = logging.getLogger("ziggurat.formats.onnx")

MAX_CALL_DEPTH = 64


@dataclass(frozen=True)
class AttrRef:
    """An attribute whose value is the calling node's attribute ``name`` (function bodies only)."""

    name: str


@dataclass
class Function:
    """A decoded FunctionProto."""

    name: str = ""
    domain: str = ""
    overload: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attr_names: list[str] = field(default_factory=list)
    attr_defaults: dict[str, Any] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    opsets: dict[str, int] = field(default_factory=dict)


def inline_functions(
    model: Model, functions: list[Function], overloads: dict[int, tuple[Node, str]]
) -> None:
    """Expand every call of a local function in ``model.graph`` (in place)."""
    table = {(f.domain, f.name, f.overload): f for f in functions}
    if not table:
        return
    inliner = _Inliner(model, table, overloads)
    inliner.expand_graph(model.graph, 0)


class _Inliner:
    def __init__(self, model: Model, table: dict, overloads: dict[int, tuple[Node, str]]):
        self.model = model
        self.table = table
        self.overloads = overloads
        self.used = _all_names(model.graph)
        self.node_names = _all_node_names(model.graph)
        self.counter = 0
        self.merged: set[tuple[str, str, str]] = set()

    def expand_graph(self, graph: Graph, depth: int) -> None:
        graph.nodes = self.expand_nodes(graph.nodes, depth)

    def expand_nodes(self, nodes: list[Node], depth: int) -> list[Node]:
        out: list[Node] = []
        for node in nodes:
            for g in node.subgraphs():
                self.expand_graph(g, depth + 1)
            key = (node.domain, node.op_type, self.overloads.get(id(node), (None, ""))[1])
            fn = self.table.get(key)
            if fn is None:
                out.append(node)
                continue
            if depth >= MAX_CALL_DEPTH:
                raise ModelLoadError(
                    f"function '{fn.name}' calls nest more than {MAX_CALL_DEPTH} deep (is it"
                    " recursive?); ONNX functions cannot recurse"
                )
            self._merge_opsets(fn)
            out.extend(self.expand_nodes(self.instantiate(fn, node), depth + 1))
        return out

    def _merge_opsets(self, fn: Function) -> None:
        key = (fn.domain, fn.name, fn.overload)
        if key in self.merged:
            return
        self.merged.add(key)
        for domain, version in fn.opsets.items():
            have = self.model.opsets.get(domain)
            if have is None:
                self.model.opsets[domain] = version
            elif have != version:
                log.debug(
                    "function %s imports %s opset %d but the model imports %d; using %d",
                    fn.name, domain or "ai.onnx", version, have, have,
                )  # fmt: skip

    def _node_name(self, want: str) -> str:
        name, k = want, 0
        while name in self.node_names:
            k += 1
            name = f"{want}_{k}"
        self.node_names.add(name)
        return name

    def fresh(self, fn: Function, name: str) -> str:
        while True:
            self.counter += 1
            cand = f"{fn.name}__{self.counter}__{name}"
            if cand not in self.used:
                self.used.add(cand)
                return cand

    def instantiate(self, fn: Function, call: Node) -> list[Node]:
        """A renamed copy of ``fn``'s body for one call."""
        mapping: dict[str, str] = {"": ""}
        for i, formal in enumerate(fn.inputs):
            mapping[formal] = call.inputs[i] if i < len(call.inputs) else ""
        extra: list[Node] = []
        produced = {o for n in fn.nodes for o in n.outputs}
        for i, formal in enumerate(fn.outputs):
            actual = call.outputs[i] if i < len(call.outputs) else ""
            if not actual:
                continue
            if formal in produced:
                mapping[formal] = actual
            else:  # the function returns an input (or an undefined name) directly
                name = self._node_name(f"{call.label}/{formal}")
                extra.append(Node("Identity", [formal], [actual], name=name))
        attrs = dict(fn.attr_defaults)
        attrs.update(call.attrs)

        def rename(name: str) -> str:
            new = mapping.get(name)
            if new is None:
                new = mapping[name] = self.fresh(fn, name)
            return new

        body = [self._copy_node(n, rename, attrs, call.label) for n in fn.nodes]
        for node in extra:
            node.inputs = [rename(i) for i in node.inputs]
        return body + extra

    def _copy_node(self, node: Node, rename: Any, attrs: dict, prefix: str) -> Node:
        new_attrs: dict[str, Any] = {}
        for key, value in node.attrs.items():
            if isinstance(value, AttrRef):
                if value.name in attrs:
                    new_attrs[key] = attrs[value.name]
                continue
            if isinstance(value, Graph):
                value = self._copy_graph(value, rename, attrs, prefix)
            elif isinstance(value, list) and value and isinstance(value[0], Graph):
                value = [self._copy_graph(g, rename, attrs, prefix) for g in value]
            new_attrs[key] = value
        new = Node(
            node.op_type,
            [rename(i) for i in node.inputs],
            [rename(o) for o in node.outputs],
            new_attrs,
            self._node_name(f"{prefix}/{node.name or node.op_type}"),
            node.domain,
        )
        if id(node) in self.overloads:
            self.overloads[id(new)] = (new, self.overloads[id(node)][1])
        return new

    def _copy_graph(self, graph: Graph, rename: Any, attrs: dict, prefix: str) -> Graph:
        def vi(v: ValueInfo) -> ValueInfo:
            return ValueInfo(rename(v.name), v.type, v.doc)

        return Graph(
            nodes=[self._copy_node(n, rename, attrs, prefix) for n in graph.nodes],
            inputs=[vi(v) for v in graph.inputs],
            outputs=[vi(v) for v in graph.outputs],
            initializers={rename(k): v for k, v in graph.initializers.items()},
            value_info={rename(k): vi(v) for k, v in graph.value_info.items()},
            name=graph.name,
            doc=graph.doc,
        )


def _all_names(graph: Graph) -> set[str]:
    names = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    names |= set(graph.initializers) | set(graph.value_info)
    for node in graph.nodes:
        names.update(node.inputs)
        names.update(node.outputs)
        for g in node.subgraphs():
            names |= _all_names(g)
    return names


def _all_node_names(graph: Graph) -> set[str]:
    names = set()
    for node in graph.nodes:
        names.add(node.name)
        for g in node.subgraphs():
            names |= _all_node_names(g)
    return names
