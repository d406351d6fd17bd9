"""The CUDA backend (CuPy): cuBLAS products, fused raw kernels, a stream, a pooled allocator.

This package is the only importer of CuPy, and imports it only inside ``available`` and
``open_backend`` — never at ``import ziggurat`` (``pip install 'ziggurat[cuda]'`` adds it).
"""

from __future__ import annotations

from typing import Any

PROVIDER = "CUDAExecutionProvider"


def available() -> bool:
    """Whether CuPy is installed and sees a CUDA GPU (without one it imports, but allocations
    raise, so ``is_available`` decides)."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # a driver/runtime mismatch reports as "no GPU", never as a crash
        return False


def open_backend(limit_bytes: int | None = None, device_id: int = 0, **_: Any) -> Any:
    """The CUDA backend on GPU ``device_id``; its pool holds at most ``limit_bytes``."""
    from .backend import CupyBackend

    return CupyBackend(limit_bytes, device_id=device_id)


__all__ = ["PROVIDER", "available", "open_backend"]
