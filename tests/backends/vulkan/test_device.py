"""The Vulkan backend's device, memory and dispatch mechanics."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ziggurat.errors import DeviceError, DeviceMemoryError

from ._harness import dev


def test_import_ziggurat_never_imports_wgpu():
    code = (
        "import sys, ziggurat, ziggurat.backends.vulkan as vk\n"
        "assert vk.kernel_table().lookup('MatMul', '', 17) is not None\n"
        "assert 'wgpu' not in sys.modules, 'wgpu imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_device_facts_come_from_the_adapter(be):
    from ziggurat.backends import vulkan

    d = be.device
    assert d.kind == "vulkan" and be.provider == "WebGpuExecutionProvider"
    assert be.adapter.info["backend_type"] in ("Vulkan", "Metal", "D3D12")
    assert d.software == (be.adapter.info["adapter_type"] == "CPU")
    # limits as the device reports them (never hard-coded)
    assert (
        d.limits["max_storage_buffer_binding_size"]
        == be.gpu.limits["max-storage-buffer-binding-size"]
    )
    assert be.max_groups == be.gpu.limits["max-compute-workgroups-per-dimension"]
    assert vulkan.open_backend() is be  # one device per process
    assert vulkan.available() and vulkan.unavailable_reason() is None


@pytest.mark.parametrize(
    "x",
    [
        np.arange(-5, 7, dtype=np.float32).reshape(3, 4) / 3,
        np.array([[-(2**31), 2**31 - 1, 0]], dtype=np.int64),
        np.array([1, -7, 3], dtype=np.int32),
        np.array([[True, False], [False, True]]),
        np.zeros((0, 3), np.float32),
    ],
)
def test_round_trip_keeps_values_and_dtype(be, x):
    t = be.to_device(x)
    try:
        y = be.to_host(t)
    finally:
        be.release(t)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


def test_values_the_device_cannot_carry_are_refused(be):
    with pytest.raises(DeviceError, match="int32 range"):
        be.to_device(np.array([2**31], dtype=np.int64))
    with pytest.raises(DeviceError, match="float64"):
        be.to_device(np.zeros(3))


def test_views_share_the_block_and_free_it_with_the_last_reference(be):
    x = np.arange(12, dtype=np.float32)
    t = be.to_device(x)
    v = be.view(t, (3, 4))
    assert v.block is t.block
    be.release(t)
    assert len(be.pool.outstanding()) >= 1  # still held by the view
    np.testing.assert_array_equal(be.to_host(v), x.reshape(3, 4))
    be.release(v)
    be.release(v)  # twice is a no-op


def test_pool_reuses_blocks_and_honours_its_limit(be):
    t = be.to_device(np.ones(1000, np.float32))
    be.release(t)
    hits = be.pool.hits
    t = be.empty((900,), np.float32)  # same bucket: served from the cache
    assert be.pool.hits == hits + 1
    be.release(t)
    old = be.pool.limit_bytes
    be.pool.limit_bytes = be.pool.in_use_bytes + 8192
    try:
        with pytest.raises(DeviceMemoryError, match="gpu_memory_mb"):
            be.empty((1 << 20,), np.float32)
    finally:
        be.pool.limit_bytes = old


def test_dispatch_spreads_workgroups_over_two_dimensions(be, monkeypatch):
    # With a per-dimension maximum of 5 workgroups, 1000 elements (16 groups of 64) need a
    # 5 x 4 grid: every element must still be computed exactly once.
    monkeypatch.setattr(be, "max_groups", 5)
    assert be.groups_1d(1000) == (5, 4, 1)
    x = np.arange(1000, dtype=np.float32)
    (y,) = dev(be, "Neg", [x])
    np.testing.assert_array_equal(y, -x)
    with pytest.raises(DeviceError, match="workgroups"):
        be.groups_1d(64 * 5 * 5 + 1)


def test_pipelines_are_compiled_once_per_specialization(be):
    x = np.ones((4, 5), np.float32)
    dev(be, "Sqrt", [x])
    n = len(be._pipelines)
    dev(be, "Sqrt", [x * 2])
    dev(be, "Sqrt", [np.ones((7,), np.float32)])
    assert len(be._pipelines) == n
