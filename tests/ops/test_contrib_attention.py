"""com.microsoft attention kernels against onnxruntime: masks in every form, past/present state,
unidirectional, cross attention, packed inputs, grouped-query caches and rotary embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from ._contrib import assert_close, check, f32_tol, run_both, zg_run

B, S, N, H = 2, 4, 2, 8
D = N * H


def _r(rng, *shape, s=1.0):
    return (rng.standard_normal(shape) * s).astype(np.float32)


def _masks(T, P=0):
    """mask_index forms onnxruntime accepts, for batch B, sequence S, total T (past P)."""
    lens = np.array([T, T - 2], np.int32)
    raw = np.ones((B, T), np.int32)
    raw[1, -2:] = 0
    raw3 = np.ones((B, S, T), np.int32)
    raw3[0, :, 1] = 0
    M = P + S + 2
    mega = np.tril(np.ones((M, M), np.int32))[None, None].repeat(B, 0)
    return {
        "none": None,
        "1d_lengths": lens,
        "1d_ends_starts": np.concatenate([lens, np.array([1, 0], np.int32)]),
        "2d": raw,
        "2d_row_all_padded": np.stack([np.ones(T, np.int32), np.zeros(T, np.int32)]),
        "3d": raw3,
        "4d_megatron": mega,
    }


@pytest.mark.parametrize("mask", list(_masks(S)))
@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize("past", [False, True])
def test_attention(mask, unidirectional, past):
    rng = np.random.default_rng(0)
    P = 3 if past else 0
    T = P + S
    m = _masks(T, P)[mask]
    ins = [("x", _r(rng, B, S, D)), ("w", _r(rng, D, 3 * D, s=0.3)), ("b", _r(rng, 3 * D)),
           ("mask", m), ("past", _r(rng, 2, B, N, P, H) if past else None)]  # fmt: skip
    n_out = 2 if past else 1
    attrs = {"num_heads": N, "unidirectional": unidirectional}
    if mask != "4d_megatron":
        check("Attention", ins, n_out, attrs, n_terms=D + T)
        return
    # onnxruntime's CPU provider has no 4-D mask: its (B, S, T) slice must give the same result
    ins3 = ins[:3] + [("mask", np.ascontiguousarray(m[:, 0, P : P + S, :T]))] + ins[4:]
    ref, _ = run_both("Attention", ins3, n_out, attrs)
    got = zg_run("Attention", ins, n_out, attrs)
    for g, r in zip(got, ref):
        assert_close(g, r, f32_tol(r, D + T), "Attention, 4-D mask")


@pytest.mark.parametrize("extra", ["qkv_hidden_sizes", "scale", "attention_bias", "filter"])
def test_attention_attributes(extra):
    rng = np.random.default_rng(1)
    attrs = {"num_heads": N}
    dv = D
    bias = None
    if extra == "qkv_hidden_sizes":
        dv = 2 * D
        attrs["qkv_hidden_sizes"] = [D, D, dv]
    elif extra == "scale":
        attrs["scale"] = 0.05
    elif extra == "attention_bias":
        bias = _r(rng, 1, N, S, S)
    else:
        attrs["mask_filter_value"] = -50.0
    ins = [("x", _r(rng, B, S, D)), ("w", _r(rng, D, 2 * D + dv, s=0.3)),
           ("b", _r(rng, 2 * D + dv)), ("mask", _masks(S)["2d"]), ("past", None),
           ("ab", bias)]  # fmt: skip
    check("Attention", ins, 1, attrs, n_terms=D + S)


@pytest.mark.parametrize("mask", ["none", "1d_lengths", "2d", "3d"])
@pytest.mark.parametrize("kv_len", [S, 6])
@pytest.mark.parametrize("with_bias", [False, True])
def test_multi_head_attention(mask, kv_len, with_bias):
    rng = np.random.default_rng(2)
    T = kv_len
    m = _masks(T)[mask]
    if mask == "3d":
        m = np.ones((B, S, T), np.int32)
        m[1, :, 0] = 0
    ins = [("q", _r(rng, B, S, D)), ("k", _r(rng, B, T, D)), ("v", _r(rng, B, T, D)),
           ("bias", _r(rng, 3 * D) if with_bias else None), ("mask", m),
           ("ab", _r(rng, B, N, S, T))]  # fmt: skip
    check("MultiHeadAttention", ins, 1, {"num_heads": N}, n_terms=H + T)


def test_multi_head_attention_past_present_unidirectional():
    rng = np.random.default_rng(3)
    P = 5
    ins = [("q", _r(rng, B, S, D)), ("k", _r(rng, B, S, D)), ("v", _r(rng, B, S, D)),
           ("bias", None), ("mask", None), ("ab", None),
           ("pk", _r(rng, B, N, P, H)), ("pv", _r(rng, B, N, P, H))]  # fmt: skip
    check("MultiHeadAttention", ins, 3, {"num_heads": N, "unidirectional": 1}, n_terms=H + P + S)


def test_multi_head_attention_cross_attention_cache_and_packed():
    rng = np.random.default_rng(4)
    L = 6
    # key / value already split into heads (B, N, L, H): the cross-attention cache of decoders
    ins = [("q", _r(rng, B, S, D)), ("k", _r(rng, B, N, L, H)), ("v", _r(rng, B, N, L, H))]
    check("MultiHeadAttention", ins, 1, {"num_heads": N}, n_terms=H + L)
    # packed KV (B, L, N, 2, H): onnxruntime's CPU provider has it only unpacked
    q, kv = _r(rng, B, S, D), _r(rng, B, L, N, 2, H)
    (y,) = zg_run("MultiHeadAttention", [("q", q), ("kv", kv)], 1, {"num_heads": N})
    k, v = (np.ascontiguousarray(kv[:, :, :, i].reshape(B, L, D)) for i in range(2))
    ref, _ = run_both("MultiHeadAttention", [("q", q), ("k", k), ("v", v)], 1, {"num_heads": N})
    assert_close(y, ref[0], f32_tol(ref[0], H + L), "packed KV")
    # packed QKV (B, S, N, 3, H), likewise
    qkv = _r(rng, B, S, N, 3, H)
    (y,) = zg_run("MultiHeadAttention", [("qkv", qkv)], 1, {"num_heads": N})
    q, k, v = (np.ascontiguousarray(qkv[:, :, :, i].reshape(B, S, D)) for i in range(3))
    ref, _ = run_both("MultiHeadAttention", [("q", q), ("k", k), ("v", v)], 1, {"num_heads": N})
    assert_close(y, ref[0], f32_tol(ref[0], H + S), "packed QKV")


def _rope_cache(rng, max_pos, half):
    ang = rng.uniform(0, 6.3, (max_pos, half))
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


@pytest.mark.parametrize("layout", ["3d", "4d"])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("positions", ["offset", "per_token"])
@pytest.mark.parametrize("partial", [False, True])
def test_rotary_embedding(layout, interleaved, positions, partial):
    rng = np.random.default_rng(5)
    rot = H // 2 if partial else H
    cos, sin = _rope_cache(rng, 16, rot // 2)
    x = _r(rng, B, S, D) if layout == "3d" else _r(rng, B, N, S, H)
    pos = np.array([3], np.int64) if positions == "offset" else rng.integers(0, 16, (B, S))
    attrs = {"interleaved": interleaved}
    if partial:
        attrs.update(rotary_embedding_dim=rot, num_heads=N)
    check("RotaryEmbedding", [("x", x), ("p", pos.astype(np.int64)), ("c", cos), ("s", sin)], 1,
          attrs, n_terms=2)  # fmt: skip


@pytest.mark.parametrize("phase", ["prompt", "prompt_padded", "decode", "decode_ragged"])
@pytest.mark.parametrize("rotary", [None, 0, 1])
@pytest.mark.parametrize("packed", [False, True])
def test_group_query_attention(phase, rotary, packed):
    rng = np.random.default_rng(6)
    nq, nkv, max_len, H = 4, 2, 12, 16  # onnxruntime's GQA needs head sizes in multiples of 16
    if phase.startswith("prompt"):
        s, buf = 5, 0
        lens = np.array([5, 3 if phase == "prompt_padded" else 5])
    else:
        s, buf = 1, max_len
        lens = np.array([7, 4 if phase == "decode_ragged" else 7])
    total = int(lens.max())
    dq, dkv = nq * H, nkv * H
    q = _r(rng, B, s, dq)
    k, v = _r(rng, B, s, dkv), _r(rng, B, s, dkv)
    past = (_r(rng, B, nkv, buf, H), _r(rng, B, nkv, buf, H)) if buf else (None, None)
    cos, sin = _rope_cache(rng, 32, H // 2)
    qkv = [("q", np.concatenate([q, k, v], -1)), ("k", None), ("v", None)] if packed else \
        [("q", q), ("k", k), ("v", v)]  # fmt: skip
    ins = qkv + [("pk", past[0]), ("pv", past[1]),
                 ("seqlens_k", (lens - 1).astype(np.int32)),
                 ("total", np.array(total, np.int32)),
                 ("cos", cos if rotary is not None else None),
                 ("sin", sin if rotary is not None else None)]  # fmt: skip
    attrs = {"num_heads": nq, "kv_num_heads": nkv}
    if rotary is not None:
        attrs.update(do_rotary=1, rotary_interleaved=rotary)
    ref, got = check("GroupQueryAttention", ins, 3, attrs, n_terms=H + total, compare=False)
    _compare_gqa(ref, got, lens, s, phase)


def _compare_gqa(ref, got, lens, s, phase):
    for b in range(B):
        rows = slice(0, int(lens[b])) if phase == "prompt_padded" else slice(None)
        assert_close(got[0][b, rows], ref[0][b, rows], f32_tol(ref[0], 32), "output")
        valid = slice(0, int(lens[b]))  # the cache beyond a row's valid tokens is unspecified
        for i in (1, 2):
            assert got[i].shape == ref[i].shape
            assert_close(got[i][b, :, valid], ref[i][b, :, valid], f32_tol(ref[i], 2), "present")


@pytest.mark.parametrize("window", [2, 4])
def test_group_query_attention_local_window_and_softcap(window):
    rng = np.random.default_rng(7)
    nq, nkv, s, h = 4, 1, 6, 16
    lens = np.array([6, 6])
    ins = [("q", _r(rng, B, s, nq * h)), ("k", _r(rng, B, s, nkv * h)),
           ("v", _r(rng, B, s, nkv * h)), ("pk", None), ("pv", None),
           ("seqlens_k", (lens - 1).astype(np.int32)), ("total", np.array(6, np.int32))]  # fmt: skip
    attrs = {"num_heads": nq, "kv_num_heads": nkv, "local_window_size": window, "softcap": 2.0}
    check("GroupQueryAttention", ins, 3, attrs, n_terms=h + s)


@pytest.mark.parametrize("mask", ["none", "1d_lengths", "2d"])
@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("past", [False, True])
def test_qattention(mask, per_column, past):
    rng = np.random.default_rng(8)
    P = 2 if past else 0
    x = rng.integers(0, 256, (B, S, D)).astype(np.uint8)
    w = rng.integers(-127, 128, (D, 3 * D)).astype(np.int8)
    ws = rng.uniform(1e-4, 3e-4, (3 * D,) if per_column else (1,)).astype(np.float32)
    ins = [("x", x), ("w", w), ("b", _r(rng, 3 * D)), ("xs", np.array(0.01, np.float32)),
           ("ws", ws), ("mask", _masks(P + S, P)[mask]), ("xzp", np.array(128, np.uint8)),
           ("wzp", np.zeros((3 * D,) if per_column else (1,), np.int8)),
           ("past", _r(rng, 2, B, N, P, H) if past else None)]  # fmt: skip
    attrs = {"num_heads": N, "unidirectional": int(past)}
    check("QAttention", ins, 2 if past else 1, attrs, n_terms=H + P + S,
          out_types=[np.float32] * (2 if past else 1))  # fmt: skip


def test_packed_attention_matches_padded_attention():
    """onnxruntime has PackedAttention on CUDA only: its padded Attention with a 1-D length mask
    must give the same rows."""
    rng = np.random.default_rng(9)
    lens = [4, 2]
    x = _r(rng, sum(lens), D)
    w, b = _r(rng, D, 3 * D, s=0.3), _r(rng, 3 * D)
    cum = np.array([0, 4, 6], np.int32)
    offsets = np.array([[0, 1, 2, 3], [4, 5, 0, 0]], np.int32)  # padded slots point anywhere
    (y,) = zg_run("PackedAttention", [("x", x), ("w", w), ("b", b), ("to", offsets), ("cu", cum)],
                  1, {"num_heads": N})  # fmt: skip
    padded = np.zeros((2, 4, D), np.float32)
    padded[0], padded[1, :2] = x[:4], x[4:]
    ref, _ = run_both("Attention", [("x", padded), ("w", w), ("b", b),
                                    ("m", np.array(lens, np.int32))], 1, {"num_heads": N})  # fmt: skip
    want = np.concatenate([ref[0][0], ref[0][1, :2]])
    assert_close(y, want, f32_tol(want, D + 4), "PackedAttention")


def test_attention_float16():
    rng = np.random.default_rng(10)
    ins = [("x", _r(rng, B, S, D).astype(np.float16)),
           ("w", _r(rng, D, 3 * D, s=0.3).astype(np.float16)),
           ("b", _r(rng, 3 * D).astype(np.float16)), ("mask", _masks(S)["2d"])]  # fmt: skip
    ref, got = run_both("Attention", ins, 1, {"num_heads": N})
    # float16 in and out: one float16 ulp of rounding per stage, either engine (eps 2^-10)
    tol = 8 * 2.0**-10 * float(np.abs(ref[0]).max())
    assert_close(got[0], ref[0], tol, "Attention float16")


@pytest.mark.parametrize("past_len", [0, 3])
def test_attention_past_present_share_buffer(past_len):
    """onnxruntime's CPU kernel rejects past_sequence_length in this mode (measured, 1.32): the
    shared (2, B, N, max, H) buffer holding past_len positions must act as a past of past_len."""
    rng = np.random.default_rng(11)
    M = 10  # the shared buffer's positions
    buf = _r(rng, 2, B, N, M, H)
    base = [("x", _r(rng, B, S, D)), ("w", _r(rng, D, 3 * D, s=0.3)), ("b", _r(rng, 3 * D)),
            ("mask", None)]  # fmt: skip
    attrs = {"num_heads": N, "unidirectional": 1}
    got = zg_run("Attention", base + [("past", buf), ("ab", None),
                                      ("plen", np.array([past_len], np.int32))], 2,
                 dict(attrs, past_present_share_buffer=1))  # fmt: skip
    past = np.ascontiguousarray(buf[:, :, :, :past_len])
    ref, _ = run_both("Attention", base + [("past", past)], 2, attrs)
    assert_close(got[0], ref[0], f32_tol(ref[0], D + M), "output")
    assert got[1].shape == buf.shape
    valid = past_len + S
    assert_close(got[1][..., :valid, :], ref[1], f32_tol(ref[1], D), "present")
    assert_close(got[1][..., valid:, :], buf[..., valid:, :], 0, "untouched buffer")


@pytest.mark.parametrize("kind", ["smooth_softmax", "head_sink"])
def test_group_query_attention_sinks(kind):
    rng = np.random.default_rng(12)
    nq, nkv, s, h = 4, 2, 5, 16
    ins = [("q", _r(rng, B, s, nq * h)), ("k", _r(rng, B, s, nkv * h)),
           ("v", _r(rng, B, s, nkv * h)), ("pk", None), ("pv", None),
           ("seqlens_k", np.array([s - 1] * B, np.int32)), ("total", np.array(s, np.int32)),
           ("cos", None), ("sin", None), ("pos", None), ("ab", None),
           ("sink", _r(rng, nq) if kind == "head_sink" else None)]  # fmt: skip
    attrs = {"num_heads": nq, "kv_num_heads": nkv}
    if kind == "smooth_softmax":
        attrs["smooth_softmax"] = 1
    check("GroupQueryAttention", ins, 3, attrs, n_terms=h + s)


def test_group_query_attention_decode_loop_in_one_session():
    """A shared-buffer decode loop: one session, the total length growing run by run while every
    input keeps its shape (the plan must not reuse a first run's value-dependent results)."""
    import onnxruntime as ort

    import ziggurat as zg

    from ._contrib import node_model

    rng = np.random.default_rng(13)
    nq, nkv, h, buf = 4, 2, 16, 8

    def feeds(total):
        return {"q": _r(rng, 1, 1, nq * h), "k": _r(rng, 1, 1, nkv * h), "v": _r(rng, 1, 1, nkv * h),
                "pk": _r(rng, 1, nkv, buf, h), "pv": _r(rng, 1, nkv, buf, h),
                "sl": np.array([total - 1], np.int32), "t": np.array(total, np.int32)}  # fmt: skip

    model = node_model("GroupQueryAttention", list(feeds(5).items()), 3,
                       {"num_heads": nq, "kv_num_heads": nkv})  # fmt: skip
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref_sess, sess = ort.InferenceSession(model, so), zg.InferenceSession(model)
    for total in (5, 5, 5, 6, 7, 8):
        f = feeds(total)
        ref, got = ref_sess.run(None, f), sess.run(None, f)
        assert_close(got[0], ref[0], f32_tol(ref[0], h + total), f"output at total {total}")
        assert_close(got[1][:, :, :total], ref[1][:, :, :total], f32_tol(ref[1], 1), "present")


@pytest.fixture
def onednn_sdpa_calls(monkeypatch):
    """Counts the calls of sdpa's oneDNN path that it took (returned a result)."""
    from ziggurat.backends.cpu import attention_f32, dnnl

    if not dnnl.available():
        pytest.skip(f"oneDNN: {dnnl.unavailable_reason()}")
    taken = []
    real = attention_f32.attention

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(attention_f32, "attention", spy)
    return taken


@pytest.mark.parametrize("mask", ["none", "1d_lengths", "2d"])
@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_attention_at_onednn_sizes(onednn_sdpa_calls, mask, unidirectional, with_bias):
    """Large enough for sdpa's float32 oneDNN path (backends/cpu/attention_f32.py): padding mask,
    attention bias and causal exclusion folded into one additive mask, against onnxruntime."""
    b, s, n, h = 2, 64, 4, 32
    d = n * h
    rng = np.random.default_rng(9)
    lens = np.array([s, s - 9], np.int32)
    raw = np.ones((b, s), np.int32)
    raw[1, -9:] = 0
    m = {"none": None, "1d_lengths": lens, "2d": raw}[mask]
    ins = [("x", _r(rng, b, s, d)), ("w", _r(rng, d, 3 * d, s=0.1)), ("b", _r(rng, 3 * d)),
           ("mask", m), ("past", None), ("ab", _r(rng, 1, n, s, s) if with_bias else None)]  # fmt: skip
    check("Attention", ins, 1, {"num_heads": n, "unidirectional": unidirectional}, n_terms=d + s)
    assert onednn_sdpa_calls and all(onednn_sdpa_calls)


def test_multi_head_attention_at_onednn_sizes(onednn_sdpa_calls):
    b, s, t, n, h = 2, 64, 48, 4, 32
    d = n * h
    rng = np.random.default_rng(10)
    raw = np.ones((b, t), np.int32)
    raw[0, -5:] = 0
    ins = [("q", _r(rng, b, s, d)), ("k", _r(rng, b, t, d)), ("v", _r(rng, b, t, d)),
           ("bias", _r(rng, 3 * d)), ("mask", raw), ("ab", _r(rng, b, n, s, t))]  # fmt: skip
    check("MultiHeadAttention", ins, 1, {"num_heads": n}, n_terms=h + t)
    assert onednn_sdpa_calls and all(onednn_sdpa_calls)
