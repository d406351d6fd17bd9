"""The optional numba kernels (ops/_jit.py) agree with the portable numpy paths and with float64
references; without numba (or without ZIGGURAT_JIT=1, the default) the numpy paths run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ziggurat.ops import _jit
from ziggurat.ops._ewmath import _erf_rational_chunked, gelu_erf_fast
from ziggurat.ops.norm import layer_norm_last_axes

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture
def jit(monkeypatch):
    monkeypatch.setenv("ZIGGURAT_JIT", "1")  # opt-in
    ns = _jit.kernels(_jit.MIN_ELEMENTS)
    assert ns is not None
    return ns


def _gelu64(x):
    w = x.astype(np.float64)
    return 0.5 * w * (1 + np.array([math.erf(v / math.sqrt(2)) for v in w]))


def test_jit_gelu_matches_numpy_path_and_float64(jit):
    """Both paths evaluate the same rational erf (fit error 2.5e-8) in float32: about a dozen
    roundings of eps/2 on erf's Horner steps, scaled by |x| / 2, plus the final products."""
    x = np.concatenate(
        [np.linspace(-9, 9, 20001), [0.0, -0.0, 4 * math.sqrt(2), -4 * math.sqrt(2)]]
    ).astype(np.float32)
    y = x.copy()
    jit.gelu_erf(y, y)
    ref = _gelu64(x)
    bound = 12 * EPS32 * np.abs(x) / 2 + 3 * EPS32 * np.abs(ref) + 1e-30
    assert (np.abs(y - ref) <= bound).all()
    z = np.empty_like(x)
    _erf_rational_chunked(x, z, gelu=True, work_dtype=np.float32)
    assert (np.abs(y - z) <= 2 * bound).all()
    special = np.array([np.inf, -np.inf, np.nan], np.float32)
    out = special.copy()
    jit.gelu_erf(out, out)
    assert out[0] == np.inf and np.isnan(out[1]) and np.isnan(out[2])  # -inf * 0 as unfused


@pytest.mark.parametrize("with_bias", [True, False])
def test_jit_skip_layer_norm_matches_numpy_path(jit, monkeypatch, with_bias):
    """The fused add + LayerNorm keeps the sum bit-for-bit (one float32 add, as numpy's) and
    normalises it within the LayerNorm bound of both paths; one output or two."""
    from ziggurat.ops.fused_transformer import SkipLayerNorm, _skip_layer_norm_jit

    rng = np.random.default_rng(3)
    a = (rng.standard_normal((2, 150, 768)) * 3 + 5).astype(np.float32)
    b = rng.standard_normal((2, 150, 768)).astype(np.float32)
    g = rng.standard_normal(768).astype(np.float32)
    beta = rng.standard_normal(768).astype(np.float32) if with_bias else None
    fused = _skip_layer_norm_jit(a, b, g, beta, -1, 1e-5, 2)
    assert fused is not None  # the numba path runs here
    y_jit, s_jit = fused
    (y1,) = _skip_layer_norm_jit(a, b, g, beta, -1, 1e-5, 1)
    np.testing.assert_array_equal(y1, y_jit)
    monkeypatch.setitem(_jit._state, "ns", None)
    monkeypatch.setenv("ZIGGURAT_JIT", "0")
    assert _skip_layer_norm_jit(a, b, g, beta, -1, 1e-5, 2) is None
    y_np, s_np = SkipLayerNorm(a, b, g, beta, epsilon=1e-5, n_outputs=2)
    np.testing.assert_array_equal(s_jit, s_np)
    absb = 0 if beta is None else np.abs(beta).max()
    tol = (768 + 4) * EPS32 * math.sqrt(768) * np.abs(g).max() + EPS32 * absb
    np.testing.assert_allclose(y_jit, y_np, rtol=0, atol=2 * tol)
    w = s_np.astype(np.float64)
    ref = (w - w.mean(-1, keepdims=True)) / np.sqrt(w.var(-1, keepdims=True) + 1e-5) * g
    np.testing.assert_allclose(y_jit, ref + (0 if beta is None else beta), rtol=0, atol=tol)


def test_jit_layer_norm_matches_numpy_path(jit, monkeypatch):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 768)) * 3 + 5).astype(np.float32)
    g = rng.standard_normal(768).astype(np.float32)
    b = rng.standard_normal(768).astype(np.float32)
    y_jit = layer_norm_last_axes(x, g, b, 1, 1e-5)
    monkeypatch.setitem(_jit._state, "ns", None)
    monkeypatch.setenv("ZIGGURAT_JIT", "0")
    assert _jit.kernels(10**9) is None
    y_np = layer_norm_last_axes(x, g, b, 1, 1e-5)
    # Both: sums of 768 terms (<= 768 eps relative each, either summation order), normalized
    # values up to sqrt(768) in size, times |g|; plus |b| eps.
    tol = (768 + 4) * EPS32 * math.sqrt(768) * np.abs(g).max() + EPS32 * np.abs(b).max()
    np.testing.assert_allclose(y_jit, y_np, rtol=0, atol=2 * tol)
    w = x.astype(np.float64)
    ref = (w - w.mean(1, keepdims=True)) / np.sqrt(w.var(1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(y_jit, ref, rtol=0, atol=tol)


def test_gelu_fast_without_jit_uses_numpy(monkeypatch):
    monkeypatch.setitem(_jit._state, "ns", None)
    monkeypatch.setitem(_jit._state, "failed", True)  # as if numba could not be imported
    x = np.linspace(-5, 5, 1001).astype(np.float32)
    y = x.copy()
    gelu_erf_fast(y)
    ref = _gelu64(x)
    assert (np.abs(y - ref) <= 12 * EPS32 * np.abs(x) / 2 + 3 * EPS32 * np.abs(ref)).all()


def test_small_inputs_do_not_load_numba(monkeypatch):
    monkeypatch.setattr(_jit, "_state", {})
    assert _jit.kernels(_jit.MIN_ELEMENTS - 1) is None and "ns" not in _jit._state
