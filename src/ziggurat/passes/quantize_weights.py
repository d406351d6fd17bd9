"""Dynamic int8 quantization of ``Dense`` layers at load (``enable_quantization``).

Each constant float32 (K, N) weight of a fused ``Dense`` node (MatMul/Gemm with a constant
weight, after ``fuse_dense``) becomes int8, symmetric, one float32 scale per output column
(``absmax / 127``, round half to even, [-127, 127]). Its input is quantized at run time, per call,
to uint8 from its own range (``DynamicQuantizeLinear``, one node per activation, shared by the
Dense layers reading it, as onnxruntime's ``quantize_dynamic`` does), and the layer becomes a
``QDense``: the integer product, both scales, the bias and the activation in one oneDNN int8
matmul where the CPU has VNNI/AMX (``backends/cpu/int8.py``), float64-exact integer arithmetic
elsewhere.

Memory: the float32 weights are dropped from the graph (pages viewed in the model file are handed
back to the OS, copies freed), so a session holds 1 byte per weight instead of 4; with the CPU
packing pass (``pack_int8``) the int8 matrices live in oneDNN's layout, still 1 byte each.
Accuracy on BERT-base (last hidden state vs fp32, b1 seq128): see BENCHMARKS.md.
"""

from __future__ import annotations

import mmap

import numpy as np

from .. import ir
from ._match import FUSED_DOMAIN, Index
from .pack_weights import _release, _trim

MIN_ELEMENTS = 4096  # smaller matrices save too little to be worth the precision
_ACTIVATIONS = ("", "relu", "gelu")  # the ones QDense applies (a clipped Dense stays float)


def run(graph: ir.Graph, opsets: dict[str, int] | None = None) -> ir.Graph:
    """Quantize every eligible Dense of ``graph`` in place; returns ``graph``. Needs ai.onnx
    opset 11 or later (DynamicQuantizeLinear); an older model is left as it is."""
    if (opsets or {}).get("", 11) < 11:
        return graph
    _drop_mapped_pages(graph)  # e.g. what fuse_qkv read to merge Q, K and V (85 MB on BERT-base)
    idx = Index(graph)
    quantized: dict[str, tuple[str, str]] = {}  # float weight -> (int8 name, scale name)
    activations: dict[str, tuple[str, str, str]] = {}  # x -> DynamicQuantizeLinear outputs
    nodes: list[ir.Node] = []
    freed = 0
    eligible = {id(n) for n in graph.nodes if _eligible(idx, n)}  # before any weight goes
    readers, dense_reads, kept = _readers(graph, eligible)
    for node in graph.nodes:
        if id(node) not in eligible:
            nodes.append(node)
            continue
        x, w_name = node.inputs[0], node.inputs[1]
        if w_name not in quantized:
            quantized[w_name] = _quantize(graph, node, idx.const(w_name))
            # The float matrix goes now, not after the loop (the peak then holds one float
            # matrix at a time, not all: BERT-base's are 340 MB): file pages are handed back,
            # a copy is freed once nothing else reads it.
            freed = _trim(_release(idx.const(w_name), freed))
            if readers[w_name] == dense_reads.get(w_name, 0) and w_name not in kept:
                del graph.initializers[w_name]
        if x not in activations:
            activations[x] = (f"{x}/u8", f"{x}/u8_scale", f"{x}/u8_zero_point")
            nodes.append(
                ir.Node("DynamicQuantizeLinear", [x], list(activations[x]), {},
                        name=f"{node.label}/quantize_input")
            )  # fmt: skip
        qx, sx, zx = activations[x]
        wq, ws = quantized[w_name]
        bias = node.inputs[2] if len(node.inputs) > 2 else ""
        nodes.append(
            ir.Node(
                "QDense", [qx, wq, sx, ws, zx, "", bias], list(node.outputs),
                {"activation": node.attrs.get("activation", "")},
                name=f"{node.label}/int8", domain=FUSED_DOMAIN,
            )
        )  # fmt: skip
    graph.nodes[:] = nodes
    _drop_floats(graph, quantized)
    realign(graph)
    return graph


def realign(graph: ir.Graph) -> None:
    """Copy the initializers left misaligned into aligned memory (dropping their file pages).

    A session that quantizes has the loader view misaligned tensors in place
    (``load_model(view_unaligned=True)``): the float weights are read once here and freed, so
    their float32 copies never all sit in memory at once (BERT-base: 259 MB of its 417 MB are
    misaligned in the file). What stays float (embeddings, norms, small matrices) is realigned
    for the kernels, which expect aligned arrays."""
    for name, v in list(graph.initializers.items()):
        if type(v) is np.ndarray and not v.flags.aligned:
            out = np.empty(v.shape, v.dtype)
            flat_in, flat_out = v.reshape(-1), out.reshape(-1)
            step = max(1, (8 << 20) // max(v.itemsize, 1))  # 8 MB at a time: file pages go as read
            for i in range(0, v.size, step):
                flat_out[i : i + step] = flat_in[i : i + step]
                _release(flat_in[i : i + step], 0)
            out.flags.writeable = False
            graph.initializers[name] = out


def _drop_mapped_pages(graph: ir.Graph) -> None:
    """Hand back every page this process mapped from the model file(s) (they stay in the page
    cache; views re-fault what they read): earlier passes may have read weights that are gone."""
    maps = {}
    for v in graph.initializers.values():
        base = v
        while base is not None and not isinstance(base, mmap.mmap):
            base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
        if base is not None:
            maps[id(base)] = base
    for mm in maps.values():
        if hasattr(mmap, "MADV_DONTNEED"):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # only an RSS optimization
                pass


def _readers(graph: ir.Graph, eligible: set[int]):
    """(reads of each name, reads as an eligible Dense weight, names a subgraph or output uses)."""
    readers: dict[str, int] = {}
    dense_reads: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
        if id(node) in eligible:
            w = node.inputs[1]
            dense_reads[w] = dense_reads.get(w, 0) + 1
    kept = {n for node in graph.nodes for sub in node.subgraphs() for n in sub.free_names()}
    kept |= {v.name for v in graph.outputs} | {v.name for v in graph.inputs}
    return readers, dense_reads, kept


def _eligible(idx: Index, node: ir.Node) -> bool:
    if node.domain != FUSED_DOMAIN or node.op_type != "Dense" or len(node.inputs) < 2:
        return False
    if node.attrs.get("activation", "") not in _ACTIVATIONS:
        return False
    w = idx.const(node.inputs[1])
    if w is None or w.dtype != np.float32 or w.ndim != 2 or w.size < MIN_ELEMENTS:
        return False
    if node.inputs[0] == node.inputs[1] or node.inputs[0] in idx.graph.initializers:
        return False
    b = idx.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    return len(node.inputs) < 3 or not node.inputs[2] or (b is not None and b.ndim <= 1)


def _quantize(graph: ir.Graph, node: ir.Node, w: np.ndarray) -> tuple[str, str]:
    """Per-column symmetric int8 of ``w``, stored as two new initializers; their names."""
    absmax = np.abs(w).max(axis=0)
    scale = np.where(absmax > 0, absmax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.empty(w.shape, np.int8)
    # column blocks: the float32 temporaries stay small (a 3072x768 weight would need 9 MB each)
    step = max(1, (1 << 18) // max(w.shape[0], 1))
    for c in range(0, w.shape[1], step):
        part = w[:, c : c + step] / scale[c : c + step]
        np.rint(part, out=part)
        np.clip(part, -127, 127, out=part)
        q[:, c : c + step] = part
    qname, sname = f"{node.label}/w_int8", f"{node.label}/w_scale"
    graph.initializers[qname] = q
    graph.initializers[sname] = scale
    return qname, sname


def _drop_floats(graph: ir.Graph, quantized: dict[str, tuple[str, str]]) -> None:
    """Remove the float weights nothing reads any more and give their memory back."""
    if not quantized:
        return
    read = {n for node in graph.nodes for n in node.inputs}
    read |= {n for node in graph.nodes for sub in node.subgraphs() for n in sub.free_names()}
    read |= {v.name for v in graph.outputs}
    for name in quantized:
        if name not in read:
            graph.initializers.pop(name, None)  # its file pages were released already
    from ..backends import cpu

    cpu.release_free_memory()
