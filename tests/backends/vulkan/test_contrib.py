"""onnxruntime's fused BERT ops on the device against the CPU kernels (ops/contrib_*.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ._harness import EPS, assert_within, cpu, dev, rand, refuses, ulp

RNG = np.random.default_rng(29)
MS = "com.microsoft"
B, S, D, HEADS = 2, 6, 16, 4


def _mask(kind):
    if kind == "none":
        return None
    if kind == "2d":
        m = np.ones((B, S), np.int32)
        m[1, 4:] = 0
        return m
    return np.array([S, 3], np.int32)  # lengths


@pytest.mark.parametrize("mask", ["none", "2d", "lengths"])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention(be, mask, causal):
    x, w, b = rand(RNG, B, S, D), rand(RNG, D, 3 * D, lo=-0.5, hi=0.5), rand(RNG, 3 * D)
    attrs = {"num_heads": HEADS, "unidirectional": causal}
    m = _mask(mask)
    inputs = [x, w, b] if m is None else [x, w, b, m]
    (got,) = dev(be, "Attention", inputs, attrs, domain=MS, opset=1, n_outputs=1)
    (want,) = cpu("Attention", inputs, {**attrs, "n_outputs": 1}, domain=MS, opset=1)
    # projection: (D+2) eps |x||w| + |b| rounding; scores over H = D/HEADS terms of values up to
    # |qkv|max, scaled by 1/sqrt(H); softmax's relative error ~ (S + 10) eps plus the scores'
    # absolute error; the value product sums S terms of |p||v|.
    proj = (D + 2) * EPS * (np.abs(x) @ np.abs(w) + np.abs(b)).max()
    qkv = np.abs(x @ w + b).max()
    H = D // HEADS
    s_err = (H + 2) * EPS * qkv * qkv * H / np.sqrt(H) + 2 * proj * qkv * H / np.sqrt(H)
    p_rel = (S + 10) * EPS + 2 * s_err
    tol = (S + 2) * EPS * qkv + p_rel * qkv * S + proj
    assert_within(got, want, tol + 4 * ulp(want), f"Attention mask={mask} causal={causal}")


def test_attention_refuses_past_and_present(be):
    f32, i32 = np.dtype(np.float32), np.dtype(np.int32)
    base = [((B, S, D), f32), ((D, 3 * D), f32), ((3 * D,), f32)]
    attrs = {"num_heads": HEADS}
    past = ((2, B, HEADS, 3, D // HEADS), f32)
    assert "past" in refuses(be, "Attention", [*base, None, past], attrs, domain=MS, opset=1)
    assert "present" in refuses(
        be, "Attention", base, {**attrs, "n_outputs": 2}, domain=MS, opset=1
    )
    three_d = ((B, S, S), i32)
    assert "mask_index" in refuses(be, "Attention", [*base, three_d], attrs, domain=MS, opset=1)


@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("with_segment", [True, False])
@pytest.mark.parametrize("with_positions", [True, False])
def test_embed_layer_normalization(be, with_mask, with_segment, with_positions):
    V, P, H = 30, 12, 16
    ids = RNG.integers(0, V, (B, S)).astype(np.int32)
    seg = RNG.integers(0, 2, (B, S)).astype(np.int32) if with_segment else None
    word, pos, segt = rand(RNG, V, H), rand(RNG, P, H), rand(RNG, 2, H)
    g, beta = rand(RNG, H), rand(RNG, H)
    mask = np.array([[1] * S, [1] * 4 + [0] * (S - 4)], np.int32) if with_mask else None
    pos_ids = np.array([list(range(2, 2 + S))], np.int32) if with_positions else None
    inputs = [ids, seg, word, pos, segt if with_segment else None, g, beta, mask, pos_ids]
    attrs = {"epsilon": 1e-12}
    got = dev(be, "EmbedLayerNormalization", inputs, attrs, domain=MS, opset=1, n_outputs=3)
    want = cpu("EmbedLayerNormalization", inputs, {**attrs, "n_outputs": 3}, domain=MS, opset=1)
    np.testing.assert_array_equal(got[1], want[1])  # mask_index: exact counts
    np.testing.assert_array_equal(got[2], want[2])  # the embedding sum: same adds, same order
    emb = want[2]
    z = (emb - emb.mean(-1, keepdims=True)) / emb.std(-1, keepdims=True)
    tol = (2 * H + 16) * EPS * (np.abs(z * g) + np.abs(beta)) + 4 * ulp(want[0])
    assert_within(got[0], want[0], tol, "EmbedLayerNormalization")
