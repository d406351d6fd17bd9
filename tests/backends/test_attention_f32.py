"""float32 attention on oneDNN (backends/cpu/attention_f32.py) against a float64 reference.

Measured when it was wired into FusedAttention (the exporters' strided per-head views of the
merged QKV projection, plus the head merge's Transpose + Reshape; medians in one process, the
op-by-op float32 path / this path, same minutes): bert-tiny's 2 heads x 128 x 64, 2 shared
cores (load ~1-4), 145-150 / 99-114 us; BERT-base's 12 heads x 128 x 64, one thread, CPU time
(load ~14), 645 / 530 us. bert-tiny whole run, one thread, CPU time: 1164-1242 -> 977-1063 us
with this and runtime/direct.py and dnnl.data_ptr together (load ~6).
"""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.backends.cpu import attention_f32, dnnl
from ziggurat.ops.fused_transformer import FusedAttention

pytestmark = pytest.mark.skipif(not dnnl.available(), reason=f"oneDNN: {dnnl.unavailable_reason()}")
U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff
NEG = np.float32(np.finfo(np.float32).min)  # the exporters' "masked" value


def _gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def _views(rng, b, s, h, d):
    """q, k_t, v as the exporters hand them: per-head views of one merged projection."""
    qkv = rng.standard_normal((b, s, 3 * h * d)).astype(np.float32)
    split = [qkv[..., i * h * d : (i + 1) * h * d].reshape(b, s, h, d) for i in range(3)]
    return (
        split[0].transpose(0, 2, 1, 3),
        split[1].transpose(0, 2, 3, 1),
        split[2].transpose(0, 2, 1, 3),
    )


def _reference_and_bound(q, k_t, v, mask, scale):
    """float64 softmax(scale q k_t + mask) v and a float32 error bound per output element:
    the scores' dot products (gamma_D of sum |q||k|), carried through the softmax (relative
    error of p_i at most twice the largest score error of its row, plus a few roundings in exp,
    sum and division), then the second product (gamma_T of sum p|v|, plus sum |dp||v|)."""
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k_t, v))
    s = scale * (q64 @ k64)
    es = _gamma(q.shape[-1]) * abs(scale) * (np.abs(q64) @ np.abs(k64))
    if mask is not None:
        s = s + mask.astype(np.float64)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - m)
    p = e / e.sum(axis=-1, keepdims=True)
    t = k_t.shape[-1]
    ep = p * (2 * es.max(axis=-1, keepdims=True) + (8 + t) * U32)
    out = p @ v64
    bound = _gamma(t) * (p @ np.abs(v64)) + ep @ np.abs(v64)
    return out, bound


@pytest.mark.parametrize(
    "b,s,h,d,mask_shape",
    [(1, 128, 2, 64, (1, 1, 128, 128)), (2, 64, 4, 32, (2, 1, 1, 64)), (1, 96, 3, 64, None)],
)
def test_attention_matches_float64(b, s, h, d, mask_shape):
    rng = np.random.default_rng(1)
    q, k_t, v = _views(rng, b, s, h, d)
    mask = None
    if mask_shape is not None:
        mask = np.where(rng.random(mask_shape) < 0.3, NEG, np.float32(0)).astype(np.float32)
        mask[..., 0] = 0  # every row keeps a key
    out = attention_f32.attention(q, k_t, v, mask, 0.125, True)
    assert out is not None and out.shape == (b, h, s, d)
    # the heads come out merged: the exporters' Transpose(0, 2, 1, 3) is contiguous
    assert out.transpose(0, 2, 1, 3).flags.c_contiguous
    ref, bound = _reference_and_bound(q, k_t, v, mask, 0.125)
    assert np.all(np.abs(out - ref) <= bound + 1e-30)


def test_fully_masked_rows_give_zeros_or_nan_as_asked():
    rng = np.random.default_rng(2)
    q, k_t, v = _views(rng, 1, 128, 2, 64)
    mask = np.zeros((1, 1, 128, 128), np.float32)
    mask[0, 0, 5] = -np.inf  # query 5 sees no key
    out = attention_f32.attention(q, k_t, v, mask, 0.125, True)
    assert out is not None
    assert np.all(out[:, :, 5] == 0) and np.isfinite(out).all()
    kept = attention_f32.attention(q, k_t, v, mask, 0.125, False)
    assert np.isnan(kept[:, :, 5]).all() and np.isfinite(np.delete(kept, 5, axis=2)).all()


def test_fused_attention_kernel_takes_this_path_and_agrees_with_numpy_path():
    rng = np.random.default_rng(3)
    q, k_t, v = _views(rng, 1, 128, 2, 64)
    mask = np.where(rng.random((1, 1, 128, 128)) < 0.3, NEG, np.float32(0)).astype(np.float32)
    (y,) = FusedAttention(q, k_t, v, mask, scale=0.125, nan_to_zero=1)
    assert y.transpose(0, 2, 1, 3).flags.c_contiguous  # this path's head-merged layout
    ref, bound = _reference_and_bound(q, k_t, v, mask, 0.125)
    assert np.all(np.abs(y - ref) <= bound + 1e-30)


@pytest.mark.parametrize(
    "case",
    ["float64", "rank3", "small", "large", "mask_not_broadcastable", "mask_int", "batch_broadcast"],
)
def test_cases_it_does_not_take_return_none(case):
    rng = np.random.default_rng(4)
    q, k_t, v = _views(rng, 1, 128, 2, 64)
    mask = np.zeros((1, 1, 128, 128), np.float32)
    if case == "float64":
        q = q.astype(np.float64)
    elif case == "rank3":
        q, k_t, v = q[0], k_t[0], v[0]
    elif case == "small":  # below gemm.MIN_MACS: numpy's matmul costs less than oneDNN's call
        q, k_t, v = _views(rng, 1, 8, 2, 4)
        mask = None
    elif case == "large":  # above MAX_SCORES: the op-by-op path is as fast
        q, k_t, v = _views(rng, 1, 512, 6, 16)
        mask = None
    elif case == "mask_not_broadcastable":
        mask = np.zeros((1, 3, 128, 128), np.float32)
    elif case == "mask_int":
        mask = np.zeros((1, 1, 128, 128), np.int32)
    elif case == "batch_broadcast":
        k_t = np.concatenate([k_t, k_t])
    assert attention_f32.attention(q, k_t, v, mask, 0.125, True) is None
