"""oneDNN layer normalization and softmax (backends/cpu/norm.py) against float64 references."""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.backends.cpu import dnnl, norm

pytestmark = pytest.mark.skipif(not dnnl.available(), reason=f"oneDNN: {dnnl.unavailable_reason()}")
EPS32 = float(np.finfo(np.float32).eps)


def _ln_ref(x, g, b, eps):
    x = x.astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * g
    return y if b is None else y + b


@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize("inplace", [True, False])
def test_layer_norm_matches_float64(shift, inplace):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((128, 768)) * 3 + 1).astype(np.float32)
    g = rng.standard_normal(768).astype(np.float32)
    b = rng.standard_normal(768).astype(np.float32) if shift else None
    ref = _ln_ref(x, g, b, 1e-5)
    out = x.copy() if inplace else np.empty_like(x)
    src = out if inplace else x
    assert norm.layer_norm(src, g, b, 1e-5, out)
    # Mean and variance are sums of 768 float32 terms (relative error ~ eps32 * sqrt(768) each,
    # a random walk); the normalized value and the scale/shift add a few roundings: bound
    # 8 * eps32 * sqrt(768) of the largest output. A wrong epsilon, a one-pass variance with
    # cancellation or a dropped shift is orders beyond it.
    atol = 8 * EPS32 * np.sqrt(768) * float(np.abs(ref).max())
    np.testing.assert_allclose(out, ref, rtol=0, atol=atol)


@pytest.mark.parametrize("inplace", [True, False])
def test_softmax_matches_float64(inplace):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((256, 128)) * 4).astype(np.float32)
    x[3, :] = -1e30  # a fully masked row (large negative, as BERT exports write): uniform
    ref = np.exp(x - x.max(axis=1, keepdims=True).astype(np.float64))
    ref /= ref.sum(axis=1, keepdims=True)
    out = x.copy() if inplace else np.empty_like(x)
    assert norm.softmax(out if inplace else x, out)
    # exp and the division round once each, the 128-term row sum like a random walk:
    # |error| <= 4 * eps32 * sqrt(128) relative to each probability.
    np.testing.assert_allclose(out, ref, rtol=4 * EPS32 * np.sqrt(128), atol=1e-30)
    np.testing.assert_allclose(out[3], 1 / 128, rtol=1e-6)


def test_all_minus_inf_row_gives_nan_as_onnxruntime():
    x = np.zeros((128, 128), np.float32)
    x[5] = -np.inf
    out = np.empty_like(x)
    assert norm.softmax(x, out)
    assert np.isnan(out[5]).all() and np.allclose(out[6], 1 / 128)


def test_cases_it_does_not_take_fall_back():
    small = np.ones((1, 10), np.float32)
    assert not norm.softmax(small, np.empty_like(small))  # below MIN_ELEMENTS: numpy's
    x64 = np.ones((256, 128), np.float64)
    assert not norm.softmax(x64, np.empty_like(x64))
    strided = np.ones((256, 256), np.float32)[:, ::2]
    assert not norm.softmax(strided, np.empty((256, 128), np.float32))
    x = np.ones((128, 768), np.float32)
    assert not norm.layer_norm(x, np.ones(767, np.float32), None, 1e-5, np.empty_like(x))
    assert not norm.layer_norm(x, np.ones(768, np.float64), None, 1e-5, np.empty_like(x))
    tiny = np.ones((8, 128), np.float32)  # below MIN_ELEMENTS
    assert not norm.layer_norm(tiny, np.ones(128, np.float32), None, 1e-5, np.empty_like(tiny))
