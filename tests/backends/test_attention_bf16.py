"""backends/cpu/attention.py: bf16 attention on oneDNN, against a float64 reference.

Tolerance, derived per output element from the data (bf16 unit roundoff u = 2^-8): rounding q and
k moves each score s_j = scale * sum_i q_i k_i by at most |ds_j| <= 2u * scale * sum_i |q_i k_i|
(float32 accumulation adds ~1e-7 relative, negligible). Softmax turns score errors into
dp_j = p_j (ds_j - sum_k p_k ds_k), so |dp_j| <= 2 p_j max|ds|, and rounding p adds u p_j. The
output o = sum_j p_j v_j with v rounded (u) then moves by at most
sum_j p_j |v_j| (2 max|ds| + 2u) to first order; the bound takes 1.25x that for second-order
terms. That worst case is loose (measured 2-3 % of it), so the relative RMS error over the output
is held, as in tests/models/test_bf16_precision.py, to C u sqrt(L) with C = 2 and L = 2 rounded
products (measured 0.3 of that; a scale 1.6 % off gives 1.2x it). Each test also checks that bf16 really ran (the error exceeds float32 rounding), so a
silent float32 fallback cannot pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.backends.cpu import attention, gemm
from ziggurat.ops.fused_transformer import FusedAttention

U = 2.0**-8


@pytest.fixture(autouse=True)
def _needs_bf16():
    if not gemm.bf16_supported():
        pytest.skip("this CPU (or oneDNN build) cannot run bf16 matmuls: the path is refused")


def _reference(q, k_t, v, mask, scale):
    q, k_t, v = (a.astype(np.float64) for a in (q, k_t, v))
    s = scale * (q @ k_t)
    if mask is not None:
        s = s + mask
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ds = 2 * U * abs(scale) * (np.abs(q) @ np.abs(k_t))
    bound = 1.25 * (p @ np.abs(v)) * (2 * ds.max(-1, keepdims=True) + 2 * U)
    return p @ v, bound


def _merged_views(rng, b, h, s, d):
    """q, k^T, v as a BERT export hands them: per-head views of one (B, S, 3*H*D) projection."""
    qkv = rng.standard_normal((b, s, 3 * h * d)).astype(np.float32)
    heads = [qkv[..., i * h * d : (i + 1) * h * d].reshape(b, s, h, d) for i in range(3)]
    return (
        heads[0].transpose(0, 2, 1, 3),
        heads[1].transpose(0, 2, 3, 1),
        heads[2].transpose(0, 2, 1, 3),
    )


def _check(got, q, k_t, v, mask, scale):
    ref, bound = _reference(q, k_t, v, mask, scale)
    assert got.shape == ref.shape and got.dtype == np.float32
    err = np.abs(got - ref)
    assert (err <= bound).all(), f"max error/bound {(err / bound).max():.2f}"
    rel_rms = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert rel_rms <= 2 * U * np.sqrt(2), f"relative RMS error {rel_rms:.2e}"
    assert err.max() > 10 * np.finfo(np.float32).eps * np.abs(ref).max(), "bf16 did not run"


@pytest.mark.parametrize("mask_shape", [None, (1, 1, 1, 128), (2, 1, 128, 128), (128, 128)])
def test_merged_projection_views(mask_shape):
    rng = np.random.default_rng(0)
    q, k_t, v = _merged_views(rng, 2, 4, 128, 32)
    mask = None
    if mask_shape is not None:
        mask = np.where(rng.random(mask_shape) < 0.2, np.float32(-1e4), np.float32(0))
        mask = mask.astype(np.float32)
    got = attention.attention(q, k_t, v, mask, 0.125)
    assert got is not None
    _check(got, q, k_t, v, mask, 0.125)


def test_separate_contiguous_operands_and_unit_scale():
    """q, k^T, v not from one buffer (three reorders), keys longer than queries, scale 1."""
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 3, 16, 64)).astype(np.float32) * 0.2
    k_t = rng.standard_normal((1, 3, 64, 40)).astype(np.float32) * 0.2
    v = rng.standard_normal((1, 3, 40, 24)).astype(np.float32)
    got = attention.attention(q, k_t, v, None, 1.0)
    assert got is not None
    _check(got, q, k_t, v, None, 1.0)


def test_output_is_heads_merged_buffer():
    """The result is a (B, H, S, D) view of a (B, S, H, D) buffer: merging heads is free."""
    rng = np.random.default_rng(2)
    q, k_t, v = _merged_views(rng, 1, 2, 16, 8)
    got = attention.attention(q, k_t, v, None, 0.5)
    assert got.transpose(0, 2, 1, 3).flags.c_contiguous


def test_cases_it_does_not_take_return_none():
    rng = np.random.default_rng(3)
    q, k_t, v = _merged_views(rng, 2, 2, 8, 8)
    assert attention.attention(q[:1].astype(np.float64), k_t, v, None, 1.0) is None
    assert attention.attention(q, k_t[:1], v, None, 1.0) is None  # broadcast batch
    assert attention.attention(q, k_t, v, np.zeros((3, 1, 1, 8), np.float32), 1.0) is None
    assert attention.attention(q, k_t, v, np.zeros((1, 8), np.int32), 1.0) is None
    assert attention.attention(q[0], k_t[0], v[0], None, 1.0) is None  # rank 3


def test_fused_attention_kernel_bf16_and_fully_masked_rows():
    """``FusedAttention(bf16=1)`` runs bf16 where it can; a mask with -inf (rows that may be all
    masked, whose NaNs ``nan_to_zero`` zeroes) takes the exact float32 path."""
    rng = np.random.default_rng(4)
    q, k_t, v = _merged_views(rng, 1, 2, 16, 8)
    mask = np.zeros((1, 1, 16, 16), np.float32)
    (got,) = FusedAttention(q, k_t, v, mask, scale=0.25, nan_to_zero=1, bf16=1)
    _check(got, q, k_t, v, mask, 0.25)
    mask[..., 3, :] = -np.inf
    (got,) = FusedAttention(q, k_t, v, mask, scale=0.25, nan_to_zero=1, bf16=1)
    (fp32,) = FusedAttention(q, k_t, v, mask, scale=0.25, nan_to_zero=1)
    np.testing.assert_array_equal(got, fp32)
    assert (got[0, :, 3] == 0).all()


def test_bf16_operands_read_as_they_are():
    """q, k, v already in bfloat16 (a bf16 projection's output, passes/bf16_activations.py): the
    same products as from float32 operands holding the same (bf16-representable) values."""
    import ml_dtypes

    rng = np.random.default_rng(5)
    qkv = rng.standard_normal((1, 32, 3 * 4 * 16)).astype(ml_dtypes.bfloat16)
    views = []
    for arr in (qkv, qkv.astype(np.float32)):
        heads = [arr[..., i * 64 : (i + 1) * 64].reshape(1, 32, 4, 16) for i in range(3)]
        views.append((heads[0].transpose(0, 2, 1, 3), heads[1].transpose(0, 2, 3, 1),
                      heads[2].transpose(0, 2, 1, 3)))  # fmt: skip
    got = attention.attention(*views[0], None, 0.25)
    ref = attention.attention(*views[1], None, 0.25)
    assert got is not None and ref is not None
    np.testing.assert_array_equal(got, ref)
    q, k_t, v = views[0]
    assert attention.attention(q, k_t.astype(np.float32), v, None, 0.25) is None  # mixed dtypes
    (via_kernel,) = FusedAttention(q, k_t, v, None, scale=0.25, bf16=1)
    np.testing.assert_array_equal(via_kernel, ref)


def test_causal_mask_with_infinities_stays_on_bf16():
    """GPT-2's causal mask (-inf above the diagonal, every row keeps a finite key): the bf16
    path runs, and the masked keys get probability 0."""
    rng = np.random.default_rng(6)
    q, k_t, v = _merged_views(rng, 1, 2, 16, 8)
    mask = np.triu(np.full((16, 16), -np.inf, np.float32), 1)[None, None]
    (got,) = FusedAttention(q, k_t, v, mask, scale=0.25, nan_to_zero=1, bf16=1)
    _check(got, q, k_t, v, mask, 0.25)
    np.testing.assert_allclose(got[0, :, 0], v[0, :, 0], rtol=0, atol=U * np.abs(v).max())
