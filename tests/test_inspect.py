"""``ziggurat inspect``'s report on contrib ops and quantized weights (src/ziggurat/inspect.py)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from tests.models import builders
from ziggurat.inspect import inspect_model


def test_quantize_dynamic_weights_are_listed_as_8_bit(tmp_path):
    src, dst = tmp_path / "mlp.onnx", tmp_path / "mlp.int8.onnx"
    src.write_bytes(builders.mlp().SerializeToString())
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    report = inspect_model(dst)
    quant = report["quantized_weights"]
    assert sorted(q["shape"] for q in quant) == [[128, 10], [784, 128]]  # both Gemms
    assert {q["bits"] for q in quant} == {8}
    assert sum(q["bytes"] for q in quant) == sum(int(np.prod(q["shape"])) for q in quant)
    assert "quantized weights: 2" in report["text"] and "8-bit" in report["text"]


def test_matmul_nbits_weights_and_contrib_kernel_are_listed():
    n, k, block = 8, 64, 32
    packed = np.zeros((n, k // block, block // 2), np.uint8)  # 4-bit values, two per byte
    node = helper.make_node(
        "MatMulNBits", ["a", "b", "scales"], ["y"], domain="com.microsoft",
        K=k, N=n, bits=4, block_size=block,
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(packed, "b"),
         numpy_helper.from_array(np.ones(n * k // block, np.float32), "scales")],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    report = inspect_model(model.SerializeToString())
    (q,) = report["quantized_weights"]
    assert q["name"] == "b" and q["bits"] == 4 and q["bytes"] == packed.nbytes
    (c,) = report["contrib_ops"]
    assert c == {"op": "MatMulNBits", "count": 1, "kernel": "ops/contrib_quant.py:MatMulNBits"}
    assert "MatMulNBits" in report["text"] and "4-bit" in report["text"]


def test_a_float_model_reports_no_quantized_weights():
    report = inspect_model(builders.mlp().SerializeToString())
    assert report["quantized_weights"] == [] and report["contrib_ops"] == []
    assert "quantized weights" not in report["text"]
