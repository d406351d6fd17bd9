"""passes/bf16_activations.py: values only bf16 GEMMs read are written in bfloat16 by their
producer (a bf16 Dense or the bf16 attention); everything else stays float32."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import ziggurat as zg
from tests.models import builders
from ziggurat.backends.cpu import gemm
from ziggurat.ops.fused import Dense
from ziggurat.passes import bf16_activations

BF16 = np.dtype(ml_dtypes.bfloat16)
U = 2.0**-8

needs_bf16 = pytest.mark.skipif(
    not gemm.bf16_supported(), reason="this CPU has neither AVX512-BF16 nor AMX (or no oneDNN)"
)


def _session(monkeypatch=None):
    model = builders.transformer_block(seed=5, hidden=512, heads=8).SerializeToString()
    if monkeypatch is not None:  # the same session without this pass
        monkeypatch.setattr(bf16_activations, "run", lambda graph: graph)
    return zg.InferenceSession(model, sess_options=zg.SessionOptions(precision="bf16"))


def _feeds():
    rng = np.random.default_rng(6)
    mask = np.ones((2, 32), np.int64)
    mask[1, 16:] = 0
    return {"x": rng.standard_normal((2, 32, 512)).astype(np.float32), "mask": mask}


@needs_bf16
def test_ffn_and_attention_outputs_become_bf16_and_results_hold(monkeypatch):
    sess = _session()
    marked = {n.op_type for n in sess._compiled.graph.nodes if n.attrs.get("out_dtype") == "bf16"}
    # the merged Q/K/V projection (read by the attention), the FFN's first GEMM, the attention,
    # the first LayerNorm (read by the FFN and as the FFN's residual); not the last one (the
    # graph output)
    assert marked == {"Dense", "FusedAttention", "LayerNorm"}
    acts = []
    for n in sess._compiled.graph.nodes:  # nothing that feeds a LayerNorm or an output
        if n.op_type == "Dense" and n.attrs.get("out_dtype"):
            assert len(n.inputs) == 3  # no residual: its sum feeds a LayerNorm
            acts.append(n.attrs["activation"])
    assert sorted(acts) == ["", "gelu"]
    got = sess.run(None, _feeds())[0]
    ref = _session(monkeypatch).run(None, _feeds())[0]
    assert got.dtype == np.float32
    # What changed: the residual from the first LayerNorm to the FFN's add is rounded to bf16
    # (relative 2^-9), then normalized again (unit scale): a few U of the output at most.
    assert np.abs(got - ref).max() <= 4 * U * max(1.0, float(np.abs(ref).max()))


@needs_bf16
def test_layer_norm_bf16_output_is_the_float32_one_rounded():
    from ziggurat.ops.fused_transformer import LayerNorm

    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 40, 768)) * 3 + 1).astype(np.float32)
    g, b = rng.uniform(0.5, 2, 768).astype(np.float32), rng.standard_normal(768).astype(np.float32)
    (y,) = LayerNorm(x, g, b, epsilon=1e-12, out_dtype="bf16")
    (ref,) = LayerNorm(x, g, b, epsilon=1e-12)
    assert y.dtype == BF16 and y.shape == x.shape
    # float32 normalization (a few float32 ulps apart from numpy/oneDNN's, ~1e-6 relative of
    # |g| * |xhat| + |b|), then one rounding to bf16 (8 significant bits: relative error <= U)
    scale = np.abs(g) * np.abs((x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)) + np.abs(
        b
    )
    err = np.abs(y.astype(np.float32) - ref)
    assert np.all(err <= U * np.abs(ref) + 1e-5 * scale)
    assert err.max() > 0  # it did round


@needs_bf16
def test_dense_out_dtype_native_and_portable_paths_agree():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    w = (rng.standard_normal((512, 512)) * 0.05).astype(np.float32)
    b = rng.standard_normal(512).astype(np.float32)
    packed = gemm.pack_weight(w, BF16)
    (y,) = Dense(x, packed, b, activation="relu", out_dtype="bf16")
    assert y.dtype == BF16 and y.shape == (16, 512)
    (y2,) = Dense(y, packed, b)  # a bf16 input: read as it is, float32 out
    assert y2.dtype == np.float32
    # the portable path (float64 weights: oneDNN declines) rounds the same result to bf16
    (p,) = Dense(x.astype(np.float64), packed.unpacked().astype(np.float64), b, activation="relu",
                 out_dtype="bf16")  # fmt: skip
    assert p.dtype == BF16
    # against x (unrounded) @ the bf16 weights: rounding x to bf16 (8 significant bits) moves
    # the sum by at most U sum|x w| (the native path; float32 accumulation adds ~1e-7 relative),
    # the result's rounding to bf16 by U |y|
    wr = packed.unpacked().astype(np.float64)
    mag = np.abs(x.astype(np.float64)) @ np.abs(wr) + np.abs(b)
    exact = np.maximum(x.astype(np.float64) @ wr + b, 0)
    for out in (y, p):
        err = np.abs(out.astype(np.float64) - exact)
        assert np.all(err <= U * mag + U * np.abs(exact))


def test_dense_refuses_an_unknown_out_dtype_and_a_mismatched_residual():
    x = np.ones((2, 3), np.float32)
    w = np.ones((3, 4), np.float32)
    with pytest.raises(zg.ExecutionError, match="out_dtype 'fp16'; expected '' or 'bf16'"):
        Dense(x, w, out_dtype="fp16")
    with pytest.raises(
        zg.ExecutionError,
        match=r"residual of shape \(2, 3\) neither matches nor broadcasts to the result's \(2, 4\)",
    ):
        Dense(x, w, None, np.ones((2, 3), np.float32))
    # a residual that broadcasts (an Add's (S, H) over (B, S, H)) is added as the Add would
    (y,) = Dense(x, w, None, np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(y, np.full((2, 4), 3, np.float32) + np.arange(4))
