"""Reduce*/ArgMax/ArgMin behaviour the conformance suite does not pin, plus onnxruntime parity."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from ziggurat.ops import reduce as R

REDUCE_OPS = [
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float16, np.float64])
def test_output_dtype_is_input_dtype(op, dtype):
    x = (np.arange(24) % 5 + 1).reshape(2, 3, 4).astype(dtype)
    (y,) = getattr(R, op)(x, np.array([1], dtype=np.int64), keepdims=0)
    assert y.dtype == x.dtype
    assert y.shape == (2, 4)


def test_bfloat16_sum_accumulates_in_float32():
    x = np.full((4096,), 1.0, dtype=ml_dtypes.bfloat16)
    (y,) = R.ReduceSum(x)
    assert y.dtype == x.dtype
    assert float(y.reshape(-1)[0]) == 4096.0  # a bfloat16 accumulator would stall at 256


def test_int_mean_truncates_and_keeps_dtype():
    x = np.array([[1, 2], [3, 5]], dtype=np.int32)
    (y,) = R.ReduceMean(x, axes=[1], keepdims=0)
    np.testing.assert_array_equal(y, np.array([1, 4], dtype=np.int32))
    assert y.dtype == np.int32


def test_noop_with_empty_axes_sum_returns_input():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = R.ReduceSum(x, np.array([], dtype=np.int64), noop_with_empty_axes=1)
    np.testing.assert_array_equal(y, x)
    (y,) = R.ReduceSum(x, np.array([], dtype=np.int64))
    assert y.shape == (1, 1) and y[0, 0] == 15


def test_axes_attribute_for_old_opsets():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = R.ReduceMax(x, axes=[-1], keepdims=1)
    np.testing.assert_array_equal(y, [[2], [5]])


@pytest.mark.parametrize(
    "op, dtype, expected",
    [
        ("ReduceMax", np.float32, -np.inf),
        ("ReduceMin", np.float32, np.inf),
        ("ReduceMax", np.int32, np.iinfo(np.int32).min),
        ("ReduceMin", np.uint8, 255),
        ("ReduceMax", np.bool_, False),
        ("ReduceMin", np.bool_, True),
        ("ReduceSum", np.int64, 0),
        ("ReduceProd", np.float32, 1),
        ("ReduceLogSumExp", np.float32, -np.inf),
        ("ReduceLogSum", np.float32, -np.inf),
    ],
)
def test_empty_set_identity(op, dtype, expected):
    x = np.zeros((2, 0, 3), dtype=dtype)
    (y,) = getattr(R, op)(x, np.array([1], dtype=np.int64), keepdims=1)
    assert y.shape == (2, 1, 3) and y.dtype == dtype
    assert np.all(y == np.asarray(expected).astype(dtype))


def test_logsumexp_is_stable_and_handles_infinities():
    x = np.array([[1000.0, 1000.0], [-np.inf, -np.inf], [np.inf, 0.0]], dtype=np.float32)
    (y,) = R.ReduceLogSumExp(x, axes=[1], keepdims=0)
    np.testing.assert_allclose(y[0], 1000.0 + np.log(2.0), rtol=1e-6)
    assert y[1] == -np.inf and y[2] == np.inf


def test_reduce_rejects_bad_axis():
    with pytest.raises(Exception, match="out of range"):
        R.ReduceSum(np.zeros((2, 2), np.float32), np.array([2], dtype=np.int64))


def test_argmax_select_last_index_and_dtype():
    x = np.array([[1, 3, 3], [2, 2, 0]], dtype=np.float16)
    (first,) = R.ArgMax(x, axis=1, keepdims=0)
    (last,) = R.ArgMax(x, axis=1, keepdims=0, select_last_index=1)
    np.testing.assert_array_equal(first, [1, 0])
    np.testing.assert_array_equal(last, [2, 1])
    assert first.dtype == last.dtype == np.int64
    (m,) = R.ArgMin(x, axis=-1, select_last_index=1)
    np.testing.assert_array_equal(m, [[0], [2]])


def test_argmax_of_empty_axis_is_an_error():
    with pytest.raises(Exception, match="axis 0 is empty"):
        R.ArgMax(np.zeros((0, 3), np.float32), axis=0)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize(
    "shape, axis, keepdims, expected",
    [
        ((0, 0), 0, 1, (1, 0)),  # empty reduced axis, but nothing to index: empty result
        ((0, 0), -1, 0, (0,)),
        ((2, 0, 3), 0, 1, (1, 0, 3)),  # the reduced axis is not the empty one
        ((0, 2, 0), 1, 0, (0, 0)),
    ],
)
def test_arg_with_empty_output_returns_empty_int64(op, shape, axis, keepdims, expected):
    for sl in (0, 1):
        (y,) = getattr(R, op)(
            np.zeros(shape, np.float32), axis=axis, keepdims=keepdims, select_last_index=sl
        )
        assert y.shape == expected and y.dtype == np.int64


def test_rank0_input_takes_axis_0_or_minus_1_like_onnxruntime():
    x = np.array(-3.0, np.float32)
    for a in (0, -1):
        assert R.ReduceL1(x, np.array([a], np.int64))[0] == np.float32(3.0)
        assert R.ReduceSum(x, axes=[a])[0].shape == ()
        (i,) = R.ArgMax(x, axis=a)
        assert i.shape == () and i.dtype == np.int64 and i == 0
    with pytest.raises(Exception, match="out of range"):
        R.ReduceSum(x, np.array([1], np.int64))


def _ort_session(op, dtype, attrs):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node(op, ["x", "axes"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", et, None),
            helper.make_tensor_value_info("axes", TensorProto.INT64, [None]),
        ],
        [helper.make_tensor_value_info("y", et, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_noop_with_empty_axes_still_applies_the_elementwise_part(op, dtype):
    """noop_with_empty_axes=1 with no axes reduces nothing (numpy's axis=()), but the composite ops
    keep their elementwise part: L1/L2 -> |x|, SumSquare -> x², LogSum -> log x, LogSumExp -> x."""
    if dtype == np.int64 and op in ("ReduceLogSum", "ReduceLogSumExp"):
        pytest.skip("onnxruntime has no int64 kernel")
    x = np.array([[-1, 2, 0], [3, -4, 5]], dtype)
    empty = np.array([], np.int64)
    for keepdims in (0, 1):
        attrs = {"keepdims": keepdims, "noop_with_empty_axes": 1}
        (want,) = _ort_session(op, dtype, attrs).run(None, {"x": x, "axes": empty})
        with np.errstate(invalid="ignore", divide="ignore"):
            for axes_in in (empty, None):
                (got,) = getattr(R, op)(x, axes_in, **attrs)
                assert got.dtype == want.dtype and got.shape == want.shape == x.shape
                np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_matches_onnxruntime(op):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(7)
    x = rng.uniform(0.5, 2.0, size=(3, 4, 5)).astype(np.float32)
    axes = np.array([0, -1], dtype=np.int64)
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], axes)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"x": x})
    (got,) = getattr(R, op)(x, axes, keepdims=0)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
