"""Fused transformer kernels of the ``ziggurat`` domain, made by the passes ``fuse_gelu`` (tanh form),
``fuse_layernorm`` and ``fuse_attention``.

Each replaces a chain of ONNX nodes that would allocate one full tensor per op with a few passes over
one fresh buffer. They keep the ONNX semantics of the chain they replace, up to float rounding
(the tests derive their tolerances from the computation).
"""

from __future__ import annotations

import math

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from . import _jit
from .activation import softmax_last_axis
from .matmul import MatMul
from .norm import layer_norm_last_axes
from .registry import kernel

DOMAIN = "ziggurat"
_SQRT_2_PI = math.sqrt(2.0 / math.pi)
_CHUNK = 16384  # elements per GELU chunk (64 KiB of float32): its passes stay in L1/L2


@kernel("GeluTanh", domain=DOMAIN)
def GeluTanh(x, /):
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3))), the GPT-2 / ViT-hybrid GELU."""
    if type(x) is not np.ndarray or x.dtype not in (np.float32, np.float64):
        xp = xp_of(x)
        w = x.astype(np.float32) if x.dtype.kind == "V" or x.dtype == np.float16 else x
        t = w.dtype.type
        u = xp.tanh((w + t(0.044715) * w * w * w) * t(_SQRT_2_PI))
        return ((t(0.5) * w * (u + t(1))).astype(x.dtype, copy=False),)
    y = np.empty(x.shape, dtype=x.dtype)
    src, dst = np.ascontiguousarray(x).reshape(-1), y.reshape(-1)
    t = x.dtype.type
    c3, c1 = t(0.044715 * _SQRT_2_PI), t(_SQRT_2_PI)
    buf = np.empty(min(src.size, _CHUNK), dtype=x.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(0, src.size, _CHUNK):
            xv, u, out = src[s : s + _CHUNK], buf[: min(_CHUNK, src.size - s)], dst[s : s + _CHUNK]
            # u = x * (c1 + c3 * x^2) = c1 * (x + 0.044715 x^3), in 4 in-cache passes
            np.multiply(xv, xv, out=u)
            u *= c3
            u += c1
            u *= xv
            np.tanh(u, out=u)
            u += t(1)
            np.multiply(xv, t(0.5), out=out)
            out *= u
    return (y,)


def _ln_inputs(gamma, beta, x, what: str) -> None:
    if gamma.size != x.shape[-1] or (beta is not None and beta.size != x.shape[-1]):
        raise ExecutionError(
            f"{what}: scale/bias must hold one value per feature ({x.shape[-1]}), got "
            f"{gamma.shape} and {None if beta is None else beta.shape}"
        )


@kernel("LayerNorm", domain=DOMAIN)
def LayerNorm(x, gamma, beta=None, /, *, epsilon=1e-5, out_dtype=""):
    """LayerNormalization over the last axis (the decomposed ReduceMean/Sub/Pow/Sqrt/Div form).
    ``out_dtype="bf16"`` (passes/bf16_activations.py): statistics and normalization in float32,
    the result rounded to bfloat16 for bf16 GEMMs that read it (backends/cpu/norm_bf16.py)."""
    _ln_inputs(gamma, beta, x, "LayerNorm")
    if out_dtype == "bf16":
        from ..backends.cpu import norm_bf16

        y = norm_bf16.layer_norm(x, gamma, beta, float(epsilon))
        if y is None:
            import ml_dtypes

            y = layer_norm_last_axes(x, gamma, beta, 1, float(epsilon)).astype(ml_dtypes.bfloat16)
        return (y,)
    return (layer_norm_last_axes(x, gamma, beta, 1, float(epsilon)),)


@kernel("SkipLayerNorm", domain=DOMAIN)
def SkipLayerNorm(a, b, gamma, beta=None, /, *, axis=-1, epsilon=1e-5, n_outputs=1):
    """LayerNormalization(a + b) over axes [axis, rank); a second output, if declared, is a + b
    (the residual stream, which the next block adds to again)."""
    fused = _skip_layer_norm_jit(a, b, gamma, beta, axis, float(epsilon), n_outputs)
    if fused is not None:
        return fused
    xp = np if type(a) is np.ndarray else xp_of(a)
    s = xp.add(a, b)
    if s.dtype != a.dtype:
        raise ExecutionError(f"SkipLayerNorm: inputs have dtypes {a.dtype} and {b.dtype}")
    rank_axis = axis + s.ndim if axis < 0 else axis
    if not 0 <= rank_axis < s.ndim:
        raise ExecutionError(f"SkipLayerNorm: axis {axis} out of range for rank {s.ndim}")
    cols = math.prod(s.shape[rank_axis:])
    if gamma.size != cols or (beta is not None and beta.size != cols):
        raise ExecutionError(
            f"SkipLayerNorm: scale/bias must hold one value per normalized element ({cols}), "
            f"got {gamma.shape} and {None if beta is None else beta.shape}"
        )
    inplace = n_outputs < 2  # the sum is a fresh buffer nobody else sees: normalise it in place
    y = layer_norm_last_axes(s, gamma, beta, s.ndim - rank_axis, float(epsilon), inplace=inplace)
    return (y, s) if n_outputs >= 2 else (y,)


def _skip_layer_norm_jit(a, b, gamma, beta, axis, eps, n_outputs):
    """The add and the normalisation in one numba row loop (``_jit.skip_layer_norm``) for
    same-shape float32 numpy inputs over the last axes; None where it does not apply (the caller
    then adds and normalises with numpy, same results within float32 rounding).

    Measured on BERT-base's 128 x 768 (2 cores, between bf16 GEMMs as in the model): 159 us for
    the add into a fresh temporary plus the LayerNorm, against ~60 us fused."""
    f32 = np.float32
    if type(a) is not np.ndarray or type(b) is not np.ndarray or a.dtype != f32 or b.dtype != f32:
        return None
    if a.shape != b.shape or a.ndim == 0 or not -a.ndim <= axis < a.ndim:
        return None
    cols = math.prod(a.shape[axis % a.ndim :])
    if type(gamma) is not np.ndarray or gamma.dtype != f32 or gamma.size != cols or cols == 0:
        return None
    if beta is not None and (
        type(beta) is not np.ndarray or beta.dtype != f32 or beta.size != cols
    ):
        return None
    jit = _jit.kernels(a.size)
    if jit is None:
        return None
    a2 = np.ascontiguousarray(a).reshape(-1, cols)
    b2 = np.ascontiguousarray(b).reshape(-1, cols)
    bias = np.zeros(cols, f32) if beta is None else np.ascontiguousarray(beta).reshape(-1)
    y = np.empty(a.shape, f32)
    s = np.empty(a.shape, f32) if n_outputs >= 2 else y
    jit.skip_layer_norm(
        a2, b2, np.ascontiguousarray(gamma).reshape(-1), bias, f32(eps),
        y.reshape(-1, cols), s.reshape(-1, cols),
    )  # fmt: skip
    return (y, s) if n_outputs >= 2 else (y,)


@kernel("FusedAttention", domain=DOMAIN)
def FusedAttention(q, k_t, v, mask=None, /, *, scale=1.0, nan_to_zero=0, bf16=0, out_dtype=""):
    """softmax(scale * (q @ k_t) + mask) @ v over the last axis; shapes broadcast as MatMul's.

    ``bf16=1`` (set by ``passes/pack_weights`` in ``precision="bf16"`` sessions): the two products
    in bfloat16 on oneDNN's AMX kernels, softmax in float32 (``backends/cpu/attention.py``) where
    that path takes the case; the float32 path below otherwise. ``out_dtype="bf16"``
    (passes/bf16_activations.py): the result in bfloat16, for a bf16 GEMM that reads it.

    ``k_t`` is the keys already transposed ([..., D, T]), as exporters hand it to the MatMul.
    ``nan_to_zero``: rows whose every key is masked (-inf) give 0, as the exporters'
    ``Where(IsNaN(p), 0, p)`` does. float32 with oneDNN: the scale multiplies the product inside
    the matmul (oneDNN's source scale; in BERT-base bf16 ~6 % less attention time, 575 vs 610 us
    per call) and q's strided per-head view is read in place. Elsewhere the scale is applied to q
    (the smaller operand, [..., S, D]), written into a fresh C-contiguous buffer that BLAS reads
    at unit stride.
    """
    if bf16 and type(q) is np.ndarray:
        y = _attention_bf16(q, k_t, v, mask, scale, nan_to_zero, out_dtype == "bf16")
        if y is not None:
            return (y,)
        if q.dtype.kind == "V":  # bfloat16 q/k/v (a bf16 projection's): the float32 path below
            q, k_t, v = (a.astype(np.float32) for a in (q, k_t, v))
    if type(q) is not np.ndarray or q.dtype not in (np.float32, np.float64):
        return _attention_generic(q, k_t, v, mask, scale, nan_to_zero)
    if out_dtype:
        (y,) = FusedAttention(q, k_t, v, mask, scale=scale, nan_to_zero=nan_to_zero)
        import ml_dtypes

        return (y.astype(ml_dtypes.bfloat16),)
    if q.dtype == np.float32:  # three oneDNN primitives, the mask in the first one's epilogue
        from ..backends.cpu import attention_f32

        y = attention_f32.attention(q, k_t, v, mask, float(scale), bool(nan_to_zero))
        if y is not None:
            return (y,)
    scores = _scaled_scores(q, k_t, scale)
    if scores is None:
        if scale != 1.0:
            qs = np.empty(q.shape, dtype=q.dtype)
            np.multiply(q, q.dtype.type(scale), out=qs)
            q = qs
        (scores,) = MatMul(q, k_t)
    if mask is not None:
        if np.broadcast_shapes(scores.shape, mask.shape) == scores.shape:
            scores += mask
        else:
            scores = scores + mask
    if scores.dtype != v.dtype:
        raise ExecutionError(f"FusedAttention: scores {scores.dtype} but values {v.dtype}")
    # The scores are MatMul's (or the mask add's) fresh buffer: the softmax overwrites them.
    p = softmax_last_axis(np.ascontiguousarray(scores), nan_to_zero=bool(nan_to_zero), inplace=True)
    return MatMul(p, v)


def _attention_bf16(q, k_t, v, mask, scale, nan_to_zero, out_bf16=False):
    """The bf16 attention (``backends/cpu/attention.py``), or None. Where ``nan_to_zero`` asks
    rows without any finite key to give zeros (their softmax is NaN) and the mask could make one
    (a NaN, a +inf, or a row all -inf: its row maximum is not finite), the float32 path runs;
    -inf entries in rows that keep a finite key (GPT-2's causal mask) stay on this path."""
    if nan_to_zero and mask is not None and mask.size:
        # two whole-array reductions (5 us on BERT's 128 x 128) settle the usual all-finite
        # mask; only a mask with an infinity or NaN needs the row maxima (15 us)
        finite = np.isfinite(mask.min()) and np.isfinite(mask.max())
        if not finite and not np.isfinite(mask.max(axis=-1)).all():
            return None
    from ..backends.cpu import attention

    return attention.attention(q, k_t, v, mask, float(scale), out_bf16)


def _scaled_scores(q, k_t, scale):
    """``scale * (q @ k_t)`` by oneDNN with the scale applied to the product (no scaled copy of
    q), or None: float32 only, a scale other than 1, shapes oneDNN takes. The same values as
    scaling q for a power-of-two scale (BERT's 1/sqrt(64)), within one rounding otherwise."""
    if scale == 1.0 or q.dtype != np.float32 or k_t.dtype != np.float32:
        return None
    from .matmul import _native

    return _native().matmul(q, k_t, float(scale))


def _attention_generic(q, k_t, v, mask, scale, nan_to_zero):
    """The op-by-op form, for other array types and dtypes (same order of operations)."""
    from .activation import Softmax

    t = q.dtype.type
    (s,) = MatMul(q * t(scale) if scale != 1.0 else q, k_t)
    if mask is not None:
        s = s + mask
    with np.errstate(invalid="ignore"):  # a row with every key masked gives NaN, as unfused
        (p,) = Softmax(s, axis=-1)
    if nan_to_zero:
        xp = xp_of(p)
        p = xp.where(xp.isnan(p), t(0), p)
    return MatMul(p, v)
