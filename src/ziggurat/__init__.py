"""Ziggurat: an ONNX inference engine and model server.

>>> import ziggurat as zg
>>> sess = zg.InferenceSession("model.onnx")
>>> outs = sess.run(None, {"x": x})
"""

from .errors import (
    ConfigError,
    DeviceError,
    DeviceMemoryError,
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
    OrtDeviceMemoryType,
    OrtMemoryInfo,
    OrtMemoryInfoDeviceType,
    OrtMemType,
    create_and_register_allocator,
    create_and_register_allocator_v2,
)
from .runtime.io_binding import IOBinding
from .runtime.lora import AdapterFormat, LoraAdapter
from .runtime.options import ExecutionOrder
from .runtime.ortvalue import OrtDevice, OrtValue
from .runtime.run_options import RunOptions
from .runtime.sparse import OrtSparseFormat, SparseTensor

__version__ = "0.1.0"


def get_available_providers() -> list[str]:
    """Execution providers this installation can use, best first, the CPU last (onnxruntime's
    function of the same name): CUDA with CuPy installed (``ziggurat[cuda]``), WebGPU with wgpu
    (``ziggurat[vulkan]``). Probes no hardware: a session asking for a provider whose device is
    missing falls back with a warning."""
    from .backends.device import installed_providers

    return installed_providers()


def get_all_providers() -> list[str]:
    """Execution providers Ziggurat has (onnxruntime's function of the same name)."""
    return ["CUDAExecutionProvider", "WebGpuExecutionProvider", "CPUExecutionProvider"]


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
        "providers=CPU (numpy, oneDNN), CUDA (CuPy, optional), WebGPU (wgpu, optional)"
    )


_SEVERITY_LEVELS = {0: 10, 1: 20, 2: 30, 3: 40, 4: 50}  # onnxruntime's -> logging's


def set_default_logger_severity(severity: int) -> None:
    """onnxruntime's process-wide log threshold: 0 verbose, 1 info, 2 warning (default),
    3 error, 4 fatal; sets the ``ziggurat`` logger's level to match."""
    import logging

    if severity not in _SEVERITY_LEVELS:
        raise ConfigError(f"logger severity must be 0 (verbose) to 4 (fatal); got {severity!r}")
    logging.getLogger("ziggurat").setLevel(_SEVERITY_LEVELS[severity])


def set_default_logger_verbosity(verbosity: int) -> None:
    """onnxruntime's verbosity of verbose (severity 0) logging; Ziggurat's verbose detail is
    chosen with ZIGGURAT_DEBUG=1/2 instead, so this only checks the value."""
    if not isinstance(verbosity, int) or verbosity < 0:
        raise ConfigError(f"logger verbosity must be an int >= 0; got {verbosity!r}")


def enable_telemetry_events() -> None:
    """onnxruntime's switch for its usage telemetry. Ziggurat collects and sends none, so there
    is nothing to enable: a no-op kept so that code calling it runs unchanged."""


def disable_telemetry_events() -> None:
    """onnxruntime's switch for its usage telemetry; a no-op here (Ziggurat sends none)."""


__all__ = [
    "AdapterFormat",
    "ConfigError",
    "DeviceError",
    "DeviceMemoryError",
    "ExecutionError",
    "ExecutionMode",
    "ExecutionOrder",
    "ExternalDataError",
    "GraphError",
    "GraphOptimizationLevel",
    "IOBinding",
    "InferenceSession",
    "InputError",
    "LoraAdapter",
    "ModelLoadError",
    "ModelMetadata",
    "NodeArg",
    "OrtAllocatorType",
    "OrtArenaCfg",
    "OrtDevice",
    "OrtDeviceMemoryType",
    "OrtMemType",
    "OrtMemoryInfo",
    "OrtMemoryInfoDeviceType",
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
    "set_default_logger_severity",
    "set_default_logger_verbosity",
]
