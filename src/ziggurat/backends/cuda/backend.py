"""``CupyBackend``: the CUDA device through CuPy (imported by this module only).

- **Memory**: every CuPy allocation made while a session runs goes through the backend's
  ``MemoryPool`` (``cupy.cuda.using_allocator`` with a function that takes a pool block and hands
  CuPy an ``UnownedMemory`` view of it). The block goes back to the pool when CuPy drops the last
  array using it (a small lease object's finaliser), so views and temporaries are safe, and the
  session owner recorded with each block makes ``release_owner`` / leak checks work as on every
  device. Raw allocations are ``cupy.cuda.Memory`` (``cudaMalloc``), freed when trimmed.
- **Kernels**: the shared array kernels (``xp_kernels``) with ``xp = cupy`` — products through
  ``cupy.matmul`` (cuBLAS; float16 inputs accumulate in float32 under CuPy's default compute
  type) — overridden for the hot fused ops by raw kernels (``sources.py``): LayerNorm and
  SkipLayerNorm rows, attention's scaled+masked softmax, bias+GELU/ReLU epilogues of Dense.
- **Stream**: one non-blocking stream per backend; work is queued on it and ``to_host`` waits.
"""

from __future__ import annotations

import threading
from typing import Any

import cupy
import cupyx.scipy.special
import numpy as np

from ...errors import DeviceError
from ..device import Device
from ..kernels import Backend
from ..memory import MemoryPool
from ..xp_kernels import ArrayNS, build_table
from . import fused

_BLOCK_THREADS = 256  # threads per row block of the raw kernels (a power of two)


class _Lease:
    """Owns one pool block for as long as CuPy holds memory pointing into it."""

    __slots__ = ("block",)

    def __init__(self, block: Any):
        self.block = block

    def __del__(self) -> None:
        self.block.free()  # a no-op if the session already released it


class _Scope:
    """owner + allocator + stream for the current thread (see ``CupyBackend.owner_scope``)."""

    def __init__(self, backend: CupyBackend, owner: Any):
        self._owner = Backend.owner_scope(backend, owner)
        self._alloc = cupy.cuda.using_allocator(backend._allocate)
        self._stream = backend.stream

    def __enter__(self) -> Any:
        owner = self._owner.__enter__()
        self._alloc.__enter__()
        self._stream.__enter__()
        return owner

    def __exit__(self, *exc: Any) -> None:
        self._stream.__exit__(*exc)
        self._alloc.__exit__(*exc)
        self._owner.__exit__(*exc)


class CupyBackend(Backend):
    """A CUDA GPU; see the module docstring."""

    provider = "CUDAExecutionProvider"

    def __init__(self, limit_bytes: int | None = None, *, device_id: int = 0):
        if not cupy.cuda.is_available():
            raise DeviceError("CuPy finds no CUDA GPU (cupy.cuda.is_available() is False)")
        self._gpu = cupy.cuda.Device(device_id)
        props = cupy.cuda.runtime.getDeviceProperties(device_id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        cc = int(props["major"]) * 10 + int(props["minor"])
        features = {"fp16"} | ({"bf16", "tf32"} if cc >= 80 else set())
        self.device = Device(
            "cuda", device_id, name, software=False,
            limits={
                "total_memory": int(props["totalGlobalMem"]),
                "max_threads_per_block": int(props["maxThreadsPerBlock"]),
                "multiprocessors": int(props["multiProcessorCount"]),
                "compute_capability": cc,
            },
            features=frozenset(features),
        )  # fmt: skip
        self.pool = MemoryPool(str(self.device), self._raw_alloc, self._raw_free, limit_bytes)
        with self._gpu:
            self.stream = cupy.cuda.Stream(non_blocking=True)
        self.ns = ArrayNS(cupy, cupyx.scipy.special.erf)
        self.table = build_table("cuda", self._adapt)
        fused.register(self.table, self)
        self._compiled: dict[tuple[str, str], Any] = {}
        self._compile_lock = threading.Lock()

    # -- memory ----------------------------------------------------------------------------------
    def _raw_alloc(self, nbytes: int) -> Any:
        with self._gpu:
            try:
                return cupy.cuda.Memory(nbytes)
            except cupy.cuda.memory.OutOfMemoryError as exc:
                raise DeviceError(
                    f"CUDA device {self.device.name!r} is out of memory allocating {nbytes} bytes "
                    "(other processes may hold it); lower gpu_memory_mb or the batch size"
                ) from exc

    @staticmethod
    def _raw_free(mem: Any) -> None:
        return None  # cupy.cuda.Memory calls cudaFree when the pool drops its last reference

    def _allocate(self, nbytes: int) -> Any:
        """CuPy's allocator hook: a pool block wrapped as a MemoryPointer."""
        block = self.pool.allocate(max(int(nbytes), 1), self.current_owner())
        mem = cupy.cuda.UnownedMemory(
            block.handle.ptr, block.nbytes, _Lease(block), self.device.index
        )
        return cupy.cuda.MemoryPointer(mem, 0)

    def owner_scope(self, owner: Any) -> Any:
        """Owner, pooled allocator and this backend's stream, for the current thread."""
        return _Scope(self, owner)

    # -- the Backend contract --------------------------------------------------------------------
    def empty(self, shape: tuple[int, ...], dtype: np.dtype, owner: Any = None) -> Any:
        with self.owner_scope(owner if owner is not None else self.current_owner()):
            return cupy.empty(shape, dtype=dtype)

    def to_device(self, host: np.ndarray, owner: Any = None) -> Any:
        with self.owner_scope(owner if owner is not None else self.current_owner()):
            return cupy.asarray(np.ascontiguousarray(host))

    def to_host(self, tensor: Any) -> np.ndarray:
        out = cupy.asnumpy(tensor, stream=self.stream)
        self.stream.synchronize()
        return out

    def release(self, tensor: Any) -> None:
        # The executor drops its reference; the block returns to the pool when the last array
        # (views included) using it is gone — freeing it earlier could hand out live memory.
        return None

    def synchronize(self) -> None:
        self.stream.synchronize()

    # -- CUDA graphs (runtime/device_graphs.py) --------------------------------------------------
    def capture(self, fn: Any) -> tuple[Any, Any, list]:
        """Record ``fn``'s work on the stream as a CUDA graph (relaxed capture mode). Every block
        allocated meanwhile is kept (the returned list) for as long as the graph lives: its
        addresses are baked into the graph."""
        arena: list = []

        def allocate(nbytes: int) -> Any:
            ptr = self._allocate(nbytes)
            arena.append(ptr)
            return ptr

        with cupy.cuda.using_allocator(allocate), self.stream:
            self.stream.begin_capture()
            try:
                result = fn()
            except BaseException:
                try:
                    self.stream.end_capture()
                except Exception:  # an invalidated capture: the original error says why
                    pass
                raise
            graph = self.stream.end_capture()
        return graph, result, arena

    def replay(self, graph: Any) -> None:
        graph.launch(stream=self.stream)

    def copy_into(self, tensor: Any, host: np.ndarray) -> None:
        tensor.set(np.ascontiguousarray(host), stream=self.stream)

    # -- kernels ---------------------------------------------------------------------------------
    def _adapt(self, fn: Any) -> Any:
        def device_kernel(backend: CupyBackend, inputs: list, attrs: dict) -> list:
            # CuPy arrays are the device tensors; HOST_INPUTS stay numpy (read on the host)
            return list(fn(backend.ns, inputs, attrs))

        device_kernel.__name__ = f"cuda_{getattr(fn, '__name__', 'kernel')}"
        return device_kernel

    def raw_kernel(self, name: str, dtype: np.dtype) -> Any:
        """Raw kernel ``name`` for ``dtype``, compiled (NVRTC) once per process."""
        key = (name, np.dtype(dtype).name)
        k = self._compiled.get(key)
        if k is None:
            from .sources import raw_source

            with self._compile_lock:
                k = self._compiled.get(key)
                if k is None:
                    k = cupy.RawKernel(raw_source(name, dtype), name)
                    self._compiled[key] = k
        return k

    def launch_rows(self, name: str, dtype: np.dtype, rows: int, args: tuple) -> None:
        """One block of ``_BLOCK_THREADS`` per row, with a float per thread of shared memory."""
        kernel = self.raw_kernel(name, dtype)
        kernel((rows,), (_BLOCK_THREADS,), args, shared_mem=_BLOCK_THREADS * 4, stream=self.stream)
