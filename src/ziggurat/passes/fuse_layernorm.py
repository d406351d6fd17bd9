"""Fuse layer normalisation subgraphs.

- ``Add(a, b) -> LayerNormalization`` (the residual add before each transformer norm) becomes one
  ``ziggurat::SkipLayerNorm`` that normalises the fresh sum in place. When the sum is also read
  elsewhere (GPT-2 and ViT add the next residual to it), the fused node outputs it as well.
- The decomposed form exporters emit before opset 17 —
  ``ReduceMean -> Sub -> Pow(2) | Mul -> ReduceMean -> Add(eps) -> Sqrt -> Div [-> Mul(gamma)]
  [-> Add(beta)]`` over the last axis — becomes one ``ziggurat::LayerNorm``.

Only chains whose intermediates nobody else reads are fused, and only with constant scale/bias.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ._match import FUSED_DOMAIN, Index, other_input

_ONNX = ("", "ai.onnx")


def run(graph: ir.Graph) -> ir.Graph:
    _fuse_decomposed(graph)
    _fuse_skip(graph)
    return graph


# ------------------------------------------------------------------ Add + LayerNormalization


def _fuse_skip(graph: ir.Graph) -> None:
    idx = Index(graph)
    at_add: dict[int, ir.Node] = {}
    drop: set[int] = set()
    for ln in graph.nodes:
        if ln.op_type != "LayerNormalization" or ln.domain not in _ONNX:
            continue
        if ln.attrs.get("stash_type", 1) != 1 or _spare_outputs_used(idx, ln):
            continue
        add = idx.made_by(ln.inputs[0], "Add")
        if add is None or id(add) in at_add or len(add.inputs) != 2:
            continue
        scale_bias = [n for n in ln.inputs[1:3] if n]
        if any(idx.const(n) is None for n in scale_bias):
            continue  # the fused node sits where the Add was: its other inputs must exist there
        readers = idx.consumers.get(add.outputs[0], [])
        keep_sum = len(readers) > 1 or add.outputs[0] in idx.outputs
        attrs = {"axis": ln.attrs.get("axis", -1), "epsilon": ln.attrs.get("epsilon", 1e-5)}
        outputs = [ln.outputs[0]] + ([add.outputs[0]] if keep_sum else [])
        inputs = list(add.inputs) + list(ln.inputs[1:3])
        at_add[id(add)] = ir.Node(
            "SkipLayerNorm", inputs, outputs, attrs, name=f"{ln.label}/skip", domain=FUSED_DOMAIN
        )
        drop.add(id(ln))
    graph.nodes = [at_add.get(id(n), n) for n in graph.nodes if id(n) not in drop]


def _spare_outputs_used(idx: Index, ln: ir.Node) -> bool:
    """Whether LayerNormalization's Mean or InvStdDev output is read by anything."""
    return any(o and (idx.consumers.get(o) or o in idx.outputs) for o in ln.outputs[1:])


# ------------------------------------------------------------------ decomposed LayerNorm


def _fuse_decomposed(graph: ir.Graph) -> None:
    idx = Index(graph)
    replace: dict[int, ir.Node] = {}
    for mean in graph.nodes:
        if mean.op_type != "ReduceMean" or mean.domain not in _ONNX:
            continue
        found = _match_decomposed(idx, mean)
        if found is None:
            continue
        last, x, eps, gamma, beta = found
        if gamma is None:
            gamma = f"{last.label}/ones"
            width = graph.initializers[beta].size if beta else None
            if width is None:
                continue  # neither scale nor bias: the feature count is unknown here
            graph.initializers[gamma] = np.ones(width, graph.initializers[beta].dtype)
        inputs = [x, gamma] + ([beta] if beta else [])
        replace[id(last)] = ir.Node(
            "LayerNorm", inputs, [last.outputs[0]], {"epsilon": eps},
            name=f"{last.label}/layernorm", domain=FUSED_DOMAIN,
        )  # fmt: skip
    graph.nodes = [replace.get(id(n), n) for n in graph.nodes]


def _last_axis_mean(idx: Index, node: ir.Node) -> bool:
    if node.attrs.get("keepdims", 1) != 1 or node.attrs.get("noop_with_empty_axes", 0):
        return False
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        const = idx.const(node.inputs[1])
        axes = None if const is None else const.reshape(-1).tolist()
    return axes is not None and list(axes) == [-1]


def _match_decomposed(idx: Index, mean: ir.Node):
    """(last node, x, epsilon, gamma name or None, beta name or None) of a decomposed LayerNorm
    starting at ``mean``, or None."""
    x = mean.inputs[0]
    if not _last_axis_mean(idx, mean):
        return None
    sub = idx.only_use(mean.outputs[0])
    if sub is None or sub.op_type != "Sub" or sub.inputs != [x, mean.outputs[0]]:
        return None
    d = sub.outputs[0]
    readers = idx.consumers.get(d, [])
    if len(readers) != 2 or d in idx.outputs:
        return None
    sq = next((r for r in readers if r.op_type in ("Pow", "Mul")), None)
    div = next((r for r in readers if r.op_type == "Div"), None)
    if sq is None or div is None or div.inputs[0] != d:
        return None
    if sq.op_type == "Pow" and not (sq.inputs[0] == d and idx.scalar(sq.inputs[1]) == 2.0):
        return None
    if sq.op_type == "Mul" and sq.inputs != [d, d]:
        return None
    var = idx.only_use(sq.outputs[0])
    if var is None or var.op_type != "ReduceMean" or not _last_axis_mean(idx, var):
        return None
    add = idx.only_use(var.outputs[0])
    eps = idx.scalar(other_input(add, var.outputs[0]) or "") if add is not None else None
    if add is None or add.op_type != "Add" or eps is None or not 0 <= eps < 1:
        return None
    sqrt = idx.only_use(add.outputs[0])
    if sqrt is None or sqrt.op_type != "Sqrt" or idx.only_use(sqrt.outputs[0]) is not div:
        return None
    if div.inputs[1] != sqrt.outputs[0]:
        return None
    last, gamma, beta = div, None, None
    step = _affine(idx, last, "Mul")
    if step is not None:
        last, gamma = step
    step = _affine(idx, last, "Add")
    if step is not None:
        last, beta = step
    if gamma is None and beta is None:
        return None  # nothing tells the feature count at pass time; left unfused
    if gamma is not None and beta is not None and idx.const(gamma).size != idx.const(beta).size:
        return None
    return last, x, eps, gamma, beta


def _affine(idx: Index, node: ir.Node, op: str) -> tuple[ir.Node, str] | None:
    """The single ``op`` reading ``node``'s output with a 1-D constant as its other input."""
    nxt = idx.only_use(node.outputs[0])
    if nxt is None or nxt.op_type != op or nxt.domain not in _ONNX:
        return None
    name = other_input(nxt, node.outputs[0])
    value = idx.const(name or "")
    if value is None or value.ndim != 1 or value.dtype.kind != "f":
        return None
    return nxt, name
