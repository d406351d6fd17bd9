"""com.microsoft activations: onnxruntime parity where its CPU provider has the op, and an
independent numpy formula for the GPU-only ones (BiasAdd, BiasSplitGelu, BiasSoftmax)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ziggurat.errors import ExecutionError

from ._contrib import assert_close, check, f32_tol, zg_run

_erf = np.vectorize(math.erf)


def _gelu64(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _r(rng, *shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 3).astype(dtype)


@pytest.mark.parametrize("shape", [(7,), (2, 3, 16), (1, 0, 4)])
def test_gelu_bias_gelu(shape):
    rng = np.random.default_rng(0)
    x, b = _r(rng, *shape), _r(rng, shape[-1])
    check("Gelu", [("x", x)], ulps=16)
    check("BiasGelu", [("x", x), ("b", b)], ulps=16)


@pytest.mark.parametrize("bias", [False, True])
def test_fast_gelu(bias):
    rng = np.random.default_rng(1)
    x = _r(rng, 2, 5, 32)
    check("FastGelu", [("x", x), ("b", _r(rng, 32) if bias else None)], ulps=16)


@pytest.mark.parametrize("alpha", [None, 1.0, -0.5])
def test_quick_gelu(alpha):
    rng = np.random.default_rng(2)
    attrs = {} if alpha is None else {"alpha": alpha}
    check("QuickGelu", [("x", _r(rng, 3, 40))], attrs=attrs, ulps=16)


def test_float16_gelu_keeps_dtype():
    rng = np.random.default_rng(3)
    x = _r(rng, 4, 8, dtype=np.float16)
    ref, got = check("FastGelu", [("x", x)], ulps=1024)  # half precision: ~1 float16 ulp
    assert got[0].dtype == np.float16


# onnxruntime runs these on CUDA only: compare with float64 formulas.


def test_bias_add():
    rng = np.random.default_rng(4)
    x, b, s = _r(rng, 2, 3, 8), _r(rng, 8), _r(rng, 2, 3, 8)
    (y,) = zg_run("BiasAdd", [("x", x), ("b", b), ("s", s)])
    ref = x.astype(np.float64) + b + s
    assert_close(y, ref.astype(np.float32), f32_tol(ref, 2))


def test_bias_split_gelu():
    rng = np.random.default_rng(5)
    x, b = _r(rng, 2, 3, 10), _r(rng, 10)
    (y,) = zg_run("BiasSplitGelu", [("x", x), ("b", b)])
    v = x.astype(np.float64) + b
    ref = v[..., :5] * _gelu64(v[..., 5:])
    assert_close(y, ref.astype(np.float32), f32_tol(ref, 16))
    with pytest.raises(ExecutionError, match="even"):
        zg_run("BiasSplitGelu", [("x", x[..., :9]), ("b", b[:9])])


@pytest.mark.parametrize("axis", [1, 2, -1])
@pytest.mark.parametrize("bias_shape,inner", [((1, 3, 6), 1), ((3, 6), 0), ((2, 1, 6), 1)])
def test_bias_softmax(axis, bias_shape, inner):
    rng = np.random.default_rng(6)
    x, b = _r(rng, 2, 3, 6), _r(rng, *bias_shape)
    (y,) = zg_run(
        "BiasSoftmax", [("x", x), ("b", b)], attrs={"axis": axis, "is_inner_broadcast": inner}
    )
    v = x.astype(np.float64) + b
    a = axis % 3
    flat = v.reshape(int(np.prod(v.shape[:a])), -1)
    e = np.exp(flat - flat.max(-1, keepdims=True))
    ref = (e / e.sum(-1, keepdims=True)).reshape(v.shape)
    assert_close(y, ref.astype(np.float32), f32_tol(ref, flat.shape[1]))
