"""Optimization pipelines per level (the levels mirror onnxruntime's GraphOptimizationLevel)."""

from __future__ import annotations

from .. import ir
from . import constant_fold, dce

DISABLE_ALL, ENABLE_BASIC, ENABLE_EXTENDED, ENABLE_ALL = 0, 1, 2, 99


def optimize(graph: ir.Graph, opsets: dict[str, int], level: int = ENABLE_ALL) -> ir.Graph:
    """Run the passes for ``level`` on ``graph`` in place and return it."""
    if level <= DISABLE_ALL:
        return graph
    constant_fold.run(graph, opsets)
    dce.run(graph)
    return graph
