"""Normalization kernels against onnxruntime on seeded random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.test_conv import run_ort
from ziggurat.ops.norm import (
    LRN,
    BatchNormalization,
    GroupNormalization,
    GroupNormalization_18,
    InstanceNormalization,
    LayerNormalization,
    LpNormalization,
    MeanVarianceNormalization,
    RMSNormalization,
)


def rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (1, 4, 6, 7)])
def test_batchnorm_inference_matches_onnxruntime(shape):
    rng = np.random.default_rng(0)
    c = shape[1]
    x, s, b, m = rand(rng, shape), rand(rng, (c,)), rand(rng, (c,)), rand(rng, (c,))
    v = rng.uniform(0.5, 2, c).astype(np.float32)
    y = BatchNormalization(x, s, b, m, v, epsilon=1e-3)[0]
    np.testing.assert_allclose(
        y,
        run_ort("BatchNormalization", [x, s, b, m, v], opset=15, epsilon=1e-3),
        rtol=1e-5,
        atol=1e-5,
    )
    y16 = BatchNormalization(x.astype(np.float16), s, b, m, v)[0]
    assert y16.dtype == np.float16


def test_batchnorm_training_outputs():
    rng = np.random.default_rng(1)
    x = rand(rng, (4, 3, 5, 5))
    s, b, m, v = rand(rng, (3,)), rand(rng, (3,)), rand(rng, (3,)), np.ones(3, np.float32)
    y, rm, rv = BatchNormalization(x, s, b, m, v, training_mode=1, momentum=0.8, n_outputs=3)[:3]
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    c = (3, 1, 1)
    ref = (x - mean.reshape(c)) / np.sqrt(var.reshape(c) + 1e-5) * s.reshape(c) + b.reshape(c)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rm, m * 0.8 + mean * 0.2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, v * 0.8 + var * 0.2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "shape,axis", [((2, 16, 32), -1), ((3, 4, 5), 1), ((2, 3, 4, 5), 0), ((6, 7), -2)]
)
def test_layernorm_matches_onnxruntime(shape, axis):
    rng = np.random.default_rng(2)
    x = rand(rng, shape)
    norm_shape = shape[axis % len(shape) :]
    s, b = rand(rng, norm_shape), rand(rng, norm_shape)
    ours = LayerNormalization(x, s, b, axis=axis, epsilon=1e-4)
    ref = run_ort("LayerNormalization", [x, s, b], n_outputs=3, axis=axis, epsilon=1e-4)
    for o, r in zip(ours, ref, strict=True):
        assert o.dtype == r.dtype and o.shape == r.shape
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5)
    # No bias; half precision keeps its dtype while the statistics stay float32.
    y, mean, inv = LayerNormalization(x.astype(np.float16), s.astype(np.float16), axis=axis)
    assert y.dtype == np.float16 and mean.dtype == np.float32 and inv.dtype == np.float32


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 4, 7)])
def test_instancenorm_matches_onnxruntime(shape):
    rng = np.random.default_rng(3)
    x, s, b = rand(rng, shape), rand(rng, shape[1:2]), rand(rng, shape[1:2])
    y = InstanceNormalization(x, s, b, epsilon=1e-3)[0]
    np.testing.assert_allclose(
        y, run_ort("InstanceNormalization", [x, s, b], epsilon=1e-3), rtol=1e-4, atol=1e-5
    )


def test_groupnorm_both_versions():
    rng = np.random.default_rng(4)
    x = rand(rng, (2, 6, 3, 4))
    s, b = rand(rng, (6,)), rand(rng, (6,))
    y = GroupNormalization(x, s, b, num_groups=3, epsilon=1e-3)[0]
    np.testing.assert_allclose(
        y,
        run_ort("GroupNormalization", [x, s, b], opset=21, num_groups=3, epsilon=1e-3),
        rtol=1e-4,
        atol=1e-5,
    )
    xg = x.reshape(2, 3, -1)
    norm = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)).reshape(
        x.shape
    )
    sg, bg = rand(rng, (3,)), rand(rng, (3,))
    y18 = GroupNormalization_18(x, sg, bg, num_groups=3)[0]
    ref18 = norm * np.repeat(sg, 2).reshape(6, 1, 1) + np.repeat(bg, 2).reshape(6, 1, 1)
    np.testing.assert_allclose(y18, ref18, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_lrn_matches_reference(size):
    x = rand(np.random.default_rng(5), (2, 7, 4, 3))
    attrs = dict(size=size, alpha=0.02, beta=0.6, bias=1.5)
    y = LRN(x, **attrs)[0]
    if size % 2:  # onnxruntime only accepts odd sizes
        np.testing.assert_allclose(y, run_ort("LRN", [x], **attrs), rtol=1e-5, atol=1e-6)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.stack([(x[:, max(0, c - lo) : c + hi + 1] ** 2).sum(axis=1) for c in range(7)], axis=1)
    np.testing.assert_allclose(y, x / (1.5 + 0.02 / size * sq) ** 0.6, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p,axis", [(1, -1), (2, -1), (2, 1), (1, 0)])
def test_lpnormalization_matches_onnxruntime(p, axis):
    x = rand(np.random.default_rng(6), (3, 4, 5))
    x[0, 0] = 0
    y = LpNormalization(x, p=p, axis=axis)[0]
    np.testing.assert_allclose(
        y, run_ort("LpNormalization", [x], p=p, axis=axis), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("axes", [None, [0, 1], [2]])
def test_mvn_matches_onnxruntime(axes):
    x = rand(np.random.default_rng(7), (2, 3, 4, 5))
    kw = {} if axes is None else dict(axes=axes)
    y = MeanVarianceNormalization(x, **kw)[0]
    np.testing.assert_allclose(
        y, run_ort("MeanVarianceNormalization", [x], **kw), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("axis", [-1, 1])
def test_rmsnorm_matches_onnxruntime(axis):
    rng = np.random.default_rng(8)
    x = rand(rng, (2, 3, 8))
    s = rand(rng, x.shape[axis % 3 :])
    y = RMSNormalization(x, s, axis=axis)[0]
    np.testing.assert_allclose(
        y, run_ort("RMSNormalization", [x, s], opset=23, axis=axis), rtol=1e-4, atol=1e-5
    )
    y16 = RMSNormalization(x.astype(np.float16), s, axis=axis)[0]
    assert y16.dtype == np.float32  # Y has scale's dtype
