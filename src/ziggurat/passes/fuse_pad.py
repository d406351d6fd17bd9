"""Fold a zero Pad of spatial dims into the Conv or pooling node that reads it.

TensorFlow-style exporters (MobileNet from transformers, among others) pad explicitly before every
strided convolution; the Pad copies the whole activation only for the Conv to read it once.
Conv's own ``pads`` attribute does the same without the copy.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ._match import Index

_TARGETS = ("Conv", "FusedConv")


def run(graph: ir.Graph) -> ir.Graph:
    idx = Index(graph)
    drop: set[int] = set()
    for pad in graph.nodes:
        if pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx"):
            continue
        spatial = _spatial_pads(idx, pad)
        users = idx.consumers.get(pad.outputs[0], [])
        if spatial is None or not users or pad.outputs[0] in idx.outputs:
            continue
        if not all(_can_absorb(u, pad.outputs[0], len(spatial) // 2) for u in users):
            continue
        for conv in users:
            k = len(spatial) // 2
            old = list(conv.attrs.get("pads") or [0] * (2 * k))
            conv.attrs["pads"] = [a + b for a, b in zip(old, spatial)]
            conv.inputs[0] = pad.inputs[0]
        drop.add(id(pad))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return graph


def _spatial_pads(idx: Index, pad: ir.Node) -> list[int] | None:
    """Conv-style [begin..., end...] pads of the spatial dims, if the Pad is a plain zero pad of
    only those dims (N and C untouched), else None."""
    if pad.attrs.get("mode", "constant") != "constant":
        return None
    if "pads" in pad.attrs:  # opset < 11
        pads = list(pad.attrs["pads"])
        value = float(pad.attrs.get("value", 0.0))
    else:
        if len(pad.inputs) < 2 or (len(pad.inputs) > 3 and pad.inputs[3]):
            return None  # axes given: keep it simple
        p = idx.const(pad.inputs[1])
        if p is None:
            return None
        pads = [int(v) for v in np.asarray(p).reshape(-1)]
        value = 0.0
        if len(pad.inputs) > 2 and pad.inputs[2]:
            v = idx.scalar(pad.inputs[2])
            if v is None:
                return None
            value = v
    rank = len(pads) // 2
    if value != 0.0 or rank < 3 or any(v < 0 for v in pads):
        return None
    begin, end = pads[:rank], pads[rank:]
    if begin[:2] != [0, 0] or end[:2] != [0, 0]:
        return None
    return begin[2:] + end[2:]


def _can_absorb(node: ir.Node, name: str, k: int) -> bool:
    if node.op_type not in _TARGETS or node.inputs[0] != name or name in node.inputs[1:]:
        return False
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        return False
    pads = node.attrs.get("pads")
    return pads is None or len(pads) == 2 * k
