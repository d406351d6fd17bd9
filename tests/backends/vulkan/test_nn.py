"""Softmax, LayerNormalization (and the fused forms), reductions."""

from __future__ import annotations

import numpy as np
import pytest

from ._harness import EPS, assert_within, cpu, dev, rand, refuses, ulp

RNG = np.random.default_rng(13)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis,opset", [(-1, 13), (1, 13), (0, 13), (1, 11)])
def test_softmax_axes(be, op, axis, opset):
    x = rand(RNG, 3, 70, 4, lo=-8, hi=8)
    (got,) = dev(be, op, [x], {"axis": axis}, opset=opset)
    (want,) = cpu(op, [x], {"axis": axis}, opset=opset)
    R = x.shape[axis] if opset >= 13 else int(np.prod(x.shape[axis:]))
    # exp of arguments down to -16: 3 + 2*16 ulp; the sum: R eps relative; the division 2.5 ulp
    rel = (R + 3 + 2 * 16 + 3) * EPS
    tol = rel * np.abs(want) + 4 * ulp(want) + (rel if op == "LogSoftmax" else 0)
    assert_within(got, want, tol, op)


def _ln_tol(x, gamma, beta, y):
    R = x.shape[-1]
    # mean and variance each carry ~R eps relative error; normalised values |z| <= sqrt(R)
    z = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    return (2 * R + 16) * EPS * (np.abs(z * gamma) + np.abs(beta)) + 4 * ulp(y)


def test_layer_normalization(be):
    x, g, b = rand(RNG, 2, 3, 96), rand(RNG, 96), rand(RNG, 96)
    (got,) = dev(be, "LayerNormalization", [x, g, b], {"axis": -1, "epsilon": 1e-5}, opset=17)
    (want,) = cpu("LayerNormalization", [x, g, b], {"axis": -1, "epsilon": 1e-5}, opset=17)
    assert_within(got, want, _ln_tol(x, g, b, want), "LayerNormalization")
    (got,) = dev(be, "LayerNorm", [x, g, b], {"epsilon": 1e-5}, domain="ziggurat", opset=1)
    assert_within(got, want, _ln_tol(x, g, b, want), "ziggurat::LayerNorm")


def test_skip_layer_norm_with_its_sum_output(be):
    a, s, g, b = rand(RNG, 2, 4, 64), rand(RNG, 2, 4, 64), rand(RNG, 64), rand(RNG, 64)
    attrs = {"epsilon": 1e-12, "axis": -1}
    got = dev(be, "SkipLayerNorm", [a, s, g, b], attrs, domain="ziggurat", opset=1, n_outputs=2)
    want = cpu("SkipLayerNorm", [a, s, g, b], {**attrs, "n_outputs": 2}, domain="ziggurat", opset=1)
    np.testing.assert_array_equal(got[1], want[1])  # the residual sum: one rounding each
    assert_within(got[0], want[0], _ln_tol(a + s, g, b, want[0]), "SkipLayerNorm")


REDUCE = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL2",
          "ReduceL1", "ReduceLogSumExp", "ReduceProd"]  # fmt: skip


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("axes,keep", [([1], 1), ([0, 2], 0), ([-1], 1), (None, 0)])
def test_reductions(be, op, axes, keep):
    x = rand(RNG, 3, 40, 5, lo=0.5, hi=1.5) * np.where(RNG.random((3, 40, 5)) < 0.5, -1, 1).astype(
        np.float32
    )
    if op == "ReduceProd":
        x = rand(RNG, 3, 6, 5, lo=0.8, hi=1.25)
    inputs = [x] if axes is None else [x, np.array(axes, np.int64)]
    (got,) = dev(be, op, inputs, {"keepdims": keep}, opset=18)
    (want,) = cpu(op, inputs, {"keepdims": keep}, opset=18)
    R = x.size // max(want.size, 1)
    scale = {"ReduceSumSquare": np.abs(x).max() ** 2, "ReduceProd": 1.25**R}.get(
        op, np.abs(x).max()
    )
    tol = (R + 4) * EPS * R * scale + 8 * ulp(want)
    if op == "ReduceLogSumExp":
        tol = tol + (R + 40) * EPS
    assert_within(got, want, tol, op)


def test_global_pools(be):
    x = rand(RNG, 2, 3, 5, 6)
    for op in ("GlobalAveragePool", "GlobalMaxPool"):
        (got,) = dev(be, op, [x])
        (want,) = cpu(op, [x])
        assert_within(got, want, 32 * EPS * np.abs(x).max() + 2 * ulp(want), op)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keep,last", [(1, 1, 0), (0, 0, 0), (-1, 1, 1), (1, 0, 1)])
def test_arg_reductions_with_ties(be, op, axis, keep, last):
    x = RNG.integers(-3, 4, (4, 70, 3)).astype(np.float32)  # many ties
    attrs = {"axis": axis, "keepdims": keep, "select_last_index": last}
    (got,) = dev(be, op, [x], attrs, opset=13)
    (want,) = cpu(op, [x], attrs, opset=13)
    assert got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_layer_normalization_over_several_axes(be):
    x, g, b = rand(RNG, 2, 3, 4, 5), rand(RNG, 3, 4, 5), rand(RNG, 3, 4, 5)
    attrs = {"axis": 1, "epsilon": 1e-5}
    (got,) = dev(be, "LayerNormalization", [x, g, b], attrs, opset=17)
    (want,) = cpu("LayerNormalization", [x, g, b], attrs, opset=17)
    flat = x.reshape(2, -1)
    tol = _ln_tol(flat, g.reshape(-1), b.reshape(-1), want.reshape(2, -1)).reshape(x.shape)
    assert_within(got, want, tol, "LayerNormalization axis=1")
    per_feature = ((2, 3, 4, 5), np.dtype(np.float32)), ((5,), np.dtype(np.float32))
    assert "scale/bias" in refuses(be, "LayerNormalization", list(per_feature), attrs, opset=17)
