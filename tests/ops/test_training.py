"""ai.onnx.preview.training optimizers (Adagrad, Adam, Momentum) against onnx's reference evaluator
(onnxruntime has no kernels for them), with two tensors per step so every output position is used."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from ziggurat.ops.training import Adagrad, Adam, Momentum

DOMAIN = "ai.onnx.preview.training"
RNG = np.random.default_rng(5)


def _reference(op, inputs, n_out, **attrs):
    names = [f"i{k}" for k in range(len(inputs))]
    vis = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in zip(names, inputs, strict=True)
    ]
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, domain=DOMAIN, **attrs)
    graph = helper.make_graph(
        [node], "g", vis, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
    )
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs, strict=True)))


def _tensors(k, shape=(3, 2)):
    return [RNG.standard_normal(shape).astype(np.float32) for _ in range(k)]


def _same(got, ref):
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == np.float32 and g.shape == r.shape
        # A handful of float32 operations per element: a few ulps of values of magnitude ~1-10.
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


R = np.array(0.1, np.float32)


@pytest.mark.parametrize("t", [0, 3])
def test_adagrad_matches_reference(t):
    x1, x2, g1, g2 = _tensors(4)
    h1, h2 = (np.abs(h) for h in _tensors(2))
    ins = [R, np.array(t, np.int64), x1, x2, g1, g2, h1, h2]
    attrs = {"decay_factor": 0.3, "epsilon": 1e-5, "norm_coefficient": 0.01}
    _same(Adagrad(*ins, **attrs), _reference("Adagrad", ins, 4, **attrs))


@pytest.mark.parametrize("t", [0, 2])
def test_adam_matches_reference(t):
    x1, x2, g1, g2, v1, v2 = _tensors(6)
    h1, h2 = (np.abs(h) for h in _tensors(2))
    ins = [R, np.array(t, np.int64), x1, x2, g1, g2, v1, v2, h1, h2]
    attrs = {"alpha": 0.8, "beta": 0.95, "epsilon": 1e-4, "norm_coefficient": 0.02,
             "norm_coefficient_post": 0.01}  # fmt: skip
    _same(Adam(*ins, **attrs), _reference("Adam", ins, 6, **attrs))


@pytest.mark.parametrize("mode", ["standard", "nesterov"])
@pytest.mark.parametrize("t", [0, 4])
def test_momentum_matches_reference(mode, t):
    x1, x2, g1, g2, v1, v2 = _tensors(6)
    ins = [R, np.array(t, np.int64), x1, x2, g1, g2, v1, v2]
    attrs = {"alpha": 0.7, "beta": 0.4, "mode": mode, "norm_coefficient": 0.05}
    _same(Momentum(*ins, **attrs), _reference("Momentum", ins, 4, **attrs))
