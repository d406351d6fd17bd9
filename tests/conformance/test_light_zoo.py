"""The 9 'light' zoo models shipped with onnx (resnet50, densenet121, inception, vgg19, ...).

Their weights are ``ConstantOfShape`` outputs, so every class gets the same logit, and with onnx's
input (arange / n) the logits of several models reach 1e5-1e10: the stored softmax output is then
decided by how one BLAS rounded, not by the model (float32's spacing at 9.5e9 is 1024). Such
outputs say nothing about correctness and differ between BLAS kernels, so they are checked only up
to what the logits determine (see ``softmax_atol``). What catches defects is the second test: the
same architectures with seeded random weights and a random input, logits and outputs against
onnxruntime on the same machine.

Tolerance (docs/architecture.md, Testing): two float32 engines that sum in different orders differ
by rounding errors that add up like a random walk over every product on the way to a logit, so we
allow ``4 · eps32 · sqrt(sum of reduction lengths of the model's Conv/Gemm/MatMul nodes)`` relative
to the largest logit. Measured: 1.5e-6 at most (vgg19), 20x inside its bound of 3.4e-5; a kernel
off by 0.1 % fails it.
"""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import ziggurat as zg

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT = sorted(glob.glob(os.path.join(DATA, "light_*.onnx")))
IDS = [os.path.basename(p)[len("light_") : -len(".onnx")] for p in LIGHT]
EPS32 = float(np.finfo(np.float32).eps)


def _read_pb(path: str) -> np.ndarray:
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def _constant_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shape of every ConstantOfShape output whose shape is an initializer (the zoo's weights)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        n.output[0]: tuple(int(d) for d in inits[n.input[0]])
        for n in model.graph.node
        if n.op_type == "ConstantOfShape" and n.input and n.input[0] in inits
    }


def reduction_length(model: onnx.ModelProto) -> int:
    """Sum over Conv/Gemm/MatMul nodes of the number of products summed per output element."""
    shapes = _constant_shapes(model)
    shapes.update({t.name: tuple(t.dims) for t in model.graph.initializer})
    total = 0
    for n in model.graph.node:
        if n.op_type == "Conv" and n.input[1] in shapes:
            total += math.prod(shapes[n.input[1]][1:])  # Cin/group · kh · kw
        elif n.op_type in ("Gemm", "MatMul") and n.input[1] in shapes:
            w = shapes[n.input[1]]
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            total += w[-1] if trans_b else w[-2]
    assert total > 0, "no Conv/Gemm/MatMul with a known weight shape"
    return total


def logits_rtol(model: onnx.ModelProto) -> float:
    return 4 * EPS32 * math.sqrt(reduction_length(model))


def softmax_atol(logit_err: float) -> float:
    """If every logit is off by at most ``logit_err``, each softmax output p_i moves by a factor in
    [exp(-2·err), exp(2·err)], i.e. by at most expm1(2·err) (and never by more than 1)."""
    return 1.0 if logit_err >= 0.5 else min(1.0, math.expm1(2 * logit_err))


def with_logits(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """Add the input of a final Softmax as a second graph output; False when there is no Softmax
    (densenet121 ends in a Conv: its output is the logits)."""
    out = model.graph.output[0].name
    prod = next(n for n in model.graph.node if out in n.output)
    if prod.op_type != "Softmax":
        return model, False
    model.graph.output.append(helper.make_empty_tensor_value_info(prod.input[0]))
    return model, True


def randomize(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Replace the ConstantOfShape weights by seeded random ones: He-scaled normal for kernels and
    matrices, uniform [0.5, 1.5] for per-channel vectors (biases, BatchNorm statistics: positive so
    variances stay valid)."""
    rng = np.random.default_rng(seed)
    shapes = _constant_shapes(model)
    g = model.graph
    kept = [n for n in g.node if not (n.op_type == "ConstantOfShape" and n.output[0] in shapes)]
    for name, shape in shapes.items():
        if len(shape) > 1:
            w = rng.standard_normal(shape) * math.sqrt(2.0 / math.prod(shape[1:]))
        else:
            w = rng.uniform(0.5, 1.5, shape)
        g.initializer.append(numpy_helper.from_array(w.astype(np.float32), name))
    del g.node[:]
    g.node.extend(kept)
    return model


def _ort(data: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # the zoo's unused __SHAPE initializers make it warn per tensor
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _check_logits(got: np.ndarray, ref: np.ndarray, rtol: float) -> float:
    """Assert ``got`` ≈ ``ref`` within ``rtol`` of the largest logit; return that absolute bound."""
    assert got.shape == ref.shape and got.dtype == ref.dtype
    atol = rtol * float(np.abs(ref).max())
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol, err_msg="logits vs onnxruntime")
    return atol


def _check_probabilities(p: np.ndarray) -> None:
    assert np.all((p >= 0) & (p <= 1)), "softmax output outside [0, 1]"
    sums = p.reshape(p.shape[0], -1).sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(sums, 1.0, atol=p.shape[-1] * EPS32)


@pytest.mark.parametrize("path", LIGHT, ids=IDS)
def test_light_zoo_stored_case(path):
    """onnx's own case (arange / n input, stored output): logits against onnxruntime; the stored
    output within what those logits determine."""
    model, has_softmax = with_logits(onnx.load(path))
    data = model.SerializeToString()
    sess = zg.InferenceSession(data)
    feeds = {}
    for arg in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        n = math.prod(shape)
        feeds[arg.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    got = sess.run(None, feeds)
    ref = _ort(data).run(None, feeds)
    assert len(got) == len(ref)
    expected = _read_pb(path[:-5] + "_output_0.pb")
    assert got[0].shape == expected.shape and got[0].dtype == expected.dtype
    err = _check_logits(got[-1], ref[-1], logits_rtol(model))
    if has_softmax:
        _check_probabilities(got[0])
        np.testing.assert_allclose(got[0], expected, rtol=0, atol=softmax_atol(err))
    else:
        np.testing.assert_allclose(got[0], expected, rtol=0, atol=2 * err)


@pytest.mark.parametrize("path", LIGHT, ids=IDS)
def test_light_zoo_random_weights(path):
    """The same architecture with seeded random weights and input: varied logits, so a wrong
    kernel (scaled, shifted, transposed, a dropped bias) shows."""
    model, has_softmax = with_logits(randomize(onnx.load(path), seed=0))
    data = model.SerializeToString()
    ref_sess = _ort(data)
    rng = np.random.default_rng(1)
    feeds = {}
    for arg in ref_sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        feeds[arg.name] = rng.standard_normal(shape).astype(np.float32)
    got = zg.InferenceSession(data).run(None, feeds)
    ref = ref_sess.run(None, feeds)
    assert len(got) == len(ref)
    assert float(ref[-1].std()) > 0.01 * float(np.abs(ref[-1]).max()), "logits are not varied"
    err = _check_logits(got[-1], ref[-1], logits_rtol(model))
    if has_softmax:
        _check_probabilities(got[0])
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=softmax_atol(err))
