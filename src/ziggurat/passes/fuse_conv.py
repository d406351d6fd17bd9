"""Fuse Conv [+ Add(residual)] [+ Relu/Clip] into ``ziggurat::FusedConv``; pick its output layout.

ResNet-style blocks end in conv -> add skip -> relu; the fused kernel adds the skip tensor and
applies the activation as the convolution's post-ops (oneDNN) or in its output buffer (numpy): two
fewer full-size tensors. Every other float Conv becomes a FusedConv too, so that each convolution
can be told its output layout: ``layout="nhwc"`` when all readers are convolutions or pools (which
read channels-last with no reorder, see backends/cpu/conv.py) and the value is no graph output;
plain NCHW otherwise. ``precision="bf16"`` (from the session) marks every FusedConv for bf16,
and one whose readers are all convolutions also outputs bf16 (``out_dtype``).

A residual that dies at its fused convolution is marked ``inplace_skip=1``: the convolution may
write its result into the residual's buffer (oneDNN's sum post-op reads the destination), which
saves a full-size copy per residual block (ResNet-50: 16 of them, up to 3 MiB each). Only where
nothing else can read the residual afterwards: its other readers all run before the convolution
(they are its ancestors), it is no graph input or output, and it and its other readers are
convolutions or pools (kernels that return a buffer of their own, never a view of an input: no
view of the residual can reach the convolution's data input or outlive it).
"""

from __future__ import annotations

from .. import ir
from ._match import FUSED_DOMAIN, Index, other_input

_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


_CHANNELS_LAST_READERS = {
    (FUSED_DOMAIN, "FusedConv"): (0, 3),  # data input and residual
    ("", "MaxPool"): (0,),
    ("", "AveragePool"): (0,),
    ("", "GlobalAveragePool"): (0,),
    ("", "GlobalMaxPool"): (0,),
}


def run(graph: ir.Graph, precision: str = "fp32") -> ir.Graph:
    """Fuse in place and return ``graph``; ``precision`` is the session's ('fp32' or 'bf16')."""
    _fuse(graph)
    _annotate(graph, precision)
    return graph


def _fuse(graph: ir.Graph) -> None:
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
            nxt = None  # its reader is fused into another conv: this one stands alone
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
        nxt = idx.only_use(out) if nxt is not None else None
        if nxt is not None and id(nxt) not in claimed and nxt.domain in ("", "ai.onnx"):
            if nxt.op_type == "Relu":
                activation = "relu"
            elif nxt.op_type == "Clip" and (bounds := _clip_bounds(idx, nxt)) is not None:
                activation = "clip"
            if activation:
                drop.add(id(last))
                last, out = nxt, nxt.outputs[0]
        if last is conv:
            if not _is_float_conv(idx, conv):
                continue
            claimed.add(id(conv))
        else:
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


def _is_float_conv(idx: Index, conv: ir.Node) -> bool:
    """A lone Conv worth converting: float weights (a quantized or integer conv stays as is)."""
    w = idx.const(conv.inputs[1]) if len(conv.inputs) > 1 else None
    return w is not None and w.dtype.kind == "f"


def _annotate(graph: ir.Graph, precision: str) -> None:
    idx = Index(graph)
    for node in graph.nodes:
        if node.op_type != "FusedConv" or node.domain != FUSED_DOMAIN:
            continue
        if _skip_dies_here(idx, node):
            node.attrs["inplace_skip"] = 1
        else:
            node.attrs.pop("inplace_skip", None)
        out = node.outputs[0]
        users = idx.consumers.get(out, [])
        if users and out not in idx.outputs and all(_reads_channels_last(u, out) for u in users):
            node.attrs["layout"] = "nhwc"
        else:
            node.attrs.pop("layout", None)
        if precision == "bf16":
            node.attrs["precision"] = "bf16"
            # Read only by bf16 convolutions: hand the activation on in bf16 (no conversion).
            if node.attrs.get("layout") == "nhwc" and all(_takes_bf16(idx, u) for u in users):
                node.attrs["out_dtype"] = "bf16"


# Producers whose output is a fresh buffer of the kernel's own (never a view of an input).
_OWN_BUFFER = {(FUSED_DOMAIN, "FusedConv"), ("", "MaxPool"), ("", "AveragePool")}


def _skip_dies_here(idx: Index, node: ir.Node) -> bool:
    """Whether ``node``'s residual (input 3) may be overwritten by ``node``: see the docstring."""
    skip = node.inputs[3] if len(node.inputs) > 3 else ""
    prod = idx.producer.get(skip) if skip else None
    if prod is None or skip in idx.outputs or node.inputs.count(skip) != 1:
        return False
    if not _owns_its_output(prod):
        return False
    # Its other readers must also make buffers of their own: a view of the residual (an Identity,
    # a Reshape) could reach this node's data input or outlive it and see the result.
    users = [u for u in idx.consumers.get(skip, []) if u is not node]
    if not all(_owns_its_output(u) for u in users):
        return False
    others = {id(u) for u in users}
    return not others or others <= _ancestors(idx, node, others)


def _owns_its_output(node: ir.Node) -> bool:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    return (domain, node.op_type) in _OWN_BUFFER and len([o for o in node.outputs if o]) == 1


def _ancestors(idx: Index, node: ir.Node, wanted: set[int]) -> set[int]:
    """Ids of ``node``'s ancestors, the search stopping once all of ``wanted`` are found."""
    seen: set[int] = set()
    stack = [node]
    while stack and not wanted <= seen:
        for name in stack.pop().inputs:
            prod = idx.producer.get(name) if name else None
            if prod is not None and id(prod) not in seen:
                seen.add(id(prod))
                stack.append(prod)
    return seen


def _is_fused_conv(node: ir.Node) -> bool:
    return node.op_type == "FusedConv" and node.domain == FUSED_DOMAIN


def _takes_bf16(idx: Index, node: ir.Node) -> bool:
    """A convolution, or a MaxPool (oneDNN pools bf16 as bf16) read only by convolutions."""
    if _is_fused_conv(node):
        return True
    if node.op_type != "MaxPool" or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
        return False
    out = node.outputs[0]
    users = idx.consumers.get(out, [])
    return bool(users) and out not in idx.outputs and all(_is_fused_conv(u) for u in users)


def _reads_channels_last(node: ir.Node, name: str) -> bool:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    slots = _CHANNELS_LAST_READERS.get((domain, node.op_type))
    if slots is None:
        return False
    return all(i in slots for i, inp in enumerate(node.inputs) if inp == name)


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
