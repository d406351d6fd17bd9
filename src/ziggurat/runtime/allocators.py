"""onnxruntime's allocator API: ``OrtMemoryInfo``, ``OrtArenaCfg``, shared allocators.

Ziggurat allocates CPU tensors with numpy (glibc malloc, tuned by ``backends.cpu.tune_allocator``)
and plans buffer reuse per shape signature itself, so there is no arena to configure. These
classes validate and keep what onnxruntime code passes: ``create_and_register_allocator``
records the allocator in a process-wide registry (``registered_allocators()``), which sessions
with the ``session.use_env_allocators`` config entry share, as in onnxruntime — for Ziggurat
that sharing is what already happens: every CPU session allocates from the one process heap.
"""

from __future__ import annotations

import enum
import threading
from typing import Any

from ..errors import ConfigError


class OrtAllocatorType(enum.IntEnum):
    INVALID = -1
    ORT_DEVICE_ALLOCATOR = 0
    ORT_ARENA_ALLOCATOR = 1


class OrtMemType(enum.IntEnum):
    CPU_INPUT = -2
    CPU_OUTPUT = -1
    CPU = -1
    DEFAULT = 0


class OrtDeviceMemoryType(enum.IntEnum):
    DEFAULT = 0
    HOST_ACCESSIBLE = 5


class OrtMemoryInfoDeviceType(enum.IntEnum):
    CPU = 0
    GPU = 1
    FPGA = 2
    NPU = 3


class OrtMemoryInfo:
    """Where memory lives: ``name`` ("Cpu", "Cuda", ...), allocator type, device id, memory
    type (onnxruntime's ``OrtMemoryInfo``); ``create_v2`` also takes the device type, vendor
    id, device memory type and alignment."""

    def __init__(
        self, name: str, alloc_type: OrtAllocatorType, device_id: int, mem_type: OrtMemType
    ):
        self.name = str(name)
        self.allocator_type = OrtAllocatorType(alloc_type)
        self.device_id = int(device_id)
        self.mem_type = OrtMemType(mem_type)
        self.device_mem_type = OrtDeviceMemoryType.DEFAULT
        self.device_vendor_id = 0
        self.device_type = (
            OrtMemoryInfoDeviceType.CPU
            if self.name.lower() == "cpu"
            else OrtMemoryInfoDeviceType.GPU
        )
        self.alignment = 0

    @staticmethod
    def create_v2(
        name: str, device_type: OrtMemoryInfoDeviceType, vendor_id: int, device_id: int,
        device_mem_type: OrtDeviceMemoryType, alignment: int, allocator_type: OrtAllocatorType,
    ) -> OrtMemoryInfo:  # fmt: skip
        """A memory info for any device, named freely (onnxruntime's CreateMemoryInfo_V2)."""
        info = OrtMemoryInfo(name, allocator_type, device_id, OrtMemType.DEFAULT)
        info.device_type = OrtMemoryInfoDeviceType(device_type)
        info.device_vendor_id = int(vendor_id)
        info.device_mem_type = OrtDeviceMemoryType(device_mem_type)
        info.alignment = int(alignment)
        return info

    def __repr__(self) -> str:
        return (
            f"OrtMemoryInfo({self.name!r}, {self.allocator_type.name}, {self.device_id}, "
            f"{self.mem_type.name})"
        )


_ARENA_KEYS = (
    "max_mem",
    "arena_extend_strategy",
    "initial_chunk_size_bytes",
    "max_dead_bytes_per_chunk",
    "initial_growth_chunk_size_bytes",
    "max_power_of_two_extend_bytes",
)


class OrtArenaCfg:
    """Arena settings, positional ``(max_mem, arena_extend_strategy, initial_chunk_size_bytes,
    max_dead_bytes_per_chunk)`` or a dict of any of the six keys; unset ones are -1 (default),
    ``max_mem`` 0 (no limit), as onnxruntime's."""

    __slots__ = _ARENA_KEYS

    def __init__(self, *args: Any):
        for key in _ARENA_KEYS:
            setattr(self, key, 0 if key == "max_mem" else -1)
        if len(args) == 1 and isinstance(args[0], dict):
            for key, value in args[0].items():
                if key not in _ARENA_KEYS:
                    raise ConfigError(
                        f"Invalid OrtArenaCfg option: {key}; valid: {', '.join(_ARENA_KEYS)}"
                    )
                setattr(self, key, int(value))
        elif len(args) == 4:
            for key, value in zip(_ARENA_KEYS, args):
                setattr(self, key, int(value))
        elif args:
            raise ConfigError(
                "OrtArenaCfg takes (max_mem, arena_extend_strategy, initial_chunk_size_bytes, "
                f"max_dead_bytes_per_chunk) or a dict; got {len(args)} arguments"
            )


_lock = threading.Lock()
_registered: dict[tuple[str, int], tuple[OrtMemoryInfo, OrtArenaCfg | None]] = {}


def create_and_register_allocator(mem_info: OrtMemoryInfo, arena_cfg: OrtArenaCfg | None) -> None:
    """Register a shared CPU allocator (onnxruntime: other devices need the _v2 function)."""
    if mem_info.name.lower() != "cpu":
        raise ConfigError(
            "Error when creating and registering allocator: Only CPU devices are supported. "
            "Please call create_and_register_allocator_v2() for other device."
        )
    with _lock:
        _registered[(mem_info.name.lower(), mem_info.device_id)] = (mem_info, arena_cfg)


def create_and_register_allocator_v2(
    provider_type: str, mem_info: OrtMemoryInfo, provider_options: dict, arena_cfg: Any
) -> None:
    """Register a shared allocator for ``provider_type``'s device."""
    from .. import get_available_providers

    if provider_type not in get_available_providers():
        raise ConfigError(
            f"create_and_register_allocator_v2: provider {provider_type!r} is not available "
            f"here; available: {', '.join(get_available_providers())}"
        )
    with _lock:
        _registered[(mem_info.name.lower(), mem_info.device_id)] = (mem_info, arena_cfg)


def registered_allocators() -> list[OrtMemoryInfo]:
    """The memory infos of the allocators registered so far."""
    with _lock:
        return [info for info, _ in _registered.values()]
