"""Without a Vulkan driver wgpu silently picks its OpenGL backend: the backend must refuse it,
say why, and the Vulkan tests must skip with that reason - or fail under CI=true. Simulated by
pointing the Vulkan loader at no driver (VK_ICD_FILENAMES) in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER")}
    env.update(VK_ICD_FILENAMES="/nonexistent/icd.json", VK_DRIVER_FILES="/nonexistent/icd.json")
    env.update(extra)
    return env


def test_no_vulkan_driver_is_refused_with_the_reason():
    pytest.importorskip("wgpu")
    code = (
        "from ziggurat.backends import vulkan\n"
        "from ziggurat.errors import DeviceError\n"
        "assert not vulkan.available()\n"
        "print('REASON', vulkan.unavailable_reason())\n"
        "try:\n    vulkan.open_backend()\nexcept DeviceError as e:\n    print('RAISED', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "REASON" in out.stdout and "mesa-vulkan-drivers" in out.stdout
    assert "RAISED vulkan: no device" in out.stdout


@pytest.mark.parametrize("ci", [None, "true"])
def test_vulkan_tests_skip_without_a_driver_but_fail_under_ci(monkeypatch, ci):
    from ziggurat.backends import vulkan

    from .conftest import require_vulkan

    monkeypatch.setattr(vulkan, "_probe", (None, "wgpu's adapter runs on OpenGL"))
    if ci:
        monkeypatch.setenv("CI", ci)
        with pytest.raises(pytest.fail.Exception, match="must run under CI: .*OpenGL"):
            require_vulkan()
    else:
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match="OpenGL; they run under CI=true"):
            require_vulkan()
