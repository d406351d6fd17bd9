"""Pooling kernels against onnxruntime on seeded random inputs, plus MaxRoiPool against a brute force."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.test_conv import run_ort
from ziggurat.ops.pool import (
    AveragePool,
    GlobalAveragePool,
    GlobalLpPool,
    GlobalMaxPool,
    LpPool,
    MaxPool,
    MaxRoiPool,
    MaxUnpool,
)

POOL_CASES = [
    # x shape, attrs
    ((1, 8, 16, 16), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ((2, 3, 11, 10), dict(kernel_shape=[3, 2], strides=[2, 3], ceil_mode=1)),
    ((1, 3, 11, 10), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2], ceil_mode=1)),
    ((1, 2, 12, 13), dict(kernel_shape=[2, 3], dilations=[2, 2], strides=[1, 2])),
    ((1, 2, 12, 13), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 12, 13), dict(kernel_shape=[4, 3], strides=[3, 2], auto_pad="SAME_LOWER")),
    ((1, 2, 12, 13), dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID")),
    ((2, 4, 17), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
    ((1, 2, 6, 7, 8), dict(kernel_shape=[2, 3, 2], strides=[2, 1, 2], pads=[0, 1, 1, 1, 1, 0])),
]


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
def test_maxpool_with_indices_matches_onnxruntime(xs, attrs):
    x = np.random.default_rng(0).standard_normal(xs).astype(np.float32)
    y, idx = MaxPool(x, **attrs, n_outputs=2)
    ref_y, ref_idx = run_ort("MaxPool", [x], n_outputs=2, **attrs)
    np.testing.assert_array_equal(y, ref_y)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx)
    # The indices point at the maxima.
    np.testing.assert_array_equal(x.reshape(-1)[idx], y)


def test_maxpool_storage_order_and_ints():
    x = np.random.default_rng(1).permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6).astype(np.float32)
    attrs = dict(kernel_shape=[2, 2], strides=[2, 2], storage_order=1)
    y, idx = MaxPool(x, **attrs, n_outputs=2)
    ref_y, ref_idx = run_ort("MaxPool", [x], n_outputs=2, **attrs)
    np.testing.assert_array_equal(idx, ref_idx)
    xi = (x % 250).astype(np.uint8)
    (yi,) = MaxPool(xi, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    assert yi.dtype == np.uint8
    np.testing.assert_array_equal(
        yi, run_ort("MaxPool", [xi], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    )


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
@pytest.mark.parametrize("include_pad", [0, 1])
def test_averagepool_matches_onnxruntime(xs, attrs, include_pad):
    x = np.random.default_rng(2).standard_normal(xs).astype(np.float32)
    y = AveragePool(x, count_include_pad=include_pad, **attrs)[0]
    opset = 19 if "dilations" in attrs else 17
    ref = run_ort("AveragePool", [x], opset=opset, count_include_pad=include_pad, **attrs)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("xs,attrs", POOL_CASES[:5])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lppool_matches_onnxruntime(xs, attrs, p):
    x = np.random.default_rng(3).standard_normal(xs).astype(np.float32)
    y = LpPool(x, p=p, **attrs)[0]
    ref = run_ort("LpPool", [x], opset=18, p=p, **attrs)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_global_pools_match_onnxruntime():
    x = np.random.default_rng(4).standard_normal((2, 5, 7, 6)).astype(np.float32)
    for op, fn in [("GlobalAveragePool", GlobalAveragePool), ("GlobalMaxPool", GlobalMaxPool)]:
        np.testing.assert_allclose(fn(x)[0], run_ort(op, [x]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        GlobalLpPool(x, p=3)[0], run_ort("GlobalLpPool", [x], p=3), rtol=1e-4, atol=1e-5
    )
    assert GlobalAveragePool(x.astype(np.float16))[0].dtype == np.float16


def test_maxunpool_inverts_maxpool():
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 6)).astype(np.float32)
    y, idx = MaxPool(x, kernel_shape=[2, 2], strides=[2, 2], n_outputs=2)
    (u,) = MaxUnpool(y, idx, kernel_shape=[2, 2], strides=[2, 2])
    ref = run_ort("MaxUnpool", [y, idx], kernel_shape=[2, 2], strides=[2, 2])
    np.testing.assert_array_equal(u, ref)
    assert np.count_nonzero(u) == y.size


def _roi_pool_brute(x, rois, ph, pw, scale):
    out = np.zeros((len(rois), x.shape[1], ph, pw), x.dtype)
    h, w = x.shape[2:]
    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        x1, y1, x2, y2 = (int(np.floor(v * scale + 0.5)) for v in (x1, y1, x2, y2))
        rh, rw = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        for i in range(ph):
            for j in range(pw):
                hs = min(max(int(np.floor(i * rh / ph)) + y1, 0), h)
                he = min(max(int(np.ceil((i + 1) * rh / ph)) + y1, 0), h)
                ws = min(max(int(np.floor(j * rw / pw)) + x1, 0), w)
                we = min(max(int(np.ceil((j + 1) * rw / pw)) + x1, 0), w)
                if he > hs and we > ws:
                    out[r, :, i, j] = x[int(b), :, hs:he, ws:we].max(axis=(1, 2))
    return out


def test_maxroipool_matches_brute_force():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 12, 14)).astype(np.float32)
    rois = np.array(
        [
            [0, 1, 1, 9, 7],
            [1, 0, 0, 13, 11],
            [1, 5.4, 2.6, 6.2, 3.1],
            [0, 10, 8, 30, 20],
            [1, 3, 3, 3, 3],
        ],
        np.float32,
    )
    for scale in (1.0, 0.5):
        y = MaxRoiPool(x, rois, pooled_shape=[3, 2], spatial_scale=scale)[0]
        np.testing.assert_array_equal(y, _roi_pool_brute(x, rois, 3, 2, scale))


# --- oneDNN and portable paths, NCHW and channels-last inputs ------------------------------------
@pytest.fixture(params=["onednn", "portable"])
def pool_path(request, monkeypatch):
    if request.param == "onednn":
        from ziggurat.backends.cpu import conv as dnnl_conv

        if not dnnl_conv.available():
            pytest.skip("oneDNN is not available here (the portable path is tested separately)")
    else:
        monkeypatch.setenv("ZIGGURAT_DNNL_CONV", "0")
    return request.param


def _nhwc(a):
    nd = a.ndim
    return np.ascontiguousarray(a.transpose(0, *range(2, nd), 1)).transpose(
        0, nd - 1, *range(1, nd - 1)
    )


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_maxpool_paths_and_layouts(pool_path, xs, attrs, channels_last):
    x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
    ref = run_ort("MaxPool", [x], **attrs)
    xin = _nhwc(x) if channels_last else x
    (y,) = MaxPool(xin, **attrs)
    np.testing.assert_array_equal(y, ref)  # a maximum is exact
    if pool_path == "onednn" and channels_last:
        assert y.transpose(0, *range(2, y.ndim), 1).flags.c_contiguous  # layout kept


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_averagepool_paths_within_rounding_bound(pool_path, xs, attrs, include_pad, channels_last):
    """Error of a K-term float32 sum and one division: <= (K + 1) * 2^-24 * mean|window|."""
    x = np.random.default_rng(2).standard_normal(xs).astype(np.float32)
    exact = AveragePool(x.astype(np.float64), count_include_pad=include_pad, **attrs)[0]
    mag = AveragePool(np.abs(x).astype(np.float64), count_include_pad=include_pad, **attrs)[0]
    xin = _nhwc(x) if channels_last else x
    (y,) = AveragePool(xin, count_include_pad=include_pad, **attrs)
    k = int(np.prod(attrs["kernel_shape"]))
    assert y.dtype == np.float32
    assert np.all(np.abs(y - exact) <= (k + 1) * 2.0**-24 * mag)


def test_global_average_pool_channels_last():
    x = np.random.default_rng(3).standard_normal((1, 16, 7, 7)).astype(np.float32)
    (y,) = GlobalAveragePool(_nhwc(x))
    exact = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    mag = np.abs(x).astype(np.float64).mean(axis=(2, 3), keepdims=True)
    assert y.shape == (1, 16, 1, 1) and y.dtype == np.float32
    assert np.all(np.abs(y - exact) <= 50 * 2.0**-24 * mag)


def test_maxpool_keeps_bf16():
    """A bf16 activation (between bf16 convolutions) pools in bf16: the maximum is exact."""
    from ziggurat.backends.cpu import conv as dnnl_conv

    if not dnnl_conv.available():
        pytest.skip("oneDNN is not available here")
    bf16 = dnnl_conv.bf16_dtype()
    x = np.random.default_rng(4).standard_normal((1, 16, 9, 9)).astype(bf16)
    (y,) = MaxPool(_nhwc(x), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    ref = run_ort(
        "MaxPool", [x.astype(np.float32)], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    )
    assert y.dtype == bf16
    np.testing.assert_array_equal(y.astype(np.float32), ref)
