"""Fused transformer kernels (ops/fused_transformer.py) against float64 references and onnxruntime.

Tolerances come from the computation: float32 eps times the length of the reduction involved (a
dot product of length K rounds by at most about K * eps relative to the sum of |terms|), plus the
few roundings of the elementwise steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.ops.test_conv import run_ort
from ziggurat.errors import ExecutionError
from ziggurat.ops.fused_transformer import FusedAttention, GeluTanh, LayerNorm, SkipLayerNorm

EPS32 = float(np.finfo(np.float32).eps)


def _gelu_tanh64(x):
    w = x.astype(np.float64)
    return 0.5 * w * (1 + np.tanh(math.sqrt(2 / math.pi) * (w + 0.044715 * w**3)))


@pytest.mark.parametrize("shape", [(3, 5), (2, 40000), ()])
def test_gelu_tanh_matches_float64_formula(shape):
    """Error bound: the inner polynomial rounds ~4 times (relative eps/2 each) and tanh adds ~1 ulp;
    tanh' <= 1, so 1 + tanh(u) is off by <= 3 eps * (1 + |u|) and the product by that times |x|/2
    plus 3 roundings of the result."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    y = GeluTanh(x)[0]
    assert y.dtype == np.float32 and y.shape == x.shape
    ref = _gelu_tanh64(x)
    w = np.abs(x.astype(np.float64))
    u = math.sqrt(2 / math.pi) * (w + 0.044715 * w**3)
    bound = 3 * EPS32 * (1 + u) * w / 2 + 3 * EPS32 * np.abs(ref)
    assert (np.abs(y - ref) <= bound).all()


def test_gelu_tanh_special_values_follow_the_unfused_graph():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, -30.0, 30.0, 1e20, -1e20], np.float32)
    y = GeluTanh(x)[0]
    # 0.5 * x * (1 + tanh(...)) evaluated op by op in float32, as the exported graph does
    with np.errstate(all="ignore"):
        c = np.float32(math.sqrt(2 / math.pi))
        ref = np.float32(0.5) * x * (np.float32(1) + np.tanh(c * (x + np.float32(0.044715) * x**3)))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(y[ok], ref[ok])
    assert GeluTanh(x.astype(np.float64))[0].dtype == np.float64


def test_gelu_tanh_float16_keeps_dtype():
    x = np.linspace(-4, 4, 33).astype(np.float16)
    y = GeluTanh(x)[0]
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), _gelu_tanh64(x), atol=4e-3)  # fp16 eps 1e-3


def _ln64(x, g, b, eps, n_axes=1):
    w = x.astype(np.float64)
    axes = tuple(range(x.ndim - n_axes, x.ndim))
    m = w.mean(axis=axes, keepdims=True)
    v = ((w - m) ** 2).mean(axis=axes, keepdims=True)
    return (w - m) / np.sqrt(v + eps) * g.reshape(x.shape[x.ndim - n_axes :]) + (
        0 if b is None else b.reshape(x.shape[x.ndim - n_axes :])
    )


def _ln_tol(x, g, b, cols):
    """The mean and variance are sums of ``cols`` terms (error <= cols * eps relative); the
    normalized value then carries ~(cols + 4) eps relative error, times |scale|, plus |bias| eps."""
    z = 4.0 * math.sqrt(cols)  # |x - mean| / std is at most sqrt(cols)
    return (cols + 4) * EPS32 * z * np.abs(g).max() + EPS32 * (0 if b is None else np.abs(b).max())


@pytest.mark.parametrize("with_bias", [True, False])
def test_skip_layer_norm_matches_layernorm_of_the_sum(with_bias):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 7, 48)).astype(np.float32) + 3
    b = rng.standard_normal((1, 7, 48)).astype(np.float32)  # broadcast skip (position embeddings)
    g = (1 + 0.1 * rng.standard_normal(48)).astype(np.float32)
    beta = (0.1 * rng.standard_normal(48)).astype(np.float32) if with_bias else None
    y, s = SkipLayerNorm(a, b, g, beta, epsilon=1e-5, n_outputs=2)
    assert y.dtype == np.float32 and y.shape == a.shape
    np.testing.assert_array_equal(s, a + b)
    np.testing.assert_allclose(y, _ln64(a + b, g, beta, 1e-5), rtol=0, atol=_ln_tol(a, g, beta, 48))
    (y1,) = SkipLayerNorm(a, b, g, beta, epsilon=1e-5)
    np.testing.assert_array_equal(y1, y)
    ref = run_ort("LayerNormalization", [a + b, g, beta], epsilon=1e-5, axis=-1)
    np.testing.assert_allclose(y, ref, rtol=0, atol=2 * _ln_tol(a, g, beta, 48))


def test_skip_layer_norm_over_two_axes_and_errors():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    g = rng.standard_normal((4, 5)).astype(np.float32)
    (y,) = SkipLayerNorm(a, a, g, None, axis=1, epsilon=1e-3)
    np.testing.assert_allclose(y, _ln64(2 * a, g, None, 1e-3, 2), atol=_ln_tol(a, g, None, 20))
    with pytest.raises(ExecutionError, match="one value per normalized element"):
        SkipLayerNorm(a, a, g[0, :3], None)


def test_layer_norm_kernel_and_feature_check():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 64)).astype(np.float32) * 10 + 100  # large mean: 2-pass variance
    g = rng.standard_normal(64).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    (y,) = LayerNorm(x, g, b, epsilon=1e-12)
    tol = _ln_tol(x, g, b, 64) * (1 + 100 / 10)  # the mean's rounding scales with |x| / std
    np.testing.assert_allclose(y, _ln64(x, g, b, 1e-12), rtol=0, atol=tol)
    with pytest.raises(ExecutionError, match="one value per feature"):
        LayerNorm(x, g[:10], b)


def _attention64(q, k_t, v, mask, scale, nan_to_zero):
    s = np.matmul(q.astype(np.float64) * scale, k_t.astype(np.float64))
    if mask is not None:
        s = s + mask
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    if nan_to_zero:
        p = np.where(np.isnan(p), 0, p)
    return p @ v.astype(np.float64)


def _attention_tol(q, k_t, v, scale):
    """Scores are length-D dot products: error <= D eps sum|q_i k_i| <= D^2 eps max|q| max|k|,
    times the scale (delta). Softmax turns an
    absolute score error delta into a relative probability error <= 2 delta; the output sums T
    terms p * v (T eps relative) on top."""
    d, t = q.shape[-1], k_t.shape[-1]
    delta = d * EPS32 * np.abs(q).max() * np.abs(k_t).max() * abs(scale) * d
    return (2 * delta + (t + 4) * EPS32) * np.abs(v).max()


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dims", [(2, 3, 9, 8), (2, 4, 64, 16)])  # numpy / oneDNN with post-ops
def test_fused_attention_matches_float64_and_onnxruntime_graph(masked, dims):
    rng = np.random.default_rng(4)
    b, h, s, d = dims
    x = rng.standard_normal((b, s, h * d)).astype(np.float32)
    q = x.reshape(b, s, h, d).transpose(0, 2, 1, 3)  # strided per-head views, as exported
    k_t = rng.standard_normal((b, s, h, d)).astype(np.float32).transpose(0, 2, 3, 1)
    v = rng.standard_normal((b, h, s, d)).astype(np.float32)
    mask = None
    if masked:
        mask = np.where(rng.random((b, 1, 1, s)) < 0.3, -np.inf, 0).astype(np.float32)
        mask[1, ..., :] = -np.inf  # batch 1: every key masked -> zeros with nan_to_zero
    scale = 1 / math.sqrt(d)
    (y,) = FusedAttention(q, k_t, v, mask, scale=scale, nan_to_zero=1)
    assert y.dtype == np.float32 and y.shape == (b, h, s, d)
    ref = _attention64(q, k_t, v, mask, scale, True)
    np.testing.assert_allclose(y, ref, rtol=0, atol=_attention_tol(q, k_t, v, scale))
    if masked:
        assert (y[1] == 0).all()
        (y_nan,) = FusedAttention(q, k_t, v, mask, scale=scale, nan_to_zero=0)
        assert np.isnan(y_nan[1]).all() and not np.isnan(y_nan[0]).any()


def test_fused_attention_float64_and_broadcast_mask_shape():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((1, 2, 4, 3))
    k_t = rng.standard_normal((1, 2, 3, 4))
    v = rng.standard_normal((1, 2, 4, 3))
    mask = rng.standard_normal((3, 1, 1, 4))  # widens the batch: scores + mask is bigger
    (y,) = FusedAttention(q, k_t, v, mask, scale=0.5)
    assert y.dtype == np.float64 and y.shape == (3, 2, 4, 3)
    np.testing.assert_allclose(y, _attention64(q, k_t, v, mask, 0.5, False), rtol=1e-12)


def test_fused_attention_float16_takes_the_op_by_op_path():
    """float16 goes through MatMul/Softmax kernels (float32 inside, rounded to float16 at each
    op's output): errors of a few float16 ulps (eps 9.8e-4) of the output's scale."""
    rng = np.random.default_rng(6)
    q, k_t, v = (
        rng.standard_normal(s).astype(np.float16) for s in ((2, 5, 4), (2, 4, 5), (2, 5, 4))
    )
    mask = np.zeros((1, 5, 5), np.float16)
    mask[..., 0, :] = -np.inf  # query 0 sees no key
    (y,) = FusedAttention(q, k_t, v, mask, scale=0.5, nan_to_zero=1)
    assert y.dtype == np.float16 and y.shape == (2, 5, 4)
    ref = _attention64(q, k_t, v, mask.astype(np.float64), 0.5, True)
    fp16_eps = float(np.finfo(np.float16).eps)
    np.testing.assert_allclose(
        y.astype(np.float64), ref, rtol=0, atol=8 * fp16_eps * np.abs(v).max()
    )
    assert (y[:, 0] == 0).all()
