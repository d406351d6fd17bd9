"""onnxruntime's engine-level module: its exception types and value/option classes.

The exception types are ``ziggurat.errors``' onnxruntime-named ones, from which Ziggurat's own
errors derive (``except Fail`` catches a failing kernel's ``ExecutionError``). ``NotImplemented``
is onnxruntime's NOT_IMPLEMENTED status type, as in onnxruntime (it shadows the builtin constant
only for code that imports it by name).
"""

from .. import (
    disable_telemetry_events,
    enable_telemetry_events,
    get_all_providers,
    get_available_providers,
    get_build_info,
    get_device,
    get_version_string,
    set_default_logger_callback,
    set_default_logger_severity,
    set_default_logger_verbosity,
)
from ..errors import (
    EngineError,
    EPFail,
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    ModelLoaded,
    NoModel,
    NoSuchFile,
    RuntimeException,
)
from ..errors import NotImplementedOrt as NotImplemented  # noqa: A004
from ..runtime.allocators import (
    OrtAllocatorType,
    OrtArenaCfg,
    OrtDeviceMemoryType,
    OrtMemoryInfo,
    OrtMemoryInfoDeviceType,
    OrtMemType,
    create_and_register_allocator,
    create_and_register_allocator_v2,
)
from ..runtime.lora import AdapterFormat, LoraAdapter
from ..runtime.options import ExecutionMode, ExecutionOrder, GraphOptimizationLevel, SessionOptions
from ..runtime.ortvalue import OrtDevice, OrtValue, OrtValueVector, is_dlpack_uint8_tensor
from ..runtime.run_options import RunOptions
from ..runtime.session import ModelMetadata, NodeArg
from ..runtime.sparse import OrtSparseFormat, SparseTensor


def get_default_session_options() -> SessionOptions:
    """A new ``SessionOptions`` with the defaults."""
    return SessionOptions()


__all__ = [
    "AdapterFormat",
    "EPFail",
    "EngineError",
    "ExecutionMode",
    "ExecutionOrder",
    "Fail",
    "GraphOptimizationLevel",
    "InvalidArgument",
    "InvalidGraph",
    "InvalidProtobuf",
    "LoraAdapter",
    "ModelLoaded",
    "ModelMetadata",
    "NoModel",
    "NoSuchFile",
    "NodeArg",
    "NotImplemented",
    "OrtAllocatorType",
    "OrtArenaCfg",
    "OrtDevice",
    "OrtDeviceMemoryType",
    "OrtMemType",
    "OrtMemoryInfo",
    "OrtMemoryInfoDeviceType",
    "OrtSparseFormat",
    "OrtValue",
    "OrtValueVector",
    "RunOptions",
    "RuntimeException",
    "SessionOptions",
    "SparseTensor",
    "create_and_register_allocator",
    "create_and_register_allocator_v2",
    "disable_telemetry_events",
    "enable_telemetry_events",
    "get_all_providers",
    "get_available_providers",
    "get_build_info",
    "get_default_session_options",
    "get_device",
    "get_version_string",
    "is_dlpack_uint8_tensor",
    "set_default_logger_callback",
    "set_default_logger_severity",
    "set_default_logger_verbosity",
]
