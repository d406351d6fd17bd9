"""A caching device-memory pool with a limit, statistics and leak detection.

Every device backend (CUDA, Vulkan, the fake test device) allocates through one ``MemoryPool``
wrapping its driver's raw allocate/free. Freed blocks are kept in size buckets and handed out
again, because driver allocations are slow (a CUDA ``cudaMalloc`` or a wgpu buffer creation costs
tens of microseconds, more than most kernels on small tensors) and a plan reuses the same sizes on
every run. ``limit_bytes`` (the ``gpu_memory_mb`` setting) bounds what the pool holds, cached
blocks included: over the limit it first returns cached blocks to the driver, then refuses with a
``DeviceMemoryError`` that says what to change.

Each block carries an ``owner`` (a session): ``release_owner`` frees what a closing session still
holds and ``outstanding(owner)`` lists it — the tests fail a session that leaves bytes behind.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeviceMemoryError

_MIN_BLOCK = 256  # bytes; devices align storage buffers to at most this


def bucket_size(nbytes: int) -> int:
    """The size a request is rounded up to: powers of two up to 1 MiB, then 1 MiB steps, so
    blocks are reusable across nearby sizes without wasting more than 1 MiB a block."""
    n = max(int(nbytes), _MIN_BLOCK)
    if n <= 1 << 20:
        return 1 << (n - 1).bit_length()
    mib = 1 << 20
    return (n + mib - 1) // mib * mib


def _human(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


@dataclass(eq=False)
class Block:
    """One allocation: ``handle`` is the driver's buffer (a CuPy memory pointer, a wgpu buffer)."""

    handle: Any
    nbytes: int  # the bucket size actually held
    requested: int
    owner: Any = None
    pool: MemoryPool | None = field(default=None, repr=False)

    def free(self) -> None:
        if self.pool is not None:
            self.pool.free(self)


class MemoryPool:
    """Caching allocator over ``raw_alloc(nbytes) -> handle`` / ``raw_free(handle)``; thread-safe."""

    def __init__(
        self,
        device: str,
        raw_alloc: Callable[[int], Any],
        raw_free: Callable[[Any], None],
        limit_bytes: int | None = None,
    ):
        self.device = device
        self._raw_alloc = raw_alloc
        self._raw_free = raw_free
        self.limit_bytes = limit_bytes
        # Reentrant: a block may be freed by a finaliser (CuPy dropping the last array on a
        # block) that the garbage collector runs while this thread is inside allocate().
        self._lock = threading.RLock()
        self._cache: dict[int, list[Any]] = defaultdict(list)  # bucket size -> free handles
        self._live: dict[int, Block] = {}  # id(block) -> block
        self.in_use_bytes = 0
        self.cached_bytes = 0
        self.peak_bytes = 0
        self.allocations = 0
        self.hits = 0

    def allocate(self, nbytes: int, owner: Any = None) -> Block:
        """A block of at least ``nbytes``; raises DeviceMemoryError over the limit."""
        size = bucket_size(nbytes)
        with self._lock:
            self.allocations += 1
            cached = self._cache.get(size)
            if cached:
                handle = cached.pop()
                self.cached_bytes -= size
                self.hits += 1
            else:
                self._make_room(size, nbytes)
                handle = self._raw_alloc(size)
            block = Block(handle, size, int(nbytes), owner, self)
            self._live[id(block)] = block
            self.in_use_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.in_use_bytes + self.cached_bytes)
            return block

    def _make_room(self, size: int, requested: int) -> None:
        if self.limit_bytes is None:
            return
        if self.in_use_bytes + self.cached_bytes + size > self.limit_bytes:
            self._trim_locked()
        if self.in_use_bytes + size > self.limit_bytes:
            raise DeviceMemoryError(
                f"device '{self.device}': cannot allocate {_human(requested)} "
                f"({_human(size)} block): {_human(self.in_use_bytes)} in use of a "
                f"{_human(self.limit_bytes)} limit. Raise gpu_memory_mb (config, "
                "ZIGGURAT_GPU_MEMORY_MB or --gpu-memory-mb), lower the batch size, or run this "
                'model on the CPU (device = "cpu").'
            )

    def free(self, block: Block) -> None:
        """Return ``block`` to the cache; freeing twice is a no-op."""
        with self._lock:
            if self._live.pop(id(block), None) is None:
                return
            self.in_use_bytes -= block.nbytes
            self._cache[block.nbytes].append(block.handle)
            self.cached_bytes += block.nbytes
            block.pool = None

    def release_owner(self, owner: Any) -> int:
        """Free every block ``owner`` still holds (a session closing); returns the bytes freed."""
        blocks = self.outstanding(owner)
        for b in blocks:
            self.free(b)
        return sum(b.nbytes for b in blocks)

    def outstanding(self, owner: Any = None) -> list[Block]:
        """Live blocks, all of them or ``owner``'s."""
        with self._lock:
            live = list(self._live.values())
        return live if owner is None else [b for b in live if b.owner is owner]

    def trim(self) -> int:
        """Return every cached block to the driver; returns the bytes released."""
        with self._lock:
            return self._trim_locked()

    def _trim_locked(self) -> int:
        released = self.cached_bytes
        for handles in self._cache.values():
            for h in handles:
                self._raw_free(h)
        self._cache.clear()
        self.cached_bytes = 0
        return released

    def stats(self) -> dict[str, Any]:
        """Numbers for /api/v1/stats and /metrics."""
        with self._lock:
            return {
                "device": self.device,
                "in_use_bytes": self.in_use_bytes,
                "cached_bytes": self.cached_bytes,
                "peak_bytes": self.peak_bytes,
                "limit_bytes": self.limit_bytes,
                "allocations": self.allocations,
                "cache_hits": self.hits,
                "live_blocks": len(self._live),
            }
