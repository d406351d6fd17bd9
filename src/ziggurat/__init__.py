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


def get_all_providers() -> list[str]:
    """Execution providers this build of Ziggurat has (onnxruntime's function of the same name).
    GPU providers are not in this build yet, so only the CPU one is listed."""
    return ["CPUExecutionProvider"]


def get_device() -> str:
    """The device this build runs on, as onnxruntime spells it ("CPU" for a CPU build)."""
    return "CPU"


def get_version_string() -> str:
    """The package version (onnxruntime's function of the same name)."""
    return __version__


def get_build_info() -> str:
    """A one-line build description (onnxruntime's function of the same name)."""
    import platform

    return (
        f"ziggurat {__version__}, Python {platform.python_version()}, CPU provider (numpy, oneDNN)"
    )


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
    "get_all_providers",
    "get_available_providers",
    "get_build_info",
    "get_device",
    "get_version_string",
]
