"""Fuse Conv [+ Add(residual)] [+ Relu] into ``ziggurat::FusedConv``.

ResNet-style blocks end in conv -> add skip -> relu; the fused kernel adds the skip tensor and
applies the activation in the convolution's own output buffer (two fewer full-size tensors).
"""

from __future__ import annotations

from .. import ir
from ._match import FUSED_DOMAIN, Index, other_input

_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def run(graph: ir.Graph) -> ir.Graph:
    idx = Index(graph)
    drop: set[int] = set()
    replace: dict[int, ir.Node] = {}
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    claimed: set[int] = set()  # nodes already part of a fusion (an Add may follow two Convs)
    for conv in graph.nodes:
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            continue
        if set(conv.attrs) - set(_CONV_ATTRS):
            continue
        inputs = list(conv.inputs) + [""] * (3 - len(conv.inputs))
        last, out = conv, conv.outputs[0]
        nxt = idx.only_use(out)
        if nxt is not None and id(nxt) in claimed:
            continue
        if nxt is not None and nxt.op_type == "Add" and nxt.domain in ("", "ai.onnx"):
            skip = other_input(nxt, out)
            skip_node = idx.producer.get(skip or "")
            # The skip must be computed before the fused node's position (the Add's).
            if (
                skip
                and skip != out
                and (skip_node is None or position[id(skip_node)] < position[id(nxt)])
            ):
                inputs.append(skip)
                drop.add(id(last))
                last, out = nxt, nxt.outputs[0]
        activation, bounds = "", {}
        nxt = idx.only_use(out)
        if nxt is not None and nxt.domain in ("", "ai.onnx"):
            if nxt.op_type == "Relu":
                activation = "relu"
            elif nxt.op_type == "Clip" and (bounds := _clip_bounds(idx, nxt)) is not None:
                activation = "clip"
            if activation:
                drop.add(id(last))
                last, out = nxt, nxt.outputs[0]
        if last is conv:
            continue
        claimed.update(
            {id(conv), id(last), *(id(n) for n in idx.consumers.get(conv.outputs[0], []))}
        )
        attrs = dict(conv.attrs)
        attrs["activation"] = activation
        attrs.update(bounds or {})
        replace[id(last)] = ir.Node(
            "FusedConv", inputs, [out], attrs, name=f"{conv.label}/fused", domain=FUSED_DOMAIN
        )
    graph.nodes = [replace.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return graph


def _clip_bounds(idx: Index, clip: ir.Node) -> dict[str, float] | None:
    """{clip_min, clip_max} of a Clip with constant bounds (ReLU6 and the like), else None."""
    if "min" in clip.attrs or "max" in clip.attrs:  # opset < 11
        return {
            "clip_min": float(clip.attrs.get("min", -3.4028234663852886e38)),
            "clip_max": float(clip.attrs.get("max", 3.4028234663852886e38)),
        }
    bounds = {"clip_min": -3.4028234663852886e38, "clip_max": 3.4028234663852886e38}
    for key, name in zip(("clip_min", "clip_max"), clip.inputs[1:3]):
        if not name:
            continue
        value = idx.scalar(name)
        if value is None:
            return None
        bounds[key] = value
    return bounds
