"""ResNet-like and MobileNet-like small models through whole sessions, against onnxruntime.

They exercise what single-kernel tests cannot: BatchNorm folding, Pad folding, residual and
activation fusion, channels-last activations handed from convolution to convolution and to pools,
bf16 activations between bf16 convolutions, on the oneDNN path and on the portable one
(``ZIGGURAT_DNNL_CONV=0``).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ziggurat as zg
from tests.models.test_models_vs_onnxruntime import _atol


class _Net:
    """A tiny graph builder: seeded weights, BN with non-trivial statistics."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def _name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def init(self, arr):
        name = self._name("w")
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def node(self, op, inputs, **attrs):
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv_bn(self, x, cin, cout, k, stride=1, group=1, pad=None, act="relu"):
        std = np.sqrt(2.0 / (cin // group * k * k))
        w = self.init(self.rng.standard_normal((cout, cin // group, k, k)) * std)
        p = k // 2 if pad is None else pad
        y = self.node(
            "Conv", [x, w], kernel_shape=[k, k], strides=[stride] * 2, pads=[p] * 4, group=group
        )
        scale = self.init(1 + 0.1 * self.rng.standard_normal(cout))
        bias = self.init(0.1 * self.rng.standard_normal(cout))
        mean = self.init(0.1 * self.rng.standard_normal(cout))
        var = self.init(1 + 0.2 * self.rng.random(cout))
        y = self.node("BatchNormalization", [y, scale, bias, mean, var])
        if act == "relu":
            y = self.node("Relu", [y])
        elif act == "relu6":
            lo, hi = self.init(np.array(0.0)), self.init(np.array(6.0))
            y = self.node("Clip", [y, lo, hi])
        return y

    def head(self, x, c, classes=10):
        y = self.node("GlobalAveragePool", [x])
        y = self.node("Flatten", [y])
        w = self.init(self.rng.standard_normal((classes, c)) * np.sqrt(1 / c))
        b = self.init(np.zeros(classes))
        return self.node("Gemm", [y, w, b], transB=1)

    def model(self, out, size):
        graph = helper.make_graph(
            self.nodes, "net",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits,
        )  # fmt: skip
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def resnet_like(seed=0) -> onnx.ModelProto:
    """Stem 7x7/2 + maxpool, two bottlenecks (one with a strided projection shortcut), head."""
    n = _Net(seed)
    x = n.conv_bn("x", 3, 16, 7, stride=2)
    x = n.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c = 16
    for cout, stride in ((32, 1), (64, 2)):
        y = n.conv_bn(x, c, cout // 4, 1)
        y = n.conv_bn(y, cout // 4, cout // 4, 3, stride=stride)
        y = n.conv_bn(y, cout // 4, cout, 1, act="")
        short = n.conv_bn(x, c, cout, 1, stride=stride, act="")
        x = n.node("Relu", [n.node("Add", [y, short])])
        c = cout
    return n.model(n.head(x, c), 64)


def mobilenet_like(seed=0) -> onnx.ModelProto:
    """Stem with an explicit Pad, inverted residuals (expand, depthwise, project) with ReLU6."""
    n = _Net(seed)
    pads = "stem_pads"
    n.inits.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), pads))
    xp = n.node("Pad", ["x", pads])  # TensorFlow-style: pad only bottom/right, then a VALID conv
    x = n.conv_bn(xp, 3, 16, 3, stride=2, pad=0, act="relu6")
    c = 16
    for cout, stride in ((16, 1), (24, 2), (24, 1)):
        y = n.conv_bn(x, c, c * 4, 1, act="relu6")
        y = n.conv_bn(y, c * 4, c * 4, 3, stride=stride, group=c * 4, act="relu6")
        y = n.conv_bn(y, c * 4, cout, 1, act="")
        x = n.node("Add", [x, y]) if stride == 1 and cout == c else y
        c = cout
    return n.model(n.head(x, c), 48)


MODELS = {
    # Longest float32 reduction in each: ResNet's 7x7x3 stem (147) and 3x3x16 convs, MobileNet's
    # 1x1 projections over 96 channels; pools 16x16 / 6x6 at most.
    "resnet_like": (resnet_like, 64, 147 + 256),
    "mobilenet_like": (mobilenet_like, 48, 96 + 144),
}


def _feeds(size):
    return {"x": np.random.default_rng(7).standard_normal((1, 3, size, size)).astype(np.float32)}


@pytest.mark.parametrize("path", ["onednn", "portable"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_conv_models_match_onnxruntime(name, path, monkeypatch):
    if path == "portable":
        monkeypatch.setenv("ZIGGURAT_DNNL_CONV", "0")
    build, size, k = MODELS[name]
    data = build().SerializeToString()
    feeds = _feeds(size)
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    sess = zg.InferenceSession(data)
    got = sess.run(None, feeds)[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=_atol(ref, k))
    np.testing.assert_array_equal(sess.run(None, feeds)[0], got)  # cached primitives: same result


@pytest.mark.parametrize("name", sorted(MODELS))
def test_conv_models_bf16_close_to_fp32(name):
    from ziggurat.backends.cpu import conv as dnnl_conv

    if not dnnl_conv.available() or not dnnl_conv.bf16_supported():
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: precision='bf16' is refused")
    build, size, k = MODELS[name]
    data = build().SerializeToString()
    feeds = _feeds(size)
    ref = zg.InferenceSession(data).run(None, feeds)[0]
    got = zg.InferenceSession(data, sess_options=zg.SessionOptions(precision="bf16")).run(
        None, feeds
    )[0]
    # bf16 rounds every convolution's inputs (unit roundoff 2^-8, twice per product) and,
    # between convolutions, its outputs. With random-sign errors over <= 12 layers in sequence,
    # each a reduction of length <= k, the relative error of a logit stays within
    # C * 2^-8 * sqrt(3 * 12) (C = 5 as for float32; the length cancels in a normalized net).
    scale = max(1.0, float(np.abs(ref).max()))
    err = np.abs(got - ref).max()
    assert err <= 5.0 * 2.0**-8 * np.sqrt(36) * scale
    assert err > 0  # bf16 really ran (a float32 result would match to the last bits)


def test_concurrent_runs_share_primitives_safely():
    """Server threads run one session at once: each primitive's buffers are rebound under a lock."""
    from concurrent.futures import ThreadPoolExecutor

    build, size, _ = MODELS["resnet_like"]
    sess = zg.InferenceSession(build().SerializeToString())
    rng = np.random.default_rng(9)
    feeds = [{"x": rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(8)]
    serial = [sess.run(None, f)[0] for f in feeds]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            together = list(pool.map(lambda f: sess.run(None, f)[0], feeds))
            for a, b in zip(together, serial, strict=True):
                np.testing.assert_array_equal(a, b)


def residual_reuse(seed=0) -> onnx.ModelProto:
    """Residuals that die at their convolution (written over) beside one read again later."""
    n = _Net(seed)
    x = n.conv_bn("x", 3, 64, 3)
    y = n.conv_bn(n.conv_bn(x, 64, 32, 1), 32, 64, 3, act="")
    r = n.node("Relu", [n.node("Add", [y, x])])  # x dies here
    y = n.conv_bn(n.conv_bn(r, 64, 32, 1), 32, 64, 1, act="")
    s = n.node("Relu", [n.node("Add", [y, r])])  # r is read again below: kept
    out = n.node("Add", [n.conv_bn(s, 64, 64, 1, act=""), r])  # r dies here
    return n.model(n.head(out, 64), 16)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_in_place_residuals_leave_live_values_alone(precision):
    from ziggurat.backends.cpu import conv as dnnl_conv

    if precision == "bf16" and not (dnnl_conv.available() and dnnl_conv.bf16_supported()):
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: precision='bf16' is refused")
    data = residual_reuse().SerializeToString()
    feeds = _feeds(16)
    sess = zg.InferenceSession(data)
    marked = [n for n in sess._compiled.graph.nodes if n.attrs.get("inplace_skip")]
    assert len(marked) == 2
    if precision == "fp32":
        ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        atol = _atol(ref, 288 + 64)
    else:  # against float32, within the bf16 bound of test_conv_models_bf16_close_to_fp32
        ref = sess.run(None, feeds)[0]
        sess = zg.InferenceSession(data, sess_options=zg.SessionOptions(precision="bf16"))
        atol = 5.0 * 2.0**-8 * np.sqrt(3 * 6) * max(1.0, float(np.abs(ref).max()))
    for _ in range(3):  # generic code, recordings, then the specialised plan
        np.testing.assert_allclose(sess.run(None, feeds)[0], ref, rtol=0, atol=atol)
