"""The ziggurat command line: run, inspect, bench (serve is tested in tests/server)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.models import builders
from ziggurat.cli import main


@pytest.fixture()
def mlp_path(tmp_path):
    p = tmp_path / "mlp.onnx"
    p.write_bytes(builders.mlp().SerializeToString())
    return p


def test_run_with_npy_and_output_dir(tmp_path, mlp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 784)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    assert (
        main(["run", str(mlp_path), "--input", f"x={tmp_path / 'x.npy'}", "--output", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "probs: float32[2, 10]" in printed
    probs = np.load(out / "probs.npy")
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_run_with_inline_json(mlp_path, capsys):
    assert main(["run", str(mlp_path), "--input", "x=" + json.dumps([[0.5] * 784])]) == 0
    assert "probs: float32[1, 10]" in capsys.readouterr().out


def test_run_reports_bad_input_clearly(mlp_path, capsys):
    assert main(["run", str(mlp_path), "--input", "x=[[1, 2]]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "expects dim 1 = 784" in err


def test_run_missing_model_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.onnx")]) == 2
    assert "nope.onnx" in capsys.readouterr().err


def test_inspect_lists_every_unsupported_op(tmp_path, capsys):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("FancyOp", ["a"], ["b"], name="first_bad", domain="com.example"),
        helper.make_node("OtherOp", ["b"], ["y"], name="second_bad", domain="com.example"),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.ones((3, 3), np.float32), "unused_w")],
    )  # fmt: skip
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    assert main(["inspect", str(p)]) == 0
    text = capsys.readouterr().out
    assert "x: tensor(float) ['N', 4]" in text
    assert "parameters: 9" in text
    assert "first_bad: com.example::FancyOp (opset 1)" in text
    assert "second_bad: com.example::OtherOp (opset 1)" in text
    assert main(["inspect", str(p), "--json", "--strict"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [u["op"] for u in report["unsupported"]] == ["FancyOp", "OtherOp"]
    assert report["ops"]["Relu"] == 1


def test_bench_runs_and_compares(mlp_path, capsys):
    args = ["bench", str(mlp_path), "--runs", "5", "--warmup", "1", "--compare", "onnxruntime"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ziggurat" in out and "onnxruntime" in out and "ratio" in out


def test_bench_refuses_a_malformed_dim(mlp_path, capsys):
    assert main(["bench", str(mlp_path), "--runs", "1", "--dim", "batch"]) == 2
    assert "--dim expects NAME=N (e.g. batch=1), got 'batch'" in capsys.readouterr().err
