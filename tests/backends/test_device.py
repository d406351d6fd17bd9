"""Device discovery and selection: lazy imports, registration, provider resolution."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from ziggurat.backends import device, fake
from ziggurat.errors import DeviceError
from ziggurat.runtime.placement import device_precision, resolve_providers


@pytest.fixture
def fake_device():
    fake.install()
    yield device.select("fake")
    fake.uninstall()


def test_import_and_cpu_session_never_import_gpu_libraries():
    code = (
        "import sys, numpy as np, ziggurat as zg\n"
        "from ziggurat.server.cli import demo_model_path\n"
        "s = zg.InferenceSession(str(demo_model_path()))\n"
        "a = s.get_inputs()[0]\n"
        "s.run(None, {a.name: np.zeros([d if isinstance(d, int) else 1 for d in a.shape],"
        " np.float32)})\n"
        "print(sorted(m for m in ('cupy', 'wgpu') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cuda_unavailable_without_cupy_or_gpu_says_why():
    try:
        import cupy

        has_gpu = cupy.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        pytest.skip("a CUDA GPU is present")
    assert device.available("cuda") is False
    with pytest.raises(DeviceError, match="not available: (CuPy is not installed|CuPy finds no)"):
        device.select("cuda")


def test_unknown_kind_and_cpu_have_no_backend():
    with pytest.raises(DeviceError, match="unknown device kind 'tpu'"):
        device.select("tpu")
    with pytest.raises(DeviceError, match="CPU has no device backend"):
        device.select("cpu")


def test_registered_device_is_selected_once_per_process(fake_device):
    assert device.select("fake") is fake_device
    assert device.opened()["fake"] is fake_device
    assert fake_device.device.kind == "fake" and fake_device.device.software
    device.select("fake", limit_bytes=1 << 20)
    assert fake_device.pool.limit_bytes == 1 << 20
    assert device.discover(("fake",))[-1] == device.CPU
    assert device.discover(("fake",))[0].kind == "fake"


def test_fake_provider_is_not_known_unless_installed():
    assert "FakeExecutionProvider" not in device.PROVIDERS
    with pytest.warns(RuntimeWarning, match="'FakeExecutionProvider' is unknown"):
        assert resolve_providers(["FakeExecutionProvider"]) == (["CPUExecutionProvider"], None)


def test_providers_in_order_of_preference_fall_back_with_a_warning(fake_device):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picked = resolve_providers(
            ["CUDAExecutionProvider", "FakeExecutionProvider", "CPUExecutionProvider"]
        )
    if not device.available("cuda"):
        assert any("CUDAExecutionProvider" in str(w.message) for w in caught)
        assert picked == (["FakeExecutionProvider", "CPUExecutionProvider"], "fake")
    # The CPU named first wins over every later device.
    assert resolve_providers(["CPUExecutionProvider", "FakeExecutionProvider"]) == (
        ["CPUExecutionProvider"],
        None,
    )
    assert resolve_providers([("FakeExecutionProvider", {})])[1] == "fake"


def test_precision_on_devices(fake_device):
    from ziggurat.errors import ConfigError

    assert device_precision("fake", "FP16") == "fp16"
    assert device_precision("fake", "fp32") == "fp32"
    with pytest.raises(ConfigError, match="'bf16' is a CPU precision"):
        device_precision("fake", "bf16")
    no_f16 = fake.FakeBackend(fp16=False)
    device._open["fake"] = no_f16
    with pytest.raises(ConfigError, match="lacks \\(no 'shader-f16' feature\\)"):
        device_precision("fake", "fp16")
