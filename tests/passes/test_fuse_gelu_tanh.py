"""The tanh-form GELU (GPT-2's NewGELUActivation export) fuses into ziggurat::GeluTanh, and its near
misses do not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from tests.passes._fusion_check import assert_close_everywhere, fused_ops, make_model

EPS32 = float(np.finfo(np.float32).eps)
K = math.sqrt(2 / math.pi)


def _gelu_tanh_model(order: str = "gpt2", cube: str = "pow", c3=0.044715, extra_reader=""):
    """x -> FFN-sized GELU -> y, as GPT-2 exports it (order 'gpt2': (0.5 * x) * (1 + tanh));
    'x_first': (x * (1 + tanh)) * 0.5; 'half_last': x * ((1 + tanh) * 0.5).
    ``extra_reader`` names an intermediate also exported as a second output."""
    n = helper.make_node
    nodes = []
    if cube == "pow":
        nodes.append(n("Pow", ["x", "three"], ["cube"]))
    else:
        nodes += [n("Mul", ["x", "x"], ["sq"]), n("Mul", ["sq", "x"], ["cube"])]
    nodes += [
        n("Mul", ["cube", "c3"], ["t3"]),
        n("Add", ["x", "t3"], ["inner"]),
        n("Mul", ["inner", "k"], ["u"]),
        n("Tanh", ["u"], ["th"]),
        n("Add", ["th", "one"], ["a"]),
    ]
    if order == "gpt2":
        nodes += [n("Mul", ["x", "half"], ["hx"]), n("Mul", ["hx", "a"], ["y"])]
    elif order == "x_first":
        nodes += [n("Mul", ["x", "a"], ["xa"]), n("Mul", ["xa", "half"], ["y"])]
    else:
        nodes += [n("Mul", ["a", "half"], ["ah"]), n("Mul", ["x", "ah"], ["y"])]
    inits = {
        "three": np.array(3.0, np.float32), "c3": np.array(c3, np.float32),
        "k": np.array(K, np.float32), "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }  # fmt: skip
    outputs = [("y", np.float32, ["b", 64])]
    if extra_reader:
        outputs.append((extra_reader, np.float32, ["b", 64]))
    return make_model(nodes, [("x", np.float32, ["b", 64])], outputs, inits)


def _x():
    return {"x": (np.random.default_rng(0).standard_normal((5, 64)) * 3).astype(np.float32)}


def _atol(x):
    """The graph and the kernel each round ~8 times (eps/2 relative each) on values up to
    |0.5 x (1 + tanh)| <= |x|, and tanh' <= 1 carries the inner polynomial's ~4 roundings of
    |u| <= K |x| (1 + 0.045 x^2) into the result scaled by |x| / 2."""
    w = float(np.abs(x).max())
    u = K * w * (1 + 0.044715 * w * w)
    return 2 * (8 * EPS32 * w + 4 * EPS32 * u * w / 2)


@pytest.mark.parametrize("order", ["gpt2", "x_first", "half_last"])
@pytest.mark.parametrize("cube", ["pow", "mul"])
def test_tanh_gelu_fuses_and_matches(order, cube):
    model = _gelu_tanh_model(order, cube)
    assert fused_ops(model) == ["GeluTanh"]
    feeds = _x()
    assert_close_everywhere(model, feeds, _atol(feeds["x"]))


def test_near_miss_constant_does_not_fuse():
    model = _gelu_tanh_model(c3=0.05)
    ops = fused_ops(model)
    assert "GeluTanh" not in ops and "Tanh" in ops
    feeds = _x()
    assert_close_everywhere(model, feeds, _atol(feeds["x"]))


@pytest.mark.parametrize("reader", ["cube", "u", "th", "a", "hx"])
def test_intermediate_with_another_reader_does_not_fuse(reader):
    model = _gelu_tanh_model(extra_reader=reader)
    ops = fused_ops(model)
    assert "GeluTanh" not in ops and "Tanh" in ops
    feeds = _x()
    assert_close_everywhere(model, feeds, _atol(feeds["x"]) * (1 + 27))  # cube: up to 27 |x|^3
