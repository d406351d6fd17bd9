"""The Vulkan compute backend: WGSL kernels run through wgpu (WebGPU over Vulkan; the same code
runs on Metal and D3D12), tested in CI on Mesa's software driver, lavapipe.

This package is the only importer of ``wgpu``, and imports it on first use: ``import ziggurat``
(and importing this package) never loads it. One wgpu device per process, made on first use
(0.6-1.1 s: adapter and device), shared by every session placed on it.

    from ziggurat.backends import vulkan
    if vulkan.available():
        backend = vulkan.open_backend(limit_bytes=2048 << 20)

If no Vulkan driver is installed wgpu silently picks its OpenGL backend, which runs no compute
shaders worth having: ``available()`` refuses any adapter whose ``backend_type`` is not Vulkan,
Metal or D3D12 and ``unavailable_reason()`` says why.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ...errors import DeviceError

if TYPE_CHECKING:
    from ._backend import VkTensor, VulkanBackend

__all__ = [
    "VkTensor", "VulkanBackend", "available", "kernel_table", "open_backend", "unavailable_reason",
]  # fmt: skip

_ACCEPTED = ("Vulkan", "Metal", "D3D12")
_lock = threading.Lock()
_probe: tuple[Any, str | None] | None = None  # (adapter or None, reason it is unusable)
_open: VulkanBackend | None = None  # the process's backend


def _probe_adapter() -> tuple[Any, str | None]:
    global _probe
    with _lock:
        if _probe is None:
            _probe = _find_adapter()
        return _probe


def _find_adapter() -> tuple[Any, str | None]:
    try:
        import wgpu
    except ImportError:
        return None, "wgpu is not installed (pip install 'ziggurat[vulkan]')"
    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except Exception as e:  # wgpu raises its own error types for a missing driver
        return None, f"wgpu found no adapter: {e}"
    if adapter is None:
        return None, "wgpu found no adapter (apt-get install -y mesa-vulkan-drivers libvulkan1)"
    backend = adapter.info.get("backend_type", "")
    if backend not in _ACCEPTED:
        return None, (
            f"wgpu's adapter runs on {backend or 'an unknown backend'}, not Vulkan: no Vulkan "
            "driver is installed (apt-get install -y mesa-vulkan-drivers libvulkan1)"
        )
    return adapter, None


def available() -> bool:
    """Whether a Vulkan (or Metal/D3D12) adapter is present; cached, never raises."""
    try:
        return _probe_adapter()[1] is None
    except Exception:
        return False


def unavailable_reason() -> str | None:
    """Why ``available()`` is False (None when it is True)."""
    try:
        return _probe_adapter()[1]
    except Exception as e:
        return f"probing wgpu failed: {e}"


def open_backend(limit_bytes: int | None = None) -> VulkanBackend:
    """The process's Vulkan backend, made on first use; ``limit_bytes`` (gpu_memory_mb) bounds
    its memory pool (a later call with a limit sets it). Raises DeviceError without an adapter."""
    global _open
    adapter, why = _probe_adapter()
    if why is not None:
        raise DeviceError(f"vulkan: no device: {why}")
    with _lock:
        if _open is None:
            from . import _backend as core

            kernel_table()

            # Ask for the adapter's own binding and buffer limits (the request's defaults are
            # WebGPU's portable minimums).
            wanted = ("max-storage-buffer-binding-size", "max-buffer-size")
            limits = {k: adapter.limits[k] for k in wanted if k in adapter.limits}
            device = adapter.request_device_sync(required_limits=limits)
            _open = core.VulkanBackend(adapter, device, limit_bytes)
        elif limit_bytes is not None:
            _open.pool.limit_bytes = limit_bytes
        return _open


def kernel_table() -> Any:
    """The backend's ``KernelTable`` with every kernel module registered (imports no wgpu: the
    placement of a model can be reasoned about without a device)."""
    from . import (  # noqa: F401
        _backend,
        ops_contrib,
        ops_conv,
        ops_elementwise,
        ops_matmul,
        ops_nn,
        ops_resize,
        ops_shape,
    )

    return _backend.TABLE


def __getattr__(name: str) -> Any:
    if name in ("VkTensor", "VulkanBackend"):
        from . import _backend as core

        return getattr(core, name)
    raise AttributeError(name)
