"""Compilation and execution: sessions, options, the code-generating executor."""

from .executor import CompiledGraph
from .options import ExecutionMode, GraphOptimizationLevel, SessionOptions
from .scheduler import ParallelGraph
from .session import InferenceSession, ModelMetadata, NodeArg

__all__ = [
    "CompiledGraph",
    "ExecutionMode",
    "GraphOptimizationLevel",
    "InferenceSession",
    "ModelMetadata",
    "NodeArg",
    "ParallelGraph",
    "SessionOptions",
]
