"""Attention-family ops: onnxruntime parity on random inputs, and properties of the newer ops."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from ziggurat.errors import ExecutionError
from ziggurat.ops import attention as A
from ziggurat.ops import recurrent_attention as RA


def _ort(op, inputs, n_out, attrs, opset):
    """Run one node in onnxruntime. ``inputs``: list of (name, array or None); float outputs."""
    names = [n if a is not None else "" for n, a in inputs]
    while names and not names[-1]:
        names.pop()
    outs = [f"o{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    g_in = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in inputs
        if a is not None
    ]
    g_out = [
        helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(inputs[0][1].dtype), None)
        for o in outs
    ]
    model = helper.make_model(
        helper.make_graph([node], "g", g_in, g_out), opset_imports=[helper.make_opsetid("", opset)]
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a for n, a in inputs if a is not None})


def _rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


ATTENTION_CASES = [
    # (name, q/k/v shapes, attrs, mask shape or None, mask dtype, past length)
    ("mha", (2, 4, 5, 8), (2, 4, 7, 8), (2, 4, 7, 8), {}, None, None, 0),
    ("gqa_causal", (2, 6, 5, 8), (2, 2, 5, 8), (2, 2, 5, 4), {"is_causal": 1}, None, None, 0),
    ("bool_mask", (1, 2, 4, 8), (1, 2, 6, 8), (1, 2, 6, 8), {}, (4, 6), np.bool_, 0),
    (
        "float_mask_softcap",
        (1, 2, 4, 8),
        (1, 2, 6, 8),
        (1, 2, 6, 8),
        {"softcap": 3.0},
        (1, 2, 4, 6),
        np.float32,
        0,
    ),
    (
        "past_causal",
        (2, 2, 3, 8),
        (2, 2, 3, 8),
        (2, 2, 3, 8),
        {"is_causal": 1, "scale": 0.2},
        None,
        None,
        4,
    ),
    (
        "3d_gqa",
        (2, 5, 32),
        (2, 5, 16),
        (2, 5, 12),
        {"q_num_heads": 4, "kv_num_heads": 2},
        (5, 5),
        np.float32,
        0,
    ),
]


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=[c[0] for c in ATTENTION_CASES])
def test_attention_matches_onnxruntime(case):
    _, qs, ks, vs, attrs, mshape, mdt, past = case
    rng = np.random.default_rng(0)
    Q, K, V = _rand(rng, *qs), _rand(rng, *ks), _rand(rng, *vs)
    mask = None
    if mshape is not None:
        mask = rng.random(mshape) > 0.3 if mdt == np.bool_ else _rand(rng, *mshape)
        if mdt == np.bool_:
            mask[..., 0] = True  # keep every row attending something
    pk = pv = None
    if past:
        kv_heads = ks[1]
        pk, pv = (
            _rand(rng, ks[0], kv_heads, past, ks[-1]),
            _rand(rng, vs[0], kv_heads, past, vs[-1]),
        )
    inputs = [("Q", Q), ("K", K), ("V", V), ("mask", mask), ("pk", pk), ("pv", pv)]
    n_out = 3 if past else 1
    expected = _ort("Attention", inputs, n_out, attrs, 23)
    got = A.Attention(Q, K, V, mask, pk, pv, **attrs)
    assert len(got) == 4  # the kernel always returns (Y, present_key, present_value, qk_matmul)
    for e, g in zip(expected, got[:n_out], strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_qk_matmul_output_modes(mode):
    rng = np.random.default_rng(1)
    Q, K, V = _rand(rng, 1, 2, 3, 4), _rand(rng, 1, 2, 5, 4), _rand(rng, 1, 2, 5, 4)
    mask = np.zeros((3, 5), np.float32)
    mask[:, -1] = -np.inf
    _, _, _, qk = A.Attention(Q, K, V, mask, softcap=2.0, qk_matmul_output_mode=mode)
    raw = (Q @ np.swapaxes(K, -1, -2)) / 2.0
    capped = 2.0 * np.tanh(raw / 2.0)
    want = [raw, capped, capped + mask, None][mode]
    if mode == 3:
        e = np.exp(capped + mask - (capped + mask).max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(qk, want, rtol=1e-5, atol=1e-6)


def test_fully_masked_rows_are_zero_and_window_limits_keys():
    rng = np.random.default_rng(2)
    Q, K, V = _rand(rng, 1, 1, 4, 4), _rand(rng, 1, 1, 6, 4), _rand(rng, 1, 1, 6, 4)
    mask = np.ones((4, 6), bool)
    mask[1] = False
    Y, *_ = A.Attention(Q, K, V, mask)
    assert np.all(Y[0, 0, 1] == 0) and np.isfinite(Y).all()
    # left window 0 + causal: each query sees exactly its own key -> Y row i == V row i
    Y, *_ = A.Attention(Q, K, V, is_causal=1, left_window_size=0)
    np.testing.assert_allclose(Y[0, 0], V[0, 0, :4], rtol=1e-6)


def test_nonpad_kv_seqlen_ignores_padding_and_aligns_causal_bottom_right():
    rng = np.random.default_rng(3)
    Q, K, V = _rand(rng, 2, 2, 1, 8), _rand(rng, 2, 2, 6, 8), _rand(rng, 2, 2, 6, 8)
    lens = np.array([3, 6], np.int64)
    Y, *_ = A.Attention(Q, K, V, None, None, None, lens, is_causal=1)
    for b, n in enumerate(lens):  # decode step: the one query sees every valid key
        (ref, *_) = A.Attention(Q[b : b + 1], K[b : b + 1, :, :n], V[b : b + 1, :, :n])
        np.testing.assert_allclose(Y[b : b + 1], ref, rtol=1e-6)


def test_attention_3d_needs_head_counts():
    x = np.zeros((1, 2, 8), np.float32)
    with pytest.raises(ExecutionError, match="q_num_heads"):
        A.Attention(x, x, x)


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot_dim", [0, 4])
def test_rotary_embedding_matches_onnxruntime(interleaved, rot_dim):
    rng = np.random.default_rng(4)
    X = _rand(rng, 2, 3, 5, 8)
    half = (rot_dim or 8) // 2
    cos, sin = _rand(rng, 16, half), _rand(rng, 16, half)
    pos = rng.integers(0, 16, (2, 5)).astype(np.int64)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rot_dim}
    (expected,) = _ort(
        "RotaryEmbedding", [("X", X), ("c", cos), ("s", sin), ("p", pos)], 1, attrs, 23
    )
    (got,) = A.RotaryEmbedding(X, cos, sin, pos, **attrs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the 3-D layout is the same computation with heads packed in the last axis
    X3 = np.transpose(X, (0, 2, 1, 3)).reshape(2, 5, 24)
    (got3,) = A.RotaryEmbedding(X3, cos, sin, pos, num_heads=3, **attrs)
    np.testing.assert_allclose(got3, np.transpose(got, (0, 2, 1, 3)).reshape(2, 5, 24), rtol=1e-6)


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensorscatter_matches_onnxruntime(mode):
    rng = np.random.default_rng(5)
    cache, update = _rand(rng, 3, 2, 6, 4), _rand(rng, 3, 2, 3, 4)
    idx = np.array([0, 3, 5 if mode == "circular" else 2], np.int64)
    inputs = [("c", cache), ("u", update), ("i", idx)]
    (expected,) = _ort("TensorScatter", inputs, 1, {"mode": mode}, 24)
    (got,) = A.TensorScatter(cache, update, idx, mode=mode)
    np.testing.assert_array_equal(got, expected)
    assert np.array_equal(cache, _rand(np.random.default_rng(5), 3, 2, 6, 4))  # input untouched


def test_tensorscatter_linear_overflow_is_an_error():
    cache, update = np.zeros((1, 4, 2), np.float32), np.ones((1, 2, 2), np.float32)
    with pytest.raises(ExecutionError, match="circular"):
        A.TensorScatter(cache, update, np.array([3]), axis=1)


def test_flex_attention_mods_and_gqa():
    rng = np.random.default_rng(6)
    Q, K, V = _rand(rng, 1, 4, 3, 8), _rand(rng, 1, 2, 5, 8), _rand(rng, 1, 2, 5, 6)
    (plain,) = A.FlexAttention(Q, K, V)
    (ref, *_) = A.Attention(Q, K, V)
    np.testing.assert_allclose(plain, ref, rtol=1e-5, atol=1e-6)
    (modded,) = A.FlexAttention(Q, K, V, score_mod=lambda s: [s * 0], prob_mod=lambda p: [p * 2])
    kv = np.repeat(V, 2, axis=1)
    np.testing.assert_allclose(
        modded, 2 * kv.mean(axis=2, keepdims=True).repeat(3, axis=2), rtol=1e-5
    )


def test_linear_attention_linear_rule_equals_causal_unnormalised_attention():
    rng = np.random.default_rng(7)
    B, T, H, d = 2, 5, 2, 4
    q, k, v = _rand(rng, B, T, H * d), _rand(rng, B, T, H * d), _rand(rng, B, T, H * d)
    out, state = RA.LinearAttention(q, k, v, q_num_heads=H, kv_num_heads=H, update_rule="linear")
    h = lambda x: x.reshape(B, T, H, d).transpose(0, 2, 1, 3)  # noqa: E731
    scores = np.tril(h(q) @ np.swapaxes(h(k), -1, -2)) / np.sqrt(d)
    ref = (scores @ h(v)).transpose(0, 2, 1, 3).reshape(B, T, H * d)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state, np.swapaxes(h(k), -1, -2) @ h(v), rtol=1e-5, atol=1e-5)


def test_linear_attention_prefill_then_decode_equals_one_pass():
    rng = np.random.default_rng(8)
    B, T, Hq, Hkv, d = 1, 6, 4, 2, 4
    q, k, v = _rand(rng, B, T, Hq * d), _rand(rng, B, T, Hkv * d), _rand(rng, B, T, Hkv * d)
    decay = -np.abs(_rand(rng, B, T, Hkv))
    beta = 1 / (1 + np.exp(-_rand(rng, B, T, Hkv)))
    kw = {"q_num_heads": Hq, "kv_num_heads": Hkv}
    full, s_full = RA.LinearAttention(q, k, v, None, decay, beta, **kw)
    a, s_a = RA.LinearAttention(q[:, :4], k[:, :4], v[:, :4], None, decay[:, :4], beta[:, :4], **kw)
    b, s_b = RA.LinearAttention(q[:, 4:], k[:, 4:], v[:, 4:], s_a, decay[:, 4:], beta[:, 4:], **kw)
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_b, s_full, rtol=1e-5, atol=1e-6)
    with pytest.raises(ExecutionError, match="decay"):
        RA.LinearAttention(q, k, v, **kw)


def test_causal_conv_with_state_streams_and_matches_convolution():
    rng = np.random.default_rng(9)
    x, w, bias = _rand(rng, 2, 3, 7), _rand(rng, 3, 1, 4), _rand(rng, 3)
    y, state = RA.CausalConvWithState(x, w, bias, activation="silu")
    pre = (
        np.stack([[np.convolve(x[b, c], w[c, 0, ::-1])[:7] for c in range(3)] for b in range(2)])
        + bias[:, None]
    )
    np.testing.assert_allclose(y, pre / (1 + np.exp(-pre)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state, x[:, :, -3:])
    y1, s1 = RA.CausalConvWithState(x[:, :, :5], w, bias, activation="silu")
    y2, s2 = RA.CausalConvWithState(x[:, :, 5:], w, bias, s1, activation="silu")
    np.testing.assert_allclose(np.concatenate([y1, y2], -1), y, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(s2, state)
