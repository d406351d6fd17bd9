"""Constant GEMM weights in oneDNN's blocked layout, in bfloat16 for ``precision="bf16"`` and in
float32 otherwise.

**bf16.** Each constant float32 (K, N) weight of a ``ziggurat::Dense`` node, and of a ``MatMul``
whose second input is a constant matrix (made a bias-free ``Dense``), is converted once, here, at
session creation, to bfloat16 in oneDNN's blocked matmul layout (``backends.cpu.gemm.PackedWeight``).
The float32 original is dropped from the graph, so the session holds half the bytes: copied weights
are freed, and the pages of weights viewed in the model file are handed back to the OS. The GEMMs
then run in bf16 with float32 accumulation and float32 outputs; everything else (softmax,
normalization) stays float32, and attention (``ziggurat::FusedAttention``, marked ``bf16=1`` here)
runs its two products in bf16 too. Large embedding tables
read only by ``Gather`` are stored in bfloat16 too, with a Cast of the gathered rows to float32.
Needs oneDNN with AVX512-BF16 or AMX (the session checks first).

**fp32.** Every constant float32 Dense weight of at least ``MIN_ELEMENTS`` is packed too (same
bytes, float32: exact results), once, here. oneDNN reads a packed weight faster than the plain
(K, N) one at every row count measured, M = 1 to 128 (quiet 2-core AMX Xeon, medians; packed /
plain): 768x768 0.41-0.87, 768x2304 (merged Q/K/V, passes/fuse_qkv.py) 0.76-0.89, 3072x768
0.76-0.88, and 768x3072 0.39-0.64, where a row stride that is a multiple of 4 KiB makes the plain
kernel's loads alias in the cache.

Weights read by anything else than these nodes, or shadowed by a graph input, stay as they are.
"""

from __future__ import annotations

import mmap

import numpy as np

from .. import ir
from ._match import FUSED_DOMAIN

# Smaller matrices stay float32 on numpy's path: they hold little memory, and for them oneDNN's
# per-call cost (input conversion, OpenMP fork/join: 10-30 us, far more under load) exceeds the
# product (measured: the 784-128-10 MLP took 280 us per run with bf16 weights vs 15 us in fp32).
MIN_ELEMENTS = 1 << 18


def run(graph: ir.Graph, opsets: dict[str, int], precision: str = "bf16") -> ir.Graph:
    """Pack eligible weights in place for ``precision`` ('fp32' or 'bf16'); return ``graph``."""
    from . import pack_int8  # int8 QDense weights: oneDNN's blocked layout, whatever precision

    pack_int8.run(graph)
    from . import pack_nbits  # 2/4-bit MatMulNBits weights: centred int8 codes, whatever precision

    pack_nbits.run(graph, precision, opsets)
    if precision != "bf16":
        return _fuse_residuals(_pack_fp32(graph))
    from ..backends.cpu import gemm

    readers, shadowed = weight_readers(graph)
    bf16 = gemm._bf16_dtype()
    packed: dict[str, np.ndarray] = {}
    freed = 0
    for node in graph.nodes:
        if len(node.inputs) < 2 or not _eligible(node):
            continue
        name = node.inputs[1]
        w = graph.initializers.get(name)
        if name in packed:  # another node already converted this weight
            continue
        if (
            not isinstance(w, np.ndarray)
            or w.dtype != np.float32
            or w.ndim != 2
            or w.size < MIN_ELEMENTS
            or name in shadowed
            or readers.get(name, 0) != sum(1 for n in graph.nodes if _reads_as_weight(n, name))
        ):
            continue
        packed[name] = gemm.pack_weight(w, bf16)
        graph.initializers[name] = packed[name]
        freed = _release(w, freed)
        del w
        freed = _trim(freed)
    tables = _embeddings(graph, readers, shadowed, gemm)
    # A bf16 session has the loader view misaligned weights in place (runtime/session.py) so
    # their float32 copies never all sit in memory (with the chunked table conversion, BERT-base's
    # session peak RSS went 441 -> 278 MiB). What stays float32 (norms, biases, small matrices) is
    # copied into aligned memory here.
    from .quantize_weights import realign

    realign(graph)
    if packed or tables:
        from ..backends import cpu

        cpu.release_free_memory()  # the float32 copies just freed would otherwise stay resident
    for node in graph.nodes:
        if node.domain in ("", "ai.onnx") and node.op_type == "MatMul" and node.inputs[1] in packed:
            node.op_type, node.domain = "Dense", FUSED_DOMAIN
            node.attrs = {"activation": ""}
            opsets.setdefault(FUSED_DOMAIN, 1)
        elif node.domain == FUSED_DOMAIN and node.op_type == "FusedAttention":
            node.attrs["bf16"] = 1  # its two products in bf16 on AMX (backends/cpu/attention.py)
    from . import bf16_activations  # activations only bf16 GEMMs read: written in bf16

    return bf16_activations.run(_fuse_residuals(graph))


def _fuse_residuals(graph: ir.Graph) -> ir.Graph:
    """Residual adds into the packed Dense before them (passes/fuse_residual.py)."""
    from ..backends.cpu.gemm import PackedWeight

    if any(isinstance(w, PackedWeight) for w in graph.initializers.values()):
        from . import fuse_residual

        fuse_residual.run(graph)
    return graph


def _pack_fp32(graph: ir.Graph) -> ir.Graph:
    """fp32: pack the Dense weights of at least ``MIN_ELEMENTS`` (see above). Loads oneDNN only
    when the graph has such a weight (small models never pay for it)."""
    names = []
    for node in graph.nodes:
        if node.domain != FUSED_DOMAIN or node.op_type != "Dense" or len(node.inputs) < 2:
            continue
        w = graph.initializers.get(node.inputs[1])
        if (
            type(w) is np.ndarray
            and w.dtype == np.float32
            and w.ndim == 2
            and w.size >= MIN_ELEMENTS
        ):
            names.append(node.inputs[1])
    if not names:
        return graph
    from ..backends.cpu import dnnl, gemm

    if not dnnl.available():
        return graph
    readers, shadowed = weight_readers(graph)
    freed, packed = 0, 0  # bytes of float32 originals dropped since the last trim; count
    for name in dict.fromkeys(names):
        dense_reads = sum(
            1 for n in graph.nodes if n.op_type == "Dense" and _reads_as_weight(n, name)
        )
        if name in shadowed or readers.get(name, 0) != dense_reads:
            continue
        w = graph.initializers[name]
        graph.initializers[name] = gemm.pack_weight(w)
        freed = _release(w, freed)
        del w
        freed = _trim(freed)
        packed += 1
    if packed:
        from ..backends import cpu

        cpu.release_free_memory()
    return graph


def _embeddings(graph: ir.Graph, readers: dict[str, int], shadowed: set[str], gemm) -> int:
    """Store large constant float32 tables read only by ``Gather`` (embeddings: BERT-base's word
    table is 90 MB) in bfloat16, each Gather followed by a Cast back to float32: the rows then
    carry bf16 rounding like the GEMM weights, and the table takes half the memory."""
    nodes: list[ir.Node] = []
    converted: set[str] = set()
    for node in graph.nodes:
        nodes.append(node)
        if node.domain not in ("", "ai.onnx") or node.op_type != "Gather" or not node.outputs[0]:
            continue
        name = node.inputs[0]
        table = graph.initializers.get(name)
        if name in shadowed or readers.get(name, 0) != _gathers_of(graph, name):
            continue
        if name not in converted:
            if not isinstance(table, np.ndarray) or table.dtype != np.float32:
                continue
            if table.size < MIN_ELEMENTS:
                continue
            graph.initializers[name] = _table_to_bf16(table, gemm)
            converted.add(name)
        out = node.outputs[0]
        node.outputs = [f"{out}/bf16"]
        nodes.append(
            ir.Node("Cast", [node.outputs[0]], [out], {"to": 1}, name=f"{node.label}/fp32")
        )
    graph.nodes[:] = nodes
    return len(converted)


def _table_to_bf16(table: np.ndarray, gemm) -> np.ndarray:
    """``table`` in bfloat16, converted 8 MB of rows at a time with each slice's file pages
    dropped as it is done, so the float32 table (BERT-base: 94 MB) never sits in memory whole."""
    shape = table.shape
    table = table.reshape(shape[0], -1) if table.ndim > 1 else table.reshape(-1, 1)
    out = np.empty(table.shape, gemm._bf16_dtype())
    rows = max(1, (8 << 20) // max(1, table[0].nbytes))
    for i in range(0, table.shape[0], rows):
        part = table[i : i + rows]
        out[i : i + rows] = gemm.to_bf16(np.ascontiguousarray(part))
        _release(part, 0)
    return out.reshape(shape)


def _gathers_of(graph: ir.Graph, name: str) -> int:
    return sum(
        1
        for n in graph.nodes
        if n.op_type == "Gather" and n.domain in ("", "ai.onnx") and n.inputs[0] == name
        and name not in n.inputs[1:]
    )  # fmt: skip


def _eligible(node: ir.Node) -> bool:
    if node.domain == FUSED_DOMAIN and node.op_type == "Dense":
        return True
    return node.domain in ("", "ai.onnx") and node.op_type == "MatMul"


def _reads_as_weight(node: ir.Node, name: str) -> bool:
    return (
        _eligible(node)
        and len(node.inputs) > 1
        and node.inputs[1] == name
        and name
        not in (
            node.inputs[0],
            *node.inputs[2:],
        )
    )


def weight_readers(graph: ir.Graph) -> tuple[dict[str, int], set[str]]:
    """How many node inputs read each name, and the names a packed copy must never replace:
    graph inputs and outputs, and the names subgraphs read from this scope. A weight is packed
    only when every one of its readers is a node that takes the packed form."""
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    shadowed = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    shadowed |= {n for sub in _subgraphs(graph) for n in sub.free_names()}
    return readers, shadowed


def _subgraphs(graph: ir.Graph):
    for node in graph.nodes:
        yield from node.subgraphs()


def _release(w: np.ndarray, freed: int) -> int:
    """Drop ``w``'s file pages if it views a read-only file map; returns ``freed`` + its bytes.

    Reading the weights to convert them faulted their pages in; they are clean file pages, so
    dropping them is safe (a later read would fault the same bytes back). A copy (anonymous
    memory) is freed once nothing holds it (never madvised: DONTNEED would zero it); callers then
    ``_trim`` every 64 MiB so the peak stays near the larger of the float32 and packed sets
    instead of their sum."""
    _drop_file_pages(w)
    return freed + w.nbytes


def _trim(freed: int) -> int:
    """Give the heap's free pages back once 64 MiB of originals were dropped; returns the new
    running count."""
    if freed < 64 << 20:
        return freed
    from ..backends import cpu

    cpu.release_free_memory()
    return 0


def _drop_file_pages(w: np.ndarray) -> None:
    base = w
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if base is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        start_addr = np.frombuffer(base, np.uint8).ctypes.data
    except (TypeError, ValueError):
        return
    page = mmap.PAGESIZE
    lo = w.ctypes.data - start_addr
    hi = lo + w.nbytes
    lo = -(-lo // page) * page  # whole pages inside the tensor only: neighbours keep theirs
    hi = hi // page * page
    if hi > lo:
        try:
            base.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError):  # only an RSS optimization
            pass
