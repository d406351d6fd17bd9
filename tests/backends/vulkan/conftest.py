"""Fixtures for the Vulkan backend's tests: the process's backend on whatever Vulkan adapter
wgpu finds (Mesa's lavapipe in CI, installed by ``.ci/run``).

Without wgpu or a Vulkan driver the tests are skipped with the reason, except under ``CI`` where
that is a failure: CI installs the driver, and a GPU test that silently skips would hide a
broken backend. After every test no device block may be outstanding: each test releases what it
made, and a kernel that leaks its temporaries fails here.
"""

from __future__ import annotations

import os

import pytest


def require_vulkan():
    """The process's Vulkan backend; skips the test (fails it under CI) without one."""
    from ziggurat.backends import vulkan

    if not vulkan.available():
        why = vulkan.unavailable_reason()
        if os.environ.get("CI"):
            pytest.fail(f"the Vulkan tests must run under CI: {why}")
        pytest.skip(f"no Vulkan adapter: {why}; they run under CI=true")
    return vulkan.open_backend()


@pytest.fixture(scope="session")
def _vk_backend():
    return require_vulkan()


@pytest.fixture
def be(_vk_backend):
    before = {id(b) for b in _vk_backend.pool.outstanding()}
    yield _vk_backend
    _vk_backend.synchronize()
    left = [b for b in _vk_backend.pool.outstanding() if id(b) not in before]
    assert not left, f"{len(left)} device block(s) outstanding after the test: {left[:3]}"
