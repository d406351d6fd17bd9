"""Elementwise kernels against the CPU kernels, tolerances from WGSL's accuracy rules: +, -, *
correctly rounded (exact here), / within 2.5 ulp, exp within 3 + 2|x| ulp, log/sqrt within a few
ulp, and erf within its stated bound (shaders/common.wgsl)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ._harness import EPS, assert_within, cpu, dev, rand, refuses, ulp

RNG = np.random.default_rng(7)
BCAST = [((2, 3, 4), (3, 1)), ((4,), (2, 3, 4)), ((1, 3, 1), (2, 1, 5)), ((), (2, 2))]


@pytest.mark.parametrize("op,ulps", [("Add", 0.5), ("Sub", 0.5), ("Mul", 0.5), ("Div", 2.5)])
@pytest.mark.parametrize("sa,sb", BCAST)
def test_binary_broadcasting(be, op, ulps, sa, sb):
    a, b = rand(RNG, *sa), rand(RNG, *sb, lo=0.5, hi=2.0)
    (got,) = dev(be, op, [a, b])
    (want,) = cpu(op, [a, b])
    assert_within(got, want, ulps * ulp(want), op)


def test_integer_arithmetic_is_exact(be):
    a = RNG.integers(-1000, 1000, (3, 4)).astype(np.int32)
    b = RNG.integers(-1000, 1000, (4,)).astype(np.int32)
    b[b == 0] = 7  # Div: no division by zero (undefined in ONNX)
    for op in ("Add", "Sub", "Mul", "Max", "Min", "Div"):
        (got,) = dev(be, op, [a, b], opset=13)
        np.testing.assert_array_equal(got, cpu(op, [a, b], opset=13)[0])


def test_pow_with_negative_bases(be):
    a = np.array([-2.0, -1.5, 0.0, 0.0, 3.0, 2.5, -3.0, 4.0], np.float32)
    b = np.array([2.0, 3.0, 0.0, 2.0, 0.5, 1.7, -1.0, -0.5], np.float32)
    (got,) = dev(be, "Pow", [a, b])
    (want,) = cpu("Pow", [a, b])
    # exp2(b * log2|a|): 3 ulp for log2, 3 + 2|t| ulp for exp2 of t = b log2|a|
    t = np.abs(b * np.log2(np.maximum(np.abs(a), 1e-30)))
    assert_within(got, want, (8 + 4 * t) * ulp(want), "Pow")


UNARY = {  # op -> (input range, tolerance in ulp of the result or an absolute bound)
    "Relu": ((-3, 3), 0), "Neg": ((-3, 3), 0), "Abs": ((-3, 3), 0), "Floor": ((-3, 3), 0),
    "Ceil": ((-3, 3), 0), "Sign": ((-3, 3), 0), "Sqrt": ((0.01, 9), 2.5), "Reciprocal": ((0.5, 4), 2.5),
    "Exp": ((-4, 4), 3 + 2 * 4), "Log": ((0.01, 9), None), "Sigmoid": ((-8, 8), 4 + 2 * 8),
    "Tanh": ((-12, 12), None),
}  # fmt: skip


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(be, op):
    (lo, hi), ulps = UNARY[op]
    x = rand(RNG, 4, 33, lo=lo, hi=hi)
    (got,) = dev(be, op, [x], opset=13)
    (want,) = cpu(op, [x], opset=13)
    if ulps is None:  # log and tanh: WGSL bounds them absolutely near their zeros
        tol = 8 * ulp(want) + 2.0**-21
    else:
        tol = ulps * ulp(want)
    assert_within(got, want, tol, op)


def test_erf_meets_its_stated_bound(be):
    # |error| <= 2.5e-7 over the whole line (shaders/common.wgsl); checked on a dense grid
    # against float64 math.erf, and relative accuracy kept near zero by the Taylor branch.
    x = np.concatenate([np.linspace(-6, 6, 200_001), np.geomspace(1e-6, 0.5, 2000)])
    x = x.astype(np.float32)
    (got,) = dev(be, "Erf", [x], opset=13)
    want = np.array([math.erf(float(v)) for v in x])
    err = np.abs(got - want)
    assert err.max() <= 2.5e-7, err.max()
    small = np.abs(x) < 0.5
    assert (err[small] <= 4 * ulp(want[small])).all()


@pytest.mark.parametrize(
    "op,domain,attrs",
    [("Gelu", "ziggurat", {}), ("GeluTanh", "ziggurat", {}), ("Gelu", "", {"approximate": "tanh"}),
     ("Gelu", "", {})],
)  # fmt: skip
def test_gelu_forms(be, op, domain, attrs):
    x = rand(RNG, 3, 50, lo=-6, hi=6)
    opset = 20 if not domain else 1
    (got,) = dev(be, op, [x], attrs, domain=domain, opset=opset)
    (want,) = cpu(op, [x], attrs, domain=domain, opset=opset)
    # 0.5 x (1 + erf): |x|/2 times erf's 2.5e-7, plus a few roundings of the result; the tanh
    # form: tanh's absolute 2^-21-ish error scaled the same way.
    erf_part = (
        0.5 * np.abs(x) * (2.5e-7 if "approximate" not in attrs and op != "GeluTanh" else 2.0**-20)
    )
    assert_within(got, want, erf_part + 8 * ulp(want) + 8 * ulp(x), op)


def test_parameterised_activations(be):
    x = rand(RNG, 2, 40, lo=-4, hi=4)
    for op, attrs in [("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}),
                      ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {})]:  # fmt: skip
        (got,) = dev(be, op, [x], attrs, opset=14)
        (want,) = cpu(op, [x], attrs, opset=14)
        tol = (3 + 2 * 4) * ulp(want) + 2 * ulp(x)
        if op == "Elu":  # alpha * (exp(x) - 1): exp's (3 + 2|x|) ulp of 1, not of the result
            tol = tol + attrs["alpha"] * (3 + 2 * 4) * EPS
        assert_within(got, want, tol, op)


def test_clip_by_inputs_and_by_attributes(be):
    x = rand(RNG, 3, 7)
    lo, hi = np.float32(-0.5), np.float32(1.25)
    (got,) = dev(be, "Clip", [x, lo, hi], opset=13)
    np.testing.assert_array_equal(got, cpu("Clip", [x, lo, hi], opset=13)[0])
    (got,) = dev(be, "Clip", [x, None, hi], opset=13)
    np.testing.assert_array_equal(got, cpu("Clip", [x, None, hi], opset=13)[0])
    (got,) = dev(be, "Clip", [x], {"min": -1.0, "max": 0.5}, opset=6)
    np.testing.assert_array_equal(got, cpu("Clip", [x], {"min": -1.0, "max": 0.5}, opset=6)[0])


def test_comparisons_logic_where_are_exact(be):
    a = RNG.integers(-3, 3, (2, 5)).astype(np.int64)
    b = RNG.integers(-3, 3, (5,)).astype(np.int64)
    for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
        (got,) = dev(be, op, [a, b], opset=16)
        np.testing.assert_array_equal(got, cpu(op, [a, b], opset=16)[0])
    p, q = a > 0, b < 1
    for op in ("And", "Or", "Xor"):
        (got,) = dev(be, op, [p, q])
        np.testing.assert_array_equal(got, cpu(op, [p, q])[0])
    (got,) = dev(be, "Not", [p])
    np.testing.assert_array_equal(got, ~p)
    x, y = rand(RNG, 2, 5), rand(RNG, 1, 5)
    (got,) = dev(be, "Where", [p, x, y], opset=16)
    np.testing.assert_array_equal(got, cpu("Where", [p, x, y], opset=16)[0])
    (got,) = dev(be, "Where", [p, a, b], opset=16)
    np.testing.assert_array_equal(got, cpu("Where", [p, a, b], opset=16)[0])


@pytest.mark.parametrize("to,src", [(1, np.int64), (9, np.float32), (1, np.bool_), (7, np.int32),
                                    (9, np.int64), (6, np.bool_), (1, np.int32)])  # fmt: skip
def test_cast_where_exact(be, to, src):
    x = (RNG.integers(-5, 5, (3, 4)) * (1 if src != np.float32 else 0.5)).astype(src)
    (got,) = dev(be, "Cast", [x], {"to": to}, opset=13)
    (want,) = cpu("Cast", [x], {"to": to}, opset=13)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_variadic_and_batchnorm(be):
    xs = [rand(RNG, 2, 3), rand(RNG, 3), rand(RNG, 1, 3)]
    for op in ("Sum", "Mean", "Max", "Min"):
        (got,) = dev(be, op, xs, opset=13)
        (want,) = cpu(op, xs, opset=13)
        assert_within(got, want, 4 * ulp(want) + 4 * EPS * np.abs(xs[0]).max(), op)
    x = rand(RNG, 2, 3, 4, 4)
    s, b, m = rand(RNG, 3), rand(RNG, 3), rand(RNG, 3)
    v = rand(RNG, 3, lo=0.5, hi=2)
    (got,) = dev(be, "BatchNormalization", [x, s, b, m, v], {"epsilon": 1e-3}, opset=15)
    (want,) = cpu("BatchNormalization", [x, s, b, m, v], {"epsilon": 1e-3}, opset=15)
    # a handful of roundings, each relative to the larger terms |x - mean| * |scale'|, |bias|
    scale = np.abs(s) / np.sqrt(v + 1e-3)
    big = (np.abs(x) + np.abs(m)[:, None, None]) * scale[:, None, None] + np.abs(b)[:, None, None]
    assert_within(got, want, 8 * EPS * big, "BatchNormalization")


def test_supports_refuses_what_wgsl_cannot_do_exactly(be):
    f64 = ((2, 3), np.dtype(np.float64))
    assert "float64" in refuses(be, "Add", [f64, f64], opset=14)
    i64 = ((2, 3), np.dtype(np.int64))
    assert "int64" in refuses(be, "Add", [i64, i64], opset=14)
    assert refuses(be, "Equal", [i64, i64], opset=13) is None
    assert refuses(be, "Cast", [((3,), np.dtype(np.float32))], {"to": 7}, opset=13)
    huge = ((be.max_binding // 4 + 1,), np.dtype(np.float32))
    assert "binding" in refuses(be, "Relu", [huge], opset=14)
    big = ((be.max_binding // 8, 1), np.dtype(np.float32))
    assert "output binding" in refuses(be, "Add", [big, ((1, 4), np.dtype(np.float32))], opset=14)
