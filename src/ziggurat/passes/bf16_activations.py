"""``precision="bf16"``: activations that only bf16 GEMMs read are written in bfloat16.

A bf16 Dense converts its float32 input to bfloat16 before the product (a oneDNN reorder: one read
of the float32 rows, one write of the bf16 copy). Where every reader of a value is such a Dense
(through layout-only ops: Reshape, Transpose, Squeeze, Unsqueeze, Flatten; and Shape, which reads
no data), its producer writes bfloat16 itself (``out_dtype="bf16"``): the FFN's first projection
(after its GELU) for the second, and the bf16 attention (``FusedAttention``) for the output
projection, and the merged Q/K/V projection for the bf16 attention (through its Split and the
per-head Reshape/Transpose views; the attention's reorder to head-major layouts then reads half
the bytes). Those values are the same as before: the consumer rounded the same float32 numbers
to bfloat16 (round to nearest even, both in oneDNN).

A ``LayerNorm`` (left by passes/fuse_residual.py) whose output only bf16 Dense nodes read, as
their input or as the residual added in their epilogue (BERT's post-norm blocks: the next Q/K/V
projection and its output projection's residual), writes bfloat16 too, normalized in float32
(backends/cpu/norm_bf16.py). That one does round something new: the residual stream is carried in
bfloat16 between a LayerNorm and the next residual add (relative 2^-9 a block; BERT-base output
cosine vs fp32 0.99999 before, see the commit). What stays float32: the sums the residual adds
produce (LayerNorm inputs), softmax, graph outputs and anything any other op reads.

Runs from ``pack_weights`` after the bf16 weights are packed and FusedAttention is marked; the
value types in ``graph.value_info`` are updated to bfloat16.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import ir
from ..ir import dtypes
from ._match import FUSED_DOMAIN, Index

_LAYOUT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def run(graph: ir.Graph) -> ir.Graph:
    """Mark the producers of values read only by bf16 GEMMs ``out_dtype="bf16"``; return
    ``graph``."""
    from ..backends.cpu.gemm import PackedWeight

    idx = Index(graph)
    # names a subgraph (If/Loop body) reads from here: their type must not change under it
    sub_reads = {n for node in graph.nodes for g in node.subgraphs() for n in g.free_names()}

    def bf16_dense(node: ir.Node, name: str) -> bool:
        """``node`` a bf16 Dense reading ``name`` as its input or its residual (once)."""
        w = graph.initializers.get(node.inputs[1]) if len(node.inputs) > 1 else None
        if node.domain != FUSED_DOMAIN or node.op_type != "Dense" or node.inputs.count(name) != 1:
            return False
        if not isinstance(w, PackedWeight) or w.dtype == np.float32:
            return False
        return node.inputs[0] == name or node.inputs[3:4] == [name]

    def bf16_attention(node: ir.Node, name: str) -> bool:
        """``node`` a bf16 FusedAttention reading ``name`` as q, k^T or v (not as the mask)."""
        return (
            node.domain == FUSED_DOMAIN
            and node.op_type == "FusedAttention"
            and bool(node.attrs.get("bf16"))
            and name in node.inputs[:3]
            and name not in node.inputs[3:]
        )

    def only_bf16_gemms(name: str, seen: list[str]) -> bool:
        readers = idx.consumers.get(name, [])
        if not readers or name in idx.outputs or name in sub_reads:
            return False
        seen.append(name)
        for r in readers:
            if bf16_dense(r, name) or bf16_attention(r, name):
                continue
            if r.op_type == "Shape" and not r.domain:
                continue
            layout = r.op_type in _LAYOUT_OPS + ("Split",) and not r.domain
            if not layout or r.inputs[0] != name or name in r.inputs[1:]:
                return False
            if not all(o and only_bf16_gemms(o, seen) for o in r.outputs):
                return False
        return True

    for node in graph.nodes:
        if not _producer(node, graph, PackedWeight) or node.attrs.get("out_dtype"):
            continue
        seen: list[str] = []
        if only_bf16_gemms(node.outputs[0], seen):
            node.attrs["out_dtype"] = "bf16"
            for name in seen:
                _retype(graph, name)
    return graph


def _producer(node: ir.Node, graph: ir.Graph, packed_type) -> bool:
    """A bf16 Dense (its weight packed in bfloat16) or a bf16 FusedAttention, one output."""
    if node.domain != FUSED_DOMAIN or len(node.outputs) != 1:
        return False
    if node.op_type == "FusedAttention":
        return bool(node.attrs.get("bf16"))
    if node.op_type == "LayerNorm":
        return True
    if node.op_type != "Dense" or len(node.inputs) < 2:
        return False
    w = graph.initializers.get(node.inputs[1])
    return isinstance(w, packed_type) and w.dtype != np.float32


def _retype(graph: ir.Graph, name: str) -> None:
    info = graph.value_info.get(name)
    if info is not None and info.type is not None and info.type.kind == "tensor":
        t = dataclasses.replace(info.type, elem_type=dtypes.BFLOAT16)
        graph.value_info[name] = dataclasses.replace(info, type=t)
