"""One model on a device and another on the CPU in the same server, with device memory in
/api/v1/stats and /metrics, and the device pool empty once the device model is unloaded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.server import models
from tests.server.conftest import AppClient, make_config
from tests.server.helpers import tensor
from ziggurat.backends import device, fake
from ziggurat.config import ConfigError, ModelConfig

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake_device():
    fake.install()
    yield device.select("fake")
    fake.uninstall()


async def test_gpu_and_cpu_models_side_by_side(tmp_path, fake_device):
    repo = tmp_path / "repo"
    models.linear(repo / "ondevice" / "1" / "model.onnx", scale=2.0)
    (repo / "ondevice" / "config.toml").write_text('device = "fake"\n')
    models.linear(repo / "oncpu.onnx")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    async with AppClient(make_config(repo, gpu_memory_mb=64)) as c:
        for name, scale in (("ondevice", 2.0), ("oncpu", 1.0)):
            r = await c.post(f"/v2/models/{name}/infer", json={"inputs": [tensor("x", x)]})
            assert r.status_code == 200, r.text
            y, label = models.linear_reference(x, scale=scale)
            out = {o["name"]: o["data"] for o in r.json()["outputs"]}
            # integers times small integers plus linspace: exact in float32 on both paths
            np.testing.assert_array_equal(np.array(out["y"], np.float32).reshape(2, 3), y)
            assert out["label"] == label.tolist()
        stats = (await c.get("/api/v1/stats")).json()
        by_name = {m["name"]: m for m in stats["models"]}
        assert by_name["ondevice"]["provider"] == "FakeExecutionProvider"
        assert by_name["oncpu"]["provider"] == "CPUExecutionProvider"
        assert by_name["ondevice"]["device_bytes"] > 0 and by_name["oncpu"]["device_bytes"] == 0
        # (other tests of this process may have opened more devices: Vulkan on lavapipe)
        (pool,) = [p for p in stats["memory"]["devices"] if p["device"] == "fake:0"]
        assert pool["limit_bytes"] == 64 << 20
        assert pool["in_use_bytes"] == by_name["ondevice"]["device_bytes"]
        text = (await c.get("/metrics")).text
        assert (
            f'ziggurat_device_memory_bytes{{device="fake:0",state="in_use"}} {pool["in_use_bytes"]}'
            in text
        )
        assert 'ziggurat_device_memory_bytes{device="fake:0",state="limit"} 67108864' in text
        r = await c.post("/v2/repository/models/ondevice/unload")
        assert r.status_code == 200
        assert fake_device.pool.stats()["in_use_bytes"] == 0  # the session closed on unload


def test_device_setting_is_checked(tmp_path):
    (tmp_path / "config.toml").write_text('device = "tpu"\n')
    with pytest.raises(ConfigError, match="device must be one of auto, cpu, gpu, cuda, vulkan"):
        ModelConfig.read(tmp_path / "config.toml")
    (tmp_path / "config.toml").write_text('device = "fake"\n')  # only with the test hook
    with pytest.raises(ConfigError):
        ModelConfig.read(tmp_path / "config.toml")


def test_providers_for_each_device_setting(fake_device):
    from ziggurat.server.model import _providers_for

    limit = {"gpu_mem_limit": 16 << 20}
    assert _providers_for({"device": "cpu"}) == ["CPUExecutionProvider"]
    assert _providers_for({"device": "auto", "enable_gpu": False}) == ["CPUExecutionProvider"]
    assert _providers_for({"device": "vulkan", "gpu_memory_mb": 16}) == [
        ("WebGpuExecutionProvider", limit), "CPUExecutionProvider",
    ]  # fmt: skip
    assert _providers_for({"device": "gpu", "gpu_memory_mb": 16})[:2] == [
        ("CUDAExecutionProvider", limit), ("WebGpuExecutionProvider", limit),
    ]  # fmt: skip
    if not device.available("cuda"):  # auto never probes Vulkan (software drivers, start-up)
        assert _providers_for({"device": "auto", "enable_gpu": True}) == ["CPUExecutionProvider"]


async def test_server_wide_device_with_a_per_model_override(tmp_path, fake_device):
    repo = tmp_path / "repo"
    models.linear(repo / "default.onnx")
    models.linear(repo / "pinned" / "1" / "model.onnx")
    (repo / "pinned" / "config.toml").write_text('device = "cpu"\n')
    x = np.ones((1, 4), np.float32)
    async with AppClient(make_config(repo, device="fake")) as c:
        for name in ("default", "pinned"):
            r = await c.post(f"/v2/models/{name}/infer", json={"inputs": [tensor("x", x)]})
            assert r.status_code == 200, r.text
        by_name = {m["name"]: m for m in (await c.get("/api/v1/stats")).json()["models"]}
    assert by_name["default"]["provider"] == "FakeExecutionProvider"
    assert by_name["pinned"]["provider"] == "CPUExecutionProvider"


def test_server_device_setting_is_checked():
    from ziggurat.config import Config

    with pytest.raises(ConfigError, match="device must be one of auto, cpu, gpu, cuda, vulkan"):
        Config(device="npu").validate()
