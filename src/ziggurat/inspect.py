"""``ziggurat inspect``: what a model is made of and what of it Ziggurat cannot run."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from . import ir
from .formats.onnx import load_model
from .ops import registry
from .runtime.session import _node_arg


def _walk(graph: ir.Graph, path: str = ""):
    for node in graph.nodes:
        yield node, path
        for key, value in node.attrs.items():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, ir.Graph):
                    yield from _walk(sub, f"{path}{node.label}.{key}/")


def inspect_model(source: str | os.PathLike | bytes) -> dict[str, Any]:
    """A report on the model: a dict with a human-readable ``text`` and the same facts as data."""
    model = load_model(source)
    g = model.graph
    hist: Counter[str] = Counter()
    unsupported: list[dict[str, Any]] = []
    for node, path in _walk(g):
        key = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
        hist[key] += 1
        opset = model.opset(node.domain)
        if registry.lookup(node.op_type, node.domain, opset) is None:
            unsupported.append(
                {"node": path + node.label, "op": node.op_type, "domain": node.domain or "ai.onnx",
                 "opset": opset}
            )  # fmt: skip
    params = sum(int(getattr(t, "size", 0)) for t in g.initializers.values())
    nbytes = sum(int(getattr(t, "nbytes", 0)) for t in g.initializers.values())
    ins = [_node_arg(v).__dict__ for v in g.inputs]
    outs = [_node_arg(v).__dict__ for v in g.outputs]
    opsets = {d or "ai.onnx": v for d, v in sorted(model.opsets.items())}
    lines = [
        f"model: {model.path or '<bytes>'}",
        f"producer: {model.producer_name} {model.producer_version}".rstrip(),
        f"ir_version: {model.ir_version}; opsets: "
        + ", ".join(f"{d} {v}" for d, v in opsets.items()),
        "inputs:",
        *[f"  {a['name']}: {a['type']} {a['shape']}" for a in ins],
        "outputs:",
        *[f"  {a['name']}: {a['type']} {a['shape']}" for a in outs],
        f"parameters: {params:,} ({nbytes / 1e6:.1f} MB in {len(g.initializers)} initializers)",
        f"nodes: {sum(hist.values())} ({len(hist)} op types)",
        *[f"  {op:<28} {n}" for op, n in hist.most_common()],
    ]
    if unsupported:
        lines.append(f"unsupported: {len(unsupported)} node(s) have no kernel:")
        lines += [
            f"  {u['node']}: {u['domain']}::{u['op']} (opset {u['opset']})" for u in unsupported
        ]
    else:
        lines.append("unsupported: none — every node has a kernel")
    return {
        "inputs": ins,
        "outputs": outs,
        "opsets": opsets,
        "ops": dict(hist),
        "parameters": params,
        "parameter_bytes": nbytes,
        "unsupported": unsupported,
        "text": "\n".join(lines),
    }
