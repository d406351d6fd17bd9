"""Anything that is not a loadable ONNX model raises ModelLoadError with the path and the cause."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from ziggurat.errors import ModelLoadError
from ziggurat.formats.onnx import load_model
from ziggurat.ir import Model


def _small_model_bytes() -> bytes:
    sub = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])], "body", [],
        [helper.make_tensor_value_info("b", TP.FLOAT, [2])],
    )  # fmt: skip
    g = helper.make_graph(
        [
            helper.make_node("Add", ["x", "w"], ["a"], name="add"),
            helper.make_node("If", ["c"], ["y"], then_branch=sub, else_branch=sub, ints=[1, -2]),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TP.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("c", TP.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TP.FLOAT, [2])],
        [
            numpy_helper.from_array(np.float32([1, 2]), "w"),
            helper.make_tensor("s", TP.STRING, [1], [b"hi"]),
        ],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]).SerializeToString()


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found") as e:
        load_model(tmp_path / "nope.onnx")
    assert "nope.onnx" in str(e.value)


def test_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(tmp_path)


def test_empty_file_and_bytes(tmp_path):
    (tmp_path / "e.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_model(tmp_path / "e.onnx")
    with pytest.raises(ModelLoadError, match="empty"):
        load_model(b"")


@pytest.mark.parametrize(
    "content",
    [
        b"hello world, this is not a model\n" * 3,
        b"# ONNX model\nir_version: 8\ngraph {\n node { op_type: 'Relu' }\n}\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
        bytes(range(256)),
        b"\x08\x07",  # a valid ModelProto holding only ir_version: still no graph
    ],
    ids=["text", "textproto", "png", "zip", "all-bytes", "no-graph"],
)
def test_not_onnx(tmp_path, content):
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError) as e:
        load_model(path)
    assert str(path) in str(e.value)
    assert e.value.__cause__ is None  # no raw struct/IndexError traceback chained on


def test_truncated_anywhere_is_a_clean_error_or_a_valid_prefix(tmp_path):
    data = _small_model_bytes()
    errors = 0
    for cut in range(1, len(data)):
        try:
            m = load_model(data[:cut])
        except ModelLoadError:
            errors += 1
        else:  # a cut that falls between top-level fields leaves a shorter, valid message
            assert isinstance(m, Model)
    assert errors > len(data) // 2
    path = tmp_path / "t.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_model(path)


def test_corrupted_bytes_never_escape_as_other_exceptions():
    data = bytearray(_small_model_bytes())
    rng = np.random.default_rng(1)
    for _ in range(400):
        bad = bytearray(data)
        for pos in rng.integers(0, len(bad), 3):
            bad[pos] = int(rng.integers(0, 256))
        try:
            load_model(bytes(bad))
        except ModelLoadError:
            pass


def test_max_size_is_checked_before_reading(tmp_path):
    data = _small_model_bytes()
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match="over the limit") as e:
        load_model(path, max_size_bytes=10)
    assert str(path) in str(e.value)
    with pytest.raises(ModelLoadError, match="over the limit"):
        load_model(data, max_size_bytes=10)
    assert isinstance(load_model(path, max_size_bytes=len(data)), Model)


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _len(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def test_deeply_nested_graphs_and_types_are_refused():
    graph = b""
    for _ in range(200):  # graph { node { attribute { g: graph { ... } } } }
        attr = _len(1, b"body") + _varint(20 << 3) + _varint(5) + _len(6, graph)
        graph = _len(1, _len(4, b"If") + _len(5, attr))
    with pytest.raises(ModelLoadError, match="nested"):
        load_model(_len(7, graph))
    tp = _len(1, _varint(1 << 3) + _varint(1))  # tensor_type { elem_type: FLOAT }
    for _ in range(5000):
        tp = _len(4, _len(1, tp))  # sequence_type { elem_type: ... }
    vi = _len(1, b"x") + _len(2, tp)
    with pytest.raises(ModelLoadError, match="nested"):
        load_model(_len(7, _len(11, vi)))


def _with_tensor(t: onnx.TensorProto) -> bytes:
    g = helper.make_graph([], "g", [], [helper.make_tensor_value_info("t", TP.FLOAT, None)], [t])
    return helper.make_model(g).SerializeToString()


def test_bad_tensors():
    t = numpy_helper.from_array(np.float32([1, 2, 3]), "t")
    t.segment.begin = 0
    t.segment.end = 3
    with pytest.raises(ModelLoadError, match="segments"):
        load_model(_with_tensor(t))
    t = numpy_helper.from_array(np.float32([1, 2, 3]), "t")
    t.raw_data = t.raw_data[:-1]
    with pytest.raises(ModelLoadError, match="initializer 't' has 3 elements .* 11 bytes"):
        load_model(_with_tensor(t))
    t = helper.make_tensor("t", TP.FLOAT, [2], [1.0, 2.0], raw=False)
    t.dims[0] = 4
    with pytest.raises(ModelLoadError, match="float_data holds 2"):
        load_model(_with_tensor(t))
    t = onnx.TensorProto(name="t", data_type=99, dims=[1], raw_data=b"\0")
    with pytest.raises(ModelLoadError, match="unknown data_type 99"):
        load_model(_with_tensor(t))
    t = onnx.TensorProto(name="t", data_type=TP.FLOAT, dims=[2])
    with pytest.raises(ModelLoadError, match="2 elements"):
        load_model(_with_tensor(t))


def test_invalid_utf8_name_is_a_load_error():
    data = _small_model_bytes()
    bad = data.replace(b"add", b"\xff\xfe\xfd")
    with pytest.raises(ModelLoadError, match="UnicodeDecodeError"):
        load_model(bad)


def test_wrong_source_type():
    with pytest.raises(TypeError, match="path, bytes"):
        load_model(42)  # type: ignore[arg-type]
