"""Fold an inference BatchNormalization that follows a Conv into the Conv's weights and bias.

y = scale * (conv(x) - mean) / sqrt(var + eps) + bias is again a convolution, with
W' = W * s and B' = (B - mean) * s + bias where s = scale / sqrt(var + eps): one op and one full
pass over the activation fewer.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ._match import Index


def run(graph: ir.Graph) -> ir.Graph:
    idx = Index(graph)
    drop: set[int] = set()
    for conv in graph.nodes:
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.outputs) != 1:
            continue
        bn = idx.only_use(conv.outputs[0])
        if bn is None or bn.op_type != "BatchNormalization" or bn.inputs[0] != conv.outputs[0]:
            continue
        if len([o for o in bn.outputs if o]) != 1 or bn.attrs.get("training_mode", 0):
            continue
        w = idx.const(conv.inputs[1])
        params = [idx.const(n) for n in bn.inputs[1:5]]
        b = idx.const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
        if w is None or any(p is None for p in params) or w.dtype.kind != "f":
            continue
        if len(conv.inputs) > 2 and conv.inputs[2] and b is None:
            continue
        scale, bias, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
        s = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        new_w = (w.astype(np.float64) * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        base = b.astype(np.float64) if b is not None else np.zeros_like(s)
        new_b = ((base - mean) * s + bias).astype(w.dtype)
        wname, bname = f"{conv.label}/bn_folded_w", f"{conv.label}/bn_folded_b"
        graph.initializers[wname] = new_w
        graph.initializers[bname] = new_b
        conv.inputs = [conv.inputs[0], wname, bname]
        conv.outputs = list(bn.outputs[:1])
        drop.add(id(bn))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return graph
