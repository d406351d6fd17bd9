"""Small real models, built here with seeded weights, against onnxruntime on seeded inputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import ziggurat as zg

from . import builders


def _compare(model, feeds, level=zg.GraphOptimizationLevel.ORT_ENABLE_ALL):
    data = model.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    opts = zg.SessionOptions(graph_optimization_level=level)
    got = zg.InferenceSession(data, sess_options=opts).run(None, feeds)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype and g.shape == r.shape
        scale = float(np.abs(r).max())
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-3 * scale + 1e-7)


LEVELS = [zg.GraphOptimizationLevel.ORT_DISABLE_ALL, zg.GraphOptimizationLevel.ORT_ENABLE_ALL]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("batch", [1, 5])
def test_mlp(batch, level):
    x = np.random.default_rng(1).standard_normal((batch, 784)).astype(np.float32)
    _compare(builders.mlp(), {"x": x}, level)


@pytest.mark.parametrize("level", LEVELS)
def test_small_cnn(level):
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    _compare(builders.small_cnn(), {"x": x}, level)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("seq", [7, 16])
def test_transformer_block(seq, level):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, seq, 64)).astype(np.float32)
    mask = np.ones((2, seq), np.int64)
    mask[1, seq // 2 :] = 0
    _compare(builders.transformer_block(), {"x": x, "mask": mask}, level)
