"""runtime/validate.py: the one tensor validation InferenceSession.run and the server share."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import ziggurat as zg
from ziggurat.runtime.validate import InputSpec, check_feeds, describe


@pytest.fixture(scope="module")
def model_bytes():
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_describe_names_both_vocabularies():
    assert describe(np.dtype(np.float32)) == "FP32 (tensor(float))"
    assert describe(np.dtype(np.int64)) == "INT64 (tensor(int64))"
    assert describe(np.dtype("U3")) == "BYTES (tensor(string))"


SPECS = [
    InputSpec.of("x", "tensor(float)", ["batch", 4]),
    InputSpec.of("o", "optional(tensor(float))", None),
]


@pytest.mark.parametrize(
    "feeds, match",
    [
        (
            {"x": np.zeros((1, 4), np.int64)},
            r"expects FP32 \(tensor\(float\)\), got INT64 \(tensor\(int64\)\)",
        ),
        ({"x": np.zeros((4,), np.float32)}, r"expects rank 2 \(shape \['batch', 4\]\), got rank 1"),
        ({"x": np.zeros((1, 3), np.float32)}, r"expects dim 1 = 4 .*got 3"),
        ({}, r"missing input 'x' \(FP32 \(tensor\(float\)\), shape \['batch', 4\]\)"),
        ({"x": np.zeros((1, 4), np.float32), "q": 1}, r"no input\(s\) 'q'; its inputs are: x, o"),
        ({"x": [["a", "b", "c", "d"]]}, r"could not convert list"),
    ],
)
def test_errors_say_what_expected_and_got(feeds, match):
    with pytest.raises(zg.InputError, match=match):
        check_feeds("m", SPECS, feeds)


def test_conversions_and_optional_inputs():
    x, o = check_feeds("m", SPECS, {"x": [[1, 2, 3, 4]]})
    assert x.dtype == np.float32 and x.shape == (1, 4) and o is None
    s = InputSpec.of("s", "tensor(string)", [2])
    (v,) = check_feeds("m", [s], {"s": np.array(["a", "b"])})
    assert v.dtype == object


def test_session_and_server_word_the_same_mistake_alike(model_bytes, tmp_path):
    """The same wrong feed through InferenceSession.run and through the server's check."""
    from ziggurat.server.model import LoadedModel

    sess = zg.InferenceSession(model_bytes)
    bad = {"x": np.zeros((2, 3), np.float64)}
    with pytest.raises(zg.InputError) as direct:
        sess.run(None, bad)
    loaded = LoadedModel(sess.model_name, 1, tmp_path / "m.onnx", sess, {})
    with pytest.raises(zg.InputError) as served:
        loaded.check_feeds(bad)
    assert str(direct.value) == str(served.value)
    assert "expects FP32 (tensor(float)), got FP64 (tensor(double))" in str(served.value)
