"""Compilation and execution: sessions, options, the code-generating executor.

``runtime.scheduler.ParallelGraph`` (ExecutionMode.ORT_PARALLEL) is imported on demand.
"""

from .executor import CompiledGraph
from .options import ExecutionMode, GraphOptimizationLevel, SessionOptions
from .session import InferenceSession, ModelMetadata, NodeArg

__all__ = [
    "CompiledGraph",
    "ExecutionMode",
    "GraphOptimizationLevel",
    "InferenceSession",
    "ModelMetadata",
    "NodeArg",
    "SessionOptions",
]
