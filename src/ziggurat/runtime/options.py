"""SessionOptions and the enums onnxruntime users know, with the same names and values."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class GraphOptimizationLevel(enum.IntEnum):
    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


@dataclass
class SessionOptions:
    """Per-session settings; the same fields are reachable from ``ziggurat.Config``."""

    graph_optimization_level: GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL
    intra_op_num_threads: int = 0  # 0: all cores
    inter_op_num_threads: int = 0
    execution_mode: ExecutionMode = ExecutionMode.ORT_SEQUENTIAL
    enable_profiling: bool = False
    profile_file_prefix: str = "ziggurat_profile"
    log_severity_level: int = 2
    enable_fusion: bool = True
    # int8 weight-only quantization of MatMul/Gemm weights (passes/quantize_weights.py).
    enable_quantization: bool = False
