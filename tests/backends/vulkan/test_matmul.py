"""Matrix products: |error| <= (K + 2) eps (|A| @ |B|) per element (the standard bound for a
length-K float32 dot product), plus the epilogue's own roundings."""

from __future__ import annotations

import numpy as np
import pytest

from ._harness import EPS, assert_within, cpu, dev, rand, ulp

RNG = np.random.default_rng(11)


def _bound(a, b, k):
    return (k + 2) * EPS * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))


@pytest.mark.parametrize(
    "sa,sb",
    [((5, 7), (7, 3)), ((2, 33, 17), (17, 20)), ((3, 1, 4, 9), (2, 9, 5)), ((7,), (7, 4)),
     ((2, 6, 7), (7,)), ((1, 16, 16), (3, 16, 16))],
)  # fmt: skip
def test_matmul_batched_broadcast(be, sa, sb):
    a, b = rand(RNG, *sa), rand(RNG, *sb)
    (got,) = dev(be, "MatMul", [a, b], opset=13)
    (want,) = cpu("MatMul", [a, b], opset=13)
    assert_within(got, want, _bound(a, b, a.shape[-1]), "MatMul")


@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_transposes_alpha_beta_bias(be, ta, tb):
    M, K, N = 6, 19, 5
    a = rand(RNG, *((K, M) if ta else (M, K)))
    b = rand(RNG, *((N, K) if tb else (K, N)))
    c = rand(RNG, N)
    attrs = {"transA": ta, "transB": tb, "alpha": 0.75, "beta": 1.5}
    (got,) = dev(be, "Gemm", [a, b, c], attrs, opset=13)
    (want,) = cpu("Gemm", [a, b, c], attrs, opset=13)
    aa, bb = (a.T if ta else a), (b.T if tb else b)
    tol = 0.75 * _bound(aa, bb, K) + 4 * ulp(want) + 4 * EPS * 1.5 * np.abs(c)
    assert_within(got, want, tol, "Gemm")


@pytest.mark.parametrize("act", ["", "relu", "gelu"])
def test_dense_fused_bias_and_activation(be, act):
    x, w, b = rand(RNG, 2, 5, 24), rand(RNG, 24, 10), rand(RNG, 10)
    (got,) = dev(be, "Dense", [x, w, b], {"activation": act}, domain="ziggurat", opset=1)
    (want,) = cpu("Dense", [x, w, b], {"activation": act}, domain="ziggurat", opset=1)
    # the product's bound, carried through GELU (slope <= 1.13), plus erf's 2.5e-7 * |y| / 2
    y = x @ w + b
    tol = 1.13 * (_bound(x, w, 24) + 2 * ulp(y)) + 2.5e-7 * np.abs(y) + 4 * ulp(want)
    assert_within(got, want, tol, f"Dense {act}")


def test_fused_attention_with_mask_and_fully_masked_rows(be):
    B, H, S, D = 1, 2, 5, 8
    q, kt, v = rand(RNG, B, H, S, D), rand(RNG, B, H, D, S), rand(RNG, B, H, S, D)
    mask = np.zeros((1, 1, S, S), np.float32)
    mask[..., 3:] = -10000.0
    mask[..., 4, :] = -np.inf  # a row with every key masked: nan_to_zero gives zeros
    attrs = {"scale": 0.125, "nan_to_zero": 1}
    (got,) = dev(be, "FusedAttention", [q, kt, v, mask], attrs, domain="ziggurat", opset=1)
    (want,) = cpu("FusedAttention", [q, kt, v, mask], attrs, domain="ziggurat", opset=1)
    # scores err ~ (D+2) eps |q||k| * scale; softmax's relative error ~ (S + 10) eps + the
    # scores' absolute error; the second product adds (S+2) eps |p||v|.
    s_err = 0.125 * (D + 2) * EPS * (np.abs(q) @ np.abs(kt)).max()
    p_rel = (S + 10) * EPS + 2 * s_err
    tol = (S + 2) * EPS * (np.ones((S, S)) @ np.abs(v)) + p_rel * (np.ones((S, S)) @ np.abs(v))
    assert_within(got, want, tol, "FusedAttention")
    assert (got[..., 4, :] == 0).all()


def test_products_over_the_workgroup_grid_are_refused(be, monkeypatch):
    f32 = np.dtype(np.float32)
    monkeypatch.setattr(be, "max_groups", 8)
    entry = be.kernel("MatMul", "", 13)
    assert entry.supports([((8, 4, 4), f32), ((4, 4), f32)], {}) is None
    assert "workgroups" in entry.supports([((9, 4, 4), f32), ((4, 4), f32)], {})
    assert "workgroups" in entry.supports([((4, 16), f32), ((16, 600), f32)], {})  # 10 tiles
