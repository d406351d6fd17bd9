"""Add + LayerNormalization fuses into ziggurat::SkipLayerNorm (keeping the sum when it is read
elsewhere); the decomposed ReduceMean/Sub/Pow/Sqrt/Div LayerNorm fuses into ziggurat::LayerNorm;
near misses stay unfused. Everything matches the unfused graph and onnxruntime."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from tests.passes._fusion_check import assert_close_everywhere, fused_ops, make_model

EPS32 = float(np.finfo(np.float32).eps)
H = 48
n = helper.make_node


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "gamma": (1 + 0.2 * rng.standard_normal(H)).astype(np.float32),
        "beta": (0.2 * rng.standard_normal(H)).astype(np.float32),
    }


def _feeds(seed=1):
    rng = np.random.default_rng(seed)
    return {
        "a": (rng.standard_normal((2, 5, H)) * 2 + 1).astype(np.float32),
        "b": rng.standard_normal((2, 5, H)).astype(np.float32),
    }


def _atol(feeds, inits):
    """Mean and variance are sums of H terms (<= H eps relative error each); |x - mean| / std is at
    most sqrt(H), so the normalized value is off by about (H + 4) eps sqrt(H), times |gamma|;
    doubled for the two implementations compared."""
    g = float(np.abs(inits["gamma"]).max())
    return 2 * (H + 4) * EPS32 * math.sqrt(H) * g + 2 * EPS32 * float(np.abs(inits["beta"]).max())


def _skip_model(sum_read_elsewhere: bool, spare_output: bool = False):
    ln_out = ["y", "mean"] if spare_output else ["y"]
    nodes = [
        n("Add", ["a", "b"], ["s"]),
        n("LayerNormalization", ["s", "gamma", "beta"], ln_out, axis=-1, epsilon=1e-5),
    ]
    outputs = [("y", np.float32, [2, 5, H])]
    if sum_read_elsewhere:  # GPT-2: the residual stream goes on to the next block's Add
        nodes.append(n("Add", ["s", "y"], ["z"]))
        outputs.append(("z", np.float32, [2, 5, H]))
    if spare_output:
        outputs.append(("mean", np.float32, None))
    inputs = [("a", np.float32, [2, 5, H]), ("b", np.float32, [2, 5, H])]
    return make_model(nodes, inputs, outputs, _weights())


@pytest.mark.parametrize("sum_read_elsewhere", [False, True])
def test_add_layernorm_fuses(sum_read_elsewhere):
    model = _skip_model(sum_read_elsewhere)
    ops = fused_ops(model)
    assert ops[0] == "SkipLayerNorm" and "LayerNormalization" not in ops
    assert ops.count("Add") == int(sum_read_elsewhere)
    feeds = _feeds()
    assert_close_everywhere(model, feeds, _atol(feeds, _weights()) * 3)  # z adds |s| + |y|


def test_layernorm_with_its_mean_output_read_does_not_fuse():
    model = _skip_model(False, spare_output=True)
    assert "SkipLayerNorm" not in fused_ops(model)
    feeds = _feeds()
    assert_close_everywhere(model, feeds, _atol(feeds, _weights()))


def _decomposed_model(opset=13, sq="pow", axes=(-1,), eps=1e-5, affine="both", extra=""):
    """LayerNorm as exporters wrote it before opset 17. ``extra`` names an intermediate that is
    also a graph output (a second reader)."""
    mean_kw = {"axes": list(axes)} if opset < 18 else {}
    mean_in = [] if opset < 18 else ["axes"]
    nodes = [
        n("ReduceMean", ["x", *mean_in], ["mu"], **mean_kw),
        n("Sub", ["x", "mu"], ["d"]),
        n("Pow", ["d", "two"], ["d2"]) if sq == "pow" else n("Mul", ["d", "d"], ["d2"]),
        n("ReduceMean", ["d2", *mean_in], ["var"], **mean_kw),
        n("Add", ["var", "eps"], ["ve"]),
        n("Sqrt", ["ve"], ["std"]),
        n("Div", ["d", "std"], ["nrm"]),
    ]
    last = "nrm"
    if affine in ("both", "gamma"):
        nodes.append(n("Mul", [last, "gamma"], ["scaled"]))
        last = "scaled"
    if affine in ("both", "beta"):
        nodes.append(n("Add", [last, "beta"], ["shifted"]))
        last = "shifted"
    nodes.append(n("Identity", [last], ["y"]))
    inits = {**_weights(), "two": np.array(2.0, np.float32), "eps": np.array(eps, np.float32)}
    if opset >= 18:
        inits["axes"] = np.array(list(axes), np.int64)
    outputs = [("y", np.float32, [2, 5, H])]
    if extra:
        outputs.append((extra, np.float32, None))
    return make_model(nodes, [("x", np.float32, [2, 5, H])], outputs, inits, opset=opset)


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("sq", ["pow", "mul"])
@pytest.mark.parametrize("affine", ["both", "gamma", "beta"])
def test_decomposed_layernorm_fuses(opset, sq, affine):
    model = _decomposed_model(opset, sq, affine=affine)
    ops = fused_ops(model)
    assert ops == ["LayerNorm", "Identity"], ops
    feeds = {"x": _feeds()["a"]}
    assert_close_everywhere(model, feeds, _atol(feeds, _weights()))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"axes": (1,)},  # not the last axis
        {"affine": "none"},  # no constant tells the feature count: left alone
        {"extra": "var"},  # the variance is read elsewhere
        {"extra": "d"},  # the centred value has a third reader
    ],
)
def test_decomposed_layernorm_near_misses_do_not_fuse(kwargs):
    model = _decomposed_model(**kwargs)
    ops = fused_ops(model)
    assert "LayerNorm" not in ops and "ReduceMean" in ops
    feeds = {"x": _feeds()["a"]}
    assert_close_everywhere(model, feeds, _atol(feeds, _weights()) * 4)
