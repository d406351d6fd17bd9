"""Elementwise, logical and cast kernels: behaviour the conformance suite does not pin down.

erf accuracy against math.erf on dense grids, integer Div truncation, Pow's mixed dtypes, the
pre-opset-7 broadcast attributes, Cast to/from strings and float8e8m0 rounding modes, BitCast of
sub-byte types, and onnxruntime parity of the hot binary ops on seeded random inputs.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from tests.ops.test_conv import run_ort
from ziggurat.errors import ExecutionError
from ziggurat.ir import dtypes
from ziggurat.ops._ewmath import erf
from ziggurat.ops.cast import BitCast, Cast, CastLike
from ziggurat.ops.elementwise import Add, Clip, Clip_1, Div, Erf, Mean, Mod, Mul, Pow, Sub, Sum
from ziggurat.ops.logical import BitShift, Equal
from ziggurat.ops.registry import lookup

# ------------------------------------------------------------------------------------ erf


def _ref_erf(xs):
    return np.array([math.erf(float(v)) for v in xs])


def test_erf_float64_max_error_on_dense_grid():
    xs = np.linspace(-7, 7, 140_001)
    err = np.abs(erf(xs) - _ref_erf(xs))
    assert err.max() <= 4.5e-16, f"max abs error {err.max():.3g} at {xs[err.argmax()]}"


def test_erf_float64_relative_error_near_zero():
    xs = np.geomspace(1e-300, 1.0, 5_000)
    ref = _ref_erf(xs)
    assert (np.abs(erf(xs) - ref) / ref).max() <= 4.5e-16


def test_erf_float32_max_error_on_dense_grid():
    xs = np.linspace(-6, 6, 240_001, dtype=np.float32)
    y = erf(xs)
    assert y.dtype == np.float32
    err = np.abs(y - _ref_erf(xs))
    assert err.max() <= 1e-7, f"max abs error {err.max():.3g} at {xs[err.argmax()]}"
    tiny = np.geomspace(1.2e-38, 1e-2, 2_000).astype(np.float32)
    ref = _ref_erf(tiny)
    assert (np.abs(erf(tiny) - ref) / ref).max() <= 2e-7


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ml_dtypes.bfloat16])
def test_erf_special_values_and_dtype(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 10.0, -10.0], dtype=dtype)
    y = Erf(x)[0]
    assert y.dtype == np.dtype(dtype)
    f = y.astype(np.float64)
    assert np.isnan(f[0]) and list(f[1:]) == [1, -1, 0, 0, 1, -1]
    assert np.signbit(f[4])


def test_erf_non_contiguous_and_0d():
    x = np.linspace(-3, 3, 60, dtype=np.float32).reshape(6, 10)[:, ::3]
    np.testing.assert_allclose(Erf(x)[0], _ref_erf(x.ravel()).reshape(x.shape), atol=1e-7)
    y = Erf(np.array(0.5, np.float32))[0]
    assert isinstance(y, np.ndarray) and y.shape == () and abs(y - math.erf(0.5)) < 1e-7


# ---------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_integer_div_truncates_toward_zero(dtype):
    a = np.array([7, -7, 7, -7, 6, -6, 0, 1], dtype=dtype)
    b = np.array([2, 2, -2, -2, 3, -3, 5, -2], dtype=dtype)
    y = Div(a, b)[0]
    assert y.dtype == np.dtype(dtype)
    assert y.tolist() == [3, -3, -3, 3, 2, 2, 0, 0]


def test_integer_div_by_zero_does_not_raise():
    assert Div(np.array([1, -1], np.int32), np.array([0, 0], np.int32))[0].dtype == np.int32


def test_mod_integer_sign_semantics():
    a = np.array([-7, 7, -7, 7], np.int32)
    b = np.array([3, -3, -3, 3], np.int32)
    assert Mod(a, b)[0].tolist() == [2, -2, -1, 1]  # divisor's sign
    assert Mod(a, b, fmod=1)[0].tolist() == [-1, 1, -1, 1]  # dividend's sign


@pytest.mark.parametrize(
    "base,exp,expected",
    [
        (np.array([2, 3], np.int32), np.array([-1, 2], np.int64), [0, 9]),
        (np.array([2, 4], np.int64), np.array([0.5, 2.0], np.float32), [1, 16]),
        (np.array([2.0, 4.0], np.float32), np.array([3, -1], np.int8), [8.0, 0.25]),
        (np.array([2.0], np.float16), np.array([2.0], np.float64), [4.0]),
    ],
)
def test_pow_output_has_base_dtype(base, exp, expected):
    y = Pow(base, exp)[0]
    assert y.dtype == base.dtype
    assert y.tolist() == expected


_POW_SPECIALS = np.array(
    [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-30, -1e-30, 1e30, -1e30, np.inf, -np.inf, np.nan]
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("e", [0.0, 1.0, 2.0, 3.0, 4.0, -1.0, -2.0, 0.5, -0.5, 1.5, 7.0])
def test_pow_constant_exponent_matches_general_power(dtype, e):
    """The specialised exponents (x*x, x*x*x, sqrt, reciprocal, ...) agree with numpy's correctly
    rounded ``power``, special values included (signed zeros, infinities, NaN, negative bases).
    A product chain rounds once per multiply: a cube is within 2 ulp (two roundings of relative
    error eps/2 each, compounded), so compare at 2 ulp of the result; specials must match exactly."""
    rng = np.random.default_rng(1)
    a = np.concatenate([_POW_SPECIALS, rng.standard_normal(200) * 10]).astype(dtype)
    for exp in (np.array(e, dtype), np.array([e], dtype), np.array([[[e]]], np.float32)):
        y = Pow(a.reshape(1, 1, -1), exp)[0]
        assert y.dtype == np.dtype(dtype) and y.shape == (1, 1, a.size)
        with np.errstate(all="ignore"):
            # numpy's power and onnxruntime's Pow treat 0.5 as sqrt (sqrt(-0) = -0, sqrt(-inf) = NaN)
            wide = a.astype(np.float64)
            ref = np.sqrt(wide) ** np.sign(e) if abs(e) == 0.5 else wide ** np.float64(e)
            ref = ref.astype(dtype)
        y = y.reshape(-1)
        same_class = np.isnan(y) == np.isnan(ref)
        assert same_class.all(), f"NaN mismatch at {a[~same_class]}"
        finite = np.isfinite(ref) & (ref != 0)
        exact = ~finite & ~np.isnan(ref)
        np.testing.assert_array_equal(y[exact], ref[exact])  # zeros (with sign) and infinities
        assert (np.signbit(y[exact]) == np.signbit(ref[exact])).all()
        np.testing.assert_array_max_ulp(y[finite], ref[finite], maxulp=2)


@pytest.mark.parametrize("e", [2.0, 3.0, 0.5, -1.0])
def test_pow_constant_exponent_matches_onnxruntime(e):
    rng = np.random.default_rng(2)
    a = (rng.standard_normal((4, 33)) * 3).astype(np.float32)
    a = np.abs(a) if e == 0.5 else a
    b = np.array([e], np.float32)
    y = Pow(a, b)[0]
    ref = run_ort("Pow", [a, b])
    assert y.dtype == ref.dtype and y.shape == ref.shape
    np.testing.assert_array_max_ulp(y, ref, maxulp=2)  # a product chain: <= 1 rounding per multiply


def test_pow_broadcasting_exponent_keeps_general_path():
    a = np.array([2.0, 3.0], np.float32)
    y = Pow(a, np.array([[2.0], [3.0]], np.float32))[0]
    assert y.shape == (2, 2) and y.tolist() == [[4.0, 9.0], [8.0, 27.0]]
    y = Pow(a, np.array([[[3.0]]], np.float32))[0]  # exponent of higher rank widens the output
    assert y.shape == (1, 1, 2) and y.reshape(-1).tolist() == [8.0, 27.0]
    y = Pow(np.array([-8.0], np.float32), np.array(3, np.int64))[0]  # integer exponent dtype
    assert y.dtype == np.float32 and y.tolist() == [-512.0]


def test_legacy_broadcast_axis_attribute():
    a = np.zeros((2, 3, 4), np.float32)
    b = np.array([1, 2, 3], np.float32)
    add1 = lookup("Add", "", 6).fn
    y = add1(a, b, broadcast=1, axis=1)[0]
    assert y.shape == (2, 3, 4) and y[:, 2, :].min() == 3
    with pytest.raises(ExecutionError, match="does not fit"):
        add1(a, np.zeros((3, 4, 5), np.float32), broadcast=1, axis=1)
    assert lookup("Add", "", 14).fn is Add


def test_binary_ops_return_arrays_for_0d_inputs():
    a, b = np.array(3.0, np.float32), np.array(2.0, np.float32)
    for fn in (Add, Sub, Mul, Div, Pow, Equal):
        y = fn(a, b)[0]
        assert isinstance(y, np.ndarray) and y.shape == ()


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shapes", [((4, 1, 5), (3, 1)), ((2, 3), (2, 3)), ((), (7,))])
def test_binary_matches_onnxruntime(op, shapes):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shapes[0]).astype(np.float32)
    b = (rng.standard_normal(shapes[1]) + 3).astype(np.float32)
    y = lookup(op, "", 17).fn(a, b)[0]
    ref = run_ort(op, [a, b])
    assert y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-6)


def test_variadic_single_input_is_a_copy_and_mean_keeps_dtype():
    x = np.array([1.0, 2.0], np.float16)
    s = Sum(x)[0]
    assert s is not x and s.dtype == np.float16
    m = Mean(x, np.array([3.0, 4.0], np.float16))[0]
    assert m.dtype == np.float16 and m.tolist() == [2.0, 3.0]


def test_clip_variants():
    x = np.array([-5, 0, 5], np.int8)
    assert Clip(x, np.array(-1, np.int8), None)[0].tolist() == [-1, 0, 5]
    assert Clip(x, None, np.array(1, np.int8))[0].tolist() == [-5, 0, 1]
    assert Clip(x, np.array(2, np.int8), np.array(1, np.int8))[0].tolist() == [1, 1, 1]
    y = Clip_1(np.array([-2.0, 0.5, 2.0], np.float32), min=-1.0, max=1.0)[0]
    assert y.dtype == np.float32 and y.tolist() == [-1.0, 0.5, 1.0]
    assert lookup("Clip", "", 6).fn is Clip_1 and lookup("Clip", "", 13).fn is Clip


def test_bitshift_out_of_range_amounts():
    x = np.array([-8, 8, -8, 8], np.int8)
    y = np.array([9, 9, -1, 8], np.int8)
    assert BitShift(x, y, direction="RIGHT")[0].tolist() == [-1, 0, -1, 0]
    assert BitShift(x, y, direction="LEFT")[0].tolist() == [0, 0, 0, 0]
    with pytest.raises(ExecutionError, match="direction"):
        BitShift(x, y, direction="UP")


# ---------------------------------------------------------------------------------- Cast


def test_cast_string_to_numbers():
    s = np.array(["INF", "+inf", "-INF", "NaN", "1e-3", "  2.5 ", "-7"], dtype=object)
    f = Cast(s, to=dtypes.FLOAT)[0]
    assert f.dtype == np.float32
    assert f[0] == np.inf and f[1] == np.inf and f[2] == -np.inf and np.isnan(f[3])
    np.testing.assert_array_equal(f[4:], np.array([1e-3, 2.5, -7], np.float32))
    ints = Cast(np.array(["9007199254740993", "-4"], dtype=object), to=dtypes.INT64)[0]
    assert ints.tolist() == [9007199254740993, -4]  # exact, not via float64
    assert Cast(np.array(["3.7", "-1e1"], dtype=object), to=dtypes.INT32)[0].tolist() == [3, -10]
    assert Cast(np.array(["300"], dtype=object), to=dtypes.INT8)[0].tolist() == [44]  # wraps
    assert Cast(np.array(["0", "1", "2.5"], dtype=object), to=dtypes.BOOL)[0].tolist() == [
        False,
        True,
        True,
    ]
    with pytest.raises(ExecutionError, match="not a number"):
        Cast(np.array(["hello"], dtype=object), to=dtypes.FLOAT)


def test_cast_numbers_to_string_round_trip():
    x = np.array([0.1, -2.5, np.inf, -np.inf, np.nan, 1e-7], np.float32)
    s = Cast(x, to=dtypes.STRING)[0]
    assert s.dtype == object and all(type(v) is str for v in s)
    assert list(s[2:5]) == ["INF", "-INF", "NaN"]
    back = Cast(s, to=dtypes.FLOAT)[0]
    np.testing.assert_array_equal(back, x)
    assert list(Cast(np.array([True, False]), to=dtypes.STRING)[0]) == ["1", "0"]
    assert list(Cast(np.array([-3, 12], np.int64), to=dtypes.STRING)[0]) == ["-3", "12"]


def test_cast_float8_saturate():
    x = np.array([1000.0, -1000.0, np.inf, -np.inf, np.nan, 0.5], np.float32)
    sat = Cast(x, to=dtypes.FLOAT8E4M3FN)[0].astype(np.float32)
    assert sat[:4].tolist() == [448, -448, 448, -448] and np.isnan(sat[4]) and sat[5] == 0.5
    nosat = Cast(x, to=dtypes.FLOAT8E4M3FN, saturate=0)[0].astype(np.float32)
    assert np.isnan(nosat[:5]).all()
    e5 = Cast(x * 100, to=dtypes.FLOAT8E5M2, saturate=0)[0].astype(np.float32)
    assert e5[:4].tolist() == [np.inf, -np.inf, np.inf, -np.inf]
    from_int = Cast(np.array([100000, -3], np.int32), to=dtypes.FLOAT8E5M2FNUZ)[0].astype(
        np.float32
    )
    assert from_int.tolist() == [57344, -3]


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("up", [0.25, 0.5, 1.0, 2.0, 4.0]),
        ("down", [0.125, 0.5, 1.0, 1.0, 2.0]),
        ("nearest", [0.125, 0.5, 1.0, 2.0, 2.0]),
    ],
)
def test_cast_e8m0_round_modes(mode, expected):
    x = np.array([0.15, 0.5, 1.0, 1.5, 2.9], np.float32)
    y = Cast(x, to=dtypes.FLOAT8E8M0, round_mode=mode)[0]
    assert y.dtype == np.dtype(ml_dtypes.float8_e8m0fnu)
    assert y.astype(np.float32).tolist() == expected


def test_cast_e8m0_saturation():
    x = np.array([0.0, np.inf, 1e38 * 3, np.nan, 2.0**-130], np.float32)
    sat = Cast(x, to=dtypes.FLOAT8E8M0)[0].view(np.uint8).tolist()
    assert sat == [0, 254, 254, 255, 0]
    nosat = (
        Cast(x, to=dtypes.FLOAT8E8M0, saturate=0, round_mode="nearest")[0].view(np.uint8).tolist()
    )
    assert nosat == [255, 255, 255, 255, 255]
    # float64 inputs round on their own mantissa, not after a float32 rounding
    assert Cast(np.array([1.0 + 2.0**-40]), to=dtypes.FLOAT8E8M0)[0].astype(
        np.float32
    ).tolist() == [2.0]


def test_cast_opset1_string_target_and_same_type_copy():
    x = np.array([1.5, -2.5], np.float32)
    assert Cast(x, to="INT32")[0].tolist() == [1, -2]
    y = Cast(x, to=dtypes.FLOAT)[0]
    assert y is not x and y.tolist() == x.tolist()
    with pytest.raises(ExecutionError, match="unknown target type"):
        Cast(x, to="FLOATY")


def test_cast_wraps_integers_and_castlike():
    assert Cast(np.array([200, 300], np.int16), to=dtypes.INT8)[0].tolist() == [-56, 44]
    y = CastLike(np.array([1.7], np.float64), np.zeros(0, ml_dtypes.bfloat16))[0]
    assert y.dtype == np.dtype(ml_dtypes.bfloat16)
    b = Cast(np.array([0.5, 0.0], ml_dtypes.bfloat16), to=dtypes.BOOL)[0]
    assert b.tolist() == [True, False]


def test_bitcast_subbyte_and_errors():
    x = np.array([-1, 7, -8], ml_dtypes.int4)
    u = BitCast(x, to=dtypes.UINT4)[0]
    assert u.dtype == np.dtype(ml_dtypes.uint4) and u.astype(np.int32).tolist() == [15, 7, 8]
    back = BitCast(u, to=dtypes.INT4)[0]
    assert back.astype(np.int32).tolist() == [-1, 7, -8]
    f = BitCast(np.array([1.0], np.float32), to=dtypes.INT32)[0]
    assert f.tolist() == [0x3F800000]
    with pytest.raises(ExecutionError, match="same bit width"):
        BitCast(np.array([1.0], np.float32), to=dtypes.INT64)
    with pytest.raises(ExecutionError, match="same bit width"):
        BitCast(np.array([1], np.uint8), to=dtypes.UINT4)
