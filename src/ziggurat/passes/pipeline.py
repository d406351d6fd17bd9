"""Optimization pipelines per level (the levels mirror onnxruntime's GraphOptimizationLevel).

- always: Gradient nodes (ai.onnx.preview.training) expanded into their backward graph.
- basic (1): constant folding, common subexpression elimination, dead code elimination.
- extended (2) and all (99): also fusions (onnxruntime's contrib GELUs, SkipLayerNormalization and
  Attention rewritten for them by contrib_canon, GELU, MatMul+bias+activation, BatchNorm into Conv,
  Conv+residual+ReLU, zero Pad into Conv, Add+LayerNorm and decomposed LayerNorm, attention,
  quantize_dynamic's MatMulInteger->Cast->Mul[->Add][->GELU] into one int8 QDense)
  unless ``fusion`` is off; with ``quantize``, dynamic int8 quantization of MatMul/Gemm
  weights (per output column, at load) and of their inputs (per call) (``enable_quantization``).
"""

from __future__ import annotations

from .. import ir
from . import (
    constant_fold,
    contrib_canon,
    cse,
    dce,
    fold_batchnorm,
    fuse_attention,
    fuse_conv,
    fuse_dense,
    fuse_gelu,
    fuse_layernorm,
    fuse_pad,
    fuse_qkv,
    fuse_quant_matmul,
    quantize_weights,
)
from ._match import FUSED_DOMAIN

DISABLE_ALL, ENABLE_BASIC, ENABLE_EXTENDED, ENABLE_ALL = 0, 1, 2, 99


def optimize(
    graph: ir.Graph,
    opsets: dict[str, int],
    level: int = ENABLE_ALL,
    *,
    fusion: bool = True,
    quantize: bool = False,
    precision: str = "fp32",
) -> ir.Graph:
    """Run the passes for ``level`` on ``graph`` in place and return it. Fusions add nodes of
    the ``ziggurat`` domain and register that domain in ``opsets``."""
    if _has_op(graph, "Gradient"):  # expanded at every level: no kernel runs them
        from . import gradient  # imported only when needed: it is the biggest pass (cold start)

        gradient.run(graph, opsets)
    if level <= DISABLE_ALL:
        return graph
    constant_fold.run(graph, opsets)
    cse.run(graph)
    dce.run(graph)
    if level >= ENABLE_EXTENDED and fusion:
        opsets.setdefault(FUSED_DOMAIN, 1)
        fold_batchnorm.run(graph)
        fuse_pad.run(graph)
        contrib_canon.run(graph, opsets)  # onnxruntime-optimized models: before the fusions
        fuse_gelu.run(graph)
        dce.run(graph)
        fuse_quant_matmul.run(graph)
        fuse_dense.run(graph)
        fuse_qkv.run(graph, opsets)
        fuse_conv.run(graph, precision)
        fuse_layernorm.run(graph)
        fuse_attention.run(graph, opsets)
        dce.run(graph)
    if quantize and level >= ENABLE_EXTENDED:
        opsets.setdefault(FUSED_DOMAIN, 1)
        if not fusion:
            fuse_dense.run(graph)
        quantize_weights.run(graph, opsets)
        dce.run(graph)
    if level >= ENABLE_EXTENDED and fusion:  # last: after fuse_qkv and quantize_weights
        fuse_quant_matmul.fuse_dynamic(graph)
    return graph


def _has_op(graph: ir.Graph, op_type: str) -> bool:
    return any(
        n.op_type == op_type or any(_has_op(g, op_type) for g in n.subgraphs()) for n in graph.nodes
    )
