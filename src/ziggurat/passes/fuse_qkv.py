"""Merge ``ziggurat::Dense`` (or int8 ``QDense``) nodes that read the same input into one wider
GEMM and a Split.

Transformer exports compute Q, K and V as three products of the same hidden state with three
(H, H) weights. One (H, 3H) product does the same arithmetic in one call: two fewer kernel calls
and oneDNN dispatches per layer, one read of the input instead of three, and a wider N that
runs closer to the GEMM's peak (bert-tiny, 128 x 128 x 128: three products took 3 x 39 us, the
merged 128 x 128 x 384 one 72 us, 2 cores). The Split returns views of the merged output's
columns, so nothing is copied; the heads' Reshape/Transpose read them as before.

Merged: Dense nodes with the same input, the same activation, constant float weights of the same
row count K and either all a constant 1-D bias or none. Each output's columns are computed
exactly as before (same K-long dot products, same bias and activation per column), so the
results are bitwise those of the separate products wherever the GEMM's blocking along N does
not change the summation order along K (true of OpenBLAS's and oneDNN's kernels; the model tests
compare with onnxruntime at the usual tolerance either way).

int8 ``QDense`` nodes (``quantize_dynamic``'s products after passes/fuse_quant_matmul.py) merge
the same way when they share the quantized activation (its scale and zero point too) and their
weights have zero zero points: the weights' scales become one per column, the same product per
column as before. BERT-base int8: 73 -> 49 int8 GEMMs per run.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .. import ir
from ._match import FUSED_DOMAIN, Index
from .pack_weights import _drop_file_pages as drop_file_pages


def run(graph: ir.Graph, opsets: dict[str, int]) -> ir.Graph:
    """Merge every group of two or more mergeable Dense/QDense nodes in ``graph`` (in place)."""
    idx = Index(graph)
    groups: dict[tuple, list[ir.Node]] = {}
    for node in graph.nodes:
        key = _key(idx, node)
        if key is not None:
            groups.setdefault(key, []).append(node)
    groups = {k: g for k, g in groups.items() if len(g) > 1}
    if not groups:
        return graph
    reads = _reads(graph)
    replace: dict[int, list[ir.Node]] = {}
    dropped: set[int] = set()
    for group in groups.values():
        replace[id(group[0])] = _merge(graph, idx, group, opsets)
        dropped.update(id(n) for n in group[1:])
        _free_separate(graph, group, reads)
    nodes: list[ir.Node] = []
    for node in graph.nodes:
        if id(node) in replace:
            nodes.extend(replace[id(node)])
        elif id(node) not in dropped:
            nodes.append(node)
    graph.nodes = nodes
    return graph


def _free_separate(graph: ir.Graph, group: list[ir.Node], reads: Counter[str]) -> None:
    """Drop the group's separate weights and biases that nothing else reads, and hand their
    memory back at once. Copying them into the merged weight faulted them in: a view of the
    model file keeps those pages resident until they are dropped from the map, and a copy's
    freed buffer stays in the allocator's heap (backends/cpu tune_allocator) where the next,
    wider merged weight does not fit. Measured on BERT-base fp32, peak RSS of session creation:
    461 MiB without the merge, 578 merging without either release, 489 with both."""
    freed = 0
    for node in group:
        for pos in _MERGED[node.op_type]:
            name = node.inputs[pos] if pos < len(node.inputs) else ""
            reads[name] -= 1
            if name and reads[name] == 0 and name in graph.initializers:
                w = graph.initializers.pop(name)
                if isinstance(w, np.ndarray):
                    drop_file_pages(w)
                    freed += w.nbytes
    if freed >= 1 << 20:
        from ..backends import cpu

        cpu.release_free_memory()


def _reads(graph: ir.Graph) -> Counter[str]:
    """How many times each name is read: node inputs, subgraphs' free names, graph outputs."""
    reads: Counter[str] = Counter(name for node in graph.nodes for name in node.inputs)
    reads.update(v.name for v in graph.outputs)
    reads.update(n for node in graph.nodes for g in node.subgraphs() for n in g.free_names())
    return reads


# Per op: the inputs every node of a group shares (the activation and, for int8, its scale and
# zero point) and the per-output-column constants that are concatenated.
_SHARED = {"Dense": (0,), "QDense": (0, 2, 4)}
_MERGED = {"Dense": (1, 2), "QDense": (1, 3, 5, 6)}


def _input(node: ir.Node, pos: int) -> str:
    return node.inputs[pos] if pos < len(node.inputs) else ""


def _key(idx: Index, node: ir.Node) -> tuple | None:
    if node.domain != FUSED_DOMAIN or node.op_type not in _SHARED or len(node.outputs) != 1:
        return None
    w = idx.const(node.inputs[1])
    if w is None or w.ndim != 2:
        return None
    if node.op_type == "Dense" and w.dtype.kind != "f":
        return None
    bias_pos = 2 if node.op_type == "Dense" else 6
    bias = _input(node, bias_pos) or None
    if bias is not None:
        b = idx.const(bias)
        want = w.dtype if node.op_type == "Dense" else np.dtype(np.float32)
        if b is None or b.shape != (w.shape[1],) or b.dtype != want:
            return None
    if node.op_type == "QDense" and not _int8_weight_ok(idx, node, w):
        return None
    shared = tuple(_input(node, p) for p in _SHARED[node.op_type])
    return (node.op_type, shared, node.attrs.get("activation", ""), w.shape[0], w.dtype,
            bias is None)  # fmt: skip


def _int8_weight_ok(idx: Index, node: ir.Node, w: np.ndarray) -> bool:
    """QDense: an int8 weight with a constant float scale (one, or one per column) and a zero
    point that is absent or zero (what the merged node's int8 kernel takes)."""
    scale = idx.const(_input(node, 3))
    if w.dtype != np.int8 or scale is None or scale.dtype != np.float32:
        return False
    if scale.size not in (1, w.shape[1]):
        return False
    zp_name = _input(node, 5)
    if zp_name:
        zp = idx.const(zp_name)
        if zp is None or zp.size not in (1, w.shape[1]) or np.any(zp != 0):
            return False
    return True


def _columns(values: list[np.ndarray], widths: list[int], dtype) -> np.ndarray:
    """Per-column vectors concatenated, a group member's single value repeated over its columns."""
    parts = [
        np.broadcast_to(np.asarray(v, dtype).reshape(-1), (n,))
        for v, n in zip(values, widths, strict=True)
    ]
    return np.ascontiguousarray(np.concatenate(parts))


def _merge(graph: ir.Graph, idx: Index, group: list[ir.Node], opsets: dict[str, int]):
    first = group[0]
    ws = [idx.const(n.inputs[1]) for n in group]
    widths = [int(w.shape[1]) for w in ws]

    def add(suffix: str, value: np.ndarray) -> str:
        name = _fresh(graph, f"{first.label}/merged_{suffix}")
        graph.initializers[name] = value
        return name

    w_name = add("weight", np.ascontiguousarray(np.concatenate(ws, axis=1)))
    bias_pos = 2 if first.op_type == "Dense" else 6
    bias = ""
    if _input(first, bias_pos):
        biases = [idx.const(_input(n, bias_pos)) for n in group]
        bias = add("bias", _columns(biases, widths, biases[0].dtype))
    if first.op_type == "Dense":
        inputs = [first.inputs[0], w_name] + ([bias] if bias else [])
    else:  # QDense: the scales per column; the zero points are all zero (checked): none
        scales = _columns([idx.const(n.inputs[3]) for n in group], widths, np.float32)
        inputs = [first.inputs[0], w_name, first.inputs[2], add("scale", scales),
                  _input(first, 4), "", bias]  # fmt: skip
    merged = _fresh(graph, f"{first.outputs[0]}/merged")
    dense = ir.Node(
        first.op_type, inputs, [merged], dict(first.attrs),
        name=f"{first.label}/merged", domain=FUSED_DOMAIN,
    )  # fmt: skip
    outputs = [n.outputs[0] for n in group]
    if opsets.get("", 1) >= 13:  # Split-13 takes the sizes as an input
        sizes = _fresh(graph, f"{first.label}/merged_split")
        graph.initializers[sizes] = np.array(widths, np.int64)
        split = ir.Node("Split", [merged, sizes], outputs, {"axis": -1}, name=f"{merged}/split")
    else:
        split = ir.Node("Split", [merged], outputs, {"axis": -1, "split": widths}, name=merged)
    return [dense, split]


def _fresh(graph: ir.Graph, base: str) -> str:
    taken = graph.defined_names() | set(graph.initializers)
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name
