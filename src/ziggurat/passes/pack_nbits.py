"""Constant 2/4-bit ``MatMulNBits`` weights unpacked once into centred int8 codes (CPU only).

onnxruntime's ``MatMulNBitsQuantizer`` writes B (N, blocks, blob) uint8 with the codes packed
lowest bits first, a scale per block and optional packed uint8 zero points. Each call of the
kernel used to unpack, centre and scale every code before its float32 product. Here each such B
(whole blocks along K, no g_idx, read by MatMulNBits nodes only) becomes a
``backends.cpu.nbits.NBitsCodes``: ``q - zp`` as int8, one byte a weight, dequantized per slab by
one oneDNN reorder with the block scales (same float32 weights, same results). The packed B's file
pages are handed back (``pack_weights._release``). Float zero points, 8-bit weights (q - zp does
not fit int8) and machines without oneDNN keep the packed path. In ``precision="bf16"`` sessions
the slabs are dequantized into bfloat16 and multiplied on AMX (one more rounding of each weight
and of the input: bf16's precision, as the session asked). Where the fusions ran, a bias Add and
a GELU/ReLU after such a MatMulNBits join it as ``ziggurat::NBitsDense``: the epilogue of the
product's oneDNN primitive instead of two more passes (numpy's erf GELU over BERT-base's
128 x 3072 took ~1.8 ms, 12 times a run).
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ._match import FUSED_DOMAIN, Index, other_input

_MS = "com.microsoft"


def run(graph: ir.Graph, precision: str = "fp32", opsets: dict | None = None) -> ir.Graph:
    """Unpack the eligible MatMulNBits weights of ``graph`` in place; returns ``graph``. With
    ``precision="bf16"`` (the session checked the CPU) their products run in bfloat16. Where the
    fusions ran (``opsets`` has the ziggurat domain), a MatMulNBits on unpacked codes and its
    bias Add and GELU/ReLU become one ``ziggurat::NBitsDense``."""
    nodes = [n for n in graph.nodes if n.op_type == "MatMulNBits" and n.domain == _MS]
    if not nodes:
        return graph
    from ..backends.cpu import dnnl
    from .pack_weights import _release, _trim, weight_readers

    if not dnnl.available():
        return graph
    readers, shadowed = weight_readers(graph)
    weight_reads: dict[str, int] = {}
    for n in nodes:
        weight_reads[n.inputs[1]] = weight_reads.get(n.inputs[1], 0) + 1
    done: set[str] = set()
    freed = 0
    for n in nodes:
        name = n.inputs[1]
        if name in done or name in shadowed or readers.get(name) != weight_reads[name]:
            continue
        codes = _codes(graph, n)
        if codes is None:
            continue
        codes.bf16 = precision == "bf16"
        b = graph.initializers[name]
        graph.initializers[name] = codes
        done.add(name)
        freed = _trim(_release(b, freed))
        del b
    if done:
        from ..backends import cpu

        cpu.release_free_memory()
        if opsets is not None and FUSED_DOMAIN in opsets:
            _fuse_epilogues(graph, done)
    return graph


_ACTIVATIONS = {("", "Relu"): "relu", ("ai.onnx", "Relu"): "relu", (FUSED_DOMAIN, "Gelu"): "gelu"}


def _fuse_epilogues(graph: ir.Graph, unpacked: set[str]) -> None:
    """MatMulNBits (weight in ``unpacked``) [-> Add(constant float32 bias of N)] [-> GELU/ReLU]
    -> one NBitsDense, each intermediate read by the chain only."""
    idx = Index(graph)
    replace: dict[int, ir.Node] = {}
    drop: set[int] = set()
    for mm in graph.nodes:
        if mm.op_type != "MatMulNBits" or mm.domain != _MS or mm.inputs[1] not in unpacked:
            continue
        ins = list(mm.inputs) + [""] * (6 - len(mm.inputs))
        n = mm.attrs.get("N")
        chain, out, bias = [mm], mm.outputs[0], ins[5]
        add = idx.only_use(out)
        if not bias and add is not None and add.op_type == "Add" and add.domain in ("", "ai.onnx"):
            b_name = other_input(add, out)
            b = idx.const(b_name) if b_name else None
            if b is not None and b.dtype == np.float32 and b.size == n and b.shape[-1] == n:
                chain.append(add)
                out, bias = add.outputs[0], b_name
        act = idx.only_use(out)
        activation = ""
        if act is not None and (act.domain, act.op_type) in _ACTIVATIONS and len(act.inputs) == 1:
            chain.append(act)
            activation = _ACTIVATIONS[(act.domain, act.op_type)]
        if len(chain) == 1:
            continue
        replace[id(chain[-1])] = ir.Node(
            "NBitsDense", [ins[0], ins[1], bias], [chain[-1].outputs[0]],
            {"K": mm.attrs.get("K"), "N": n, "activation": activation},
            name=f"{mm.label}/dense", domain=FUSED_DOMAIN,
        )  # fmt: skip
        drop.update(id(x) for x in chain[:-1])
    if replace:
        graph.nodes = [replace.get(id(x), x) for x in graph.nodes if id(x) not in drop]


def _codes(graph: ir.Graph, node: ir.Node):
    """The NBitsCodes for ``node``'s weight, or None when it does not qualify."""
    from ..backends.cpu import nbits

    ins = list(node.inputs) + [""] * (6 - len(node.inputs))
    b_name, s_name, zp_name, g_idx = ins[1], ins[2], ins[3], ins[4]
    b, scales = graph.initializers.get(b_name), graph.initializers.get(s_name)
    zp = graph.initializers.get(zp_name) if zp_name else None
    if g_idx or type(b) is not np.ndarray or not isinstance(scales, np.ndarray):
        return None
    if zp_name and not isinstance(zp, np.ndarray):
        return None
    a = node.attrs
    k, n, bits, block = a.get("K"), a.get("N"), a.get("bits", 4), a.get("block_size")
    if b.ndim != 3 or b.shape[0] != n or not block or k != b.shape[1] * block:
        return None
    return nbits.pack(b, scales, zp, bits, n, block)
