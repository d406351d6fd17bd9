"""Rewrite the ``com.microsoft`` ops of onnxruntime's transformers optimizer into the forms the
fusions read, so that a model optimized for onnxruntime runs as fast as the plain export.

``Attention`` (merged Q/K/V weight, ``mask_index``, optionally causal; no past state) becomes a
Dense, per-head views and ``ziggurat::FusedAttention`` with a ``ziggurat::AttentionMask`` that
all layers share (see ``_attention``): the contrib kernel's float32 numpy products took 2.2 ms a
layer of BERT-base in bf16 sessions, against ~0.3 ms for the fused form on AMX.

onnxruntime's optimizer moves each projection's bias out of its MatMul: into ``BiasGelu(a, b)``
(BERT's FFN), ``FastGelu(x, bias)`` (GPT-2's) and the fifth input of
``SkipLayerNormalization(x, skip, gamma, beta, bias)`` (every residual block). Left as they are,
the MatMuls stay plain float32 products (no packed weight, no bf16, no fused epilogue) and the
GELUs run as separate numpy passes: BERT-base optimized that way ran 157 ms against 69 ms for
the plain export, 2.9x slower in bf16 (2-core AMX Xeon).

Where such an op reads a MatMul or Gemm of a constant 2-D weight (a ``fuse_dense`` candidate), it
becomes ``Add(x, bias)`` followed by the ziggurat op of the same math, which the later passes
fold back into one Dense: ``ziggurat::Gelu`` (erf) / ``ziggurat::GeluTanh`` (for ``Gelu`` of
either domain too, ``approximate="tanh"`` included) and ``ziggurat::SkipLayerNorm`` (whose add
``passes/fuse_residual.py`` then moves into the GEMM). A SkipLayerNormalization keeps its sum
output (``input_skip_bias_sum``, GPT-2's residual stream); one whose mean or inverse-deviation
output is read is left alone, as are ops whose bias or scales are not constants.

The values are the contrib ops' up to float rounding: ``(x + bias) + skip`` is summed in that
order where onnxruntime may add ``x + skip`` first.
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ._match import FUSED_DOMAIN, Index

MS = "com.microsoft"


def run(graph: ir.Graph, opsets: dict[str, int] | None = None) -> ir.Graph:
    """Rewrite every eligible contrib op in ``graph`` (``opsets``: the model's, for the form of
    the Split it may add); return it."""
    idx = Index(graph)
    replace: dict[int, list[ir.Node]] = {}
    masks: dict[tuple[str, float], str] = {}  # one additive mask per mask_index, for all layers
    taken = graph.defined_names() | set(graph.initializers)  # names new values must avoid
    for node in graph.nodes:
        key = (node.domain or "", node.op_type)
        if key == (MS, "Attention"):
            chain = _attention(graph, idx, node, (opsets or {}).get("", 1), masks, taken)
        elif key not in _REWRITES or not any(_reads_gemm(idx, n) for n in node.inputs[:2]):
            continue
        else:
            chain = _REWRITES[key](idx, node, taken)
        if chain is not None:
            replace[id(node)] = chain
    if replace:
        nodes: list[ir.Node] = []
        for n in graph.nodes:
            nodes.extend(replace.get(id(n), [n]))
        graph.nodes[:] = nodes
    return graph


def _reads_gemm(idx: Index, name: str) -> bool:
    """Whether ``name`` is made by a MatMul or Gemm whose weight is a constant 2-D float32 matrix,
    possibly through a Reshape (GPT-2's 2-D Gemm) or a bias Add. float32 only: the fused forms'
    fast paths are float32 (bf16 by packing), and a float16 model's contrib kernels keep its
    dtypes end to end."""
    node = idx.producer.get(name)
    for _ in range(2):
        if (
            node is None
            or node.domain not in ("", "ai.onnx")
            or node.op_type not in ("Reshape", "Add")
        ):
            break
        if node.op_type == "Add" and not any(idx.const(n) is not None for n in node.inputs):
            return False
        node = next((idx.producer.get(n) for n in node.inputs if idx.const(n) is None), None)
    if node is None or node.op_type not in ("MatMul", "Gemm") or node.domain not in ("", "ai.onnx"):
        return False
    w = idx.const(node.inputs[1]) if len(node.inputs) > 1 else None
    return w is not None and w.ndim == 2 and w.dtype == np.float32


def _bias_chain(idx: Index, node: ir.Node, x: str, bias: str, taken: set[str]):
    """``[Add(x, bias)]`` and its output name for a constant 1-D bias; ``([], x)`` without one;
    None for a bias that is not a constant vector (then the op is left alone)."""
    if not bias:
        return [], x
    b = idx.const(bias)
    if b is None or b.ndim != 1:
        return None
    out = _namer(taken, node.label)("biased")
    return [ir.Node("Add", [x, bias], [out], {}, name=out)], out


def _gelu(kind: str):
    def rewrite(idx: Index, node: ir.Node, taken: set[str]) -> list[ir.Node] | None:
        op = "GeluTanh" if kind == "tanh" or node.attrs.get("approximate") == "tanh" else "Gelu"
        bias = node.inputs[1] if len(node.inputs) > 1 else ""
        found = _bias_chain(idx, node, node.inputs[0], bias, taken)
        if found is None or len(node.outputs) != 1:
            return None
        chain, x = found
        fused = ir.Node(op, [x], list(node.outputs), {}, name=node.name, domain=FUSED_DOMAIN)
        return [*chain, fused]

    return rewrite


def _skip_layer_norm(idx: Index, node: ir.Node, taken: set[str]) -> list[ir.Node] | None:
    ins = list(node.inputs) + [""] * (5 - len(node.inputs))
    x, skip, gamma, beta, bias = ins[:5]
    if not skip or idx.const(gamma) is None or (beta and idx.const(beta) is None):
        return None
    outs = list(node.outputs) + [""] * (4 - len(node.outputs))
    if any(o and (idx.consumers.get(o) or o in idx.outputs) for o in outs[1:3]):
        return None  # the statistics are read: the contrib kernel computes them
    found = _bias_chain(idx, node, x, bias, taken)
    if found is None:
        return None
    chain, x = found
    sum_out = outs[3] if outs[3] and (idx.consumers.get(outs[3]) or outs[3] in idx.outputs) else ""
    attrs = {"axis": -1, "epsilon": float(node.attrs.get("epsilon", 1e-12))}
    inputs = [x, skip, gamma] + ([beta] if beta else [])
    outputs = [outs[0]] + ([sum_out] if sum_out else [])
    fused = ir.Node("SkipLayerNorm", inputs, outputs, attrs, name=node.name, domain=FUSED_DOMAIN)
    return [*chain, fused]


def _attention(graph, idx, node: ir.Node, opset: int, masks: dict, taken: set[str]):
    """``Attention(x, W, b, mask_index)`` without past state, attention bias or rotary embedding
    as ``Dense(x, W, b)``, a Split into per-head views (Reshape + Transpose, no copies), one
    ``ziggurat::FusedAttention`` with the additive mask (padding and, for ``unidirectional``, the
    future keys at -inf) and the head merge: the exported form the rest of the pipeline already
    runs on packed / bf16 weights."""
    found = _attention_operands(idx, node)
    if found is None:
        return None
    x, wname, bname, mask_index, heads, hidden = found
    a = node.attrs
    fresh = _namer(taken, node.label)
    qkv = fresh("qkv")
    chain = [ir.Node("Dense", [x, wname] + ([bname] if bname else []), [qkv],
                     {"activation": ""}, name=qkv, domain=FUSED_DOMAIN)]  # fmt: skip
    views = _head_views(graph, fresh, chain, qkv, heads, hidden, opset)
    fill = float(a.get("mask_filter_value", -10000.0))
    causal = int(bool(a.get("unidirectional", 0)))
    if mask_index or causal:
        key = (mask_index, fill, causal)
        if key not in masks:
            masks[key] = fresh("mask")
            attrs = {"mask_filter_value": fill, "unidirectional": causal}
            chain.append(ir.Node("AttentionMask", [mask_index, x], [masks[key]], attrs,
                                 name=masks[key], domain=FUSED_DOMAIN))  # fmt: skip
        views.append(masks[key])
    scale = float(a.get("scale", 0.0)) or 1.0 / float(np.sqrt(hidden // heads))
    y4, y3 = fresh("context"), fresh("merged")
    chain.append(ir.Node("FusedAttention", views, [y4], {"scale": scale, "nan_to_zero": 0},
                         name=y4, domain=FUSED_DOMAIN))  # fmt: skip
    chain.append(ir.Node("Transpose", [y4], [y3], {"perm": [0, 2, 1, 3]}, name=y3))
    merge_shape = fresh("merge_shape")
    graph.initializers[merge_shape] = np.array([0, 0, hidden], np.int64)
    chain.append(ir.Node("Reshape", [y3, merge_shape], [node.outputs[0]], {}, name=node.name))
    return chain


def _attention_operands(idx: Index, node: ir.Node):
    """(x, W, bias or "", mask_index or "", heads, hidden) for an Attention this pass rewrites:
    constant W (D, 3 * hidden) with equal Q/K/V sizes and a constant bias if any; no past,
    attention bias or rotary embedding, and ``present`` unread. None otherwise."""
    a = node.attrs
    ins = list(node.inputs) + [""] * (7 - len(node.inputs))
    x, wname, bname, mask_index = ins[:4]
    heads = int(a.get("num_heads", 0))
    if any(ins[4:]) or a.get("do_rotary", 0) or heads <= 0:
        return None
    if any(o and (idx.consumers.get(o) or o in idx.outputs) for o in node.outputs[1:]):
        return None  # present is read: past-state models keep the contrib kernel
    w, b = idx.const(wname), idx.const(bname) if bname else None
    if w is None or w.ndim != 2 or w.dtype != np.float32 or w.shape[1] % 3:
        return None
    hidden = w.shape[1] // 3
    sizes = a.get("qkv_hidden_sizes")
    if (sizes and list(sizes) != [hidden] * 3) or hidden % heads:
        return None
    if bname and (b is None or b.shape != (w.shape[1],)):
        return None
    return x, wname, bname, mask_index, heads, hidden


def _head_views(graph, fresh, chain: list, qkv: str, heads: int, hidden: int, opset: int):
    """Append the Split of the merged projection into q, k, v and their per-head views
    (q, v: [B, N, S, H]; k transposed: [B, N, H, S]) to ``chain``; return the three names."""
    parts = [fresh(p) for p in "qkv"]
    if opset >= 13:  # Split-13 takes the sizes as an input
        split_sizes = fresh("split_sizes")
        graph.initializers[split_sizes] = np.array([hidden] * 3, np.int64)
        chain.append(ir.Node("Split", [qkv, split_sizes], parts, {"axis": -1}, name=fresh("split")))
    else:
        chain.append(ir.Node("Split", [qkv], parts, {"axis": -1, "split": [hidden] * 3},
                             name=fresh("split")))  # fmt: skip
    head_shape = fresh("head_shape")
    graph.initializers[head_shape] = np.array([0, 0, heads, hidden // heads], np.int64)
    views = []
    for part, perm in zip(parts, ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3]), strict=True):
        r = fresh(f"{part}_heads")
        chain.append(ir.Node("Reshape", [part, head_shape], [r], {}, name=r))
        views.append(fresh(f"{part}_t"))
        chain.append(ir.Node("Transpose", [r], [views[-1]], {"perm": perm}, name=views[-1]))
    return views


def _namer(taken: set[str], label: str):
    """Fresh value names under ``label``, none in ``taken`` (which records them): the graph's
    names, gathered once per pass run."""

    def fresh(suffix: str) -> str:
        base = name = f"{label}/{suffix}"
        i = 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    return fresh


_REWRITES = {
    (MS, "BiasGelu"): _gelu("erf"),
    (MS, "Gelu"): _gelu("erf"),
    (MS, "FastGelu"): _gelu("tanh"),
    ("", "Gelu"): _gelu("attr"),
    ("ai.onnx", "Gelu"): _gelu("attr"),
    (MS, "SkipLayerNormalization"): _skip_layer_norm,
}
