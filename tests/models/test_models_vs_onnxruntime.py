"""Small real models, built here with seeded weights, against onnxruntime on seeded inputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import ziggurat as zg

from . import builders

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23, the float32 spacing at 1.0

# Tolerance from the computation, not from the answer. Each output is the end of a chain of float32
# reductions (dot products, pooled sums) of length at most K, over values of magnitude <= S (seeded
# standard-normal inputs, weights of std <= 0.2, normalized activations: S = max(1, max|ref|)).
# Rounding in one reduction of length K has a standard deviation of about eps/2 * sqrt(K) * S
# (half-ulp errors with random signs). C = 5 covers: two engines' independent errors (x sqrt 2), up to
# three reductions feeding each other (x sqrt 3), and the largest of <= 2,048 outputs (~3.5 sigma):
# 0.5 * 1.41 * 1.73 * 3.5 = 4.3. Measured: 2-8 eps; a GELU with the tanh approximation (error 5e-4)
# is ~3,600 eps off, 15x beyond the bound (checked by swapping it in, see RELIABILITY.md).
C = 5.0


def _atol(ref: np.ndarray, k: int) -> float:
    """Absolute tolerance for an output of float32 reductions of length <= k (see C above)."""
    scale = max(1.0, float(np.abs(ref).max()))
    return C * EPS32 * np.sqrt(k) * scale


def _compare(model, feeds, k, level=zg.GraphOptimizationLevel.ORT_ENABLE_ALL):
    data = model.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    opts = zg.SessionOptions(graph_optimization_level=level)
    got = zg.InferenceSession(data, sess_options=opts).run(None, feeds)
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=0, atol=_atol(r, k))


LEVELS = [zg.GraphOptimizationLevel.ORT_DISABLE_ALL, zg.GraphOptimizationLevel.ORT_ENABLE_ALL]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("batch", [1, 5])
def test_mlp(batch, level):
    x = np.random.default_rng(1).standard_normal((batch, 784)).astype(np.float32)
    _compare(builders.mlp(), {"x": x}, k=784, level=level)  # first Gemm: 784 terms


@pytest.mark.parametrize("level", LEVELS)
def test_small_cnn(level):
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    # Longest reduction: the global average pool over 8x8 positions (convs: 27, 9, 16; Gemm: 16).
    _compare(builders.small_cnn(), {"x": x}, k=64, level=level)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("seq", [7, 16])
def test_transformer_block(seq, level):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, seq, 64)).astype(np.float32)
    mask = np.ones((2, seq), np.int64)
    mask[1, seq // 2 :] = 0
    # Longest reduction: the second feed-forward MatMul over 4 * 64 = 256 terms.
    _compare(builders.transformer_block(), {"x": x, "mask": mask}, k=256, level=level)
