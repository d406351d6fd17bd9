"""Ziggurat's exception tree. Every error a user can cause is a ``ZigguratError``.

::

    ZigguratError
    ├── ModelLoadError            the file is missing, unreadable, not ONNX, truncated, too big
    │   ├── ModelNotFoundError    the file does not exist
    │   └── ExternalDataError     an external-data reference is missing or escapes the model folder
    ├── UnsupportedModelError     the model needs an op/opset/dtype Ziggurat cannot run
    │   └── UnsupportedOpError    one or more nodes have no kernel (all of them are listed)
    ├── GraphError                the graph itself is malformed (cycles, undefined values, ...)
    ├── InputError                a feed is missing, unknown, or of the wrong dtype/shape
    ├── ExecutionError            a kernel failed while running (names the node and op)
    ├── ConfigError               a setting has an invalid value
    └── DeviceError               a device is missing, or failed
        └── DeviceMemoryError     a device memory pool is over its limit (gpu_memory_mb)

The HTTP status each maps to lives in ``ziggurat.server``.

Code written for onnxruntime catches its exception types (``onnxruntime.capi.
onnxruntime_pybind11_state.Fail``, ``InvalidArgument``, ...): the same names are defined here (and
exposed at ``ziggurat.capi.onnxruntime_pybind11_state``) and each Ziggurat error derives from the
one onnxruntime raises in the same situation: a missing file ``NoSuchFile``, an unreadable one
``InvalidProtobuf``, a missing kernel ``NotImplemented``, a malformed graph ``InvalidGraph``, a bad
feed ``InvalidArgument`` (and ``ValueError``, as onnxruntime's missing-input check), a bad setting
``InvalidArgument``, a failing kernel ``Fail``. onnxruntime's own types derive from ``Exception``;
these derive from ``RuntimeError`` too, because onnxruntime raises a plain ``RuntimeError`` for the
rest (unknown provider, unknown config key), so ``except RuntimeError`` catches both.
"""

from __future__ import annotations


class OrtError(RuntimeError):
    """Base of the onnxruntime-named exception types below (onnxruntime's status codes)."""


class Fail(OrtError):
    """onnxruntime's FAIL (1)."""


class InvalidArgument(OrtError):
    """onnxruntime's INVALID_ARGUMENT (2)."""


class NoSuchFile(OrtError):
    """onnxruntime's NO_SUCHFILE (3)."""


class NoModel(OrtError):
    """onnxruntime's NO_MODEL (4)."""


class EngineError(OrtError):
    """onnxruntime's ENGINE_ERROR (5)."""


class RuntimeException(OrtError):
    """onnxruntime's RUNTIME_EXCEPTION (6)."""


class InvalidProtobuf(OrtError):
    """onnxruntime's INVALID_PROTOBUF (7)."""


class ModelLoaded(OrtError):
    """onnxruntime's MODEL_LOADED (8)."""


# onnxruntime's NOT_IMPLEMENTED (9); the class is named NotImplemented, as onnxruntime's is, but
# bound to another Python name so that it does not shadow the builtin constant here.
NotImplementedOrt = type(
    "NotImplemented", (OrtError,), {"__doc__": "onnxruntime's NOT_IMPLEMENTED (9)."}
)


class InvalidGraph(OrtError):
    """onnxruntime's INVALID_GRAPH (10)."""


class EPFail(OrtError):
    """onnxruntime's EP_FAIL (11)."""


class ZigguratError(Exception):
    """Base class of every error Ziggurat raises on purpose."""


class ModelLoadError(ZigguratError, InvalidProtobuf):
    """The model file could not be read as an ONNX model."""


class ModelNotFoundError(ModelLoadError, NoSuchFile):
    """The model file does not exist."""


class ExternalDataError(ModelLoadError):
    """An initializer's external data is missing, truncated, or outside the model's folder."""


class UnsupportedModelError(ZigguratError, NotImplementedOrt):
    """The model is valid ONNX but uses something Ziggurat cannot run."""


class UnsupportedOpError(UnsupportedModelError):
    """Nodes whose op has no kernel. ``missing`` lists (node name, domain, op, opset) for each."""

    def __init__(self, message: str, missing: list[tuple[str, str, str, int]] | None = None):
        super().__init__(message)
        self.missing = list(missing or [])


class GraphError(ZigguratError, InvalidGraph):
    """The graph is malformed: a value used before it is defined, a cycle, a duplicate name."""


class InputError(ZigguratError, InvalidArgument, ValueError):
    """A feed passed to ``run`` does not match the model's inputs."""


class ExecutionError(ZigguratError, Fail):
    """A kernel raised while running a node."""


class ConfigError(ZigguratError, InvalidArgument):
    """A configuration value is invalid."""


class DeviceError(ZigguratError, EPFail):
    """A device could not be opened or failed while running."""


class DeviceMemoryError(DeviceError):
    """A device memory pool cannot allocate within its limit."""
