"""Transformer-era ops: Attention, RotaryEmbedding, TensorScatter, and the preview FlexAttention.

Attention math runs in float32 (float64 for double inputs) and casts back to the input dtype, so
float16/bfloat16 models keep their output dtype without accumulating in half precision.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from ..ir import dtypes as onnx_dtypes
from .registry import kernel


def _compute_dtype(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def _attention_dtype(dt: np.dtype) -> np.dtype:
    """Attention's working precision: float16 widens to float32, but bfloat16 stays bfloat16.

    The spec computes in the input precision; the conformance data for bfloat16 is rounded per
    operation at rtol 1e-3 (below one bfloat16 ulp), so only bfloat16 arithmetic reproduces it.
    float16 data has tolerances float32 math meets, and float32 is faster and more accurate.
    """
    return dt if dt == ml_dtypes.bfloat16 else _compute_dtype(dt)


def _split_heads(x, n_heads: int, what: str):
    """[B, S, H*D] -> [B, H, S, D]."""
    if not n_heads:
        raise ExecutionError(
            f"{what} is 3-D {tuple(x.shape)} but the head count attribute is missing or 0; "
            f"set q_num_heads and kv_num_heads for 3-D inputs"
        )
    B, S, hidden = x.shape
    if hidden % n_heads:
        raise ExecutionError(
            f"{what} hidden size {hidden} is not a multiple of its {n_heads} heads"
        )
    return xp_of(x).transpose(x.reshape(B, S, n_heads, hidden // n_heads), (0, 2, 1, 3))


def _repeat_kv(x, n_q_heads: int):
    """Share each K/V head with a contiguous group of query heads (GQA / MQA)."""
    n_kv = x.shape[1]
    if n_kv == n_q_heads:
        return x
    if n_q_heads % n_kv:
        raise ExecutionError(
            f"query has {n_q_heads} heads, not a multiple of the {n_kv} key/value heads; "
            f"grouped-query attention needs q_num_heads % kv_num_heads == 0"
        )
    return xp_of(x).repeat(x, n_q_heads // n_kv, axis=1)


def _masked_softmax(xp, scores):
    """Softmax over the last axis; a row whose every score is -inf becomes all zeros, not NaN."""
    m = scores.max(axis=-1, keepdims=True)
    empty = m == -np.inf
    with np.errstate(invalid="ignore", divide="ignore"):
        e = xp.exp(scores - xp.where(empty, 0, m))
        s = e.sum(axis=-1, keepdims=True)
        p = e / xp.where(s == 0, 1, s)
    return xp.where(empty, 0, p).astype(scores.dtype, copy=False)


def _mask_bias(xp, attn_mask, total: int, cdt):
    """attn_mask as an additive bias: bool True -> 0, False -> -inf; a short key axis is padded with -inf."""
    if attn_mask.dtype == np.bool_:
        bias = xp.where(attn_mask, 0, -np.inf).astype(cdt)
    else:
        bias = attn_mask.astype(cdt)
    short = total - bias.shape[-1]
    if short > 0:
        pad = [(0, 0)] * (bias.ndim - 1) + [(0, short)]
        bias = xp.pad(bias, pad, constant_values=-np.inf)
    elif short < 0:
        raise ExecutionError(
            f"attn_mask's last axis has {bias.shape[-1]} keys but the total sequence length is {total}; "
            f"it may be shorter (padded with -inf) but not longer"
        )
    return bias


def _structural_allowed(xp, B, Sq, T, *, is_causal, left, right, offset, nonpad):
    """Boolean [B', 1, Sq, T] of keys allowed by causality, the local window and kv padding, or None."""
    if not is_causal and left < 0 and right < 0 and nonpad is None:
        return None
    i = np.arange(Sq)[:, None]
    j = np.arange(T)[None, :]
    pos = i[None] + np.asarray(offset).reshape(-1, 1, 1)  # absolute query position [B', Sq, 1]
    allowed = np.ones((pos.shape[0], Sq, T), dtype=bool)
    if is_causal:
        allowed &= j <= pos
    if left >= 0:
        allowed &= j >= pos - left
    if right >= 0:
        allowed &= j <= pos + right
    if nonpad is not None:
        allowed &= j[None] < nonpad.reshape(-1, 1, 1)
    return xp.asarray(allowed[:, None])


@kernel("Attention", since=23)
def Attention(
    Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, /, *,
    is_causal=0, kv_num_heads=0, q_num_heads=0, qk_matmul_output_mode=0, scale=None, softcap=0.0,
    softmax_precision=0, left_window_size=-1, right_window_size=-1,
):  # fmt: skip
    """Scaled dot-product attention with GQA, masks, KV cache, softcap and local windows (opsets 23-25).

    Returns (Y, present_key, present_value, qk_matmul_output).
    """
    xp = xp_of(Q)
    out_dt = Q.dtype
    cdt = _attention_dtype(out_dt)
    is_3d = Q.ndim == 3
    if is_3d:
        Q = _split_heads(Q, q_num_heads, "Q")
        K = _split_heads(K, kv_num_heads, "K") if K.ndim == 3 else K
        V = _split_heads(V, kv_num_heads, "V") if V.ndim == 3 else V
    if (past_key is None) != (past_value is None):
        raise ExecutionError("past_key and past_value must be given together (got only one)")
    past_len = 0
    if past_key is not None:
        past_len = past_key.shape[2]
        K = xp.concatenate([past_key, K.astype(past_key.dtype, copy=False)], axis=2)
        V = xp.concatenate([past_value, V.astype(past_value.dtype, copy=False)], axis=2)
    present_key, present_value = K, V
    B, Hq, Sq, D = Q.shape
    T = K.shape[2]

    s = np.sqrt(1.0 / np.sqrt(D) if scale is None else scale)  # scale Q and K by sqrt(scale) each
    q = Q.astype(cdt) * cdt.type(s)
    k = _repeat_kv(K.astype(cdt), Hq) * cdt.type(s)
    v = _repeat_kv(V.astype(cdt), Hq)
    scores = q @ xp.swapaxes(k, -1, -2)  # [B, Hq, Sq, T]
    qk_out = scores if qk_matmul_output_mode == 0 else None
    if softcap and softcap > 0:
        scores = cdt.type(softcap) * xp.tanh(scores / cdt.type(softcap))
    if qk_matmul_output_mode == 1:
        qk_out = scores

    if attn_mask is not None:
        scores = scores + _mask_bias(xp, attn_mask, T, cdt)
    nonpad = None
    if nonpad_kv_seqlen is not None:
        nonpad = np.asarray(
            nonpad_kv_seqlen.get() if hasattr(nonpad_kv_seqlen, "get") else nonpad_kv_seqlen
        )
    # Bottom-right causal alignment: queries sit after the cached keys (past_key or external cache).
    offset = past_len if past_key is not None or nonpad is None else nonpad.astype(np.int64) - Sq
    allowed = _structural_allowed(
        xp, B, Sq, T, is_causal=is_causal, left=left_window_size, right=right_window_size,
        offset=offset, nonpad=nonpad,
    )  # fmt: skip
    if allowed is not None:
        scores = xp.where(allowed, scores, -np.inf)
    if qk_matmul_output_mode == 2:
        qk_out = scores

    # Softmax runs in float32/float64; a requested half precision rounds the probabilities to it.
    sm_dt = onnx_dtypes.to_numpy(softmax_precision) if softmax_precision else cdt
    probs = _masked_softmax(xp, scores.astype(_attention_dtype(sm_dt), copy=False))
    if sm_dt == np.float16:  # a float16 softmax was asked for: round the probabilities to it
        probs = probs.astype(sm_dt).astype(np.float32)
    if qk_matmul_output_mode == 3:
        qk_out = probs
    Y = probs.astype(cdt, copy=False) @ v  # [B, Hq, Sq, Dv]
    if is_3d:
        Y = xp.transpose(Y, (0, 2, 1, 3)).reshape(B, Sq, -1)
    if qk_out is None:
        raise ExecutionError(
            f"qk_matmul_output_mode is {qk_matmul_output_mode}; expected 0, 1, 2 or 3"
        )
    return Y.astype(out_dt), present_key, present_value, qk_out.astype(out_dt)


@kernel("RotaryEmbedding", since=23)
def RotaryEmbedding(
    X,
    cos_cache,
    sin_cache,
    position_ids=None,
    /,
    *,
    interleaved=0,
    num_heads=0,
    rotary_embedding_dim=0,
):
    """Rotary position embedding on 4-D [B, H, S, D] or 3-D [B, S, H*D] input (halves or interleaved pairs)."""
    xp = xp_of(X)
    shape3 = X.shape if X.ndim == 3 else None
    if X.ndim == 3:
        x = _split_heads(X, num_heads, "X")  # [B, H, S, D]
    elif X.ndim == 4:
        x = X
    else:
        raise ExecutionError(f"X has rank {X.ndim}; expected 4-D (B, H, S, D) or 3-D (B, S, H*D)")
    D = x.shape[-1]
    rot = rotary_embedding_dim or D
    half = rot // 2
    if position_ids is not None:
        cos, sin = cos_cache[position_ids], sin_cache[position_ids]  # [B, S, half]
    else:
        cos, sin = cos_cache, sin_cache
    if cos.shape[-1] != half or sin.shape[-1] != half:
        raise ExecutionError(
            f"cos/sin caches have last dimension {cos.shape[-1]}/{sin.shape[-1]}; expected "
            f"rotary_embedding_dim/2 = {half}"
        )
    cos = cos[:, None].astype(x.dtype, copy=False)  # broadcast over heads
    sin = sin[:, None].astype(x.dtype, copy=False)
    x_rot = x[..., :rot]
    if interleaved:
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
    else:
        x1, x2 = x_rot[..., :half], x_rot[..., half:]
    real = x1 * cos - x2 * sin
    imag = x1 * sin + x2 * cos
    if interleaved:
        rotated = xp.stack([real, imag], axis=-1).reshape(x_rot.shape)
    else:
        rotated = xp.concatenate([real, imag], axis=-1)
    out = xp.concatenate([rotated, x[..., rot:]], axis=-1) if rot < D else rotated
    if shape3 is not None:
        out = xp.transpose(out, (0, 2, 1, 3)).reshape(shape3)
    return (out.astype(X.dtype, copy=False),)


@kernel("TensorScatter", since=24)
def TensorScatter(past_cache, update, write_indices=None, /, *, axis=-2, mode="linear"):
    """Write ``update`` into a copy of ``past_cache`` along ``axis`` at each batch item's write index."""
    xp = xp_of(past_cache)
    ax = axis % past_cache.ndim
    if ax == 0:
        raise ExecutionError(
            "TensorScatter axis must not be 0 (the batch axis); use the sequence axis"
        )
    if mode not in ("linear", "circular"):
        raise ExecutionError(f"mode is {mode!r}; expected 'linear' or 'circular'")
    B, max_len, seq = past_cache.shape[0], past_cache.shape[ax], update.shape[ax]
    start = xp.zeros(B, dtype=np.int64) if write_indices is None else write_indices.astype(np.int64)
    idx = start[:, None] + xp.arange(seq)[None, :]  # [B, seq]
    if mode == "circular":
        idx = idx % max_len
    elif seq and int(idx.max()) >= max_len:
        raise ExecutionError(
            f"write index + update length reaches {int(idx.max()) + 1} > cache length {max_len} in "
            f"linear mode; use mode='circular' or a larger cache"
        )
    # Bring the sequence axis next to the batch axis so one fancy-index assignment does every write.
    present = xp.moveaxis(past_cache.copy(), ax, 1)
    present[xp.arange(B)[:, None], idx] = xp.moveaxis(update, ax, 1)
    return (xp.moveaxis(present, 1, ax),)


@kernel("FlexAttention", since=1, domain="ai.onnx.preview")
def FlexAttention(Q, K, V, /, *, prob_mod=None, scale=None, score_mod=None, softmax_precision=0):
    """softmax(score_mod(Q K^T * scale)) -> prob_mod -> @ V, on rank-4 inputs with GQA."""
    xp = xp_of(Q)
    if Q.ndim != 4 or K.ndim != 4 or V.ndim != 4:
        raise ExecutionError(
            f"FlexAttention needs rank-4 Q, K, V; got ranks {Q.ndim}, {K.ndim}, {V.ndim}"
        )
    if softmax_precision:
        sm_dt = onnx_dtypes.to_numpy(softmax_precision)
    else:
        sm_dt = np.dtype(np.float64) if Q.dtype == np.float64 else np.dtype(np.float32)
    Hq = Q.shape[1]
    s = 1.0 / np.sqrt(Q.shape[-1]) if scale is None else scale
    k_t = xp.swapaxes(_repeat_kv(K, Hq).astype(sm_dt), -1, -2)
    scores = (Q.astype(sm_dt) @ k_t) * sm_dt.type(s)
    if score_mod is not None:
        scores = xp.asarray(score_mod(scores)[0]).astype(sm_dt, copy=False)
    probs = _masked_softmax(xp, scores)
    if prob_mod is not None:
        probs = xp.asarray(prob_mod(probs)[0]).astype(sm_dt, copy=False)
    Y = probs @ _repeat_kv(V, Hq).astype(sm_dt)
    return (Y.astype(Q.dtype),)
