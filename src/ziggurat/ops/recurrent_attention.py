"""State-carrying sequence ops of linear-attention models: LinearAttention, CausalConvWithState.

Both run in float32 (float64 stays float64) and cast back, so float16 models keep their dtype.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel

_RULES = ("linear", "gated", "delta", "gated_delta")


def _compute_dtype(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def _heads(x, n_heads: int, what: str):
    """[B, T, H*D] -> [B, T, H, D]."""
    B, T, hidden = x.shape
    if n_heads <= 0 or hidden % n_heads:
        raise ExecutionError(f"{what} hidden size {hidden} does not split into {n_heads} heads")
    return x.reshape(B, T, n_heads, hidden // n_heads)


def _per_head(x, B: int, T: int, H: int, what: str, cdt):
    """A gate given per head [B, T, H] or shared [B, T, 1] -> [B, T, H, 1, 1] for broadcasting."""
    if x.shape[-1] not in (1, H):
        raise ExecutionError(
            f"{what} has last dimension {x.shape[-1]}; expected {H} (one per kv head) or 1"
        )
    return xp_of(x).broadcast_to(x.astype(cdt), (B, T, H))[..., None, None]


@kernel("LinearAttention", since=27)
def LinearAttention(
    query, key, value, past_state=None, decay=None, beta=None, /, *,
    chunk_size=64, kv_num_heads=0, q_num_heads=0, scale=0.0, update_rule="gated_delta",
):  # fmt: skip
    """Recurrent linear attention (linear / gated / delta / gated_delta rules) with GQA.

    The state S [B, H_kv, d_k, d_v] is updated token by token (``chunk_size`` is only a tuning
    hint for chunked kernels; the sequential recurrence gives the same result). Returns
    (output [B, T, H_q*d_v], present_state).
    """
    xp = xp_of(query)
    if update_rule not in _RULES:
        raise ExecutionError(f"update_rule is {update_rule!r}; expected one of {', '.join(_RULES)}")
    gated = update_rule in ("gated", "gated_delta")
    delta = update_rule in ("delta", "gated_delta")
    if gated and decay is None:
        raise ExecutionError(f"update_rule {update_rule!r} needs the decay input (log-space gate)")
    if delta and beta is None:
        raise ExecutionError(f"update_rule {update_rule!r} needs the beta input (update rate)")
    if q_num_heads <= 0 or kv_num_heads <= 0 or q_num_heads % kv_num_heads:
        raise ExecutionError(
            f"q_num_heads={q_num_heads}, kv_num_heads={kv_num_heads}: both are required and q_num_heads "
            f"must be a positive multiple of kv_num_heads"
        )
    out_dt = query.dtype
    cdt = _compute_dtype(out_dt)
    q = _heads(query.astype(cdt), q_num_heads, "query")  # [B, T, Hq, dk]
    k = _heads(key.astype(cdt), kv_num_heads, "key")  # [B, T, Hkv, dk]
    v = _heads(value.astype(cdt), kv_num_heads, "value")  # [B, T, Hkv, dv]
    B, T, Hkv, dk = k.shape
    dv = v.shape[-1]
    group = q_num_heads // kv_num_heads
    s = cdt.type(scale if scale else 1.0 / np.sqrt(q.shape[-1]))
    # Query heads of one kv head sit next to each other: [B, T, Hkv, group, dk].
    q = q.reshape(B, T, Hkv, group, q.shape[-1]) * s

    if gated:
        if decay.shape[-1] == Hkv * dk:  # per key dimension: scales the rows of S
            g = xp.exp(_heads(decay.astype(cdt), Hkv, "decay"))[..., None]  # [B, T, Hkv, dk, 1]
        else:
            g = xp.exp(_per_head(decay, B, T, Hkv, "decay", cdt))
    if delta:
        b = _per_head(beta, B, T, Hkv, "beta", cdt)

    state = xp.zeros((B, Hkv, dk, dv), cdt) if past_state is None else past_state.astype(cdt)
    out = xp.empty((B, T, Hkv, group, dv), cdt)
    for t in range(T):
        kt, vt = k[:, t], v[:, t]  # [B, Hkv, dk], [B, Hkv, dv]
        if gated:
            state = g[:, t] * state
        if delta:
            # S^T k: what the state currently recalls for this key; write the beta-weighted error.
            recalled = (kt[:, :, None, :] @ state)[:, :, 0]  # [B, Hkv, dv]
            state = state + b[:, t] * (kt[..., :, None] * (vt - recalled)[..., None, :])
        else:
            state = state + kt[..., :, None] * vt[..., None, :]
        out[:, t] = q[:, t] @ state  # [B, Hkv, group, dk] @ [B, Hkv, dk, dv]
    out = out.reshape(B, T, q_num_heads * dv)
    state_dt = past_state.dtype if past_state is not None else out_dt
    return out.astype(out_dt), state.astype(state_dt)


@kernel("CausalConvWithState", since=27)
def CausalConvWithState(input, weight, bias=None, past_state=None, /, *, activation="none"):
    """Causal depthwise 1-D conv over [B, C, L] carrying the last k-1 inputs as state.

    Returns (output [B, C, L], present_state [B, C, k-1]).
    """
    xp = xp_of(input)
    if activation not in ("none", "silu", "swish"):
        raise ExecutionError(f"activation is {activation!r}; expected 'none', 'silu' or 'swish'")
    B, C, L = input.shape
    if weight.shape[0] != C or weight.ndim != 3 or weight.shape[1] != 1:
        raise ExecutionError(
            f"weight has shape {tuple(weight.shape)}; expected ({C}, 1, k) for {C} channels"
        )
    k = weight.shape[2]
    cdt = _compute_dtype(input.dtype)
    x = input.astype(cdt)
    if past_state is None:
        past = xp.zeros((B, C, k - 1), cdt)
    else:
        if tuple(past_state.shape) != (B, C, k - 1):
            raise ExecutionError(
                f"past_state has shape {tuple(past_state.shape)}; expected ({B}, {C}, {k - 1}) = (batch, channels, k-1)"
            )
        past = past_state.astype(cdt)
    padded = xp.concatenate([past, x], axis=-1)  # [B, C, k-1+L]
    w = weight[:, 0, :].astype(cdt)  # [C, k]
    y = xp.zeros((B, C, L), cdt)
    for j in range(k):  # loop over the few kernel taps
        y += w[None, :, j, None] * padded[:, :, j : j + L]
    if bias is not None:
        y += bias.astype(cdt)[None, :, None]
    if activation in ("silu", "swish"):
        y = y * (0.5 * (1 + xp.tanh(0.5 * y)))  # x * sigmoid(x), overflow-free
    present = padded[:, :, padded.shape[-1] - (k - 1) :]
    return y.astype(input.dtype), present.astype(input.dtype)
