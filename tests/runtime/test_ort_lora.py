"""Overridable initializers and LoRA adapters (onnxruntime's adapter file format), against
onnxruntime: the same files read by both, the same runs giving the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ziggurat as zg

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def lora_model() -> bytes:
    """out = x @ W + (x @ A) @ B, with A (4 x r) and B (r x 4) initializers that are also graph
    inputs (IR 8: overridable), empty by default (r = 0), as onnxruntime's LoRA test model."""
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "W")
    a = numpy_helper.from_array(np.zeros((4, 0), np.float32), "A")
    b = numpy_helper.from_array(np.zeros((0, 4), np.float32), "B")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]),
         helper.make_node("MatMul", ["x", "A"], ["xa"]),
         helper.make_node("MatMul", ["xa", "B"], ["xab"]),
         helper.make_node("Add", ["xw", "xab"], ["out"])],
        "lora",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4]),
         helper.make_tensor_value_info("A", TensorProto.FLOAT, [4, "r"]),
         helper.make_tensor_value_info("B", TensorProto.FLOAT, ["r", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 4])],
        [w, a, b],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return m.SerializeToString()


X = np.arange(16, dtype=np.float32).reshape(4, 4) / 8
A = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
B = np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)


def test_overridable_initializers_as_onnxruntime(lora_model):
    zs, os_ = zg.InferenceSession(lora_model), ort.InferenceSession(lora_model, providers=CPU)
    z = [(a.name, a.shape, a.type) for a in zs.get_overridable_initializers()]
    o = [(a.name, a.shape, a.type) for a in os_.get_overridable_initializers()]
    assert z == o
    assert [a.name for a in zs.get_inputs()] == [a.name for a in os_.get_inputs()] == ["x"]
    for feed in ({"x": X}, {"x": X, "A": A, "B": B}):
        np.testing.assert_array_equal(zs.run(None, feed)[0], os_.run(None, feed)[0])
    # set_providers rebuilds the session and its variant: the same answers after it.
    zs.set_providers(["CPUExecutionProvider"])
    np.testing.assert_array_equal(
        zs.run(None, {"x": X, "A": A, "B": B})[0], os_.run(None, {"x": X, "A": A, "B": B})[0]
    )
    # Only one of them fed: the other keeps its initializer (shapes must then agree).
    with pytest.raises(zg.ZigguratError):
        zs.run(None, {"x": X, "A": A})


def test_adapter_files_are_onnxruntime_s(tmp_path):
    params = {"A": A, "B": B, "i": np.arange(6, dtype=np.int64).reshape(2, 3)}
    ours, theirs = tmp_path / "z.onnx_adapter", tmp_path / "o.onnx_adapter"
    fmt = zg.AdapterFormat()
    fmt.set_adapter_version(3)
    fmt.set_model_version(7)
    fmt.set_parameters({k: zg.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
    fmt.export_adapter(ours)
    keep = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()}
    ofmt = ort.AdapterFormat()
    ofmt.set_adapter_version(3)
    ofmt.set_model_version(7)
    ofmt.set_parameters(keep)
    ofmt.export_adapter(str(theirs))
    for path in (ours, theirs):
        z, o = zg.AdapterFormat.read_adapter(path), ort.AdapterFormat.read_adapter(str(path))
        assert (z.get_adapter_version(), z.get_model_version()) == (3, 7)
        assert (o.get_adapter_version(), o.get_model_version()) == (3, 7)
        zp, op = z.get_parameters(), o.get_parameters()
        assert sorted(zp) == sorted(op) == sorted(params)
        for k, v in params.items():
            assert zp[k].element_type() == op[k].element_type()
            np.testing.assert_array_equal(zp[k].numpy(), v)
            np.testing.assert_array_equal(op[k].numpy(), v)


def test_active_adapter_feeds_its_parameters(lora_model, tmp_path):
    path = tmp_path / "ab.onnx_adapter"
    fmt = zg.AdapterFormat()
    fmt.set_parameters(
        {"A": zg.OrtValue.ortvalue_from_numpy(A), "B": zg.OrtValue.ortvalue_from_numpy(B)}
    )
    fmt.export_adapter(path)
    za, oa = zg.LoraAdapter(), ort.LoraAdapter()
    za.Load(path)
    oa.Load(str(path))
    zro, oro = zg.RunOptions(), ort.RunOptions()
    zro.add_active_adapter(za)
    oro.add_active_adapter(oa)
    zs, os_ = zg.InferenceSession(lora_model), ort.InferenceSession(lora_model, providers=CPU)
    z, o = zs.run(None, {"x": X}, zro)[0], os_.run(None, {"x": X}, oro)[0]
    np.testing.assert_array_equal(z, o)
    np.testing.assert_array_equal(z, zs.run(None, {"x": X, "A": A, "B": B})[0])
    assert not np.array_equal(z, zs.run(None, {"x": X})[0])
    with pytest.raises(zg.InputError, match="already gives"):
        zs.run(None, {"x": X, "A": A}, zro)
    with pytest.raises(zg.ConfigError, match="takes a LoraAdapter"):
        zro.add_active_adapter("ab.onnx_adapter")


def test_corrupt_adapter_files_are_refused(tmp_path):
    bad = tmp_path / "bad.onnx_adapter"
    bad.write_bytes(b"\x0c\x00\x00\x00TORT" + b"\xff" * 8)
    with pytest.raises(zg.ModelLoadError, match="truncated or corrupt"):
        zg.LoraAdapter().Load(bad)
    bad.write_bytes(
        onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])).SerializeToString()
    )
    with pytest.raises(zg.ModelLoadError, match="not an onnxruntime adapter file"):
        zg.AdapterFormat.read_adapter(bad)
