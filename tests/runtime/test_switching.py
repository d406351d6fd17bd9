"""CPU/GPU switching from the user's side: provider lists, fallback warnings, the CLI's --device
and ``inspect --device``, precision per device."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import ziggurat as zg
from ziggurat import cli
from ziggurat.backends import device, fake
from ziggurat.server.cli import demo_model_path

DEMO = str(demo_model_path())
needs_vulkan = pytest.mark.skipif(
    not device.available("vulkan"), reason="no Vulkan adapter (apt-get install mesa-vulkan-drivers)"
)


def _feed(sess):
    a = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 2 for d in a.shape]
    return {a.name: np.random.default_rng(0).random(shape).astype(np.float32)}


def test_missing_gpu_falls_back_to_the_cpu_with_a_warning():
    if device.available("cuda"):
        pytest.skip("a CUDA GPU is present")
    with pytest.warns(RuntimeWarning, match="'CUDAExecutionProvider' is not available here"):
        s = zg.InferenceSession(DEMO, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert s.get_providers() == ["CPUExecutionProvider"]
    assert s.placement() is None and s.device_memory() is None
    ref = zg.InferenceSession(DEMO)
    feed = _feed(s)
    for a, b in zip(s.run(None, feed), ref.run(None, feed), strict=True):
        np.testing.assert_array_equal(a, b)  # the same CPU code: bit-identical


def test_switching_a_session_between_device_and_cpu():
    fake.install()
    try:
        s = zg.InferenceSession(DEMO, providers=["FakeExecutionProvider", "CPUExecutionProvider"])
        feed = _feed(s)
        on_device = s.run(None, feed)
        assert s.get_providers()[0] == "FakeExecutionProvider"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_providers may warn about the test provider
            s.set_providers(["CPUExecutionProvider"])
        assert s.get_providers() == ["CPUExecutionProvider"]
        on_cpu = s.run(None, feed)
        # Same Gemm on both: float32 products of 64 terms, two summation orders.
        y_dev, y_cpu = on_device[0], on_cpu[0]
        assert np.all(np.abs(y_dev - y_cpu) <= 2 * 64 * np.finfo(np.float32).eps * 64)
        assert device.select("fake").pool.stats()["in_use_bytes"] == 0  # old placement freed
    finally:
        fake.uninstall()


def test_cli_device_choices_and_missing_device_error(capsys):
    args = cli.build_parser().parse_args(["run", DEMO, "--device", "vulkan"])
    assert args.device == "vulkan"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", DEMO, "--device", "fake"])
    if not device.available("cuda"):
        with pytest.warns(RuntimeWarning):
            assert cli.main(["inspect", DEMO, "--device", "cuda"]) != 0
        assert "device 'cuda' is not available" in capsys.readouterr().err


@needs_vulkan
def test_inspect_shows_per_node_placement_on_vulkan(capsys):
    assert cli.main(["inspect", DEMO, "--device", "vulkan", "--json", "--dim", "batch=2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["provider"] == "WebGpuExecutionProvider"
    where = {n["where"] for n in report["nodes"]}
    assert "device" in where
    for n in report["nodes"]:
        assert (n["where"] == "cpu") == bool(n["reason"])  # every fallback says why
