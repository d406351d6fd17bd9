"""Convolution and pooling: a conv output sums C/group * KH * KW products, so |error| <=
(n + 2) eps (|x| conv |w|), computed with the CPU kernel on absolute values."""

from __future__ import annotations

import numpy as np
import pytest

from ._harness import EPS, assert_within, cpu, dev, rand, ulp

RNG = np.random.default_rng(17)

CASES = [  # (x shape, w shape, attrs)
    ((1, 3, 9, 9), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 4, 8, 7), (4, 1, 3, 3), {"group": 4, "pads": [0, 0, 1, 1], "strides": [2, 2]}),
    ((1, 4, 9, 9), (6, 2, 3, 2), {"group": 2, "dilations": [2, 1], "pads": [2, 0, 1, 1]}),
    ((1, 8, 5, 5), (6, 8, 1, 1), {}),  # pointwise: the matmul path
    ((2, 3, 11), (5, 3, 4), {"strides": [2], "pads": [1, 2]}),  # 1-D
    ((1, 2, 7, 7), (3, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
]


@pytest.mark.parametrize("xs,ws,attrs", CASES)
def test_conv(be, xs, ws, attrs):
    x, w, b = rand(RNG, *xs), rand(RNG, *ws), rand(RNG, ws[0])
    (got,) = dev(be, "Conv", [x, w, b], attrs, opset=11)
    (want,) = cpu("Conv", [x, w, b], attrs, opset=11)
    (mag,) = cpu("Conv", [np.abs(x), np.abs(w)], attrs, opset=11)
    n = int(np.prod(ws[1:]))
    assert_within(got, want, (n + 2) * EPS * mag + 4 * ulp(want) + 2 * ulp(b).max(), "Conv")


@pytest.mark.parametrize("ks,group", [((3, 3), 4), ((1, 1), 1)])
def test_fused_conv_with_residual_and_clip(be, ks, group):
    x = rand(RNG, 1, 4, 6, 6)
    w = rand(RNG, 4, 4 // group, *ks)
    b, skip = rand(RNG, 4), rand(RNG, 1, 4, 6, 6)
    pads = [k // 2 for k in ks] * 2
    attrs = {"group": group, "pads": pads, "kernel_shape": list(ks), "activation": "clip",
             "clip_min": 0.0, "clip_max": 6.0, "layout": "nhwc"}  # fmt: skip
    (got,) = dev(be, "FusedConv", [x, w, b, skip], attrs, domain="ziggurat", opset=1)
    (want,) = cpu("FusedConv", [x, w, b, skip], attrs, domain="ziggurat", opset=1)
    conv_attrs = {"group": group, "pads": pads}
    (mag,) = cpu("Conv", [np.abs(x), np.abs(w)], conv_attrs, opset=11)
    n = int(np.prod(w.shape[1:]))
    tol = (n + 4) * EPS * (mag + np.abs(skip) + np.abs(b)[:, None, None])
    assert_within(got, want, tol, "FusedConv")
    assert got.min() >= 0 and got.max() <= 6


@pytest.mark.parametrize(
    "op,attrs",
    [("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
     ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
     ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2]}),
     ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
     ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
     ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
     ("AveragePool", {"kernel_shape": [3], "strides": [2]})],
)  # fmt: skip
def test_pools(be, op, attrs):
    x = rand(RNG, 2, 3, 7) if len(attrs["kernel_shape"]) == 1 else rand(RNG, 2, 3, 7, 7)
    (got,) = dev(be, op, [x], attrs, opset=19)
    (want,) = cpu(op, [x], attrs, opset=19)
    if op == "MaxPool":
        np.testing.assert_array_equal(got, want)
    else:
        assert_within(got, want, 12 * EPS * np.abs(x).max() + 2 * ulp(want), op)
