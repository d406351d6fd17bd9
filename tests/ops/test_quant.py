"""Quantization ops: behaviour the conformance suite does not pin, plus onnxruntime parity."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from ziggurat.errors import ExecutionError
from ziggurat.ops import quant as Q


def _ort(op, inputs, out_type, attrs=None, opset=21):
    """Run one node in onnxruntime. ``inputs`` is a list of (name, array or None)."""
    names = [n if a is not None else "" for n, a in inputs]
    while names and not names[-1]:
        names.pop()
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    g_in = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in inputs
        if a is not None
    ]
    g_out = [
        helper.make_tensor_value_info(
            "y", helper.np_dtype_to_tensor_dtype(np.dtype(out_type)), None
        )
    ]
    model = helper.make_model(
        helper.make_graph([node], "g", g_in, g_out), opset_imports=[helper.make_opsetid("", opset)]
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: np.asarray(a) for n, a in inputs if a is not None})[0]


def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 300, -300], dtype=np.float32)
    (y,) = Q.QuantizeLinear(x, np.float32(1), np.int8(0))
    np.testing.assert_array_equal(y, [0, 2, 2, 0, -2, -2, 127, -128])
    assert y.dtype == np.int8
    (y,) = Q.QuantizeLinear(x, np.float32(1))  # no zero point -> uint8
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 2, 2, 0, 0, 0, 255, 0])


@pytest.mark.parametrize("zp_dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_quantize_per_axis_matches_onnxruntime(zp_dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 5, 3)) * 100).astype(np.float32)
    scale = rng.uniform(0.1, 2, 5).astype(np.float32)
    zp = rng.integers(0, 20, 5).astype(zp_dtype)
    inputs = [("x", x), ("s", scale), ("zp", zp)]
    expected = _ort("QuantizeLinear", inputs, zp_dtype, {"axis": 1})
    (got,) = Q.QuantizeLinear(x, scale, zp, axis=1)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == zp_dtype


def test_blocked_dequantize_int4_matches_onnxruntime():
    rng = np.random.default_rng(1)
    x = rng.integers(-8, 8, (4, 6)).astype(ml_dtypes.int4)
    scale = rng.uniform(0.1, 1, (4, 2)).astype(np.float32)
    zp = rng.integers(-2, 3, (4, 2)).astype(ml_dtypes.int4)
    (got,) = Q.DequantizeLinear(x, scale, zp, axis=1, block_size=3)
    ref = (x.astype(np.float32) - np.repeat(zp.astype(np.float32), 3, 1)) * np.repeat(scale, 3, 1)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert got.dtype == np.float32


def test_blocked_quantize_partial_last_block():
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    scale = np.array([[1, 2], [4, 8]], dtype=np.float32)  # blocks of 3: columns 0-2 and 3-4
    (y,) = Q.QuantizeLinear(x, scale, np.zeros((2, 2), np.int8), axis=1, block_size=3)
    np.testing.assert_array_equal(y, [[0, 1, 2, 2, 2], [1, 2, 2, 1, 1]])
    with pytest.raises(ExecutionError, match="blocks"):
        Q.QuantizeLinear(x, scale, axis=1, block_size=1)


def test_float8_saturate_flag():
    x = np.array([1000.0, -1000.0, 3.0, np.inf], dtype=np.float32)
    zp = np.zeros((), ml_dtypes.float8_e4m3fn)
    (sat,) = Q.QuantizeLinear(x, np.float32(1), zp)
    np.testing.assert_array_equal(sat.astype(np.float32), [448, -448, 3, 448])
    (raw,) = Q.QuantizeLinear(x, np.float32(1), zp, saturate=0)
    assert np.isnan(raw.astype(np.float32)[[0, 1, 3]]).all()
    zp = np.zeros((), ml_dtypes.float8_e5m2)
    (raw,) = Q.QuantizeLinear(x * 100, np.float32(1), zp, saturate=0)
    assert np.isinf(raw.astype(np.float32)[0])


def test_output_dtype_attribute_and_mismatch():
    x = np.array([1.0, -7.6], dtype=np.float32)
    (y,) = Q.QuantizeLinear(x, np.float32(1), output_dtype=22)  # INT4
    assert y.dtype == ml_dtypes.int4
    np.testing.assert_array_equal(y.astype(np.int8), [1, -8])
    with pytest.raises(ExecutionError, match="output_dtype"):
        Q.QuantizeLinear(x, np.float32(1), np.uint8(0), output_dtype=3)
    (d,) = Q.DequantizeLinear(np.array([3], np.uint8), np.float32(0.5), output_dtype=10)
    assert d.dtype == np.float16 and d[0] == 1.5


def test_precision_attribute_divides_in_float16():
    # 1/3 in float16 rounds differently from float32 at this magnitude
    x = np.array([2049.0], dtype=np.float32)
    (y32,) = Q.QuantizeLinear(x, np.float32(1), np.int16(0))
    (y16,) = Q.QuantizeLinear(x, np.float32(1), np.int16(0), precision=10)
    assert y32[0] == 2049 and y16[0] == 2048  # 2049 is not representable in float16


def test_dequantize_per_axis_matches_onnxruntime():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (3, 4, 2)).astype(np.int8)
    scale = rng.uniform(0.1, 1, 4).astype(np.float32)
    zp = rng.integers(-5, 5, 4).astype(np.int8)
    expected = _ort(
        "DequantizeLinear", [("x", x), ("s", scale), ("zp", zp)], np.float32, {"axis": 1}
    )
    (got,) = Q.DequantizeLinear(x, scale, zp, axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_dynamic_quantize_matches_onnxruntime():
    rng = np.random.default_rng(3)
    for x in (rng.standard_normal((4, 7)).astype(np.float32) * 3, np.zeros(5, np.float32),
              np.abs(rng.standard_normal(9)).astype(np.float32)):  # fmt: skip
        model_out = _ort_dynamic(x)
        got = Q.DynamicQuantizeLinear(x)
        for e, g in zip(model_out, got, strict=True):
            assert g.dtype == e.dtype
            np.testing.assert_allclose(g, e, rtol=1e-6)


def _ort_dynamic(x):
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "zp"])
    g = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", 1, x.shape)],
        [helper.make_tensor_value_info(n, t, None) for n, t in (("y", 2), ("s", 1), ("zp", 2))],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )


@pytest.mark.parametrize(
    "attrs, x_shape, w_shape",
    [
        ({"strides": [2, 2], "pads": [1, 0, 2, 1]}, (2, 3, 9, 8), (4, 3, 3, 2)),
        ({"group": 2, "dilations": [2, 1]}, (1, 4, 7, 7), (6, 2, 2, 3)),
        ({"auto_pad": "SAME_UPPER", "strides": [2, 1]}, (1, 2, 6, 5), (3, 2, 3, 3)),
        ({"strides": [2]}, (2, 3, 11), (5, 3, 3)),
    ],
)
@pytest.mark.parametrize("qtype", [np.uint8, np.int8])
def test_qlinearconv_matches_onnxruntime(attrs, x_shape, w_shape, qtype):
    rng = np.random.default_rng(4)
    info = np.iinfo(qtype)
    x = rng.integers(info.min, info.max, x_shape).astype(qtype)
    w = rng.integers(-50, 50, w_shape).astype(np.int8)
    M = w_shape[0]
    args = [
        ("x", x), ("xs", np.float32(0.05)), ("xzp", qtype(3)),
        ("w", w), ("ws", rng.uniform(0.01, 0.05, M).astype(np.float32)), ("wzp", np.zeros(M, np.int8)),
        ("ys", np.float32(0.7)), ("yzp", qtype(5)), ("B", rng.integers(-500, 500, M).astype(np.int32)),
    ]  # fmt: skip
    expected = _ort("QLinearConv", args, qtype, attrs, opset=10)
    (got,) = Q.QLinearConv(*[a for _, a in args], **attrs)
    assert got.dtype == expected.dtype
    # onnxruntime's int8 kernels may differ by one on exact rounding ties
    assert np.abs(got.astype(np.int32) - expected.astype(np.int32)).max() <= 1


def test_qlinearmatmul_per_column_scales():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 255, (3, 4)).astype(np.uint8)
    b = rng.integers(0, 255, (4, 5)).astype(np.uint8)
    a_s, b_s = np.float32(0.02), rng.uniform(0.01, 0.03, 5).astype(np.float32)
    b_zp = rng.integers(100, 140, 5).astype(np.uint8)
    (y,) = Q.QLinearMatMul(a, a_s, np.uint8(128), b, b_s, b_zp, np.float32(0.1), np.uint8(120))
    ref = ((a.astype(np.float64) - 128) @ (b.astype(np.float64) - b_zp)) * a_s * b_s / 0.1 + 120
    np.testing.assert_array_equal(y, np.clip(np.rint(ref), 0, 255).astype(np.uint8))


def test_qlinearmatmul_float8():
    f8 = ml_dtypes.float8_e4m3fn
    a = np.array([[1.0, 2.0], [3.0, -4.0]], dtype=f8)
    b = np.array([[0.5, 1.0], [1.5, 2.0]], dtype=f8)
    zero = np.zeros((), f8)
    one = np.float32(1)
    (y,) = Q.QLinearMatMul(a, one, zero, b, one, zero, np.float32(0.5), zero)
    assert y.dtype == f8
    np.testing.assert_array_equal(y.astype(np.float32), [[7, 10], [-9, -10]])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
@pytest.mark.parametrize("per_axis", [False, True])
def test_dequantize_small_ints_to_float32_exact(dtype, per_axis):
    """The float32 path for 8/16-bit inputs gives exactly (x - zp) formed in integers, times
    the scale in float32 (the spec's arithmetic), extreme values and zero points included."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(31)
    x = rng.integers(info.min, int(info.max) + 1, (3, 5, 7)).astype(dtype)
    x[0, 0, :2] = info.min, info.max
    n = 5 if per_axis else 1
    zp = rng.integers(info.min, int(info.max) + 1, n).astype(dtype)
    zp[0] = info.max
    scale = rng.uniform(1e-3, 1.0, n).astype(np.float32)
    shape = (1, 5, 1) if per_axis else ()
    (got,) = Q.DequantizeLinear(x, scale.reshape(-1 if per_axis else ()), zp.reshape(
        -1 if per_axis else ()), axis=1)  # fmt: skip
    ref = (x.astype(np.int64) - zp.reshape(shape).astype(np.int64)).astype(np.float32)
    ref = ref * scale.reshape(shape)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
