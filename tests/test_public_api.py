"""The public API: ziggurat/__init__.py's sorted __all__ is the contract (DESIGN.md §1)."""

from __future__ import annotations

import ziggurat

PUBLIC = [
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


def test_all_is_sorted_and_pinned():
    assert ziggurat.__all__ == sorted(ziggurat.__all__)
    assert ziggurat.__all__ == PUBLIC


def test_every_public_name_resolves():
    for name in ziggurat.__all__:
        assert getattr(ziggurat, name) is not None


def test_error_tree():
    for name in PUBLIC:
        obj = getattr(ziggurat, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, ziggurat.ZigguratError)
    assert issubclass(ziggurat.UnsupportedOpError, ziggurat.UnsupportedModelError)
    assert issubclass(ziggurat.ExternalDataError, ziggurat.ModelLoadError)
    assert issubclass(ziggurat.DeviceMemoryError, ziggurat.DeviceError)
    assert issubclass(ziggurat.DeviceError, ziggurat.ZigguratError)


def test_onnxruntime_names_match():
    """Switching from onnxruntime is one import: the same enum values and option fields."""
    assert ziggurat.GraphOptimizationLevel.ORT_ENABLE_ALL == 99
    assert ziggurat.ExecutionMode.ORT_PARALLEL == 1
    opts = ziggurat.SessionOptions()
    for field in ("graph_optimization_level", "intra_op_num_threads", "inter_op_num_threads",
                  "execution_mode", "enable_profiling"):  # fmt: skip
        assert hasattr(opts, field)
    available = ziggurat.get_available_providers()
    assert available[-1] == "CPUExecutionProvider"
    assert set(available) <= set(ziggurat.get_all_providers())
    assert ziggurat.get_all_providers() == [
        "CUDAExecutionProvider", "WebGpuExecutionProvider", "CPUExecutionProvider",
    ]  # fmt: skip
    assert ziggurat.get_device() == "CPU"
    assert ziggurat.get_version_string() == ziggurat.__version__
    assert ziggurat.__version__ in ziggurat.get_build_info()
