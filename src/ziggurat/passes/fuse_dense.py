"""Fuse MatMul(x, W) + Add(bias) [+ Gelu/Relu] with constant W and bias into ``ziggurat::Dense``.

The fused kernel writes the bias and the activation into the matmul's own output buffer instead of
allocating one tensor per op, and flattens the batch dims into one BLAS call.
"""

from __future__ import annotations

from .. import ir
from ._match import FUSED_DOMAIN, Index, other_input

_ACTIVATIONS = {("", "Relu"): "relu", (FUSED_DOMAIN, "Gelu"): "gelu"}


def run(graph: ir.Graph) -> ir.Graph:
    idx = Index(graph)
    drop: set[int] = set()
    replace: dict[int, ir.Node] = {}
    for mm in graph.nodes:
        if mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx"):
            continue
        w = idx.const(mm.inputs[1])
        if w is None or w.ndim != 2 or w.dtype.kind != "f":
            continue
        inputs = [mm.inputs[0], mm.inputs[1]]
        last, out = mm, mm.outputs[0]
        add = idx.only_use(out)
        if add is not None and add.op_type == "Add" and add.domain in ("", "ai.onnx"):
            bias_name = other_input(add, out)
            bias = idx.const(bias_name or "")
            if bias is not None and bias.dtype == w.dtype and bias.shape in ((w.shape[1],),):
                inputs.append(bias_name)
                drop.add(id(last))
                last, out = add, add.outputs[0]
        activation = ""
        act = idx.only_use(out)
        if act is not None and (act.domain, act.op_type) in _ACTIVATIONS:
            activation = _ACTIVATIONS[(act.domain, act.op_type)]
            drop.add(id(last))
            last, out = act, act.outputs[0]
        if last is mm:
            continue
        replace[id(last)] = ir.Node(
            "Dense", inputs, [out], {"activation": activation}, name=f"{mm.label}/dense",
            domain=FUSED_DOMAIN,
        )  # fmt: skip
    graph.nodes = [replace.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return graph
