"""Ziggurat's exception tree. Every error a user can cause is a ``ZigguratError``.

::

    ZigguratError
    ├── ModelLoadError            the file is missing, unreadable, not ONNX, truncated, too big
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
"""

from __future__ import annotations


class ZigguratError(Exception):
    """Base class of every error Ziggurat raises on purpose."""


class ModelLoadError(ZigguratError):
    """The model file could not be read as an ONNX model."""


class ExternalDataError(ModelLoadError):
    """An initializer's external data is missing, truncated, or outside the model's folder."""


class UnsupportedModelError(ZigguratError):
    """The model is valid ONNX but uses something Ziggurat cannot run."""


class UnsupportedOpError(UnsupportedModelError):
    """Nodes whose op has no kernel. ``missing`` lists (node name, domain, op, opset) for each."""

    def __init__(self, message: str, missing: list[tuple[str, str, str, int]] | None = None):
        super().__init__(message)
        self.missing = list(missing or [])


class GraphError(ZigguratError):
    """The graph is malformed: a value used before it is defined, a cycle, a duplicate name."""


class InputError(ZigguratError):
    """A feed passed to ``run`` does not match the model's inputs."""


class ExecutionError(ZigguratError):
    """A kernel raised while running a node."""


class ConfigError(ZigguratError):
    """A configuration value is invalid."""


class DeviceError(ZigguratError):
    """A device could not be opened or failed while running."""


class DeviceMemoryError(DeviceError):
    """A device memory pool cannot allocate within its limit."""
