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


# Weight inputs (by position) of the quantized ops onnxruntime's tools and exporters write; their
# integer initializers are the model's quantized weights. MatMulNBits packs ``bits``-wide values
# into uint8 bytes, so its width comes from the attribute, not the dtype.
_QUANT_WEIGHTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("", "MatMulInteger"): (1,), ("", "ConvInteger"): (1,), ("", "QLinearMatMul"): (3,),
    ("", "QLinearConv"): (3,), ("", "DequantizeLinear"): (0,),
    ("com.microsoft", "MatMulNBits"): (1,), ("com.microsoft", "MatMulBnb4"): (1,),
    ("com.microsoft", "DynamicQuantizeMatMul"): (1,), ("com.microsoft", "MatMulIntegerToFloat"): (1,),
    ("com.microsoft", "QGemm"): (3,), ("com.microsoft", "QAttention"): (1,),
    ("com.microsoft", "QLinearConv"): (3,), ("com.microsoft", "DequantizeLinear"): (0,),
    ("com.microsoft", "DynamicQuantizeLSTM"): (1, 2),
}  # fmt: skip
_BITS = {"int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "int4": 4, "uint4": 4, "int2": 2,
         "uint2": 2, "int32": 32}  # fmt: skip


def _quantized_weights(g: ir.Graph) -> list[dict[str, Any]]:
    """Integer initializers read as weights by quantized ops: name, op, bit width, shape, bytes."""
    found: dict[str, dict[str, Any]] = {}
    for node, _ in _walk(g):
        positions = _QUANT_WEIGHTS.get(
            (node.domain if node.domain != "ai.onnx" else "", node.op_type)
        )
        for pos in positions or ():
            name = node.inputs[pos] if pos < len(node.inputs) else ""
            t = g.initializers.get(name)
            dtype = getattr(t, "dtype", None)
            if dtype is None or dtype.name not in _BITS or name in found:
                continue
            bits = (
                int(node.attrs.get("bits", 4))
                if node.op_type in ("MatMulNBits", "MatMulBnb4")
                else _BITS[dtype.name]
            )
            found[name] = {"name": name, "op": node.op_type, "bits": bits,
                           "shape": list(t.shape), "bytes": int(t.nbytes)}  # fmt: skip
    return list(found.values())


def _contrib_ops(hist: Counter[str]) -> list[dict[str, Any]]:
    """The com.microsoft ops the model uses, with how often and which kernel runs them."""
    out = []
    for key, count in sorted(hist.items()):
        if not key.startswith("com.microsoft::"):
            continue
        op = key.split("::", 1)[1]
        k = registry.lookup(op, "com.microsoft", 1)
        where = f"ops/{k.module.replace('.', '/')}.py:{k.fn.__name__}" if k else "no kernel"
        out.append({"op": op, "count": count, "kernel": where})
    return out


def _quant_lines(contrib: list[dict[str, Any]], quant: list[dict[str, Any]]) -> list[str]:
    lines = []
    if contrib:
        lines.append(f"com.microsoft ops: {len(contrib)}")
        lines += [f"  {c['op']:<28} {c['count']:>4}  {c['kernel']}" for c in contrib]
    if quant:
        by_bits: Counter[int] = Counter()
        mem: Counter[int] = Counter()
        for q in quant:
            by_bits[q["bits"]] += 1
            mem[q["bits"]] += q["bytes"]
        lines.append(
            f"quantized weights: {len(quant)} ({sum(mem.values()) / 1e6:.1f} MB): "
            + ", ".join(
                f"{n} x {b}-bit ({mem[b] / 1e6:.1f} MB)" for b, n in sorted(by_bits.items())
            )
        )
    return lines


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
    contrib, quant = _contrib_ops(hist), _quantized_weights(g)
    lines += _quant_lines(contrib, quant)
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
        "contrib_ops": contrib,
        "quantized_weights": quant,
        "text": "\n".join(lines),
    }
