"""Common subexpression elimination: a node that computes what an earlier node already computed
(same op, domain, attributes and inputs) is dropped, and its readers read the earlier outputs.

Exporters repeat work per layer: transformers' BERT export turns the same attention mask into the
same additive float mask once per layer (``Where(mask, 0, -inf)`` with per-layer copies of the
same two scalar constants). Inputs compare by name after earlier replacements, and small
constants (up to ``_VALUE_KEY_MAX`` elements) by value, so those per-layer copies match.

Left alone: random ops (two draws differ), nodes with subgraph attributes, nodes whose outputs
are graph outputs or are read inside a subgraph (renaming those would reach into the subgraph).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ir

_VALUE_KEY_MAX = 64
_RANDOM = frozenset(
    "RandomNormal RandomUniform RandomNormalLike RandomUniformLike Multinomial Bernoulli "
    "Dropout".split()
)


def run(graph: ir.Graph) -> ir.Graph:
    """Drop repeated computations from ``graph`` (in place; its subgraphs are left as they are)."""
    protected = {v.name for v in graph.outputs}
    protected |= {n for node in graph.nodes for g in node.subgraphs() for n in g.free_names()}
    const_key = _constant_keys(graph)
    rename: dict[str, str] = {}
    seen: dict[tuple, ir.Node] = {}
    kept: list[ir.Node] = []
    for node in graph.nodes:
        node.inputs = [rename.get(i, i) for i in node.inputs]
        key = _key(node, const_key)
        if key is None:
            kept.append(node)
            continue
        first = seen.get(key)
        if first is None or any(o in protected for o in node.outputs if o):
            seen.setdefault(key, node)
            kept.append(node)
            continue
        for mine, theirs in zip(node.outputs, first.outputs, strict=True):
            if mine:
                rename[mine] = theirs
    graph.nodes = kept
    return graph


def _constant_keys(graph: ir.Graph) -> dict[str, Any]:
    """Each small initializer's value key (dtype, shape, bytes): equal values, equal keys."""
    keys = {}
    for name, value in graph.initializers.items():
        if (
            isinstance(value, np.ndarray)
            and value.size <= _VALUE_KEY_MAX
            and value.dtype.kind != "O"
        ):
            keys[name] = ("const", value.dtype.str, value.shape, value.tobytes())
    return keys


def _key(node: ir.Node, const_key: dict[str, Any]) -> tuple | None:
    if node.op_type in _RANDOM or not node.outputs or node.subgraphs():
        return None
    attrs = _hashable(node.attrs)
    if attrs is None:
        return None
    inputs = tuple(const_key.get(i, i) for i in node.inputs)
    return (node.domain, node.op_type, inputs, attrs, len(node.outputs))


def _hashable(value: Any) -> Any:
    """A hashable form of an attribute value, or None where there is none."""
    if isinstance(value, dict):
        items = [(k, _hashable(v)) for k, v in sorted(value.items())]
        return None if any(v is None for _, v in items) else tuple(items)
    if isinstance(value, (list, tuple)):
        items = [_hashable(v) for v in value]
        return None if any(v is None for v in items) else ("seq", tuple(items))
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float):  # by bits: -0.0 and 0.0 differ, a NaN matches itself
        return ("value", "float", value.hex())
    if isinstance(value, (str, bytes, int, bool)) or value is None:
        return ("value", type(value).__name__, value)
    return None
