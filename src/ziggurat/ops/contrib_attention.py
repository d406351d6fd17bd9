"""``com.microsoft`` attention (onnxruntime's ContribOperators.md): Attention (BERT / GPT-2 with
merged QKV weights), MultiHeadAttention, GroupQueryAttention and RotaryEmbedding.

Masks follow onnxruntime: a padded key's score gets ``mask_filter_value`` added (default -10000,
not -inf), so a row whose every key is padded gets a uniform softmax as it does there; future keys
(unidirectional) are excluded.
The projections run through ``matmul.MatMul``, heads are split and shared with
``attention.py``'s helpers, rotary embedding is ``attention.RotaryEmbedding``.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .activation import Softmax
from .attention import RotaryEmbedding as _onnx_rotary
from .attention import _repeat_kv, _split_heads  # private helpers of attention.py, shared
from .matmul import MatMul
from .registry import kernel

MS = "com.microsoft"


def _host(v):
    return np.asarray(v.get() if hasattr(v, "get") else v)


def _key_mask(mask, B: int, S: int, T: int, past: int, op: str):
    """Boolean [B, S, T] of allowed (query, key) pairs from onnxruntime's mask_index forms."""
    m = _host(mask)
    j = np.arange(T)
    if m.ndim == 1 and m.shape[0] == B:  # right padding: valid lengths
        return np.broadcast_to((j[None, :] < m[:, None])[:, None, :], (B, S, T))
    if m.ndim == 1 and m.shape[0] == 2 * B:  # left padding: exclusive ends, inclusive starts
        ok = (j[None, :] < m[:B, None]) & (j[None, :] >= m[B:, None])
        return np.broadcast_to(ok[:, None, :], (B, S, T))
    if m.ndim == 2 and m.shape == (B, T):
        return np.broadcast_to((m != 0)[:, None, :], (B, S, T))
    if m.ndim == 3 and m.shape == (B, S, T):
        return m != 0
    if m.ndim == 4 and m.shape[0] == B and m.shape[1] == 1 and m.shape[2] >= past + S:
        return m[:, 0, past : past + S, :T] != 0  # Megatron's (B, 1, max, max) causal form
    raise ExecutionError(
        f"{op}: mask has shape {tuple(m.shape)}; expected ({B},) lengths, ({2 * B},) ends+starts, "
        f"({B}, {T}), ({B}, {S}, {T}) or ({B}, 1, M, M) with M >= {past + S} (batch {B}, "
        f"sequence {S}, total sequence {T})"
    )


def _masks(mask, B, S, T, past, causal: bool, fill: float, op: str):
    """(additive [B, 1, S, T] float32 key-padding mask or None, boolean causal mask or None).

    As onnxruntime: a padded key gets ``fill`` added, a future key is excluded outright (measured:
    a query whose only causal key is padded still attends to it, not to the future keys).
    """
    add = None
    if mask is not None:
        add = np.where(_key_mask(mask, B, S, T, past, op), 0, fill).astype(np.float32)[:, None]
    allowed = None
    if causal:
        allowed = (np.arange(T)[None, :] <= past + np.arange(S)[:, None])[None, None]
    return add, allowed


def sdpa(q, k, v, *, scale, allowed=None, add=None, bias=None, softcap=0.0, sink=None):
    """softmax(scale * q @ k^T + add + bias, pairs not ``allowed`` at -inf) @ v, in float32.

    q [B, N, S, H]; k, v [B, N or fewer (shared), T, H]; allowed (bool) and add (float) broadcast
    to [B, N, S, T]. ``sink`` (per head, [N]): an extra logit in every row's softmax that attends
    to nothing (smooth softmax is a sink of 0 for every head).
    """
    fused = _sdpa_onednn(q, k, v, scale, allowed, add, bias, softcap, sink)
    if fused is not None:
        return fused
    xp = xp_of(q)
    dt = q.dtype
    cdt = np.float64 if dt == np.float64 else np.float32
    n = q.shape[1]
    k = _repeat_kv(k, n)
    v = _repeat_kv(v, n)
    qs = q.astype(cdt) * cdt(scale)
    (scores,) = MatMul(qs, xp.swapaxes(k.astype(cdt, copy=False), -1, -2))
    if softcap and softcap > 0:
        scores = cdt(softcap) * xp.tanh(scores / cdt(softcap))
    if add is not None:
        scores = scores + xp.asarray(add).astype(cdt, copy=False)
    if allowed is not None:
        scores = xp.where(xp.asarray(allowed), scores, cdt(-np.inf))
    if bias is not None:
        scores = scores + bias.astype(cdt, copy=False)
    if sink is not None:
        col = xp.broadcast_to(sink.astype(cdt).reshape(1, -1, 1, 1), scores.shape[:-1] + (1,))
        scores = xp.concatenate([scores, col], axis=-1)
    (p,) = Softmax(xp.ascontiguousarray(scores), axis=-1)
    if sink is not None:
        p = p[..., :-1]
    (y,) = MatMul(p, v.astype(cdt, copy=False))
    return y.astype(dt, copy=False)


def _sdpa_onednn(q, k, v, scale, allowed, add, bias, softcap, sink):
    """``sdpa``'s common float32 case on oneDNN (``backends/cpu/attention_f32.py``: scores with
    the scale and one additive mask in the matmul's epilogue, softmax in place, the context
    written head-merged), or None. The padding mask, the attention bias and the causal exclusion
    (as -inf) become that one float32 mask; grouped K/V heads, softcap and sinks stay on numpy."""
    if softcap or sink is not None or type(q) is not np.ndarray or q.dtype != np.float32:
        return None
    if not (type(k) is np.ndarray and type(v) is np.ndarray and q.ndim == k.ndim == v.ndim == 4):
        return None
    if k.dtype != np.float32 or v.dtype != np.float32 or k.shape[1] != q.shape[1]:
        return None
    mask = None if add is None else np.asarray(add, np.float32)
    if bias is not None:
        if type(bias) is not np.ndarray or bias.dtype != np.float32:
            return None
        mask = bias if mask is None else mask + bias
    if allowed is not None:
        mask = np.where(allowed, np.float32(0) if mask is None else mask, np.float32(-np.inf))
    from ..backends.cpu import attention_f32

    return attention_f32.attention(q, np.swapaxes(k, -1, -2), v, mask, float(scale))


def _merge_heads(y):
    B, N, S, H = y.shape
    return xp_of(y).transpose(y, (0, 2, 1, 3)).reshape(B, S, N * H)


def _scale(scale, head_size: int) -> float:
    return float(scale) if scale else 1.0 / np.sqrt(head_size)


def _no_rotary(op: str, do_rotary) -> None:
    if do_rotary:
        raise ExecutionError(
            f"{op}: do_rotary=1 is not supported (onnxruntime's CPU provider neither); fuse the "
            f"model with MultiHeadAttention + RotaryEmbedding instead"
        )


def _qkv_sizes(total: int, qkv_hidden_sizes, num_heads: int, op: str):
    dq, dk, dv = qkv_hidden_sizes or (total // 3,) * 3
    if dq + dk + dv != total or dq != dk or dq % num_heads or dv % num_heads:
        raise ExecutionError(
            f"{op}: weights' last dim {total} must be q + k + v hidden sizes "
            f"({qkv_hidden_sizes or 'equal thirds'}), Q and K equal, each divisible by "
            f"num_heads={num_heads}"
        )
    return dq, dk, dv


def _projected_attention(qkv, sizes, num_heads, mask_index, past, attention_bias, *,
                         unidirectional, scale, mask_filter_value, n_outputs, op,
                         shared_len=None):  # fmt: skip
    """Attention's work after the merged projection: qkv (B, S, dq + dk + dv). ``shared_len``:
    past is a (2, B, N, max, H) buffer holding that many valid positions (past_present_share_buffer);
    the new keys / values are written after them and present is the whole buffer."""
    xp = xp_of(qkv)
    B, S, _ = qkv.shape
    dq, dk, _ = sizes
    q = _split_heads(qkv[..., :dq], num_heads, "Q")
    k = _split_heads(qkv[..., dq : dq + dk], num_heads, "K")
    v = _split_heads(qkv[..., dq + dk :], num_heads, "V")
    P = 0
    if past is not None and shared_len is not None:
        P = shared_len
        if P + S > past.shape[3]:
            raise ExecutionError(
                f"{op}: past_sequence_length {P} + sequence {S} exceeds the shared buffer's "
                f"{past.shape[3]} positions"
            )
        present = past.copy()
        present[0, :, :, P : P + S] = k
        present[1, :, :, P : P + S] = v
        k, v = present[0, :, :, : P + S], present[1, :, :, : P + S]
    elif past is not None:
        P = past.shape[3]
        k = xp.concatenate([past[0], k.astype(past.dtype)], axis=2)
        v = xp.concatenate([past[1], v.astype(past.dtype)], axis=2)
        present = None
    add, ok = _masks(mask_index, B, S, P + S, P, bool(unidirectional), mask_filter_value, op)
    y = sdpa(q, k, v, scale=_scale(scale, dq // num_heads), allowed=ok, add=add,
             bias=attention_bias)  # fmt: skip
    out = _merge_heads(y)
    if n_outputs < 2:
        return (out,)
    return out, present if past is not None and shared_len is not None else xp.stack([k, v])


@kernel("AttentionMask", domain="ziggurat")
def AttentionMask(mask_index, x, /, *, mask_filter_value=-10000.0, unidirectional=0):
    """The additive float32 [B, 1, S|1, T] mask that ``Attention`` derives from ``mask_index``
    (any of onnxruntime's forms, or None) for the (B, S, D) input ``x`` without past state: 0 for
    a kept key, ``mask_filter_value`` for a padded one and, with ``unidirectional``, -inf for a
    future one (excluded outright, as onnxruntime does). Made by passes/contrib_canon.py, which
    rewrites Attention into a projection and ``ziggurat::FusedAttention``; computed once for all
    layers."""
    B, S = int(x.shape[0]), int(x.shape[1])
    if mask_index is not None:
        ok = _key_mask(mask_index, B, S, S, 0, "Attention")
        if ok.ndim == 3 and ok.strides[1] == 0:  # a per-key mask (lengths, (B, T)): one row
            ok = ok[:, :1]
        add = np.where(ok, np.float32(0), np.float32(mask_filter_value))
    else:
        add = np.zeros((B, 1, S), np.float32)
    if unidirectional:
        add = np.array(np.broadcast_to(add, (B, S, S)))
        add[:, np.triu(np.ones((S, S), bool), 1)] = -np.inf
    return (add[:, None],)


@kernel("Attention", domain=MS, since=1)
def Attention(
    x, weights, bias=None, mask_index=None, past=None, attention_bias=None,
    past_sequence_length=None, /, *, num_heads, do_rotary=0, mask_filter_value=-10000.0,
    past_present_share_buffer=0, qkv_hidden_sizes=None, rotary_embedding_dim=0, scale=0.0,
    unidirectional=0, n_outputs=1,
):  # fmt: skip
    """Self-attention with the Q/K/V projections merged into one weight (B, S, D_in) ->
    (B, S, D_v), plus ``present`` (2, B, N, past + S, H) when past state is used."""
    _no_rotary("Attention", do_rotary)
    if x.ndim != 3:
        raise ExecutionError(f"Attention: input must be 3-D (B, S, D), got {tuple(x.shape)}")
    sizes = _qkv_sizes(weights.shape[-1], qkv_hidden_sizes, num_heads, "Attention")
    (qkv,) = MatMul(x, weights)
    if bias is not None:
        qkv = qkv + bias
    shared = None
    if past_present_share_buffer and past is not None:
        if past_sequence_length is None:
            raise ExecutionError(
                "Attention: past_present_share_buffer=1 with past needs the past_sequence_length "
                "input (index 6)"
            )
        shared = int(_host(past_sequence_length).reshape(-1)[0])
    return _projected_attention(
        qkv, sizes, num_heads, mask_index, past, attention_bias, unidirectional=unidirectional,
        scale=scale, mask_filter_value=mask_filter_value, n_outputs=n_outputs, op="Attention",
        shared_len=shared,
    )  # fmt: skip


@kernel("QAttention", domain=MS, since=1)
def QAttention(
    x, weight, bias, input_scale, weight_scale, mask_index=None, input_zero_point=None,
    weight_zero_point=None, past=None, /, *, num_heads, do_rotary=0, mask_filter_value=-10000.0,
    past_present_share_buffer=0, scale=0.0, unidirectional=0, n_outputs=1,
):  # fmt: skip
    """Attention whose input and merged weight are 8-bit: the projection is the exact integer
    product (``matmul.MatMulInteger``) times input_scale * weight_scale (per column or not)."""
    from .matmul import MatMulInteger

    _no_rotary("QAttention", do_rotary)
    sizes = _qkv_sizes(weight.shape[-1], None, num_heads, "QAttention")
    (acc,) = MatMulInteger(x, weight, input_zero_point, weight_zero_point)
    s = input_scale.astype(np.float32) * weight_scale.astype(np.float32)
    qkv = (acc.astype(np.float32) * s + bias).astype(bias.dtype, copy=False)
    return _projected_attention(
        qkv, sizes, num_heads, mask_index, past, None, unidirectional=unidirectional,
        scale=scale, mask_filter_value=mask_filter_value, n_outputs=n_outputs, op="QAttention",
    )  # fmt: skip


@kernel("PackedAttention", domain=MS, since=1)
def PackedAttention(
    x, weights, bias, token_offset, cumulative_sequence_length, attention_bias=None, /, *,
    num_heads, qkv_hidden_sizes=None, scale=0.0,
):  # fmt: skip
    """Attention over packed tokens (no padding): x (tokens, D_in); row b's tokens are
    x[cum[b]:cum[b+1]]. Runs as padded attention with each row's length as its key mask."""
    xp = xp_of(x)
    cum = _host(cumulative_sequence_length).astype(np.int64)
    B, S = token_offset.shape
    lens = np.diff(cum)
    if cum[-1] != x.shape[0] or lens.max(initial=0) > S:
        raise ExecutionError(
            f"PackedAttention: cumulative_sequence_length {cum.tolist()} does not fit "
            f"{x.shape[0]} tokens in rows of at most {S}"
        )
    sizes = _qkv_sizes(weights.shape[-1], qkv_hidden_sizes, num_heads, "PackedAttention")
    (qkv,) = MatMul(x, weights)
    qkv = qkv + bias
    b_idx = np.repeat(np.arange(B), lens)
    s_idx = np.arange(x.shape[0]) - cum[b_idx]
    padded = xp.zeros((B, S, qkv.shape[-1]), dtype=qkv.dtype)
    padded[b_idx, s_idx] = qkv
    (y,) = _projected_attention(
        padded, sizes, num_heads, lens.astype(np.int32), None, attention_bias, unidirectional=0,
        scale=scale, mask_filter_value=-10000.0, n_outputs=1, op="PackedAttention",
    )  # fmt: skip
    return (xp.ascontiguousarray(y[b_idx, s_idx]),)


def _heads_of(t, n, what, B):
    """A 3-D (B, L, N*H) input split into heads, or a 4-D (B, N, L, H) one kept."""
    if t.ndim == 4:
        return t
    return _split_heads(t, n, what)


@kernel("MultiHeadAttention", domain=MS, since=1)
def MultiHeadAttention(
    query, key=None, value=None, bias=None, key_padding_mask=None, attention_bias=None,
    past_key=None, past_value=None, past_sequence_length=None, cache_indirection=None, /, *,
    num_heads, mask_filter_value=-10000.0, scale=0.0, unidirectional=0, n_outputs=1,
):  # fmt: skip
    """Attention of already-projected Q, K, V: (B, S, D) query; key/value (B, L, D), (B, N, L, H)
    (cross-attention cache), packed KV (B, L, N, 2, H) or packed QKV (B, S, N, 3, H) in query.
    Returns (output (B, S, D_v), present_key, present_value) (B, N, P + L, H)."""
    if cache_indirection is not None:
        raise ExecutionError(
            "MultiHeadAttention: cache_indirection (beam search) is not supported; run the "
            "decoder without beam-search cache indirection"
        )
    xp = xp_of(query)
    B, S = query.shape[:2]
    if query.ndim == 5:  # packed QKV (B, S, N, 3, H)
        q, k, v = (xp.transpose(query[:, :, :, i], (0, 2, 1, 3)) for i in range(3))
    else:
        d = query.shape[-1]
        if bias is not None:
            query = query + bias[:d]
        q = _split_heads(query, num_heads, "query")
        if key is not None and key.ndim == 5:  # packed KV (B, L, N, 2, H)
            k, v = (xp.transpose(key[:, :, :, i], (0, 2, 1, 3)) for i in range(2))
        else:
            if key is None or value is None:
                raise ExecutionError("MultiHeadAttention: key and value are both needed here")
            if bias is not None and key.ndim == 3:
                key = key + bias[d : 2 * d]
                value = value + bias[2 * d :]
            k = _heads_of(key, num_heads, "key", B)
            v = _heads_of(value, num_heads, "value", B)
    P = 0
    if past_key is not None and past_value is not None and key is not None and key.ndim != 4:
        P = past_key.shape[2]
        k = xp.concatenate([past_key, k.astype(past_key.dtype)], axis=2)
        v = xp.concatenate([past_value, v.astype(past_value.dtype)], axis=2)
    T = k.shape[2]
    add, ok = _masks(key_padding_mask, B, S, T, P, bool(unidirectional), mask_filter_value,
                     "MultiHeadAttention")  # fmt: skip
    y = sdpa(q, k, v, scale=_scale(scale, q.shape[-1]), allowed=ok, add=add,
             bias=attention_bias)  # fmt: skip
    return (_merge_heads(y), k, v)[: max(n_outputs, 1)]


def _rotary(x, pos, cos, sin, interleaved, num_heads, rot_dim=0):
    """attention.RotaryEmbedding on (B, N, S, H) with per-(batch, token) positions."""
    (y,) = _onnx_rotary(x, cos, sin, pos, interleaved=interleaved, num_heads=num_heads,
                        rotary_embedding_dim=rot_dim)  # fmt: skip
    return y


@kernel("RotaryEmbedding", domain=MS, since=1)
def RotaryEmbedding(
    x, position_ids, cos_cache, sin_cache, /, *, interleaved=0, is_packed_batching=0,
    num_heads=0, rotary_embedding_dim=0, scale=1.0,
):  # fmt: skip
    """Rotary position embedding of (B, S, D) or (B, N, S, H) input; ``position_ids`` is (B, S)
    or a one-element start offset (positions start + 0..S-1). ``scale`` is accepted and unused,
    as by onnxruntime's CPU kernel (measured: its results do not change with it)."""
    if is_packed_batching:
        raise ExecutionError("RotaryEmbedding: is_packed_batching=1 is not supported")
    S = x.shape[2] if x.ndim == 4 else x.shape[1]
    B = x.shape[0]
    pos = _host(position_ids).astype(np.int64)
    if pos.size == 1:
        pos = pos.reshape(1, 1) + np.arange(S)[None, :]
    pos = np.broadcast_to(pos, (B, S))
    if pos.size and (pos.min() < 0 or pos.max() >= cos_cache.shape[0]):
        raise ExecutionError(
            f"RotaryEmbedding: positions reach {pos.max()} but the cos/sin caches hold "
            f"{cos_cache.shape[0]} positions"
        )
    heads = num_heads
    if x.ndim == 3 and not heads:
        heads = x.shape[-1] // (2 * cos_cache.shape[-1])  # head size from the cache
    rot = rotary_embedding_dim or 2 * cos_cache.shape[-1]
    (y,) = _onnx_rotary(x, cos_cache, sin_cache, pos, interleaved=interleaved, num_heads=heads,
                        rotary_embedding_dim=rot)  # fmt: skip
    return (y,)


def _gqa_split(query, key, value, n_q: int, n_kv: int):
    """Q (B, N, S, H) and new K, V (B, Nkv, S, H) from separate or packed (key absent) inputs."""
    if key is None:
        d = query.shape[-1]
        h = d // (n_q + 2 * n_kv)
        if h * (n_q + 2 * n_kv) != d:
            raise ExecutionError(
                f"GroupQueryAttention: packed QKV width {d} is not (num_heads {n_q} + "
                f"2 * kv_num_heads {n_kv}) * head_size"
            )
        query, key, value = (
            query[..., : n_q * h],
            query[..., n_q * h : -n_kv * h],
            query[..., -n_kv * h :],
        )
    elif value is None:
        raise ExecutionError("GroupQueryAttention: key given without value")
    return (_split_heads(query, n_q, "query"), _split_heads(key, n_kv, "key"),
            _split_heads(value, n_kv, "value"))  # fmt: skip


@kernel("GroupQueryAttention", domain=MS, since=1)
def GroupQueryAttention(
    query, key=None, value=None, past_key=None, past_value=None, seqlens_k=None,
    total_sequence_length=None, cos_cache=None, sin_cache=None, position_ids=None,
    attention_bias=None, head_sink=None, /, *, num_heads, kv_num_heads, do_rotary=0,
    local_window_size=-1, rotary_interleaved=0, scale=0.0, smooth_softmax=0, softcap=0.0,
    qk_output=0, n_outputs=3,
):  # fmt: skip
    """Causal grouped-query attention with a KV cache (LLaMA-style decoders).

    Row b holds ``seqlens_k[b] + 1`` valid tokens in all; its S new tokens sit at the end of them
    (from 0 on the first prompt, where the cache is empty). New keys/values are written into the
    present cache (B, Nkv, max(past buffer, total_sequence_length), H) after the row's past.
    """
    if qk_output:
        raise ExecutionError("GroupQueryAttention: qk_output is not supported")
    if seqlens_k is None or total_sequence_length is None:
        raise ExecutionError(
            "GroupQueryAttention: seqlens_k and total_sequence_length are required"
        )
    xp = xp_of(query)
    q, k, v = _gqa_split(query, key, value, num_heads, kv_num_heads)
    B, _, S, H = q.shape
    lens = _host(seqlens_k).astype(np.int64).reshape(-1) + 1
    total = int(_host(total_sequence_length).reshape(-1)[0])
    buf = past_key.shape[2] if past_key is not None else 0
    first_prompt = buf == 0 or S == total  # positions then start at 0 for every row
    starts = np.zeros(B, np.int64) if first_prompt else lens - S
    if do_rotary:
        if cos_cache is None or sin_cache is None:
            raise ExecutionError("GroupQueryAttention: do_rotary=1 needs cos_cache and sin_cache")
        pos = _host(position_ids) if position_ids is not None else starts[:, None] + np.arange(S)
        rot = 2 * cos_cache.shape[-1]
        q = _rotary(q, pos, cos_cache, sin_cache, rotary_interleaved, num_heads, rot)
        k = _rotary(k, pos, cos_cache, sin_cache, rotary_interleaved, kv_num_heads, rot)
    T = max(buf, total)
    pk = xp.zeros((B, kv_num_heads, T, H), dtype=k.dtype)
    pv = xp.zeros((B, kv_num_heads, T, H), dtype=v.dtype)
    if past_key is not None:
        pk[:, :, :buf] = past_key
        pv[:, :, :buf] = past_value
    for b in range(B):  # each row's new tokens go after its own past
        s0 = int(starts[b])
        if s0 + S > T:
            raise ExecutionError(
                f"GroupQueryAttention: row {b} needs {s0 + S} cache slots but the present cache "
                f"holds {T} (total_sequence_length {total})"
            )
        pk[b, :, s0 : s0 + S] = k[b]
        pv[b, :, s0 : s0 + S] = v[b]
    qpos = starts[:, None] + np.arange(S)[None, :]  # [B, S]
    j = np.arange(T)[None, None, :]
    ok = (j <= qpos[:, :, None]) & (j < lens[:, None, None])
    if local_window_size is not None and local_window_size >= 0:
        ok &= j > qpos[:, :, None] - local_window_size
    sink = head_sink
    if sink is None and smooth_softmax:
        sink = xp.zeros(num_heads, dtype=np.float32)
    y = sdpa(q, pk, pv, scale=_scale(scale, H), allowed=ok[:, None], bias=attention_bias,
             softcap=softcap, sink=sink)  # fmt: skip
    return (_merge_heads(y), pk, pv)[: max(n_outputs, 1)]
