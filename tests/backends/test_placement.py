"""Placement on the fake device: per-node report, CPU fallback with copies at the boundaries,
results against onnxruntime, pool limits, and zero device bytes after a session closes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ziggurat as zg
from tests.models import builders
from tests.models.test_models_vs_onnxruntime import _atol
from ziggurat.backends import device, fake
from ziggurat.errors import ConfigError, DeviceMemoryError
from ziggurat.server.cli import demo_model_path

FAKE = ["FakeExecutionProvider", "CPUExecutionProvider"]
BENCH = Path(__file__).resolve().parents[2] / "bench-models"


@pytest.fixture
def be():
    fake.install()
    yield device.select("fake")
    fake.uninstall()


def sess(model, be, **opts):
    data = model if isinstance(model, str | bytes) else model.SerializeToString()
    return zg.InferenceSession(data, sess_options=zg.SessionOptions(**opts), providers=FAKE)


def assert_closed_clean(s, be):
    owner = s._compiled.owner
    s.close()
    assert be.pool.outstanding(owner) == []
    assert be.pool.stats()["in_use_bytes"] == 0


def with_sin(k=16):
    """x @ w -> Sin (no fake kernel: CPU fallback) -> Relu -> y."""
    w = np.random.default_rng(0).standard_normal((k, 8)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Sin", ["h"], ["s"], name="sin"),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
    ]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), w


def test_fallback_node_runs_on_the_cpu_with_copies_at_its_boundaries(be):
    model, w = with_sin()
    s = sess(model, be)
    assert s.get_providers() == FAKE
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    (y,) = s.run(None, {"x": x})
    h = x.astype(np.float64) @ w.astype(np.float64)
    bound = 2 * 16 * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(w)) + 4 * np.spacing(1.0)
    assert np.all(np.abs(y - np.maximum(np.sin(h), 0)) <= bound)
    p = s.placement()
    assert [(r["node"], r["where"]) for r in p.report()] == [
        ("mm", "device"), ("sin", "cpu"), ("relu", "device"),
    ]  # fmt: skip
    assert "no fake kernel for Sin" in p.report()[1]["reason"]
    assert p.report()[1]["provider"] == "CPUExecutionProvider"
    # x up, h down (for Sin), s up (for Relu), y down: the weight is uploaded once, not per run.
    assert (p.uploads, p.downloads) == (2, 2)
    assert "2 device, 0 host" in p.text() and "[CPU   ] sin (Sin)" in p.text()
    uploads = be.pool.stats()["allocations"]
    s.run(None, {"x": x})
    assert be.pool.stats()["allocations"] - uploads == 4  # x, h, s, y: no second weight copy
    assert_closed_clean(s, be)
    with pytest.raises(zg.ExecutionError, match="closed"):
        s.run(None, {"x": x})


def test_profile_names_each_nodes_provider(be, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, _ = with_sin()
    s = sess(model, be, enable_profiling=True)
    s.run(None, {"x": np.ones((2, 16), np.float32)})
    events = json.loads(Path(s.end_profiling()).read_text())
    by_node = {e["name"]: e["args"]["provider"] for e in events}
    assert by_node == {
        "mm": "FakeExecutionProvider", "sin": "CPUExecutionProvider",
        "relu": "FakeExecutionProvider",
    }  # fmt: skip
    s.close()


def test_pool_limit_refuses_and_the_failed_run_leaks_nothing(be):
    model, _ = with_sin(k=16)
    s = sess(model, be)
    x = np.ones((2, 16), np.float32)
    s.run(None, {"x": x})
    weights = be.pool.stats()["in_use_bytes"]  # the uploaded weight only
    assert weights == 512
    device.select("fake", limit_bytes=weights + 1024)
    with pytest.raises(DeviceMemoryError, match="gpu_memory_mb"):
        s.run(None, {"x": np.ones((64, 16), np.float32)})
    assert be.pool.stats()["in_use_bytes"] == weights  # the run's blocks went back
    assert_closed_clean(s, be)


def test_fp16_on_the_device_and_refused_on_the_cpu(be):
    model, w = with_sin(k=16)
    s = sess(model, be, precision="fp16")
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    (y,) = s.run(None, {"x": x})
    assert y.dtype == np.float32  # the model's type, whatever the device computed in
    eps16 = float(np.finfo(np.float16).eps)
    # x and w rounded to float16 (eps/2 each), 16 products summed in float16, Sin in float16.
    mag = np.abs(x) @ np.abs(w)
    bound = (2 * eps16 + 16 * eps16) * mag + 2 * eps16
    exact = np.maximum(np.sin(x.astype(np.float64) @ w), 0)
    assert np.all(np.abs(y - exact) <= bound)
    assert np.abs(y - exact).max() > 1e-6  # it really ran in float16
    s.close()
    with pytest.raises(ConfigError, match="fp16.*GPU providers only"):
        zg.InferenceSession(model.SerializeToString(), zg.SessionOptions(precision="fp16"))


def _vs_onnxruntime(model, feeds, k, be, min_fraction=0.95):
    data = model.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    s = sess(data, be)
    for _ in range(2):  # the second run reuses the placement and the pool's cached blocks
        got = s.run(None, feeds)
        for g, r in zip(got, ref, strict=True):
            assert g.dtype == r.dtype and g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=0, atol=_atol(r, k))
    assert s.placement().device_fraction() >= min_fraction, s.placement().text()
    assert_closed_clean(s, be)


def test_mlp_vs_onnxruntime(be):
    x = np.random.default_rng(1).standard_normal((5, 784)).astype(np.float32)
    _vs_onnxruntime(builders.mlp(), {"x": x}, 784, be)


def test_small_cnn_vs_onnxruntime(be):
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    _vs_onnxruntime(builders.small_cnn(), {"x": x}, 64, be)


def test_transformer_block_vs_onnxruntime(be):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 16, 64)).astype(np.float32)
    mask = np.ones((2, 16), np.int64)
    mask[1, 8:] = 0
    _vs_onnxruntime(builders.transformer_block(), {"x": x, "mask": mask}, 256, be)


def test_demo_model_vs_onnxruntime(be):
    model = onnx.load(str(demo_model_path()))
    s = ort.InferenceSession(model.SerializeToString())
    a = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 3 for d in a.shape]
    x = np.random.default_rng(4).random(shape).astype(np.float32)
    _vs_onnxruntime(model, {a.name: x}, 784, be)


@pytest.mark.skipif(not (BENCH / "bert-tiny.onnx").exists(), reason="bench-models/ not present")
def test_bert_tiny_on_the_device(be):
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 1000, (2, 32)).astype(np.int64)
    mask = np.ones((2, 32), np.int64)
    mask[1, 20:] = 0
    model = onnx.load(str(BENCH / "bert-tiny.onnx"))
    names = [i.name for i in model.graph.input]
    feeds = {n: v for n, v in zip(names, [ids, mask, np.zeros_like(ids)], strict=False)}
    # Longest reduction: the FFN's second product over 512 terms.
    _vs_onnxruntime(model, feeds, 512, be)


def test_two_sessions_share_the_pool_and_close_independently(be):
    model, _ = with_sin()
    a, b = sess(model, be), sess(model, be)
    x = np.ones((2, 16), np.float32)
    ya, yb = a.run(None, {"x": x})[0], b.run(None, {"x": x})[0]
    np.testing.assert_array_equal(ya, yb)
    a.close()
    assert be.pool.outstanding(a._compiled.owner) == []
    assert be.pool.outstanding(b._compiled.owner)  # b's weight is still there
    np.testing.assert_array_equal(b.run(None, {"x": x})[0], yb)
    b_owner = b._compiled.owner
    del b  # __del__ closes
    assert be.pool.outstanding(b_owner) == []
    assert be.pool.stats()["in_use_bytes"] == 0


def test_subgraph_nodes_fall_back_and_read_device_values(be):
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["h"], ["o"])], "then", [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
    )  # fmt: skip
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["o2"])], "else", [],
        [helper.make_tensor_value_info("o2", TensorProto.FLOAT, None)],
    )  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("If", ["c"], ["y0"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Add", ["y0", "x2"], ["y"], name="add"),
    ]
    w = np.arange(12, dtype=np.float32).reshape(3, 4) - 5
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x2", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    s = sess(model, be)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 4  # small integers / 4: exact products
    x2 = np.ones((2, 4), np.float32)
    for cond, branch in ((True, lambda h: np.maximum(h, 0)), (False, np.negative)):
        (y,) = s.run(None, {"x": x, "c": np.array(cond), "x2": x2})
        np.testing.assert_array_equal(y, branch(x @ w) + x2)
    where = {r["node"]: (r["where"], r["reason"]) for r in s.placement().report()}
    assert where["if"] == ("cpu", "has a subgraph (If/Loop/Scan runs on the CPU)")
    assert where["mm"][0] == where["add"][0] == "device"
    assert_closed_clean(s, be)


def test_shape_arithmetic_freezes_per_signature_after_two_agreeing_runs(be):
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((2, 16, 64)).astype(np.float32),
             "mask": np.ones((2, 16), np.int64)}  # fmt: skip
    s = sess(builders.transformer_block(), be)
    outs = [s.run(None, feeds)[0] for _ in range(4)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    (state,) = s._compiled._sigs.values()
    assert {"split_shape", "merge_shape"} <= set(state.frozen)  # the reshape targets
    other = {"x": feeds["x"][:1], "mask": feeds["mask"][:1]}  # a new signature: recorded anew
    np.testing.assert_array_equal(s.run(None, other)[0], s.run(None, other)[0])
    assert len(s._compiled._sigs) == 2
    assert_closed_clean(s, be)


def test_frozen_values_read_by_device_kernels_are_uploaded_once(be):
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                         value=numpy_helper.from_array(np.array([1.5], np.float32))),
        helper.make_node("Add", ["x", "ones"], ["y"], name="add"),
    ]  # fmt: skip
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )  # fmt: skip
    s = sess(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), be)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    deltas = []
    for _ in range(4):
        before = be.pool.stats()["allocations"]
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], x + 1.5)
        deltas.append(be.pool.stats()["allocations"] - before)
    # runs 1-2: x, the host-made ones (uploaded), y; run 3 uploads the frozen ones once to keep;
    # run 4: only x and y.
    assert deltas == [3, 3, 3, 2]
    assert s.placement().report()[1]["where"] == "host"
    assert_closed_clean(s, be)


def test_device_graph_recorded_and_replayed_with_new_inputs(be):
    from ziggurat.runtime.device_run import DeviceGraph

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 16, 64)).astype(np.float32)
    mask = np.ones((2, 16), np.int64)
    mask[1, 10:] = 0
    s = sess(builders.transformer_block(), be)
    compiled = s._compiled
    plain = DeviceGraph(compiled.plan.graph, compiled.plan.opsets, be, graphs=False)
    s._compiled = DeviceGraph(compiled.plan.graph, compiled.plan.opsets, be, graphs=True)
    compiled.close()
    for i in range(6):  # 1-2 record shape values, 3 warms, 4 records the graph, 5-6 replay it
        feeds = {"x": x + i, "mask": mask}
        np.testing.assert_array_equal(s.run(None, feeds)[0], plain.run([x + i, mask])[0])
    assert be.replays == 3  # runs 4 (after recording), 5 and 6
    (state,) = s._compiled._sigs.values()
    assert state.recorded is not None and not state.graph_failed
    plain.close()
    assert_closed_clean(s, be)


def test_fallback_signatures_are_never_recorded(be):
    from ziggurat.runtime.device_run import DeviceGraph

    model, _ = with_sin()
    s = sess(model, be)
    s._compiled.close()
    s._compiled = DeviceGraph(s._compiled.plan.graph, s._compiled.plan.opsets, be, graphs=True)
    for _ in range(5):
        s.run(None, {"x": np.ones((2, 16), np.float32)})
    assert be.replays == 0  # the CPU's Sin in the middle: step by step
    assert_closed_clean(s, be)
