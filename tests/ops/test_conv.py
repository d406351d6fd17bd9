"""Conv / ConvTranspose / ConvInteger / DeformConv against onnxruntime on seeded random inputs.

The conformance suite covers few shapes; these sweep the fast paths (pointwise, depthwise, im2col),
strides, dilations, groups, auto_pad and ranks 1-3.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from tests.ops._ort import ort_outputs
from ziggurat.ops.conv import Conv, ConvInteger
from ziggurat.ops.convtranspose import ConvTranspose, DeformConv


def run_ort(op, inputs, opset=17, n_outputs=1, **attrs):
    """Run one ``op`` node in onnxruntime on ``inputs`` (None = omitted optional input).

    Returns the first output, or a list of ``n_outputs`` outputs when more than one is asked for.
    """
    res = ort_outputs(op, inputs, n_outputs, opset, **attrs)
    return res[0] if n_outputs == 1 else res


def rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


CONV_CASES = [
    # x shape, w shape, attrs
    ((1, 64, 14, 14), (32, 64, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 8, 11, 9), (6, 8, 3, 2), dict(strides=[2, 1], pads=[1, 0, 2, 1])),
    ((1, 3, 32, 32), (8, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3])),
    ((2, 16, 10, 10), (8, 16, 1, 1), {}),
    ((1, 16, 10, 9), (8, 16, 1, 1), dict(strides=[2, 2])),
    ((1, 16, 10, 10), (8, 16, 1, 1), dict(pads=[1, 0, 0, 1])),
    ((2, 8, 6, 7), (12, 2, 1, 1), dict(group=4, strides=[2, 1])),
    ((2, 8, 12, 12), (8, 2, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),
    ((1, 12, 15, 15), (12, 1, 3, 3), dict(group=12, pads=[1, 1, 1, 1])),
    ((2, 12, 15, 16), (12, 1, 3, 3), dict(group=12, strides=[2, 2], pads=[1, 1, 1, 1])),
    ((1, 12, 15, 16), (12, 1, 5, 5), dict(group=12, strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 6, 15, 16), (12, 1, 3, 3), dict(group=6, dilations=[2, 2], pads=[2, 2, 2, 2])),
    # Depthwise large enough for the parallel, channel-blocked portable path (several blocks).
    ((1, 48, 40, 40), (48, 1, 3, 3), dict(group=48, pads=[1, 1, 1, 1])),
    ((1, 32, 48, 48), (64, 1, 3, 3), dict(group=32, strides=[2, 2], pads=[1, 0, 1, 1])),
    ((1, 8, 9, 9), (4, 8, 3, 3), dict(dilations=[2, 3], strides=[1, 2])),
    ((1, 4, 9, 8), (4, 4, 3, 3), dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    ((1, 4, 9, 8), (4, 4, 3, 3), dict(auto_pad="VALID", strides=[2, 2])),
    ((1, 4, 9, 8), (4, 4, 2, 4), dict(auto_pad="SAME_UPPER")),
    ((2, 4, 20), (6, 4, 5), dict(strides=[3], pads=[2, 1])),
    ((1, 8, 20), (8, 1, 3), dict(group=8, pads=[1, 1])),
    ((1, 4, 6, 7, 8), (5, 4, 3, 3, 3), dict(pads=[1, 1, 1, 1, 1, 1], strides=[1, 2, 1])),
    ((1, 4, 6, 7, 8), (4, 1, 3, 3, 3), dict(group=4, pads=[1, 0, 1, 1, 1, 0], strides=[2, 1, 2])),
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
def test_conv_matches_onnxruntime(xs, ws, attrs):
    rng = np.random.default_rng(0)
    x, w, b = rand(rng, xs), rand(rng, ws), rand(rng, (ws[0],))
    y = Conv(x, w, b, **attrs)[0]
    ref = run_ort("Conv", [x, w, b], **attrs)
    assert y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    y_nb = Conv(x, w, **attrs)[0]
    np.testing.assert_allclose(
        y_nb + b.reshape((-1,) + (1,) * (x.ndim - 2)), ref, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_conv_keeps_dtype(dtype):
    rng = np.random.default_rng(1)
    x, w = rand(rng, (1, 4, 8, 8), dtype), rand(rng, (4, 4, 3, 3), dtype)
    y = Conv(x, w, pads=[1, 1, 1, 1])[0]
    assert y.dtype == dtype
    ref = Conv(x.astype(np.float32), w.astype(np.float32), pads=[1, 1, 1, 1])[0]
    np.testing.assert_allclose(y.astype(np.float32), ref, rtol=1e-2, atol=1e-2)


def test_conv_channel_mismatch_is_reported():
    with pytest.raises(Exception, match="channels"):
        Conv(np.zeros((1, 3, 5, 5), np.float32), np.zeros((2, 4, 3, 3), np.float32))


def test_convinteger_per_channel_zero_point():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 255, (1, 3, 7, 7), dtype=np.uint8)
    w = rng.integers(-128, 127, (4, 3, 3, 3), dtype=np.int8)
    xz, wz = np.uint8(7), np.array([1, -2, 3, 0], np.int8)
    y = ConvInteger(x, w, xz, wz, pads=[1, 1, 1, 1])[0]
    assert y.dtype == np.int32
    ref = Conv(
        x.astype(np.float64) - 7,
        w.astype(np.float64) - wz.reshape(4, 1, 1, 1).astype(np.float64),
        pads=[1, 1, 1, 1],
    )[0]
    np.testing.assert_array_equal(y, ref.astype(np.int32))


CONVT_CASES = [
    ((1, 4, 5, 5), (4, 3, 3, 3), dict()),
    ((2, 4, 5, 6), (4, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    ((1, 4, 5, 6), (4, 2, 4, 4), dict(strides=[2, 2], pads=[1, 1, 1, 1], group=2)),
    ((1, 4, 5, 6), (4, 2, 3, 3), dict(strides=[3, 2], dilations=[2, 1], pads=[0, 1, 2, 0])),
    ((1, 4, 5, 6), (4, 2, 3, 3), dict(strides=[2, 2], output_shape=[10, 12])),
    ((1, 4, 5, 6), (4, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 4, 5, 6), (4, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 8, 9), (8, 1, 3), dict(group=8, strides=[2])),
    ((1, 2, 3, 4, 5), (2, 3, 2, 3, 2), dict(strides=[2, 1, 2])),
]


@pytest.mark.parametrize("xs,ws,attrs", CONVT_CASES)
def test_convtranspose_matches_onnxruntime(xs, ws, attrs):
    rng = np.random.default_rng(3)
    x, w = rand(rng, xs), rand(rng, ws)
    b = rand(rng, (ws[1] * attrs.get("group", 1),))
    y = ConvTranspose(x, w, b, **attrs)[0]
    ref = run_ort("ConvTranspose", [x, w, b], **attrs)
    assert y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_deformconv_zero_offset_is_conv():
    rng = np.random.default_rng(4)
    x, w, b = rand(rng, (2, 4, 7, 8)), rand(rng, (6, 2, 3, 3)), rand(rng, (6,))
    attrs = dict(group=2, pads=[1, 1, 1, 1], strides=[2, 1])
    ref = Conv(x, w, b, **attrs)[0]
    offset = np.zeros((2, 2 * 9 * 2, *ref.shape[2:]), np.float32)
    y = DeformConv(x, w, offset, b, offset_group=2, **attrs)[0]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_deformconv_integer_offset_shifts_input():
    rng = np.random.default_rng(5)
    x, w = rand(rng, (1, 1, 6, 6)), np.ones((1, 1, 1, 1), np.float32)
    offset = np.zeros((1, 2, 6, 6), np.float32)
    offset[:, 0] = 1.0  # sample one row down; the last row falls outside -> 0
    y = DeformConv(x, w, offset)[0]
    expected = np.zeros_like(x)
    expected[:, :, :5] = x[:, :, 1:]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    half = np.full((1, 2, 6, 6), 0.5, np.float32)
    half[:, 1] = 0
    y = DeformConv(x, w, half, None, np.full((1, 1, 6, 6), 2.0, np.float32))[0]
    interp = x.copy()
    interp[:, :, :5] = (x[:, :, :5] + x[:, :, 1:]) / 2
    interp[:, :, 5] = x[:, :, 5] / 2
    np.testing.assert_allclose(y, 2 * interp, rtol=1e-5, atol=1e-5)


def test_onnx_model_helpers_are_usable():
    # Guards the helper used above against onnx API drift.
    assert onnx.helper.np_dtype_to_tensor_dtype(np.dtype(np.float32)) == TensorProto.FLOAT


# --- oneDNN and portable paths against an exact (float64) reference ----------------------------
# Rounding bound, any summation order: each output is a sum of K = C/group * prod(kernel) products
# plus the bias (and the residual); in float32 every partial sum and product rounds with unit
# roundoff u = 2^-24, so |y - exact| <= (K + 2) * u * A with A the same sum over |terms|. bf16 rounds
# x and w first (u = 2^-8 each: 2 * 2^-8 + 2^-16 per product), then accumulates in float32.
U32, U_BF16 = 2.0**-24, 2.0**-8


def conv_ref64(x, w, b, *, pads=None, strides=None, dilations=None, group=1, auto_pad="NOTSET"):
    """Direct float64 convolution, one kernel offset at a time (independent of the kernels)."""
    from ziggurat.ops._spatial import pad_input, window_geometry

    geo = window_geometry(
        x.shape[2:], w.shape[2:], strides=strides, dilations=dilations, pads=pads,
        auto_pad=auto_pad,
    )  # fmt: skip
    xp = pad_input(x.astype(np.float64), geo.pads_begin, geo.buf_end)
    n, m = x.shape[0], w.shape[0]
    cg, mg = x.shape[1] // group, m // group
    y = np.zeros((n, m) + geo.out)
    for off in geo.offsets():
        win = xp[(slice(None), slice(None)) + geo.window_slices(off)]
        for g in range(group):
            wk = w[(slice(g * mg, (g + 1) * mg), slice(None)) + off].astype(np.float64)
            y[:, g * mg : (g + 1) * mg] += np.einsum(
                "mc,nc...->nm...", wk, win[:, g * cg : (g + 1) * cg]
            )
    if b is not None:
        y += b.astype(np.float64).reshape((-1,) + (1,) * (x.ndim - 2))
    return y


def conv_bound(x, w, b, skip=None, unit=U32, **attrs):
    """Per-element error bound of a float32 (or bf16, ``unit``) conv + bias + skip."""
    k = w.shape[1] * int(np.prod(w.shape[2:]))
    mag = conv_ref64(np.abs(x), np.abs(w), None if b is None else np.abs(b), **attrs)
    if skip is not None:
        mag = mag + np.abs(skip)
    per_product = U32 if unit == U32 else 2 * unit + unit * unit
    return (per_product + (k + 2) * U32) * mag + 1e-38


def nhwc(a):
    """``a`` with the same values, channels-last in memory."""
    nd = a.ndim
    return np.ascontiguousarray(a.transpose(0, *range(2, nd), 1)).transpose(
        0, nd - 1, *range(1, nd - 1)
    )


def _native_or_skip():
    from ziggurat.backends.cpu import conv as dnnl_conv

    if not dnnl_conv.available():
        pytest.skip("oneDNN is not available here (the portable path is tested separately)")
    return dnnl_conv


@pytest.fixture(params=["onednn", "portable"])
def conv_path(request, monkeypatch):
    """Runs a test on the oneDNN path and on the portable numpy path (ZIGGURAT_DNNL_CONV=0)."""
    if request.param == "onednn":
        _native_or_skip()
    else:
        monkeypatch.setenv("ZIGGURAT_DNNL_CONV", "0")
    return request.param


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
@pytest.mark.parametrize("channels_last_in", [False, True])
def test_conv_within_rounding_bound(conv_path, xs, ws, attrs, channels_last_in):
    rng = np.random.default_rng(2)
    x, w, b = rand(rng, xs), rand(rng, ws), rand(rng, (ws[0],))
    ref = conv_ref64(x, w, b, **attrs)
    y = Conv(nhwc(x) if channels_last_in else x, w, b, **attrs)[0]
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.all(np.abs(y - ref) <= conv_bound(x, w, b, **attrs))


FUSED_CASES = [
    ((1, 16, 12, 12), (16, 16, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 24, 9, 10), (32, 24, 1, 1), {}),
    ((2, 12, 15, 16), (12, 1, 3, 3), dict(group=12, strides=[2, 2], pads=[0, 1, 1, 0])),
    ((1, 8, 9, 9), (8, 4, 3, 3), dict(group=2, dilations=[2, 2], pads=[2, 2, 2, 2])),
    ((1, 3, 20, 20), (8, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3])),
    ((2, 6, 19), (8, 6, 3), dict(pads=[1, 1])),  # 1-D: channels-last is (N, W, C)
    ((1, 4, 5, 6, 7), (6, 4, 3, 3, 3), dict(pads=[1, 1, 1, 0, 1, 1], strides=[1, 2, 1])),
]


@pytest.mark.parametrize("xs,ws,attrs", FUSED_CASES)
@pytest.mark.parametrize(
    "activation,residual,layout",
    [("", False, ""), ("relu", False, "nhwc"), ("relu", True, "nhwc"), ("clip", False, ""),
     ("clip", True, "nhwc"), ("", True, "")],
)  # fmt: skip
def test_fusedconv_post_ops(conv_path, xs, ws, attrs, activation, residual, layout):
    from ziggurat.ops.fused import FusedConv

    rng = np.random.default_rng(3)
    x, w, b = rand(rng, xs), rand(rng, ws), rand(rng, (ws[0],))
    exact = conv_ref64(x, w, b, **attrs)
    skip = rand(rng, exact.shape) if residual else None
    if residual:
        exact = exact + skip
    lo, hi = (0.0, 6.0) if activation == "clip" else (None, None)
    if activation == "relu":
        exact = np.maximum(exact, 0)
    elif activation == "clip":
        exact = np.clip(exact, lo, hi)
    # The residual arrives channels-last as a convolution would hand it over, or NCHW.
    skip_in = None if skip is None else (nhwc(skip) if layout else skip)
    y = FusedConv(
        x, w, b, skip_in, activation=activation, clip_min=lo, clip_max=hi, layout=layout, **attrs
    )[0]
    assert y.dtype == np.float32 and y.shape == exact.shape
    assert np.all(np.abs(y - exact) <= conv_bound(x, w, b, skip, **attrs))
    if conv_path == "onednn" and layout == "nhwc":
        from ziggurat.backends.cpu.conv import is_channels_last

        assert is_channels_last(y)


def test_fusedconv_broadcast_residual_falls_back(conv_path):
    """A skip that only broadcasts to the output (not the sum post-op's case) still adds."""
    from ziggurat.ops.fused import FusedConv

    rng = np.random.default_rng(4)
    x, w = rand(rng, (1, 4, 6, 6)), rand(rng, (8, 4, 3, 3))
    skip = rand(rng, (1, 8, 1, 1))
    y = FusedConv(x, w, None, skip, activation="relu", pads=[1, 1, 1, 1])[0]
    exact = np.maximum(conv_ref64(x, w, None, pads=[1, 1, 1, 1]) + skip, 0)
    assert np.all(
        np.abs(y - exact)
        <= conv_bound(x, w, None, np.broadcast_to(skip, y.shape), pads=[1, 1, 1, 1])
    )


@pytest.mark.parametrize("xs,ws,attrs", FUSED_CASES)
def test_fusedconv_bf16_within_bf16_bound(xs, ws, attrs):
    dnnl_conv = _native_or_skip()
    if not dnnl_conv.bf16_supported():
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: bf16 convolutions are refused")
    from ziggurat.ops.fused import FusedConv

    rng = np.random.default_rng(5)
    x, w, b = rand(rng, xs), rand(rng, ws), rand(rng, (ws[0],))
    exact = conv_ref64(x, w, b, **attrs)
    skip = rand(rng, exact.shape)
    exact = np.maximum(exact + skip, 0)
    y = FusedConv(x, w, b, nhwc(skip), activation="relu", layout="nhwc", precision="bf16", **attrs)[
        0
    ]
    assert y.dtype == np.float32
    err = np.abs(y - exact)
    bound = conv_bound(x, w, b, skip, unit=U_BF16, **attrs)
    assert np.all(err <= bound)
    # bf16 really ran: a float32 conv would sit ~2^16 times closer than this on random data.
    assert err.max() > conv_bound(x, w, b, skip, **attrs).max()


def test_native_primitive_cached_per_weights_and_freed_with_them():
    dnnl_conv = _native_or_skip()
    import gc

    rng = np.random.default_rng(6)
    x, w = rand(rng, (1, 8, 10, 10)), rand(rng, (8, 8, 3, 3))
    pads = [1, 1, 1, 1]  # a plan binds each node's attributes once: the same objects every run
    wid = id(w)

    def entries():
        return sum(1 for k in dnnl_conv._cache if k[0] == wid)

    y1 = Conv(x, w, pads=pads)[0]
    y2 = Conv(x, w, pads=pads)[0]
    assert entries() == 1  # one primitive for both runs
    np.testing.assert_array_equal(y1, y2)
    Conv(x, w, pads=[0, 0, 0, 0])  # other attributes: another primitive, the right result
    np.testing.assert_array_equal(Conv(x, w, pads=[1, 1, 1, 1])[0], y1)
    Conv(rand(rng, (1, 8, 17, 13)), w, pads=pads)  # another input size: another primitive...
    packed = dnnl_conv._packed[wid]  # ...sharing the reordered weights wherever the layout agrees
    assert entries() == 4 and 1 <= len(packed) <= 4  # 4 attribute sets or shapes
    assert all(not (a[0] == b[0]) for i, a in enumerate(packed) for b in packed[i + 1 :])
    del w
    gc.collect()
    assert entries() == 0 and wid not in dnnl_conv._packed  # gone with the initializer


def test_conv_without_a_onednn_implementation_runs_numpy_once_decided(monkeypatch):
    """A convolution oneDNN refuses (DnnlError at creation) runs on numpy, and is not retried."""
    dnnl_conv = _native_or_skip()
    from ziggurat.backends.cpu.dnnl import DnnlError

    tries = []

    def refuse(*args, **kwargs):
        tries.append(1)
        raise DnnlError(
            "oneDNN dnnl_convolution_forward_primitive_desc_create failed: unimplemented"
        )

    monkeypatch.setattr(dnnl_conv, "ConvPrimitive", refuse)
    rng = np.random.default_rng(8)
    x, w, b = rand(rng, (1, 6, 9, 9)), rand(rng, (4, 6, 3, 3)), rand(rng, (4,))
    pads = [1, 1, 1, 1]
    for _ in range(2):
        y = Conv(x, w, b, pads=pads)[0]
        exact = conv_ref64(x, w, b, pads=pads)
        assert np.all(np.abs(y - exact) <= conv_bound(x, w, b, pads=pads))
    assert len(tries) == 1


def test_conv_reads_a_strided_view(conv_path):
    """An input that is a view with gaps (a slice) is read as it lies, or copied first."""
    rng = np.random.default_rng(10)
    big = rand(rng, (1, 8, 20, 11))
    x = big[:, 1:7, ::2, :]  # not dense in any axis order
    w, b = rand(rng, (5, 6, 3, 3)), rand(rng, (5,))
    y = Conv(x, w, b, pads=[1, 1, 1, 1])[0]
    xc = np.ascontiguousarray(x)
    exact = conv_ref64(xc, w, b, pads=[1, 1, 1, 1])
    assert np.all(np.abs(y - exact) <= conv_bound(xc, w, b, pads=[1, 1, 1, 1]))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("x_layout,out_layout", [("nchw", "nhwc"), ("nhwc", "")])
def test_fusedconv_through_onednn_preferred_layouts(monkeypatch, residual, x_layout, out_layout):
    """When no direct kernel takes the caller's layouts, oneDNN's own layouts are used, with
    reorders in and out (and of the residual into the destination)."""
    dnnl_conv = _native_or_skip()
    from ziggurat.ops.fused import FusedConv

    monkeypatch.setattr(dnnl_conv, "_is_direct", lambda impl: False)
    rng = np.random.default_rng(11)
    x, w, b = rand(rng, (1, 32, 10, 10)), rand(rng, (32, 32, 3, 3)), rand(rng, (32,))
    pads = [1, 1, 1, 1]
    exact = conv_ref64(x, w, b, pads=pads)
    skip = rand(rng, exact.shape) if residual else None
    if residual:
        exact = exact + skip
    xin = nhwc(x) if x_layout == "nhwc" else x
    y = FusedConv(xin, w, b, skip, activation="relu", layout=out_layout, pads=pads)[0]
    assert np.all(np.abs(y - np.maximum(exact, 0)) <= conv_bound(x, w, b, skip, pads=pads))
    (prim,) = [p for k, (p, _) in dnnl_conv._cache.items() if k[0] == id(w)]
    if prim._src_reorder is None and prim._dst_reorder is None:
        pytest.skip(f"oneDNN ({prim.impl}) took the caller's layouts here: no reorder to test")


@pytest.mark.parametrize("skip_layout", ["nhwc", "nchw"])
def test_fusedconv_in_place_residual(conv_path, skip_layout):
    """``inplace_skip``: a residual in the output's layout takes the result (no copy); one in
    another layout is left as it was, and the result is right either way."""
    from ziggurat.ops.fused import FusedConv

    rng = np.random.default_rng(12)
    x, w, b = rand(rng, (1, 16, 9, 9)), rand(rng, (24, 16, 3, 3)), rand(rng, (24,))
    pads = [1, 1, 1, 1]
    skip = rand(rng, (1, 24, 9, 9))
    exact = np.maximum(conv_ref64(x, w, b, pads=pads) + skip, 0)
    bound = conv_bound(x, w, b, skip, pads=pads)
    skip_in = nhwc(skip) if skip_layout == "nhwc" else skip.copy()
    for _ in range(2):  # a fresh primitive, then the cached one
        given = skip_in.copy() if skip_layout == "nchw" else nhwc(skip)
        y = FusedConv(x, w, b, given, activation="relu", layout="nhwc", pads=pads, inplace_skip=1)[
            0
        ]
        assert y.dtype == np.float32 and np.all(np.abs(y - exact) <= bound)
        if conv_path == "onednn" and skip_layout == "nhwc" and _takes_nhwc_dst(w):
            assert y is given  # written over the residual
        else:
            assert not np.shares_memory(y, given)
            np.testing.assert_array_equal(given, skip)  # untouched


def _takes_nhwc_dst(w) -> bool:
    """Whether the oneDNN primitive made for ``w`` writes the caller's channels-last output
    directly (a CPU without such a kernel writes oneDNN's layout and reorders it back)."""
    from ziggurat.backends.cpu import conv as dnnl_conv

    (prim,) = [p for k, (p, _) in dnnl_conv._cache.items() if k[0] == id(w)]
    return prim._dst_reorder is None


def test_fusedconv_in_place_residual_that_is_also_the_input(conv_path):
    """A residual sharing memory with the data input is never written over during the read."""
    from ziggurat.ops.fused import FusedConv

    rng = np.random.default_rng(13)
    x, w, b = rand(rng, (1, 16, 9, 9)), rand(rng, (16, 16, 3, 3)), rand(rng, (16,))
    pads = [1, 1, 1, 1]
    exact = np.maximum(conv_ref64(x, w, b, pads=pads) + x, 0)
    xin = nhwc(x)
    y = FusedConv(xin, w, b, xin, activation="relu", layout="nhwc", pads=pads, inplace_skip=1)[0]
    assert not np.shares_memory(y, xin)
    np.testing.assert_array_equal(xin, x)
    assert np.all(np.abs(y - exact) <= conv_bound(x, w, b, x, pads=pads))
