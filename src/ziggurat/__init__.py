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
from .runtime.allocators import (
    OrtAllocatorType,
    OrtArenaCfg,
    OrtMemoryInfo,
    OrtMemType,
    create_and_register_allocator,
    create_and_register_allocator_v2,
)
from .runtime.lora import AdapterFormat, LoraAdapter
from .runtime.ortvalue import OrtDevice, OrtValue
from .runtime.run_options import RunOptions
from .runtime.sparse import OrtSparseFormat, SparseTensor

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
    """A one-line build description (onnxruntime's function of the same name, same lead-in)."""
    import platform

    return (
        f"Ziggurat Build Info: version={__version__}, python={platform.python_version()}, "
        "providers=CPU (numpy, oneDNN)"
    )


def enable_telemetry_events() -> None:
    """onnxruntime's switch for its usage telemetry. Ziggurat collects and sends none, so there
    is nothing to enable: a no-op kept so that code calling it runs unchanged."""


def disable_telemetry_events() -> None:
    """onnxruntime's switch for its usage telemetry; a no-op here (Ziggurat sends none)."""


__all__ = [
    "AdapterFormat",
    "ConfigError",
    "ExecutionError",
    "ExecutionMode",
    "ExternalDataError",
    "GraphError",
    "GraphOptimizationLevel",
    "InferenceSession",
    "InputError",
    "LoraAdapter",
    "ModelLoadError",
    "ModelMetadata",
    "NodeArg",
    "OrtAllocatorType",
    "OrtArenaCfg",
    "OrtDevice",
    "OrtMemType",
    "OrtMemoryInfo",
    "OrtSparseFormat",
    "OrtValue",
    "RunOptions",
    "SessionOptions",
    "SparseTensor",
    "UnsupportedModelError",
    "UnsupportedOpError",
    "ZigguratError",
    "__version__",
    "create_and_register_allocator",
    "create_and_register_allocator_v2",
    "disable_telemetry_events",
    "enable_telemetry_events",
    "get_all_providers",
    "get_available_providers",
    "get_build_info",
    "get_device",
    "get_version_string",
]
