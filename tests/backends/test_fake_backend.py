"""The fake device: tensors that refuse host use, and its array kernels against the CPU kernels.

Tolerances come from the computation: data movement is exact; a one-op elementwise result may
differ by a few float32 spacings of the result (numpy's and the kernel's formulas are the same up
to operation order); a dot product of K terms computed in two orders differs by at most
2 * K * eps * sum|a_i b_i| (each is within K * eps * sum|a_i b_i| of the exact value).
"""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.backends.fake import FakeBackend, FakeTensor
from ziggurat.backends.kernels import HOST_INPUTS
from ziggurat.errors import DeviceError
from ziggurat.ops import registry

EPS32 = float(np.finfo(np.float32).eps)
rng = np.random.default_rng(7)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def be():
    return FakeBackend()


def run_both(be, op, inputs, attrs=None, *, domain="", opset=17, n_out=1):
    """(cpu outputs, device outputs) of one node on the same inputs."""
    kdef = registry.lookup(op, domain, opset)
    kwargs = kdef.kwargs(attrs or {}, n_out, opset)
    cpu = list(kdef.fn(*inputs, **kwargs))
    entry = be.kernel(op, domain, opset)
    assert entry is not None, f"no fake kernel for {op}"
    host_pos = HOST_INPUTS.get(op, ()) if not domain else ()
    args = [
        None if x is None else (x if i in host_pos else be.to_device(x))
        for i, x in enumerate(inputs)
    ]
    if entry.supports is not None:
        metas = [None if x is None else (x.shape, x.dtype) for x in inputs]
        assert entry.supports(metas, kwargs) is None
    dev = [be.to_host(t) for t in entry.fn(be, args, kwargs)]
    for t in args:
        if isinstance(t, FakeTensor):
            be.release(t)
    return cpu[:n_out], dev[:n_out]


def test_fake_tensor_refuses_silent_host_use(be):
    t = be.to_device(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert t.shape == (2, 3) and t.dtype == np.float32 and t.ndim == 2 and t.size == 6
    for use in (np.asarray, np.exp, float, list, lambda x: x[0], lambda x: np.concatenate([x])):
        with pytest.raises(DeviceError, match="device->host copy"):
            use(t)
    np.testing.assert_array_equal(be.to_host(t), np.arange(6).reshape(2, 3))
    be.release(t)
    with pytest.raises(DeviceError, match="after its memory was released"):
        be.to_host(t)


def test_tensors_live_in_reused_pool_blocks(be):
    before = be.raw_allocations
    a = be.to_device(np.ones(1000, np.float32))
    be.release(a)
    b = be.to_device(np.full(1000, 2.0, np.float32))  # same bucket: the cached block
    assert be.raw_allocations - before <= 1
    np.testing.assert_array_equal(be.to_host(b), 2.0)
    be.release(b)


EXACT = [
    ("Reshape", [f32(2, 3, 4), np.array([4, 0, -1], np.int64)], {}),
    ("Transpose", [f32(2, 3, 4)], {"perm": [2, 0, 1]}),
    ("Flatten", [f32(2, 3, 4)], {"axis": 2}),
    ("Unsqueeze", [f32(3, 4), np.array([0, -1], np.int64)], {}),
    ("Squeeze", [f32(3, 1, 4, 1), np.array([1], np.int64)], {}),
    ("Concat", [f32(2, 3), f32(2, 5)], {"axis": 1}),
    ("Gather", [f32(10, 4), np.array([[0, 9], [-1, 3]], np.int64)], {"axis": 0}),
    ("GatherElements", [f32(3, 4), np.array([[0, 3], [-1, 1], [2, 2]], np.int64)], {"axis": 1}),
    ("Expand", [f32(3, 1), np.array([2, 3, 4], np.int64)], {}),
    (
        "Slice",
        [f32(5, 6)] + [np.array(v, np.int64) for v in ([1, -1], [4, 0], [0, 1], [2, -2])],
        {},
    ),
    ("Where", [f32(3, 4) > 0, f32(3, 4), f32(1, 4)], {}),
    ("Equal", [np.array([1, 2, 3], np.int64), np.array([1, 0, 3], np.int64)], {}),
    ("Cast", [f32(3, 4) * 10], {"to": 7}),
    ("Relu", [f32(3, 4)], {}),
    ("Neg", [f32(3, 4)], {}),
    ("Add", [f32(3, 4), f32(4)], {}),
    ("Mul", [f32(3, 4), f32(3, 1)], {}),
    ("Sub", [np.array([5, -7], np.int64), np.array([3, 2], np.int64)], {}),
    ("Div", [np.array([7, -7, 7, -7], np.int64), np.array([2, 2, -2, -2], np.int64)], {}),
    ("MaxPool", [f32(1, 2, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}),
    ("ReduceMax", [f32(3, 4, 5), np.array([1], np.int64)], {"keepdims": 0}),
    ("ArgMax", [f32(3, 4, 5)], {"axis": -1}),
    ("ArgMin", [f32(3, 4, 5)], {"axis": 1, "keepdims": 0}),
]


@pytest.mark.parametrize("op,inputs,attrs", EXACT, ids=[c[0] for c in EXACT])
def test_exact_kernels_match_the_cpu(be, op, inputs, attrs):
    opset = 18 if op.startswith("Reduce") else 17
    (cpu,), (dev,) = run_both(be, op, inputs, attrs, opset=opset)
    assert dev.dtype == cpu.dtype and dev.shape == cpu.shape
    np.testing.assert_array_equal(dev, cpu)


ELEMENTWISE = [
    ("Sigmoid", [f32(50)], {}, ""),
    ("Tanh", [f32(50)], {}, ""),
    ("Exp", [f32(50)], {}, ""),
    ("Div", [f32(50), f32(50) + 3], {}, ""),
    ("Gelu", [f32(50) * 3], {}, "ziggurat"),
    ("Softmax", [f32(4, 30)], {"axis": -1}, ""),
]


@pytest.mark.parametrize("op,inputs,attrs,domain", ELEMENTWISE, ids=[c[0] for c in ELEMENTWISE])
def test_elementwise_within_a_few_spacings(be, op, inputs, attrs, domain):
    (cpu,), (dev,) = run_both(be, op, inputs, attrs, domain=domain)
    assert dev.dtype == cpu.dtype
    # exp/tanh/erf of two libraries: each within ~2 ulp; a softmax row adds a 30-term sum.
    ulps = 32 if op == "Softmax" else 8
    bound = ulps * np.spacing(np.abs(cpu)) + 1e-30
    if op == "Gelu":  # 0.5 x (1 + erf(x/sqrt2)): the 1 + erf cancels, leaving |x| * eps of 1
        bound += 4 * np.abs(inputs[0]) * EPS32
    np.testing.assert_array_less(np.abs(dev - cpu), bound)


def _dot_bound(a_abs_product: np.ndarray, k: int) -> np.ndarray:
    return 2 * k * EPS32 * a_abs_product + 1e-30


def test_matmul_gemm_dense(be):
    a, b, c = f32(3, 5, 40), f32(40, 7), f32(7)
    bound = _dot_bound(np.abs(a) @ np.abs(b), 40)
    (cpu,), (dev,) = run_both(be, "MatMul", [a, b])
    np.testing.assert_array_less(np.abs(dev - cpu), bound)
    (cpu,), (dev,) = run_both(be, "Dense", [a, b, c], {"activation": "relu"}, domain="ziggurat")
    np.testing.assert_array_less(np.abs(dev - cpu), bound + np.spacing(np.abs(c)))
    x, w = f32(40, 6), f32(5, 40)
    attrs = {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}
    (cpu,), (dev,) = run_both(be, "Gemm", [x, w, c[:5]], attrs, opset=13)
    gbound = 0.5 * _dot_bound(np.abs(x.T) @ np.abs(w.T), 40) + 4 * np.spacing(np.abs(cpu))
    np.testing.assert_array_less(np.abs(dev - cpu), gbound)


CONVS = [
    {"pads": [1, 1, 1, 1], "strides": [1, 1]},
    {"pads": [0, 1, 2, 1], "strides": [2, 1], "dilations": [2, 1]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"group": 4, "pads": [1, 1, 1, 1]},
]


@pytest.mark.parametrize("attrs", CONVS, ids=["pad", "asym-dilated", "same-upper", "grouped"])
def test_conv_by_im2col_matches_the_cpu(be, attrs):
    g = attrs.get("group", 1)
    x, w, b = f32(2, 8, 9, 9), f32(12, 8 // g, 3, 3), f32(12)
    (cpu,), (dev,) = run_both(be, "Conv", [x, w, b], attrs)
    (mag,) = registry.lookup("Conv", "", 17).fn(np.abs(x), np.abs(w), **attrs)
    k = 8 // g * 9
    np.testing.assert_array_less(
        np.abs(dev - cpu), _dot_bound(mag, k) + 4 * np.spacing(np.abs(b)).max()
    )


def test_average_pools(be):
    x = f32(1, 3, 6, 6)
    (cpu,), (dev,) = run_both(be, "GlobalAveragePool", [x])
    np.testing.assert_array_less(np.abs(dev - cpu), 2 * 36 * EPS32 * 3 * np.abs(x).max())
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0}
    (cpu,), (dev,) = run_both(be, "AveragePool", [x], attrs)
    np.testing.assert_array_less(np.abs(dev - cpu), 2 * 9 * EPS32 * np.abs(x).max())


def test_layer_norms_and_attention(be):
    x, gamma, beta = f32(2, 5, 64), f32(64), f32(64)
    # Statistics over 64 values: mean and variance each carry ~64 eps relative error.
    tol = 4 * 64 * EPS32 * (np.abs(gamma).max() * 4 + np.abs(beta).max())
    (cpu,), (dev,) = run_both(be, "LayerNormalization", [x, gamma, beta], {"epsilon": 1e-5})
    np.testing.assert_allclose(dev, cpu, rtol=0, atol=tol)
    cpu2, dev2 = run_both(
        be, "SkipLayerNorm", [x, f32(2, 5, 64), gamma, beta], {"epsilon": 1e-5},
        domain="ziggurat", n_out=2,
    )  # fmt: skip
    np.testing.assert_allclose(dev2[0], cpu2[0], rtol=0, atol=2 * tol)
    np.testing.assert_array_equal(dev2[1], cpu2[1])  # the residual sum: one rounding, same order
    q, kt, v = f32(1, 2, 6, 16), f32(1, 2, 16, 6), f32(1, 2, 6, 16)
    mask = np.where(rng.random((1, 1, 1, 6)) < 0.3, -np.inf, 0).astype(np.float32)
    mask[..., 0] = 0
    attrs = {"scale": 0.25, "nan_to_zero": 1}
    (cpu,), (dev,) = run_both(be, "FusedAttention", [q, kt, v, mask], attrs, domain="ziggurat")
    # scores: 16-term dots; softmax over 6; output: 6-term weighted sums of |v| <= max|v|.
    tol = (2 * 16 * EPS32 * 0.25 * (np.abs(q).max() * np.abs(kt).max() * 16) + 16 * EPS32) * (
        np.abs(v).max() * 6
    )
    np.testing.assert_allclose(dev, cpu, rtol=0, atol=tol)


@pytest.mark.parametrize(
    "inputs,attrs,n_out",
    [
        ([f32(7, 4), np.array([2, 5], np.int64)], {"axis": 0}, 2),
        ([f32(3, 12)], {"axis": -1}, 3),
        ([f32(3, 7)], {"axis": 1, "num_outputs": 3}, 3),
    ],
    ids=["sizes", "equal", "num_outputs"],
)
def test_split_matches_the_cpu(be, inputs, attrs, n_out):
    cpu, dev = run_both(be, "Split", inputs, attrs, opset=18, n_out=n_out)
    assert len(dev) == len(cpu) == n_out
    for c, d in zip(cpu, dev, strict=True):
        np.testing.assert_array_equal(d, c)


def test_supports_refuses_what_the_device_cannot_run(be):
    conv = be.kernel("Conv", "", 17)
    assert "2-D" in conv.supports(
        [((1, 2, 8), np.dtype(np.float32)), ((3, 2, 3), np.dtype(np.float32))], {}
    )
    mm = be.kernel("MatMul", "", 13)
    assert "dtype int64" in mm.supports(
        [((2, 2), np.dtype(np.int64)), ((2, 2), np.dtype(np.int64))], {}
    )
    assert (
        be.kernel("Softmax", "", 11) is None
    )  # opset < 13: the 2-D coercion form stays on the CPU
    assert "ceil_mode" in be.kernel("MaxPool", "", 12).supports(
        [((1, 1, 4, 4), np.dtype(np.float32))], {"ceil_mode": 1}
    )
