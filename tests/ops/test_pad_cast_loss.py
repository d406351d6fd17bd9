"""Unit tests of the pad, cast and loss families against onnxruntime (the fault-injection run found
their mutants caught only by the conformance suite)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.ops._ort import ort_outputs
from ziggurat.ops.cast import Cast, CastLike
from ziggurat.ops.indexing import ReverseSequence
from ziggurat.ops.loss import NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss
from ziggurat.ops.pad import CenterCropPad, Pad


def run_ort(op, inputs, n_outputs=1, opset=21, **attrs):
    """Outputs of one ``op`` node run by onnxruntime (None in ``inputs`` = omitted input)."""
    return ort_outputs(op, inputs, n_outputs, opset, ir_version=10, **attrs)


def _same(got, expected, rtol=0.0, atol=0.0):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


RNG = np.random.default_rng(11)
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("axes", [None, np.array([2, -2], np.int64)])
def test_pad_matches_onnxruntime(mode, axes):
    pads = np.array([1, 0, 2, 1] if axes is not None else [0, 1, 2, 0, 2, 1], np.int64)
    value = np.array(1.5, np.float32) if mode == "constant" else None
    got = Pad(X, pads, value, axes, mode=mode)
    _same(got, run_ort("Pad", [X, pads, value, axes], mode=mode))


def test_pad_negative_pads_crop():
    pads = np.array([0, -1, 1, 0, 0, -2], np.int64)
    _same(Pad(X, pads), run_ort("Pad", [X, pads]))


def test_reverse_sequence_matches_onnxruntime():
    x = RNG.standard_normal((5, 3, 2)).astype(np.float32)
    lens = np.array([5, 2, 0], np.int64)
    got = ReverseSequence(x, lens, batch_axis=1, time_axis=0)
    _same(got, run_ort("ReverseSequence", [x, lens], batch_axis=1, time_axis=0))


def test_center_crop_pad_matches_onnxruntime():
    shape = np.array([5, 2], np.int64)
    axes = [1, 2]
    got = CenterCropPad(X, shape, axes=axes)
    _same(got, run_ort("CenterCropPad", [X, shape], axes=axes))


CASTS = [
    (np.float32, TensorProto.INT32, np.array([-2.7, -0.5, 0.5, 2.7, 1e3], np.float32)),
    (np.float32, TensorProto.UINT8, np.array([0.0, 1.9, 200.2, 255.0], np.float32)),
    (np.float32, TensorProto.BOOL, np.array([0.0, -0.0, 1e-30, -3.0], np.float32)),
    (np.float32, TensorProto.FLOAT16, np.array([1e-8, 3.14159, 65504.0, 1e5], np.float32)),
    (np.float64, TensorProto.FLOAT, np.array([1 / 3, 1e-50, 1e300], np.float64)),
    (np.int64, TensorProto.FLOAT, np.array([2**53 + 1, -7, 0], np.int64)),
    (np.int32, TensorProto.INT8, np.array([127, 128, -129, 300], np.int32)),
    (np.bool_, TensorProto.FLOAT, np.array([True, False], np.bool_)),
]


@pytest.mark.parametrize("src,to,x", CASTS, ids=[f"{c[0].__name__}-{c[1]}" for c in CASTS])
def test_cast_matches_onnxruntime(src, to, x):
    with np.errstate(all="ignore"):
        _same(Cast(x, to=to), run_ort("Cast", [x], to=to))
        like = np.zeros(1, helper.tensor_dtype_to_np_dtype(to))
        _same(CastLike(x, like), run_ort("CastLike", [x, like]))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_onnxruntime(reduction, weighted):
    logp = RNG.standard_normal((3, 5, 2)).astype(np.float32)
    target = np.array([[0, 4], [2, 1], [3, 3]], np.int64)
    w = RNG.random(5).astype(np.float32) if weighted else None
    attrs = {"reduction": reduction, "ignore_index": 1}
    got = NegativeLogLikelihoodLoss(logp, target, w, **attrs)
    _same(got, run_ort("NegativeLogLikelihoodLoss", [logp, target, w], **attrs), 1e-6, 1e-6)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_softmax_cross_entropy_matches_onnxruntime(reduction):
    scores = RNG.standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 2], np.int64)
    got = SoftmaxCrossEntropyLoss(scores, labels, reduction=reduction)
    ref = run_ort("SoftmaxCrossEntropyLoss", [scores, labels], 2, reduction=reduction)
    # Outputs are a log-softmax (error a few float32 ulps of |log p| <= 10) and its mean or sum.
    _same(got, ref, rtol=1e-6, atol=4 * np.finfo(np.float32).eps * 10)
