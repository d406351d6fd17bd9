"""Activation and random kernels: onnxruntime parity on seeded random inputs for the hot ones,
the opset-13 Softmax-family axis change, dtype keeping for float16/bfloat16, extreme inputs, and the
random ops' seeding, shapes and dtypes.
"""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest

from tests.ops.test_conv import run_ort
from ziggurat.errors import ExecutionError
from ziggurat.ir import dtypes
from ziggurat.ops.activation import Gelu, Hardmax, LeakyRelu, PRelu, Relu, Sigmoid, Softmax, SwiGLU
from ziggurat.ops.random import (
    Bernoulli,
    Multinomial,
    RandomNormal,
    RandomNormalLike,
    RandomUniform,
    RandomUniformLike,
)
from ziggurat.ops.registry import lookup


def _x(shape=(3, 4, 5), seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize(
    "op,attrs,opset",
    [
        ("Relu", {}, 17),
        ("Sigmoid", {}, 17),
        ("Tanh", {}, 17),
        ("Erf", {}, 17),
        ("LeakyRelu", {"alpha": 0.1}, 17),
        ("LeakyRelu", {"alpha": 1.5}, 17),
        ("Elu", {"alpha": 0.7}, 17),
        ("Selu", {}, 17),
        ("Celu", {"alpha": 2.0}, 17),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 17),
        ("HardSwish", {}, 17),
        ("Softplus", {}, 17),
        ("Softsign", {}, 17),
        ("Mish", {}, 18),
        ("ThresholdedRelu", {"alpha": 0.5}, 17),
        ("Shrink", {"bias": 0.5, "lambd": 1.0}, 17),
        ("Gelu", {}, 20),
        ("Gelu", {"approximate": "tanh"}, 20),
    ],
)
def test_pointwise_matches_onnxruntime(op, attrs, opset):
    x = _x()
    y = lookup(op, "", opset).fn(x, **attrs)[0]
    ref = run_ort(op, [x], opset=opset, **attrs)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, 2])
def test_softmax_family_axis_semantics_match_onnxruntime(op, opset, axis):
    x = _x((2, 3, 4))
    attrs = {} if axis is None else {"axis": axis}
    y = lookup(op, "", opset).fn(x, **attrs)[0]
    ref = run_ort(op, [x], opset=opset, **attrs)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_softmax_large_and_empty_inputs():
    x = np.array([[1000.0, 1001.0, -np.inf]], np.float32)
    y = Softmax(x)[0]
    assert np.isfinite(y).all() and abs(y.sum() - 1) < 1e-6 and y[0, 2] == 0
    e = Softmax(np.zeros((0, 3), np.float32))[0]
    assert e.shape == (0, 3) and e.dtype == np.float32


def _softmax64(x):
    w = x.astype(np.float64)
    e = np.exp(w - w.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_block_max_path_matches_float64_reference(dtype):
    """Large inputs subtract one maximum per block of rows; rows far below it are redone against
    their own maximum. Rows at very different levels, masked (-inf) keys, a row of equal values.
    Error bound: exp's argument carries the subtraction's rounding, at most ulp(max |x|) (the
    input's own resolution), plus a few eps of exp, sum and scaling: relative to each value."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, 12, 128)) * 4).astype(dtype)
    x[0, 0] += 500  # far above every other row: the others are recomputed
    x[1, :3] -= 300
    x[2, 5, 7:] = -np.inf
    x[3, 2] = 7.0
    y = Softmax(x)[0]
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    ref = _softmax64(x)
    eps = float(np.finfo(dtype).eps)
    ulp_in = float(np.spacing(np.abs(x[np.isfinite(x)]).max().astype(dtype)))
    np.testing.assert_allclose(y, ref, rtol=ulp_in + 8 * eps, atol=0)
    assert (y[2, 5, 7:] == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_in_place_equals_the_out_of_place_result(dtype):
    """FusedAttention's in-place softmax: the same values bit-for-bit, low rows included (their
    inputs are kept before being overwritten), whether a row's edge elements are low or not."""
    from ziggurat.ops.activation import softmax_last_axis

    rng = np.random.default_rng(6)
    x = (rng.standard_normal((64, 12, 128)) * 4).astype(dtype)
    x[0, 0] += 500  # every other row is low against the block maximum
    x[1, :3] -= 300
    x[2, 5, 7:] = -np.inf
    x[4, 1, [0, -1]] = -1e4  # edges low, maximum not: a candidate row that is not low
    x[5, 2, 1:-1] = -1e4  # edges high, the rest masked
    want = softmax_last_axis(x)
    buf = x.copy()
    got = softmax_last_axis(buf, inplace=True)
    assert np.shares_memory(got, buf)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, Softmax(x)[0])
    nan_x = x.copy()
    nan_x[3, 3] = -np.inf
    np.testing.assert_array_equal(
        softmax_last_axis(nan_x.copy(), nan_to_zero=True, inplace=True),
        softmax_last_axis(nan_x, nan_to_zero=True),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,axis", [((1, 10), -1), ((10,), 0), ((1, 1, 7), 2), ((6, 1), 0), ((1, 5, 1), 1)]
)
def test_softmax_one_row_path_matches_float64_reference(dtype, shape, axis):
    """A single row along ``axis`` (a classifier's head) takes the flat max/sum path; same bound
    as the block path: ulp(max |x|) from the subtraction plus a few eps of exp, sum, division."""
    x = (np.random.default_rng(7).standard_normal(shape) * 30).astype(dtype)
    y = Softmax(x, axis=axis)[0]
    w = x.astype(np.float64)
    e = np.exp(w - w.max(axis=axis, keepdims=True))
    ref = e / e.sum(axis=axis, keepdims=True)
    eps = float(np.finfo(dtype).eps)
    ulp_in = float(np.spacing(np.abs(x).max()))
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    np.testing.assert_allclose(y, ref, rtol=ulp_in + 8 * eps, atol=0)
    x.flat[0] = np.nan  # NaN anywhere in the row makes the whole row NaN, as onnxruntime gives
    assert np.isnan(Softmax(x, axis=axis)[0]).all()


def test_softmax_nonfinite_rows_follow_the_exact_path():
    x = np.zeros((40, 128), np.float32)
    x[0] = -np.inf  # every key masked: NaN, as onnxruntime gives
    x[1, 3] = np.nan
    x[2, 4] = np.inf
    y = Softmax(x)[0]
    assert np.isnan(y[0]).all() and np.isnan(y[1]).all() and np.isnan(y[2]).all()
    np.testing.assert_allclose(y[3:], 1 / 128, rtol=2e-7)
    ref = run_ort("Softmax", [x[2:]], opset=13)
    np.testing.assert_array_equal(np.isnan(y[2:]), np.isnan(ref))


POINTWISE = [
    ("Relu", 14, {}),
    ("LeakyRelu", 16, {}),
    ("LeakyRelu", 16, {"alpha": 1.5}),
    ("ThresholdedRelu", 10, {}),
    ("Elu", 6, {}),
    ("Celu", 12, {}),
    ("Selu", 6, {}),
    ("Sigmoid", 13, {}),
    ("HardSigmoid", 6, {}),
    ("HardSwish", 14, {}),
    ("Softplus", 1, {}),
    ("Softsign", 1, {}),
    ("Mish", 18, {}),
    ("Swish", 24, {"alpha": 0.5}),
    ("Shrink", 9, {}),
    ("Gelu", 20, {}),
    ("Gelu", 20, {"approximate": "tanh"}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("op,opset,attrs", POINTWISE)
def test_pointwise_rank0_and_zero_size(op, opset, attrs, dtype):
    # numpy gives scalars, not arrays, for 0-d operands: in-place steps (out=...) used to fail.
    fn = lookup(op, "", opset).fn
    for v in (-1.5, 0.25, 3.0):
        y = fn(np.array(v, dtype), **attrs)[0]
        ref = fn(np.array([v], dtype), **attrs)[0]
        assert type(y) is np.ndarray and y.shape == () and y.dtype == np.dtype(dtype)
        assert y.reshape(1).tobytes() == ref.tobytes()
    for shape in [(0,), (2, 0, 3)]:
        y = fn(np.zeros(shape, dtype), **attrs)[0]
        assert y.shape == shape and y.dtype == np.dtype(dtype)


def test_swiglu_and_prelu_rank0():
    a, b = np.array(-1.5, np.float32), np.array(2.0, np.float32)
    y = SwiGLU(a, b)[0]
    assert y.shape == () and y.dtype == np.float32
    np.testing.assert_allclose(y, -1.5 / (1 + np.exp(1.5)) * 2.0, rtol=1e-6)
    p = PRelu(a, np.array(0.5, np.float32))[0]
    assert p.shape == () and p == np.float32(-0.75)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_family_rank0_is_a_clear_error_and_empty_passes(op, opset):
    fn = lookup(op, "", opset).fn
    with pytest.raises(ExecutionError, match="rank 0"):  # onnxruntime rejects it too
        fn(np.array(1.0, np.float32))
    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
        y = fn(np.zeros((2, 0, 3), dtype))[0]
        assert y.shape == (2, 0, 3) and y.dtype == np.dtype(dtype)


def test_hardmax_first_maximum_wins():
    y = Hardmax(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], np.float32))[0]
    assert y.tolist() == [[0, 1, 0], [1, 0, 0]]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
@pytest.mark.parametrize(
    "op,opset,attrs",
    [
        ("Sigmoid", 13, {}),
        ("Gelu", 20, {}),
        ("Gelu", 20, {"approximate": "tanh"}),
        ("Softmax", 13, {}),
        ("Relu", 14, {}),
    ],
)
def test_dtype_is_kept(dtype, op, opset, attrs):
    x = _x((2, 5), scale=1.0)
    y = lookup(op, "", opset).fn(x.astype(dtype), **attrs)[0]
    assert y.dtype == np.dtype(dtype)
    ref = lookup(op, "", opset).fn(x, **attrs)[0]
    np.testing.assert_allclose(y.astype(np.float32), ref, rtol=1e-2, atol=1e-2)


def test_extreme_inputs_give_no_nan_or_warnings():
    x = np.array([-1e30, -100.0, 0.0, 100.0, 1e30], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = Sigmoid(x)[0]
        g = Gelu(x)[0]
        t = Gelu(x, approximate="tanh")[0]
    assert s.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    expected = np.array([0.0, 0.0, 0.0, 100.0, 1e30], np.float32)
    np.testing.assert_array_equal(np.abs(g), expected)
    np.testing.assert_array_equal(np.abs(t), expected)
    # the tail: tiny, never of the wrong magnitude
    tail = Gelu(np.array([-4.0, -5.0, -5.5, -6.0, -8.0], np.float32))[0]
    np.testing.assert_allclose(tail, [-1.2668e-4, -1.4333e-6, -1.0471e-7, -5.9e-9, 0], atol=8e-8)


def test_integer_relu_leakyrelu_prelu():
    x = np.array([-3, 0, 4], np.int8)
    assert Relu(x)[0].dtype == np.int8 and Relu(x)[0].tolist() == [0, 0, 4]
    p = PRelu(np.array([[-2, 2]], np.int32), np.array([3], np.int32))[0]
    assert p.dtype == np.int32 and p.tolist() == [[-6, 2]]
    assert LeakyRelu(np.array([-10.0], np.float32), alpha=0.1)[0].tolist() == [np.float32(-1.0)]


def test_prelu_legacy_per_channel_slope():
    x = -np.ones((1, 3, 2, 2), np.float32)
    y = lookup("PRelu", "", 6).fn(x, np.array([1, 2, 3], np.float32))[0]
    assert y.shape == x.shape and y[0, :, 0, 0].tolist() == [-1, -2, -3]


def test_swiglu_requires_same_shapes():
    a, b = _x((2, 4)), _x((2, 4), seed=1)
    y = SwiGLU(a, b, alpha=1.5)[0]
    np.testing.assert_allclose(y, a / (1 + np.exp(-1.5 * a)) * b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ExecutionError, match="same shape"):
        SwiGLU(a, b[:, :2])


# ---------------------------------------------------------------------------------- random


def test_random_seed_is_deterministic_and_defaults_to_float():
    a = RandomNormal(shape=[3, 4], seed=2.0)[0]
    b = RandomNormal(shape=[3, 4], seed=2.0)[0]
    c = RandomNormal(shape=[3, 4], seed=3.0)[0]
    assert a.dtype == np.float32 and a.shape == (3, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    u = RandomUniform(shape=[1000], low=2.0, high=3.0, dtype=dtypes.DOUBLE, seed=1.0)[0]
    assert u.dtype == np.float64 and 2.0 <= u.min() and u.max() < 3.0


def test_random_like_ops_take_shape_and_dtype():
    x = np.zeros((2, 5), np.float16)
    assert RandomNormalLike(x)[0].dtype == np.float16
    assert RandomUniformLike(x, dtype=dtypes.DOUBLE)[0].dtype == np.float64
    assert RandomUniformLike(x)[0].shape == (2, 5)


def test_bernoulli_and_multinomial():
    p = np.array([0.0, 1.0, 0.0, 1.0], np.float64)
    y = Bernoulli(p, seed=0.0)[0]
    assert y.dtype == np.float64 and y.tolist() == [0, 1, 0, 1]
    assert Bernoulli(p.astype(np.float32), dtype=dtypes.INT32)[0].dtype == np.int32
    logits = np.log(np.array([[0.0001, 0.9998, 0.0001], [1, 0, 0]], np.float32) + 1e-30)
    m = Multinomial(logits, sample_size=50, seed=1.0)[0]
    assert m.dtype == np.int32 and m.shape == (2, 50)
    assert (m[1] == 0).all() and (m[0] == 1).mean() > 0.9
    assert Multinomial(logits, dtype=dtypes.INT64)[0].dtype == np.int64


def test_gelu_erf_in_place_and_strided_out():
    from ziggurat.ops._ewmath import gelu_erf

    x = np.linspace(-6, 6, 70_000, dtype=np.float32).reshape(700, 100)  # > one work chunk
    ref = Gelu(x)[0]
    y = x.copy()
    assert gelu_erf(y, out=y) is y
    np.testing.assert_array_equal(y, ref)
    strided = np.empty((100, 700), np.float32).T
    np.testing.assert_array_equal(gelu_erf(x, out=strided), ref)
