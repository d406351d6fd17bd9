"""Devices: what a plan can be placed on.

A ``Device`` names one compute device (the CPU, a CUDA GPU, a Vulkan/WebGPU adapter, the fake
test device) with the facts placement needs: whether it is a software emulation (Mesa's lavapipe
runs Vulkan on the CPU: right for correctness tests, never for timing), its limits as the driver
reports them (never hard-coded: a storage binding's maximum size differs between drivers), and its
optional features (``shader-f16``, ...).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeviceError


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" | "cuda" | "vulkan" | "fake"
    index: int = 0
    name: str = ""
    software: bool = False
    limits: Mapping[str, int] = field(default_factory=dict)
    features: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return self.kind if self.kind == "cpu" else f"{self.kind}:{self.index}"


CPU = Device("cpu", 0, "host CPU")


# -- discovery and selection -------------------------------------------------------------------
# Every device backend is opened through ``select``: its package (``backends.cuda``,
# ``backends.vulkan``) and the native library behind it (CuPy, wgpu) are imported only then, never
# at ``import ziggurat``. One backend per kind and process: opening a device costs up to a second
# (a Vulkan adapter + device) and a pool per process keeps its cached blocks shared by sessions.
# onnxruntime's provider names -> device kinds (WebGPU: wgpu implements it over Vulkan/Metal/D3D12).
PROVIDERS: dict[str, str] = {
    "CUDAExecutionProvider": "cuda",
    "WebGpuExecutionProvider": "vulkan",
    "CPUExecutionProvider": "cpu",
}
DEVICE_KINDS = ("cpu", "cuda", "vulkan")

_lock = threading.Lock()
_open: dict[str, Any] = {}  # kind -> opened Backend
# Backends registered at run time (the fake test device): kind -> (opener, availability check).
_registered: dict[str, tuple[Callable[..., Any], Callable[[], bool]]] = {}


def register(
    kind: str, opener: Callable[..., Any], *, provider: str, available: Callable[[], bool] = bool
) -> None:
    """Make a backend selectable by ``kind`` and ``provider`` name (tests register the fake
    device this way; it is never a provider a user can name without this call)."""
    _registered[kind] = (opener, available)
    PROVIDERS[provider] = kind


def unregister(kind: str) -> None:
    """Undo ``register`` and forget the opened backend of ``kind``."""
    _registered.pop(kind, None)
    for name in [p for p, k in PROVIDERS.items() if k == kind]:
        del PROVIDERS[name]
    with _lock:
        _open.pop(kind, None)


def _module(kind: str) -> Any:
    """The backend package of ``kind`` (imported here, on demand); ImportError if absent."""
    if kind == "cuda":
        from . import cuda

        return cuda
    if kind == "vulkan":
        from . import vulkan  # the Vulkan helper's package: open_backend(), available()

        return vulkan
    raise DeviceError(f"unknown device kind {kind!r}; expected one of {', '.join(DEVICE_KINDS)}")


def available(kind: str) -> bool:
    """Whether a ``kind`` device can be opened here (imports its library, opens nothing)."""
    if kind == "cpu":
        return True
    if kind in _registered:
        return bool(_registered[kind][1]())
    try:
        return bool(_module(kind).available())
    except ImportError:
        return False
    except DeviceError:
        raise
    except Exception:  # a broken driver install answers "not available", never crashes a session
        return False


def why_unavailable(kind: str) -> str:
    """A sentence for warnings and errors: why ``kind`` cannot be used here, and the fix."""
    if kind == "cuda":
        try:
            import cupy  # noqa: F401
        except ImportError:
            return "CuPy is not installed (pip install 'ziggurat[cuda]')"
        return "CuPy finds no CUDA GPU (cupy.cuda.is_available() is False)"
    if kind == "vulkan":
        try:
            from . import vulkan

            reason = getattr(vulkan, "unavailable_reason", lambda: None)()
        except ImportError:
            reason = None
        return reason or "wgpu finds no Vulkan adapter (apt-get install mesa-vulkan-drivers)"
    return f"no {kind!r} device is available"


def select(kind: str, *, limit_bytes: int | None = None) -> Any:
    """The process's ``Backend`` for ``kind`` ('cuda', 'vulkan', or a registered test kind),
    opened on first use; ``limit_bytes`` (``gpu_memory_mb``) sets its pool's limit. Raises
    DeviceError saying why the device is unavailable and what to install."""
    if kind == "cpu":
        raise DeviceError("the CPU has no device backend: it runs the plan's own kernels")
    with _lock:
        backend = _open.get(kind)
        if backend is None:
            if not available(kind):
                raise DeviceError(f"device {kind!r} is not available: {why_unavailable(kind)}")
            if kind in _registered:
                backend = _registered[kind][0](limit_bytes=limit_bytes)
            else:
                backend = _module(kind).open_backend(limit_bytes=limit_bytes)
            _open[kind] = backend
        elif limit_bytes is not None:
            backend.pool.limit_bytes = limit_bytes
    return backend


def opened() -> dict[str, Any]:
    """The backends opened so far in this process, by kind (for stats: opens nothing)."""
    with _lock:
        return dict(_open)


def discover(kinds: tuple[str, ...] = ("cuda", "vulkan")) -> list[Device]:
    """The devices usable here, best first (the CPU last). Opens each available backend (its
    ``Device`` carries the limits the driver reports), so it costs up to a second per kind."""
    found = [select(k).device for k in kinds if available(k)]
    return [*found, CPU]


def installed_providers() -> list[str]:
    """Providers whose library is installed here, best first, the CPU last (onnxruntime's
    ``get_available_providers``: what this installation can use, without probing hardware;
    ``available`` checks for a device). Imports nothing."""
    from importlib.util import find_spec

    out = []
    if find_spec("cupy") is not None:
        out.append("CUDAExecutionProvider")
    if find_spec("wgpu") is not None:
        out.append("WebGpuExecutionProvider")
    out += [p for p, k in PROVIDERS.items() if k in _registered]
    return [*out, "CPUExecutionProvider"]
