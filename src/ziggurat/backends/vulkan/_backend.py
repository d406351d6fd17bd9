"""The Vulkan (WebGPU) backend's core: the wgpu device, device tensors, the memory pool, compiled
pipelines and kernel dispatch.

Device dtypes. WGSL has 32-bit types only (no f64, no i64, no 8-bit storage), so a tensor's
*logical* dtype (what ``to_host`` returns, what kernels see) may differ from its *storage*:

====================  ===============  ==================================================
logical               storage          note
====================  ===============  ==================================================
float32               f32
int32                 i32
int64                 i32              carried as i32: ``to_device`` refuses values outside
                                       the int32 range (DeviceError); kernels that could
                                       leave that range (int64 arithmetic) refuse int64
bool                  u32 (0 or 1)     four bytes per element
====================  ===============  ==================================================

Every other dtype (float64, float16, int8, ...) is refused by each kernel's ``supports``.

Work is recorded into one command encoder (one compute pass per kernel, so wgpu orders them)
and submitted before any host write (a buffer handed back to the pool may be reused while an
earlier kernel still has to read it: submitting first keeps the queue order) and before every
read back.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from importlib import resources
from typing import Any

import numpy as np

from ...errors import DeviceError
from ..device import Device
from ..kernels import Backend, KernelTable
from ..memory import Block, MemoryPool

PROVIDER = "WebGpuExecutionProvider"
WORKGROUP = 64  # invocations of the 1-D shaders (WebGPU guarantees at least 256)
# Storage element size and WGSL type per logical dtype.
STORAGE = {
    np.dtype(np.float32): ("f32", np.dtype(np.float32)),
    np.dtype(np.int32): ("i32", np.dtype(np.int32)),
    np.dtype(np.int64): ("i32", np.dtype(np.int32)),
    np.dtype(np.bool_): ("u32", np.dtype(np.uint32)),
}
_I32 = np.iinfo(np.int32)
_META_CACHE = 4096  # small parameter buffers kept, keyed by their bytes (shapes repeat per run)
# Bind groups kept, keyed by (pipeline, buffers): a plan binds the same pooled buffers on every
# run, and creating one costs about half of a dispatch's Python time. The keys hold the buffer
# objects, so a destroyed buffer's entry can never match a new buffer; LRU-bounded.
_BIND_CACHE = 4096
_FLUSH_EVERY = 64  # kernels recorded before a submit

TABLE = KernelTable("vulkan")


def wgsl_type(dtype: np.dtype) -> str:
    return STORAGE[np.dtype(dtype)][0]


class _Storage:
    """A pool block shared by a tensor and its metadata-only views (Reshape, Squeeze, ...)."""

    __slots__ = ("block", "refs")

    def __init__(self, block: Block):
        self.block = block
        self.refs = 1


class VkTensor:
    """A tensor in device memory: logical ``shape``/``dtype`` over a pool block (row-major,
    contiguous, starting at the block's first byte)."""

    __slots__ = ("shape", "dtype", "_storage", "_released")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, storage: _Storage):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._storage = storage
        self._released = False

    @property
    def block(self) -> Block:
        return self._storage.block

    @property
    def buffer(self) -> Any:
        return self._storage.block.handle

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of device storage (4 per element: int64 and bool are carried in 32 bits)."""
        return self.size * 4

    def __repr__(self) -> str:
        return f"VkTensor({self.dtype}{list(self.shape)})"


class VulkanBackend(Backend):
    """Kernels in WGSL on a wgpu device (Vulkan, or Metal/D3D12 where those are the platform's
    WebGPU backend); see the module docstring for the dtypes it carries."""

    provider = PROVIDER

    def __init__(self, adapter: Any, device: Any, limit_bytes: int | None = None):
        import wgpu

        self._wgpu = wgpu
        self.adapter = adapter
        self.gpu = device
        info = adapter.info
        limits = {k.replace("-", "_"): int(v) for k, v in device.limits.items()}
        self.device = Device(
            "vulkan",
            0,
            f"{info.get('device', '')} ({info.get('backend_type', '')})",
            software=info.get("adapter_type", "") == "CPU",
            limits=limits,
            features=frozenset(str(f) for f in device.features),
        )
        self.max_binding = limits["max_storage_buffer_binding_size"]
        self.max_groups = limits["max_compute_workgroups_per_dimension"]
        self._usage = (
            wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        )
        self.pool = MemoryPool("vulkan:0", self._raw_alloc, self._raw_free, limit_bytes)
        self.table = TABLE
        self._lock = threading.RLock()
        self._pipelines: dict[tuple, Any] = {}
        self._meta: OrderedDict[bytes, Any] = OrderedDict()
        self._binds: OrderedDict[tuple, Any] = OrderedDict()
        self._encoder = None
        self._recorded = 0
        self._dummy = device.create_buffer(size=256, usage=self._usage)
        self._dummies: list[Any] = []

    # -- memory ----------------------------------------------------------------------------------
    def _raw_alloc(self, nbytes: int) -> Any:
        return self.gpu.create_buffer(size=nbytes, usage=self._usage)

    def _raw_free(self, handle: Any) -> None:
        self.flush()  # recorded work may still use it
        handle.destroy()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype, owner: Any = None) -> VkTensor:
        dtype = np.dtype(dtype)
        if dtype not in STORAGE:
            raise DeviceError(
                f"vulkan: no device storage for dtype {dtype} (carried: float32, int32, int64 "
                "as int32, bool); keep this value on the CPU"
            )
        nbytes = max(math.prod(shape), 1) * 4
        if nbytes > self.max_binding:
            raise DeviceError(
                f"vulkan: a {dtype}{list(shape)} tensor needs {nbytes} bytes, over the device's "
                f"max_storage_buffer_binding_size ({self.max_binding}); keep it on the CPU"
            )
        if owner is None:
            owner = self.current_owner()  # the session running (DeviceGraph's owner_scope)
        return VkTensor(shape, dtype, _Storage(self.pool.allocate(nbytes, owner)))

    def release(self, tensor: VkTensor) -> None:
        if tensor._released:
            return
        tensor._released = True
        st = tensor._storage
        st.refs -= 1
        if st.refs == 0:
            st.block.free()

    def view(self, tensor: VkTensor, shape: tuple[int, ...]) -> VkTensor:
        """The same elements in another shape, sharing the block (no copy)."""
        if math.prod(shape) != tensor.size:
            raise DeviceError(f"vulkan: cannot view {tensor!r} as {list(shape)}")
        tensor._storage.refs += 1
        return VkTensor(shape, tensor.dtype, tensor._storage)

    # -- host <-> device ---------------------------------------------------------------------------
    def to_device(self, host: np.ndarray, owner: Any = None) -> VkTensor:
        host = np.asarray(host)
        dtype = host.dtype
        if dtype not in STORAGE:
            raise DeviceError(
                f"vulkan: cannot hold a {dtype} array on the device (carried: float32, int32, "
                "int64 as int32, bool); keep it on the CPU"
            )
        if dtype == np.int64 and host.size and (host.min() < _I32.min or host.max() > _I32.max):
            raise DeviceError(
                f"vulkan: int64 values outside the int32 range ({host.min()}..{host.max()}) "
                "cannot be carried as WGSL i32; keep this value on the CPU"
            )
        t = self.empty(host.shape, dtype, owner)
        data = np.ascontiguousarray(host, dtype=STORAGE[dtype][1])
        if data.size:
            with self._lock:
                self.flush()
                self.gpu.queue.write_buffer(t.buffer, 0, data.reshape(-1))
        return t

    def to_host(self, tensor: VkTensor) -> np.ndarray:
        store = STORAGE[tensor.dtype][1]
        if tensor.size == 0:
            return np.empty(tensor.shape, tensor.dtype)
        with self._lock:
            self.flush()
            raw = self.gpu.queue.read_buffer(tensor.buffer, 0, tensor.size * 4)
        arr = np.frombuffer(raw, dtype=store, count=tensor.size).reshape(tensor.shape)
        return arr.astype(tensor.dtype)  # a fresh, writable array (bool: nonzero -> True)

    def synchronize(self) -> None:
        with self._lock:
            self.flush()
            # reading back a word waits for everything submitted before it (wgpu 0.32's
            # on_submitted_work_done_sync fails on its own callback signature)
            self.gpu.queue.read_buffer(self._dummy, 0, 4)

    def flush(self) -> None:
        """Submit the recorded kernels."""
        with self._lock:
            encoder, self._encoder, self._recorded = self._encoder, None, 0
            if encoder is not None:
                self.gpu.queue.submit([encoder.finish()])

    # -- kernels -----------------------------------------------------------------------------------
    def pipeline(self, shader: str, subs: dict[str, str] | None = None) -> Any:
        """The compute pipeline of ``shaders/<shader>.wgsl`` with ``{{KEY}}`` placeholders
        replaced by ``subs``; compiled once per (shader, substitutions)."""
        key = (shader, tuple(sorted((subs or {}).items())))
        pipe = self._pipelines.get(key)
        if pipe is None:
            code = _source("common") + "\n" + _source(shader)
            for k, v in (subs or {}).items():
                code = code.replace("{{" + k + "}}", v)
            module = self.gpu.create_shader_module(code=code)
            pipe = self.gpu.create_compute_pipeline(
                layout="auto", compute={"module": module, "entry_point": "main"}
            )
            self._pipelines[key] = pipe
        return pipe

    def meta_buffer(self, values: list[int]) -> Any:
        """A read-only storage buffer holding ``values`` as i32 (cached by content)."""
        data = np.asarray(values, dtype=np.int64)
        if data.size and (data.min() < _I32.min or data.max() > _I32.max):
            raise DeviceError("vulkan: a shape or stride does not fit in int32")
        raw = data.astype(np.int32).tobytes() or b"\0\0\0\0"
        buf = self._meta.get(raw)
        if buf is None:
            buf = self.gpu.create_buffer_with_data(data=raw, usage=self._wgpu.BufferUsage.STORAGE)
            self._meta[raw] = buf
            if len(self._meta) > _META_CACHE:
                _, old = self._meta.popitem(last=False)
                self.flush()
                old.destroy()
        else:
            self._meta.move_to_end(raw)
        return buf

    def groups_1d(self, n: int, per_group: int = WORKGROUP) -> tuple[int, int, int]:
        """Workgroup counts for ``n`` items: x up to the device's per-dimension maximum, the
        rest in y (the shaders index ``(wid.y * nwg.x + wid.x)``)."""
        groups = max(1, -(-n // per_group))
        x = min(groups, self.max_groups)
        y = -(-groups // x)
        if y > self.max_groups:
            raise DeviceError(
                f"vulkan: {n} items need {groups} workgroups, over the device's "
                f"{self.max_groups}^2; keep this node on the CPU"
            )
        return x, y, 1

    def dispatch(
        self,
        shader: str,
        meta: list[int],
        buffers: list[Any],
        groups: tuple[int, int, int],
        subs: dict[str, str] | None = None,
    ) -> None:
        """Record one kernel: binding 0 is ``meta``, then ``buffers`` (VkTensors, or None for
        an absent optional input) in binding order."""
        for g in groups:
            if g > self.max_groups:
                raise DeviceError(
                    f"vulkan: {shader} needs {g} workgroups in one dimension, over the device's "
                    f"max_compute_workgroups_per_dimension ({self.max_groups})"
                )
        with self._lock:
            pipe = self.pipeline(shader, subs)
            bufs = [self.meta_buffer(meta)]
            bufs += [self._absent(i) if t is None else t.buffer for i, t in enumerate(buffers, 1)]
            key = (pipe, *bufs)
            bind = self._binds.get(key)
            if bind is None:
                entries = [_entry(i, b) for i, b in enumerate(bufs)]
                layout = pipe.get_bind_group_layout(0)
                bind = self.gpu.create_bind_group(layout=layout, entries=entries)
                self._binds[key] = bind
                if len(self._binds) > _BIND_CACHE:
                    self._binds.popitem(last=False)
            else:
                self._binds.move_to_end(key)
            if self._encoder is None:
                self._encoder = self.gpu.create_command_encoder()
            cpass = self._encoder.begin_compute_pass()
            cpass.set_pipeline(pipe)
            cpass.set_bind_group(0, bind)
            cpass.dispatch_workgroups(*groups)
            cpass.end()
            self._recorded += 1
            if self._recorded >= _FLUSH_EVERY:
                self.flush()

    def _absent(self, binding: int) -> Any:
        """A small buffer bound where an optional input or output is absent: one per binding
        index, since one buffer may not be bound both read-only and writable in a dispatch."""
        while len(self._dummies) <= binding:
            self._dummies.append(self.gpu.create_buffer(size=256, usage=self._usage))
        return self._dummies[binding]

    def close(self) -> None:
        """Submit pending work and return cached pool blocks to the driver."""
        self.synchronize()
        self.pool.trim()


def _entry(binding: int, buf: Any) -> dict:
    return {"binding": binding, "resource": {"buffer": buf, "offset": 0, "size": buf.size}}


_SOURCES: dict[str, str] = {}


def _source(name: str) -> str:
    text = _SOURCES.get(name)
    if text is None:
        text = resources.files(__package__).joinpath("shaders", f"{name}.wgsl").read_text("utf-8")
        _SOURCES[name] = text
    return text
