"""InferenceSession: the onnxruntime-compatible surface, feed validation, threads, profiling."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest

import ziggurat as zg
from tests.models import builders


@pytest.fixture(scope="module")
def mlp_bytes():
    return builders.mlp().SerializeToString()


@pytest.fixture(scope="module")
def sess(mlp_bytes):
    return zg.InferenceSession(mlp_bytes)


def test_inputs_outputs_and_metadata(sess):
    (inp,) = sess.get_inputs()
    assert inp == zg.NodeArg("x", ["batch", 784], "tensor(float)")
    (out,) = sess.get_outputs()
    assert out.name == "probs" and out.shape == ["batch", 10] and out.type == "tensor(float)"
    assert sess.get_modelmeta().producer_name == "tests"
    assert sess.get_providers() == ["CPUExecutionProvider"]


def test_run_all_and_named_outputs(sess):
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    (probs,) = sess.run(None, {"x": x})
    assert probs.shape == (3, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    (again,) = sess.run(["probs"], {"x": x})
    np.testing.assert_array_equal(probs, again)
    (empty,) = sess.run([], {"x": x})  # onnxruntime: an empty list asks for every output
    np.testing.assert_array_equal(probs, empty)


def test_misspelt_session_option_raises():
    so = zg.SessionOptions()
    so.intra_op_num_threads = 1
    with pytest.raises(AttributeError):
        so.precison = "bf16"  # a typo must not be silently ignored (onnxruntime raises too)
    with pytest.raises(AttributeError):
        so.intra_op_threads = 2


def test_path_and_pathlike(tmp_path, mlp_bytes):
    p = tmp_path / "mlp.onnx"
    p.write_bytes(mlp_bytes)
    for src in (str(p), p):
        s = zg.InferenceSession(src)
        assert s.model_name == "mlp"


@pytest.mark.parametrize(
    "feeds, match",
    [
        ({}, r"missing input 'x'"),
        (
            {"x": np.zeros((1, 784), np.float32), "y": np.zeros(1)},
            r"no input\(s\) 'y'.*inputs are: x",
        ),
        (
            {"x": np.zeros((1, 784), np.float64)},
            r"'x' expects FP32 \(tensor\(float\)\), got FP64 \(tensor\(double\)\).*astype",
        ),
        ({"x": np.zeros((784,), np.float32)}, r"expects rank 2 .*got rank 1"),
        ({"x": np.zeros((1, 783), np.float32)}, r"expects dim 1 = 784 .*got 783"),
    ],
)
def test_bad_feeds_raise_input_error(sess, feeds, match):
    with pytest.raises(zg.InputError, match=match):
        sess.run(None, feeds)


def test_unknown_output_name(sess):
    with pytest.raises(zg.InputError, match="no output 'nope'"):
        sess.run(["nope"], {"x": np.zeros((1, 784), np.float32)})


def test_lists_are_converted_to_the_input_dtype(sess):
    (probs,) = sess.run(None, {"x": [[0.0] * 784]})
    assert probs.shape == (1, 10)


def test_concurrent_runs_each_get_their_own_answer(sess):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((i + 1, 784)).astype(np.float32) for i in range(8)]
    expected = [sess.run(None, {"x": x})[0] for x in xs]
    start = threading.Barrier(len(xs))

    def worker(i):
        start.wait(timeout=60)  # all threads run at once
        for _ in range(20):
            got = sess.run(None, {"x": xs[i]})[0]
            np.testing.assert_array_equal(got, expected[i], err_msg=f"thread {i}")

    # Futures carry each worker's exception (a wrong result or a failed run) to this thread.
    with ThreadPoolExecutor(len(xs)) as pool:
        futures = [pool.submit(worker, i) for i in range(len(xs))]
        for f in futures:
            f.result(timeout=60)


def test_unavailable_provider_falls_back_with_warning(mlp_bytes):
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider"):
        s = zg.InferenceSession(
            mlp_bytes, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    assert s.get_providers() == ["CPUExecutionProvider"]


def test_profiling_writes_a_chrome_trace(tmp_path, mlp_bytes, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opts = zg.SessionOptions(enable_profiling=True)
    s = zg.InferenceSession(mlp_bytes, sess_options=opts)
    s.run(None, {"x": np.zeros((2, 784), np.float32)})
    ops = {r["op"] for r in s.profile_summary()}
    assert ops  # Gemm/Relu fused or not, something ran and was timed
    path = s.end_profiling()
    events = json.load(open(os.path.join(tmp_path, path)))
    assert events and all(e["ph"] == "X" and e["dur"] >= 0 for e in events)


def test_optimization_levels_agree(mlp_bytes):
    x = np.random.default_rng(2).standard_normal((2, 784)).astype(np.float32)
    outs = []
    for level in zg.GraphOptimizationLevel:
        s = zg.InferenceSession(
            mlp_bytes, sess_options=zg.SessionOptions(graph_optimization_level=level)
        )
        outs.append(s.run(None, {"x": x})[0])
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-6, atol=1e-7)


def test_initializer_output_cannot_be_mutated_by_caller():
    w = np.arange(4, dtype=np.float32)
    g = onnx.helper.make_graph(
        [], "g", [], [onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [4])],
        [onnx.numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    s = zg.InferenceSession(m.SerializeToString())
    out = s.run(None, {})[0]
    out[0] = 100
    np.testing.assert_array_equal(s.run(None, {})[0], w)


def test_parallel_execution_mode_gives_the_same_results(mlp_bytes):
    opts = zg.SessionOptions(execution_mode=zg.ExecutionMode.ORT_PARALLEL, inter_op_num_threads=2)
    s = zg.InferenceSession(mlp_bytes, sess_options=opts)
    x = np.random.default_rng(4).standard_normal((3, 784)).astype(np.float32)
    np.testing.assert_array_equal(
        s.run(None, {"x": x})[0], zg.InferenceSession(mlp_bytes).run(None, {"x": x})[0]
    )
