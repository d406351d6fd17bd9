"""Constant int8 weights of ``ziggurat::QDense`` (and of onnxruntime's ``MatMulIntegerToFloat`` /
``DynamicQuantizeMatMul``) in oneDNN's blocked int8 matmul layout (CPU only).

The int8 matmul reads plain (K, N) weights in place, but slowly for some shapes: BERT's 3072x768
FFN down-projection took 0.47 ms plain vs 0.17 ms packed (median, 2 threads, AMX;
``benchmarks/gemm.py u8s8-plain`` / ``u8s8-packed``), 768x768 0.105 vs 0.092 ms. So every large
constant int8 weight read only as a QDense weight is reordered once, here, into
``backends.cpu.int8.PackedInt8``: the same bytes, int8, in another order. Weights viewed in the
model file have their pages dropped afterwards (``pack_weights._release``), so the session holds
one int8 copy. Only where oneDNN runs int8 natively (VNNI/AMX); elsewhere the kernels read the
plain matrix.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ._match import FUSED_DOMAIN

MIN_ELEMENTS = 1 << 16  # below, the per-call cost of oneDNN dominates and packing saves nothing
# op -> index of its weight's zero point; the weight is input 1 of each (kernels in ops/)
_READERS = {
    (FUSED_DOMAIN, "QDense"): 5,
    (FUSED_DOMAIN, "DynamicQDense"): 3,
    ("com.microsoft", "MatMulIntegerToFloat"): 5,
    ("com.microsoft", "DynamicQuantizeMatMul"): 3,
}


def run(graph: ir.Graph) -> ir.Graph:
    """Pack the eligible QDense weights of ``graph`` in place; returns ``graph``."""
    names = [
        n.inputs[1]
        for n in graph.nodes
        if (n.domain, n.op_type) in _READERS and _plain_zero_point(graph, n)
    ]
    names = [
        name
        for name in dict.fromkeys(names)
        if type(graph.initializers.get(name)) is np.ndarray
        and graph.initializers[name].dtype == np.int8
        and graph.initializers[name].ndim == 2
        and graph.initializers[name].size >= MIN_ELEMENTS
    ]
    if not names:
        return graph
    from ..backends.cpu import int8

    if not int8.native():
        return graph
    from .pack_weights import _release, _trim, weight_readers

    readers, shadowed = weight_readers(graph)
    freed, packed = 0, 0
    for name in names:
        weight_reads = sum(
            1
            for n in graph.nodes
            if (n.domain, n.op_type) in _READERS and n.inputs[1] == name
            and name not in n.inputs[2:]
            and n.inputs[0] != name
        )  # fmt: skip
        if name in shadowed or readers.get(name, 0) != weight_reads:
            continue
        w = graph.initializers[name]
        graph.initializers[name] = int8.pack(w)
        freed = _trim(_release(w, freed))
        del w
        packed += 1
    if packed:
        from ..backends import cpu

        cpu.release_free_memory()
    return graph


def _plain_zero_point(graph: ir.Graph, node: ir.Node) -> bool:
    """The weight's zero point is absent or all zeros (the only case oneDNN's int8 path takes)."""
    at = _READERS[(node.domain, node.op_type)]
    zp_name = node.inputs[at] if len(node.inputs) > at else ""
    if not zp_name:
        return True
    zp = graph.initializers.get(zp_name)
    return isinstance(zp, np.ndarray) and not np.any(zp)
