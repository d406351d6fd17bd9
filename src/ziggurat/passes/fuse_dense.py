"""Fuse MatMul(x, W) + Add(bias) [+ Gelu/GeluTanh/Relu] with constant W and bias into
``ziggurat::Dense``.

The fused kernel writes the bias and the activation into the matmul's own output buffer instead of
allocating one tensor per op, and flattens the batch dims into one BLAS call.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ._match import FUSED_DOMAIN, Index, other_input

_ACTIVATIONS = {
    ("", "Relu"): "relu",
    (FUSED_DOMAIN, "Gelu"): "gelu",
    (FUSED_DOMAIN, "GeluTanh"): "gelu_tanh",
}


def run(graph: ir.Graph) -> ir.Graph:
    idx = Index(graph)
    drop: set[int] = set()
    replace: dict[int, ir.Node] = {}
    for mm in graph.nodes:
        if mm.domain not in ("", "ai.onnx"):
            continue
        if mm.op_type == "Gemm":
            inputs = _gemm_inputs(idx, graph, mm)
            if inputs is None:
                continue
        elif mm.op_type == "MatMul":
            inputs = [mm.inputs[0], mm.inputs[1]]
        else:
            continue
        w = idx.const(inputs[1])
        if w is None or w.ndim != 2 or w.dtype.kind != "f":
            continue
        last, out = mm, mm.outputs[0]
        add = idx.only_use(out)
        if (
            len(inputs) == 2
            and add is not None
            and add.op_type == "Add"
            and add.domain in ("", "ai.onnx")
        ):
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
        if last is mm and mm.op_type == "MatMul":
            continue
        replace[id(last)] = ir.Node(
            "Dense", inputs, [out], {"activation": activation}, name=f"{mm.label}/dense",
            domain=FUSED_DOMAIN,
        )  # fmt: skip
    graph.nodes = [replace.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return graph


def _gemm_inputs(idx: Index, graph: ir.Graph, gemm: ir.Node) -> list[str] | None:
    """[x, W, (bias)] for a Gemm that is x @ W + bias with constant W and 1-D-able bias.

    transB is applied once here, to the constant, instead of on every run.
    """
    a = gemm.attrs
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or gemm.attrs.get("broadcast") == 0:
        return None
    w = idx.const(gemm.inputs[1])
    if w is None or w.ndim != 2:
        return None
    wname = gemm.inputs[1]
    if a.get("transB", 0):
        wname = f"{gemm.label}/w_t"
        graph.initializers[wname] = np.ascontiguousarray(w.T)
        w = graph.initializers[wname]
    inputs = [gemm.inputs[0], wname]
    if len(gemm.inputs) > 2 and gemm.inputs[2]:
        c = idx.const(gemm.inputs[2])
        if c is None or c.dtype != w.dtype or c.size != w.shape[1] or c.ndim > 2:
            return None
        if c.ndim == 2 and c.shape[0] != 1:
            return None
        beta = float(a.get("beta", 1.0))
        bname = f"{gemm.label}/bias"
        graph.initializers[bname] = (c.reshape(-1) * c.dtype.type(beta)).astype(c.dtype)
        inputs.append(bname)
    return inputs
