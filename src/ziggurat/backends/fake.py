"""A fake device for tests: numpy memory behind a wall, so placement logic is testable without a GPU.

``FakeBackend`` keeps each tensor in a block of its ``MemoryPool`` (a numpy byte buffer), so
cached blocks are really reused: a buffer released too early shows up as wrong numbers, as it
would on a GPU. ``FakeTensor`` refuses every silent use as a host array (``np.asarray``, numpy
ufuncs, ``float()``, iteration): a missing device->host copy fails loudly instead of working by
accident. Its kernels are the shared array kernels (``xp_kernels``) run by numpy on the tensors'
memory, each result copied into a fresh pool block.

Selectable only after ``install()`` (tests), as provider ``FakeExecutionProvider`` / device
``fake``; no user-visible setting names it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DeviceError
from . import device as _device
from .device import Device
from .kernels import HOST_INPUTS, Backend
from .memory import MemoryPool
from .xp_kernels import ArrayNS, build_table

PROVIDER = "FakeExecutionProvider"
KIND = "fake"


def _refuse(what: str) -> DeviceError:
    return DeviceError(
        f"a fake-device tensor was used as a host array ({what}): a device->host copy "
        "(backend.to_host) is missing at this boundary"
    )


class FakeTensor:
    """A device tensor of the fake device: shape/dtype readable, contents only via the backend."""

    __slots__ = ("_array", "block", "__weakref__")

    def __init__(self, array: np.ndarray, block: Any):
        self._array = array
        self.block = block

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def size(self) -> int:
        return self._array.size

    @property
    def released(self) -> bool:
        return self.block is None

    def device_array(self) -> np.ndarray:
        """The numpy view of the tensor's device memory (backend use only)."""
        if self.block is None:
            raise DeviceError("fake-device tensor used after its memory was released")
        return self._array

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise _refuse("np.asarray")

    def __array_ufunc__(self, ufunc: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        raise _refuse(f"numpy.{ufunc.__name__}")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise _refuse(f"numpy.{func.__name__}")

    def __float__(self) -> float:
        raise _refuse("float()")

    def __int__(self) -> int:
        raise _refuse("int()")

    def __index__(self) -> int:
        raise _refuse("operator.index")

    def __bool__(self) -> bool:
        raise _refuse("bool()")

    def __iter__(self) -> Any:
        raise _refuse("iteration")

    def __len__(self) -> int:
        raise _refuse("len()")

    def __getitem__(self, key: Any) -> Any:
        raise _refuse("indexing")

    def __repr__(self) -> str:
        state = "released" if self.block is None else f"{self.block.nbytes} bytes"
        return f"FakeTensor({self.dtype}{list(self.shape)}, {state})"


def _erf(x: np.ndarray) -> np.ndarray:
    from ..ops._ewmath import erf  # the CPU's own erf: the fake device computes as numpy does

    return erf(x)


class FakeBackend(Backend):
    """The fake device: see the module docstring. ``raw_allocations`` counts driver calls."""

    provider = PROVIDER

    def __init__(self, limit_bytes: int | None = None, *, fp16: bool = True):
        features = frozenset({"shader-f16"}) if fp16 else frozenset()
        self.device = Device(
            KIND, 0, "fake test device", software=True,
            limits={"max_storage_buffer_binding_size": 1 << 27}, features=features,
        )  # fmt: skip
        self.raw_allocations = 0
        self.replays = 0
        self._capturing = False
        self.pool = MemoryPool(str(self.device), self._raw_alloc, self._raw_free, limit_bytes)
        self.ns = ArrayNS(np, _erf)
        self.table = build_table(KIND, self._adapt)

    def _raw_alloc(self, nbytes: int) -> np.ndarray:
        self.raw_allocations += 1
        return np.empty(nbytes, np.uint8)

    def _raw_free(self, handle: np.ndarray) -> None:
        return None

    # -- the Backend contract --------------------------------------------------------------------
    def empty(self, shape: tuple[int, ...], dtype: np.dtype, owner: Any = None) -> FakeTensor:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        owner = owner if owner is not None else self.current_owner()
        block = self.pool.allocate(max(nbytes, 1), owner)
        array = block.handle[:nbytes].view(dtype).reshape(shape)
        return FakeTensor(array, block)

    def to_device(self, host: np.ndarray, owner: Any = None) -> FakeTensor:
        if not isinstance(host, np.ndarray | np.generic):
            raise DeviceError(f"to_device takes a numpy array, got {type(host).__name__}")
        self._no_transfer_while_capturing()
        host = np.asarray(host)
        t = self.empty(host.shape, host.dtype, owner)
        t._array[...] = host
        return t

    def to_host(self, tensor: FakeTensor) -> np.ndarray:
        self._no_transfer_while_capturing()
        return tensor.device_array().copy()

    # -- recording (runtime/device_graphs.py), emulated: a CUDA graph records kernel launches and
    # replays them into the same buffers; here the recorded function is run again and its results
    # are copied into the recorded output tensors. Transfers while recording fail, as on CUDA.
    def _no_transfer_while_capturing(self) -> None:
        if self._capturing:
            raise DeviceError("host<->device transfer while recording a device graph")

    def capture(self, fn: Any) -> tuple[Any, Any, Any]:
        self._capturing = True
        try:
            outputs = fn()
        finally:
            self._capturing = False
        return (fn, outputs), outputs, None

    def replay(self, graph: Any) -> None:
        fn, recorded = graph
        self.replays += 1
        for dst, src in zip(recorded, fn(), strict=True):
            dst.device_array()[...] = src.device_array()
            self.release(src)

    def copy_into(self, tensor: FakeTensor, host: np.ndarray) -> None:
        tensor.device_array()[...] = host

    def release(self, tensor: FakeTensor) -> None:
        if tensor.block is not None:
            tensor.block.free()
            tensor.block = None

    # -- kernels ---------------------------------------------------------------------------------
    def _adapt(self, fn: Any) -> Any:
        def device_kernel(backend: FakeBackend, inputs: list, attrs: dict) -> list:
            arrays = [_unwrap(t) for t in inputs]
            return [backend._wrap(y) for y in fn(backend.ns, arrays, attrs)]

        device_kernel.__name__ = f"fake_{getattr(fn, '__name__', 'kernel')}"
        device_kernel.__qualname__ = device_kernel.__name__
        return device_kernel

    def _wrap(self, y: Any) -> FakeTensor:
        y = np.asarray(y)
        t = self.empty(y.shape, y.dtype)
        t._array[...] = y
        return t


def _unwrap(t: Any) -> Any:
    if t is None or isinstance(t, np.ndarray):  # HOST_INPUTS arrive as host arrays
        return t
    if isinstance(t, FakeTensor):
        return t.device_array()
    raise DeviceError(f"fake device kernel got a {type(t).__name__}, not a device tensor")


def open_backend(limit_bytes: int | None = None, **_: Any) -> FakeBackend:
    """A new fake device (tests)."""
    return FakeBackend(limit_bytes)


def install() -> None:
    """Make ``device='fake'`` / ``FakeExecutionProvider`` selectable in this process (tests)."""
    _device.register(KIND, open_backend, provider=PROVIDER, available=lambda: True)


def uninstall() -> None:
    _device.unregister(KIND)


__all__ = ["HOST_INPUTS", "FakeBackend", "FakeTensor", "install", "open_backend", "uninstall"]
