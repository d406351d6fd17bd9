"""formats/onnx/writer.py: what it writes, onnx reads back as the same model (checker-valid),
and Ziggurat's loader reads back the same IR."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ziggurat.errors import ModelLoadError
from ziggurat.formats.onnx import load_model
from ziggurat.formats.onnx.writer import save_model


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([-7, 3, 0, 5, 1], np.int64), "i64"),
        helper.make_tensor("i4", TensorProto.INT4, [5], [-8, 7, 0, -1, 3]),
        helper.make_tensor("u4", TensorProto.UINT4, [3], [15, 0, 9]),
        helper.make_tensor("s", TensorProto.STRING, [2], [b"abc", "\u00e9t\u00e9".encode()]),
        helper.make_tensor("bf", TensorProto.BFLOAT16, [2], [1.5, -2.0]),
    ]
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["batch", 4])],
    )  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        helper.make_node(
            "Custom", ["y"], ["z"], domain="my.domain", f=0.25, i=-3, s="txt", ints=[1, -2],
            floats=[0.5, 1.5], strings=["a", "b"], t=numpy_helper.from_array(np.eye(2, dtype=np.float32)),
        ),
        helper.make_node("If", ["c"], ["o"], then_branch=then, else_branch=then),
    ]  # fmt: skip
    g = helper.make_graph(
        nodes, "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("o", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )  # fmt: skip
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("my.domain", 1)],
        producer_name="tests", ir_version=10,
    )  # fmt: skip
    m.metadata_props.add(key="k", value="v")
    return m


@pytest.mark.parametrize("external", [False, True])
def test_written_model_reads_back_the_same(tmp_path, external):
    src = tmp_path / "src.onnx"
    onnx.save(_model(), src)
    ir_model = load_model(str(src))
    out = tmp_path / "out.onnx"
    save_model(ir_model, out, external_file="data.bin" if external else "", external_min_bytes=16)
    want, got = onnx.load(src), onnx.load(out)  # loads external data from data.bin
    onnx.checker.check_model(got)
    assert [n.op_type for n in got.graph.node] == [n.op_type for n in want.graph.node]
    attrs = {a.name: helper.get_attribute_value(a) for a in got.graph.node[1].attribute}
    for a in want.graph.node[1].attribute:
        value = helper.get_attribute_value(a)
        if a.type == onnx.AttributeProto.TENSOR:
            np.testing.assert_array_equal(
                numpy_helper.to_array(attrs[a.name]), numpy_helper.to_array(value)
            )
        else:
            assert attrs[a.name] == value, a.name
    for t in want.graph.initializer:
        (g,) = [u for u in got.graph.initializer if u.name == t.name]
        assert g.data_type == t.data_type
        np.testing.assert_array_equal(numpy_helper.to_array(g), numpy_helper.to_array(t))
    if external:
        stored = onnx.load(out, load_external_data=False)
        ext = {t.name for t in stored.graph.initializer if t.data_location == TensorProto.EXTERNAL}
        assert ext == {"w", "i64"}  # 48 and 40 bytes; the rest are under 16
    back = load_model(str(out))
    assert back.metadata == {"k": "v"} and back.opsets == ir_model.opsets
    assert back.graph.inputs[0].type == ir_model.graph.inputs[0].type
    for k, v in ir_model.graph.initializers.items():
        assert back.graph.initializers[k].dtype == v.dtype
        np.testing.assert_array_equal(back.graph.initializers[k], v)
    assert back.graph.initializers["bf"].dtype == ml_dtypes.bfloat16


def test_external_file_must_stay_beside_the_model(tmp_path):
    src = tmp_path / "src.onnx"
    onnx.save(_model(), src)
    with pytest.raises(ModelLoadError, match="relative to the model's folder"):
        save_model(load_model(str(src)), tmp_path / "o.onnx", external_file="../x.bin")
