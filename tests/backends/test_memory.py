"""MemoryPool: bucket sizes, caching, the limit, statistics and owner-based leak detection."""

from __future__ import annotations

import threading

import pytest

from ziggurat.backends.memory import MemoryPool, bucket_size
from ziggurat.errors import DeviceMemoryError


class Driver:
    """A raw allocator that records its calls (handles are ints, like device pointers)."""

    def __init__(self):
        self.allocs: list[int] = []
        self.frees: list[int] = []
        self.live: dict[int, int] = {}

    def alloc(self, n: int) -> int:
        handle = len(self.allocs) + 1
        self.allocs.append(n)
        self.live[handle] = n
        return handle

    def free(self, handle: int) -> None:
        self.frees.append(handle)
        del self.live[handle]


def pool(limit=None):
    d = Driver()
    return MemoryPool("test:0", d.alloc, d.free, limit), d


def test_bucket_sizes():
    assert bucket_size(1) == 256 and bucket_size(256) == 256 and bucket_size(257) == 512
    assert bucket_size(1 << 20) == 1 << 20
    assert bucket_size((1 << 20) + 1) == 2 << 20  # MiB steps above 1 MiB
    assert bucket_size(5 * (1 << 20) - 3) == 5 << 20


def test_freed_blocks_are_reused_without_driver_calls():
    p, d = pool()
    a = p.allocate(1000)
    handle = a.handle
    p.free(a)
    b = p.allocate(900)  # same 1 KiB bucket
    assert b.handle == handle and len(d.allocs) == 1
    s = p.stats()
    assert s["cache_hits"] == 1 and s["allocations"] == 2 and s["in_use_bytes"] == 1024
    p.free(b)
    p.free(b)  # twice: a no-op, not a second cached copy
    assert p.stats()["cached_bytes"] == 1024 and p.stats()["in_use_bytes"] == 0


def test_limit_trims_cache_then_refuses_with_advice():
    p, d = pool(limit=4096)
    a = p.allocate(2048)
    p.free(a)  # 2 KiB cached
    b = p.allocate(4096)  # needs the cached bytes back: trimmed, then allocated
    assert d.frees == [a.handle] and b.nbytes == 4096
    with pytest.raises(DeviceMemoryError) as e:
        p.allocate(256)
    msg = str(e.value)
    assert "test:0" in msg and "4096 bytes in use" in msg and "gpu_memory_mb" in msg
    assert p.stats()["in_use_bytes"] == 4096  # the refusal took nothing


def test_owner_release_and_outstanding():
    p, _ = pool()
    s1, s2 = object(), object()
    blocks = [p.allocate(300, s1), p.allocate(5000, s1), p.allocate(300, s2)]
    assert {id(b) for b in p.outstanding(s1)} == {id(blocks[0]), id(blocks[1])}
    assert p.release_owner(s1) == 512 + 8192
    assert p.outstanding(s1) == [] and len(p.outstanding()) == 1
    assert p.stats()["in_use_bytes"] == 512 and p.stats()["live_blocks"] == 1
    blocks[0].free()  # after release_owner: a no-op
    assert p.stats()["in_use_bytes"] == 512


def test_trim_returns_every_cached_block_to_the_driver():
    p, d = pool()
    for b in [p.allocate(n) for n in (100, 2000, 3 << 20)]:
        b.free()
    assert p.trim() == 256 + 2048 + (3 << 20)
    assert d.live == {} and p.stats()["cached_bytes"] == 0
    assert p.stats()["peak_bytes"] == 256 + 2048 + (3 << 20)


def test_concurrent_allocations_keep_exact_accounting():
    p, d = pool()
    start = threading.Barrier(4)

    def work():
        start.wait()
        for _ in range(200):
            b = p.allocate(700)
            b.free()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = p.stats()
    assert s["in_use_bytes"] == 0 and s["allocations"] == 800
    assert s["cached_bytes"] == 1024 * len(d.allocs) and len(d.allocs) <= 4
