"""Fold a transformer's residual add, and its tanh GELU, into the GEMM before them.

``Dense(x, W, b) -> SkipLayerNorm(dense, residual)`` (the attention-output and FFN-down projections
of every BERT/GPT-2/ViT block) becomes ``Dense(x, W, b, residual) -> LayerNorm``: oneDNN adds the
residual in the matmul's epilogue (a binary post-op, while the product's rows are still in cache),
and the normalization reads the sum once, instead of a separate pass that reads both addends and
writes their sum. Run by ``pack_weights`` on Dense nodes whose weight it packed (the only ones
oneDNN runs whatever their size). The values are the same: the add is the last rounding either
way. Measured (BERT-base bf16, 128 x 768, 2-core AMX Xeon): SkipLayerNorm 66 us a call alone,
117 us inside the model, against ~20-25 us for the LayerNorm left behind.

Only a SkipLayerNorm over the last axis whose Dense addend (or a Reshape of it: GPT-2's Gemm
runs on 2-D rows) nobody else reads, and no graph output, is rewritten; the Dense moves to where
the SkipLayerNorm was (both its inputs and the residual exist there), followed by the Reshape, if
any, and the LayerNorm. When the SkipLayerNorm also output the sum (GPT-2 and ViT add the next
residual to it), the chain writes that name.

``Dense [-> Reshape] -> GeluTanh`` (GPT-2's FFN) becomes one Dense with oneDNN's tanh-GELU
post-op (``activation="gelu_tanh"``), before the residuals are matched.
"""

from __future__ import annotations

from .. import ir
from ..backends.cpu.gemm import PackedWeight
from ._match import FUSED_DOMAIN, Index


def run(graph: ir.Graph) -> ir.Graph:
    """Fold every eligible tanh GELU, then residual add, into its packed Dense; return ``graph``."""
    _fold_gelu_tanh(graph)
    idx = Index(graph)
    sub_reads = _subgraph_reads(graph)
    moved: dict[int, list[ir.Node]] = {}
    drop: set[int] = set()
    for sk in graph.nodes:
        if sk.domain != FUSED_DOMAIN or sk.op_type != "SkipLayerNorm" or sk.attrs.get("axis") != -1:
            continue
        if len(sk.inputs) < 3 or sk.inputs[0] == sk.inputs[1]:
            continue
        for i in (0, 1):
            found = _packed_dense(idx, graph, sk.inputs[i], sub_reads)
            if found is not None and id(found[0]) not in drop:
                break
        else:
            continue
        dense, reshape = found
        total = sk.outputs[1] if len(sk.outputs) > 1 and sk.outputs[1] else sk.inputs[i]
        inputs = list(dense.inputs) + [""] * (3 - len(dense.inputs)) + [sk.inputs[1 - i]]
        chain = [
            ir.Node(
                "Dense", inputs, [dense.outputs[0] if reshape else total], dict(dense.attrs),
                name=dense.name, domain=FUSED_DOMAIN,
            )
        ]  # fmt: skip
        if reshape is not None:  # GPT-2's 2-D Gemm: the Reshape back to 3-D now makes the sum
            chain.append(ir.Node("Reshape", reshape.inputs, [total], dict(reshape.attrs),
                                 name=reshape.name))  # fmt: skip
            drop.add(id(reshape))
        chain.append(
            ir.Node(
                "LayerNorm", [total] + sk.inputs[2:4], [sk.outputs[0]],
                {"epsilon": sk.attrs.get("epsilon", 1e-5)}, name=sk.name, domain=FUSED_DOMAIN,
            )
        )  # fmt: skip
        moved[id(sk)] = chain
        drop.add(id(dense))
    if moved:
        nodes: list[ir.Node] = []
        for n in graph.nodes:
            if id(n) not in drop:
                nodes.extend(moved.get(id(n), [n]))
        graph.nodes[:] = nodes
    return graph


def _fold_gelu_tanh(graph: ir.Graph) -> None:
    """``Dense [-> Reshape] -> ziggurat::GeluTanh`` becomes ``Dense(gelu_tanh) [-> Reshape]``:
    oneDNN's tanh-GELU post-op on the product in cache instead of GeluTanh's numpy passes (GPT-2's
    128 x 3072 FFN activation: ~0.4-0.6 ms a call, a tenth of its bf16 run)."""
    idx = Index(graph)
    sub_reads = _subgraph_reads(graph)
    drop: set[int] = set()
    for gelu in graph.nodes:
        if gelu.domain != FUSED_DOMAIN or gelu.op_type != "GeluTanh":
            continue
        found = _packed_dense(idx, graph, gelu.inputs[0], sub_reads)
        if found is None or found[0].attrs.get("activation", "") != "":
            continue
        dense, reshape = found
        dense.attrs["activation"] = "gelu_tanh"
        (reshape or dense).outputs = [gelu.outputs[0]]
        drop.add(id(gelu))
    if drop:
        graph.nodes[:] = [n for n in graph.nodes if id(n) not in drop]


def _subgraph_reads(graph: ir.Graph) -> set[str]:
    """Names that subgraphs (If/Loop bodies) read from this scope."""
    return {n for node in graph.nodes for g in node.subgraphs() for n in g.free_names()}


def _packed_dense(idx: Index, graph: ir.Graph, name: str, sub_reads: set[str]):
    """(Dense, Reshape or None) when ``name`` is made, for its one reader, by a Dense with a
    packed weight, at most a bias and no residual yet, or by a Reshape of such a Dense's output
    read by nothing else (no subgraph either: the names keep new values); None otherwise."""
    if idx.only_use(name) is None or name in sub_reads:
        return None
    node = idx.producer.get(name)
    reshape = None
    if node is not None and node.op_type == "Reshape" and not node.domain:
        reshape, name = node, node.inputs[0]
        node = idx.producer.get(name)
        if idx.only_use(name) is None or name in sub_reads:
            return None
    if node is None or node.domain != FUSED_DOMAIN or node.op_type != "Dense":
        return None
    if len(node.inputs) not in (2, 3) or len(node.outputs) != 1:
        return None
    if not isinstance(graph.initializers.get(node.inputs[1]), PackedWeight):
        return None
    return node, reshape
