"""FusedConv, FusedGemm, FusedMatMul (onnxruntime's offline optimizer's ops) and NhwcConv."""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.errors import ExecutionError

from ._contrib import assert_close, check, f32_tol, zg_run

_ACTS = [
    ("", None),
    ("Relu", None),
    ("Tanh", None),
    ("Sigmoid", None),
    ("LeakyRelu", [0.2]),
    ("Clip", [-0.5, 0.7]),
    ("HardSigmoid", [0.3, 0.4]),
]


def _r(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("activation,params", _ACTS)
@pytest.mark.parametrize("with_z", [False, True])
def test_fused_conv(activation, params, with_z):
    rng = np.random.default_rng(0)
    x, w, b = _r(rng, 1, 4, 7, 7), _r(rng, 6, 2, 3, 3), _r(rng, 6)
    attrs = {"pads": [1, 1, 1, 1], "group": 2, "strides": [1, 1]}
    if activation:
        attrs["activation"] = activation
    if params:
        attrs["activation_params"] = params
    z = _r(rng, 1, 6, 7, 7) if with_z else None
    check("FusedConv", [("x", x), ("w", w), ("b", b), ("z", z)], attrs=attrs, n_terms=18)


@pytest.mark.parametrize(
    "activation,attrs",
    [("Relu", {}), ("LeakyRelu", {"activation_alpha": 0.1}), ("Tanh", {}),
     ("Sigmoid", {}), ("HardSigmoid", {"activation_alpha": 0.3, "activation_beta": 0.6})],
)  # fmt: skip
@pytest.mark.parametrize("trans", [(0, 0), (1, 1)])
def test_fused_gemm(activation, attrs, trans):
    rng = np.random.default_rng(1)
    a = _r(rng, 5, 12) if not trans[0] else _r(rng, 12, 5)
    b = _r(rng, 12, 7) if not trans[1] else _r(rng, 7, 12)
    attrs = dict(attrs, alpha=0.5, beta=2.0, transA=trans[0], transB=trans[1])
    if activation:
        attrs["activation"] = activation
    check("FusedGemm", [("a", a), ("b", b), ("c", _r(rng, 7))], attrs=attrs, n_terms=12)


@pytest.mark.parametrize(
    "a_shape,b_shape,attrs",
    [
        ((3, 4), (4, 5), {"alpha": 0.125}),
        ((2, 4, 3), (2, 5, 4), {"transA": 1, "transB": 1}),
        ((2, 3, 4), (4, 5), {"alpha": 2.0}),
        ((4, 2, 5), (2, 5, 6), {"transBatchA": 1}),
        ((3, 2, 4, 5), (5, 2, 4, 6), {"transBatchA": 1, "transBatchB": 1}),
        ((5, 2, 4), (2, 6, 4), {"transBatchA": 1, "transB": 1, "alpha": 0.5}),
    ],
)
def test_fused_matmul(a_shape, b_shape, attrs):
    rng = np.random.default_rng(2)
    check("FusedMatMul", [("a", _r(rng, *a_shape)), ("b", _r(rng, *b_shape))], attrs=attrs,
          n_terms=6)  # fmt: skip


def test_nhwc_conv_matches_nchw_conv():
    """onnxruntime has NhwcConv on CUDA only: compare with a float64 direct convolution."""
    rng = np.random.default_rng(3)
    x, w, b = _r(rng, 2, 6, 6, 3), _r(rng, 4, 3, 3, 3), _r(rng, 4)
    (y,) = zg_run("NhwcConv", [("x", x), ("w", w), ("b", b)], attrs={"pads": [1, 1, 1, 1]})
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2, 6, 6, 4))
    for i in range(6):
        for j in range(6):
            ref[:, i, j] = np.einsum("nhwc,mhwc->nm", xp[:, i : i + 3, j : j + 3], w) + b
    assert_close(y, ref.astype(np.float32), f32_tol(ref, 27))


def test_unknown_activation_is_named():
    rng = np.random.default_rng(4)
    ins = [("a", _r(rng, 2, 3)), ("b", _r(rng, 3, 2))]
    with pytest.raises(ExecutionError, match="unsupported activation 'Gelu'"):
        zg_run("FusedGemm", ins, attrs={"activation": "Gelu"})
