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
from .runtime.options import ExecutionOrder

# The rest of onnxruntime's API (values, options, bindings, adapters, allocator and logging calls)
# is imported on first use: `import ziggurat` and the server's cold start stay lean.
_LAZY = {
    "AdapterFormat": "lora",
    "IOBinding": "io_binding",
    "LoraAdapter": "lora",
    "OrtAllocatorType": "allocators",
    "OrtArenaCfg": "allocators",
    "OrtDevice": "ortvalue",
    "OrtDeviceMemoryType": "allocators",
    "OrtMemType": "allocators",
    "OrtMemoryInfo": "allocators",
    "OrtMemoryInfoDeviceType": "allocators",
    "OrtSparseFormat": "sparse",
    "OrtValue": "ortvalue",
    "RunOptions": "run_options",
    "SparseTensor": "sparse",
    "create_and_register_allocator": "allocators",
    "create_and_register_allocator_v2": "allocators",
    "set_default_logger_callback": "logging_api",
    "set_default_logger_severity": "logging_api",
    "set_default_logger_verbosity": "logging_api",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ziggurat' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".runtime.{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "set_default_logger_callback",
    "set_default_logger_severity",
    "set_default_logger_verbosity",
]
