"""Ziggurat: an ONNX inference engine and model server.

>>> import ziggurat as zg
>>> sess = zg.InferenceSession("model.onnx")
>>> outs = sess.run(None, {"x": x})
"""

from .errors import (
    ConfigError,
    ExecutionError,
    ExternalDataError,
    GraphError,
    InputError,
    ModelLoadError,
    UnsupportedModelError,
    UnsupportedOpError,
    ZigguratError,
)
from .runtime import (
    ExecutionMode,
    GraphOptimizationLevel,
    InferenceSession,
    ModelMetadata,
    NodeArg,
    SessionOptions,
)

__version__ = "0.1.0"


def get_available_providers() -> list[str]:
    """Execution providers usable on this machine (onnxruntime's function of the same name)."""
    return ["CPUExecutionProvider"]


__all__ = [
    "ConfigError",
    "ExecutionError",
    "ExecutionMode",
    "ExternalDataError",
    "GraphError",
    "GraphOptimizationLevel",
    "InferenceSession",
    "InputError",
    "ModelLoadError",
    "ModelMetadata",
    "NodeArg",
    "SessionOptions",
    "UnsupportedModelError",
    "UnsupportedOpError",
    "ZigguratError",
    "__version__",
    "get_available_providers",
]
