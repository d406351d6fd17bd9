"""SessionOptions and the enums onnxruntime users know, with the same names and values."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import ConfigError

# Compute precisions a CPU session accepts: "fp32" (exact float32 semantics) and "bf16" (constant
# weights of MatMul/Gemm/Dense stored in bfloat16, their GEMMs in bf16 with float32 accumulation;
# needs AVX512-BF16 or AMX). "fp16" is for GPU providers.
PRECISIONS = ("fp32", "bf16")


class GraphOptimizationLevel(enum.IntEnum):
    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


@dataclass(slots=True)
class SessionOptions:
    """Per-session settings; the same fields are reachable from ``ziggurat.Config``.

    Slotted, as onnxruntime's is: assigning a misspelt field (``so.precison = "bf16"``) raises
    AttributeError instead of being silently ignored."""

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
    # "fp32" (default) or "bf16" (passes/pack_weights.py; refused on CPUs without bf16 support).
    precision: str = "fp32"


def check_precision(value: str) -> str:
    """Validate a ``precision`` setting; for "bf16" also that this CPU can run it. Returns it
    lower-cased; raises ConfigError (``Bf16UnsupportedError`` for a CPU without bf16)."""
    p = str(value).lower()
    if p == "fp16":
        raise ConfigError(
            "precision='fp16' runs on GPU providers only; on the CPU use 'fp32' or 'bf16'"
        )
    if p not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {value!r}")
    if p == "bf16":
        from ..backends.cpu import gemm

        gemm.require_bf16()
    return p
