"""``com.microsoft`` normalizations (onnxruntime's ContribOperators.md) and the contrib forms
onnxruntime registers in the ``ai.onnx`` domain from version 1 (LayerNormalization before opset 17,
SimplifiedLayerNormalization).

The statistics are the ``ai.onnx`` kernels' (``norm.py``); these add the residual sum, the bias and
the embedding lookups that onnxruntime's transformers optimizer fuses in front of them.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .norm import LayerNormalization as _onnx_layer_norm
from .norm import RMSNormalization, layer_norm_last_axes
from .registry import kernel

MS = "com.microsoft"
_SKIP_EPS = 1e-12  # onnxruntime's default epsilon for the Skip*/Embed* normalizations


def _per_feature(v, h: int, what: str, op: str) -> None:
    if v is not None and v.size != h:
        raise ExecutionError(
            f"{op}: {what} has shape {tuple(v.shape)}, expected ({h},) — one value per hidden unit"
        )


def _skip_sum(x, skip, bias, op: str):
    """input + skip (+ bias): skip is (B, S, H), (1, S, H) or (S, H) against input (B, S, H)."""
    if skip.shape[-1] != x.shape[-1] or skip.ndim > x.ndim:
        raise ExecutionError(
            f"{op}: skip has shape {tuple(skip.shape)}; expected {tuple(x.shape)}, (1, S, H) or "
            f"(S, H) to add to the input"
        )
    s = xp_of(x).add(x, skip)
    _per_feature(bias, x.shape[-1], "bias", op)
    if bias is not None:
        s += bias.reshape(-1)
    return s


def _rms_stats(s, epsilon: float):
    """1/sqrt(mean(s^2) + eps) per row, in float32 (float64 for double input), keepdims."""
    xp = xp_of(s)
    cdt = np.float64 if s.dtype == np.float64 else np.float32
    w = s.astype(cdt, copy=False)
    ms = (w * w).mean(axis=-1, keepdims=True)
    return 1 / xp.sqrt(ms + cdt(epsilon))


@kernel("SkipLayerNormalization", domain=MS, since=1)
def SkipLayerNormalization(
    x, skip, gamma, beta=None, bias=None, /, *, epsilon=_SKIP_EPS, n_outputs=1
):
    """LayerNormalization(input + skip + bias) over the hidden axis.

    Returns (output, mean, inv_std_var, input_skip_bias_sum); the statistics are (B, S, 1) float.
    """
    s = _skip_sum(x, skip, bias, "SkipLayerNormalization")
    h = x.shape[-1]
    _per_feature(gamma, h, "gamma", "SkipLayerNormalization")
    _per_feature(beta, h, "beta", "SkipLayerNormalization")
    if n_outputs == 1 and type(s) is np.ndarray and s.dtype in (np.float32, np.float64):
        # The sum is a fresh buffer nobody else sees: normalise it in place.
        return (layer_norm_last_axes(s, gamma, beta, 1, float(epsilon), inplace=True),)
    y, mean, inv = _onnx_layer_norm(s, gamma, beta, axis=-1, epsilon=float(epsilon))
    return (y, mean.astype(np.float32), inv.astype(np.float32), s)[:n_outputs]


@kernel("SkipSimplifiedLayerNormalization", domain=MS, since=1)
def SkipSimplifiedLayerNormalization(
    x, skip, gamma, bias=None, /, *, epsilon=_SKIP_EPS, n_outputs=1
):
    """RMS normalization of input + skip + bias (T5 / LLaMA style: no mean, no beta).

    Returns (output, mean, inv_std_var, input_skip_bias_sum); mean is 0, as onnxruntime gives it.
    """
    s = _skip_sum(x, skip, bias, "SkipSimplifiedLayerNormalization")
    _per_feature(gamma, x.shape[-1], "gamma", "SkipSimplifiedLayerNormalization")
    (y,) = RMSNormalization(s, gamma, axis=-1, epsilon=float(epsilon))
    if n_outputs == 1:
        return (y.astype(x.dtype, copy=False),)
    inv = _rms_stats(s, float(epsilon)).astype(np.float32)
    xp = xp_of(x)
    return (y.astype(x.dtype, copy=False), xp.zeros_like(inv), inv, s)[:n_outputs]


@kernel("SimplifiedLayerNormalization", since=1)
def SimplifiedLayerNormalization(x, scale, /, *, axis=-1, epsilon=1e-5, stash_type=1, n_outputs=1):
    """RMS normalization over axes [axis, rank) (onnxruntime's ``ai.onnx`` contrib op).

    Returns (Y, inv_std_var); inv_std_var keeps size-1 normalized axes.
    """
    (y,) = RMSNormalization(x, scale, axis=axis, epsilon=epsilon, stash_type=stash_type)
    y = y.astype(x.dtype, copy=False)
    if n_outputs == 1:
        return (y,)
    a = axis % x.ndim
    rows = x.reshape(x.shape[:a] + (-1,))
    inv = _rms_stats(rows, float(epsilon)).reshape(x.shape[:a] + (1,) * (x.ndim - a))
    return y, inv.astype(np.float32)


@kernel("LayerNormalization", since=1)
def LayerNormalization_1(x, scale, b=None, /, *, axis=-1, epsilon=1e-5, stash_type=1, n_outputs=3):
    """onnxruntime's contrib LayerNormalization (``ai.onnx`` domain before opset 17): the same
    semantics as LayerNormalization-17."""
    return _onnx_layer_norm(
        x, scale, b, axis=axis, epsilon=epsilon, stash_type=stash_type, n_outputs=n_outputs
    )[:n_outputs]


def _embedding(table, ids, what: str):
    ids = np.asarray(ids.get() if hasattr(ids, "get") else ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        raise ExecutionError(
            f"EmbedLayerNormalization: {what} ids must lie in [0, {table.shape[0]}), got values in "
            f"[{ids.min()}, {ids.max()}]"
        )
    return table[ids]


@kernel("EmbedLayerNormalization", domain=MS, since=1)
def EmbedLayerNormalization(
    input_ids, segment_ids, word_embedding, position_embedding, segment_embedding=None,
    gamma=None, beta=None, mask=None, position_ids=None, /, *, epsilon=_SKIP_EPS,
    mask_index_type=1, n_outputs=2,
):  # fmt: skip
    """LayerNormalization(word[input_ids] + position[position_ids] + segment[segment_ids]) (BERT's
    embedding block). Position ids default to 0..S-1. Returns (output (B, S, H), mask_index (B,)
    int32: the count of mask ones per row, 0 without a mask, and embedding_sum (B, S, H))."""
    if input_ids.ndim != 2:
        raise ExecutionError(
            f"EmbedLayerNormalization: input_ids must be 2-D (batch, sequence), got {input_ids.shape}"
        )
    if gamma is None:
        raise ExecutionError("EmbedLayerNormalization: the gamma input (index 5) is required")
    xp = xp_of(word_embedding)
    B, S = input_ids.shape
    emb = _embedding(word_embedding, input_ids, "word")
    pos = position_ids if position_ids is not None else np.arange(S)[None, :]
    emb = emb + _embedding(position_embedding, np.broadcast_to(pos, (B, S)), "position")
    if segment_ids is not None and segment_embedding is not None:
        emb = emb + _embedding(segment_embedding, segment_ids, "segment")
    emb = xp.ascontiguousarray(emb.astype(word_embedding.dtype, copy=False))
    y = layer_norm_last_axes(emb, gamma, beta, 1, float(epsilon))
    if mask is not None:
        mask_index = (mask != 0).sum(axis=1).astype(np.int32)
    else:
        mask_index = xp.zeros(B, dtype=np.int32)
    return (y, mask_index, emb)[: max(n_outputs, 1)]
