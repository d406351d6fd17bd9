"""The kernel execution interface: one call signature for every device backend.

A device backend (``cuda/``, ``vulkan/``, ``fake.py``) is a ``Backend``: it moves arrays between
host and device, allocates through its ``MemoryPool`` and offers device kernels from a
``KernelTable``. A device kernel has one signature on every backend::

    fn(backend, inputs: list[DeviceTensor | None], attrs: dict[str, Any]) -> list[DeviceTensor]

``inputs`` are the node's inputs in order (``None`` for an omitted optional input), ``attrs`` the
node's attributes with the spec's defaults filled in (as the CPU kernel would receive them), and
the result lists the node's outputs in order. Shape arithmetic happens on the host; inputs an op
reads as *values* (a Reshape's shape, a Slice's starts) arrive as host numpy arrays, listed per
op in ``HOST_INPUTS``.

A kernel may come with ``supports(inputs, attrs) -> str | None``: given each input's
``(shape, dtype)`` (or ``None``), it answers ``None`` when it can run them and otherwise the
reason it can't ("float64", "binding over 128 MiB", ...) — placement then keeps that node on the
CPU and reports the reason.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .device import Device
from .memory import MemoryPool

# Inputs (by position) that device kernels receive as host numpy arrays: shape-like values.
HOST_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Unsqueeze": (1,),
    "Squeeze": (1,), "Pad": (1, 2, 3), "Resize": (1, 2, 3), "TopK": (1,), "Split": (1,),
    "ConstantOfShape": (0,), "Range": (0, 1, 2), "OneHot": (1,),
    **{f"Reduce{r}": (1,) for r in (
        "Sum", "Mean", "Max", "Min", "Prod", "L1", "L2", "LogSum", "LogSumExp", "SumSquare",
    )},
}  # fmt: skip

Supports = Callable[[list[tuple[tuple[int, ...], np.dtype] | None], dict[str, Any]], str | None]
DeviceKernel = Callable[["Backend", list[Any], dict[str, Any]], list[Any]]


@dataclass(frozen=True)
class KernelEntry:
    op_type: str
    domain: str
    since: int
    fn: DeviceKernel
    supports: Supports | None = None


class KernelTable:
    """A backend's device kernels by (domain, op), with opset versions like ``ops/registry``."""

    def __init__(self, backend_kind: str):
        self.backend_kind = backend_kind
        self._entries: dict[tuple[str, str], list[KernelEntry]] = {}

    def kernel(
        self, op_type: str, *, domain: str = "", since: int = 1, supports: Supports | None = None
    ) -> Callable[[DeviceKernel], DeviceKernel]:
        """Decorator: ``@table.kernel("MatMul", supports=...)``."""

        def register(fn: DeviceKernel) -> DeviceKernel:
            entry = KernelEntry(op_type, domain, since, fn, supports)
            versions = self._entries.setdefault((domain, op_type), [])
            versions.append(entry)
            versions.sort(key=lambda e: e.since)
            return fn

        return register

    def lookup(self, op_type: str, domain: str, opset: int) -> KernelEntry | None:
        """The entry with the highest ``since`` ≤ ``opset``, or None."""
        best = None
        for e in self._entries.get((domain, op_type), ()):
            if e.since <= opset:
                best = e
        return best

    def ops(self) -> list[str]:
        return sorted(f"{d}::{o}" if d else o for d, o in self._entries)


class Backend(abc.ABC):
    """A device: host<->device copies, allocation through ``pool``, kernels from ``table``."""

    device: Device
    pool: MemoryPool
    table: KernelTable
    provider: str  # onnxruntime's provider name: "CUDAExecutionProvider", ...

    @abc.abstractmethod
    def to_device(self, host: np.ndarray, owner: Any = None) -> Any:
        """Copy a host array to a new device tensor."""

    @abc.abstractmethod
    def to_host(self, tensor: Any) -> np.ndarray:
        """Copy a device tensor to a new host array (waits for pending work)."""

    @abc.abstractmethod
    def empty(self, shape: tuple[int, ...], dtype: np.dtype, owner: Any = None) -> Any:
        """An uninitialised device tensor."""

    @abc.abstractmethod
    def release(self, tensor: Any) -> None:
        """Give the tensor's memory back to the pool (the plan's last use of it)."""

    def owner_scope(self, owner: Any) -> Any:
        """``with backend.owner_scope(session):`` — allocations made by kernels on this thread
        inside the block belong to ``owner`` (kernels get no owner argument; the executor sets
        it around each run so ``MemoryPool.release_owner`` finds a closing session's blocks)."""
        return _OwnerScope(self, owner)

    def current_owner(self) -> Any:
        """The owner set by the innermost ``owner_scope`` on this thread, or None."""
        return getattr(_owners, str(id(self)), None)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op where every call is synchronous)."""
        return None

    def kernel(self, op_type: str, domain: str, opset: int) -> KernelEntry | None:
        return self.table.lookup(op_type, domain, opset)


_owners = threading.local()  # per thread: str(id(backend)) -> current owner


class _OwnerScope:
    __slots__ = ("_backend", "_owner", "_saved")

    def __init__(self, backend: Backend, owner: Any):
        self._backend, self._owner = backend, owner

    def __enter__(self) -> Any:
        key = str(id(self._backend))
        self._saved = getattr(_owners, key, None)
        setattr(_owners, key, self._owner)
        return self._owner

    def __exit__(self, *exc: object) -> None:
        setattr(_owners, str(id(self._backend)), self._saved)
