"""Convolutions (GEMM-class, im2col): Conv, ConvInteger, and Col2Im (im2col's inverse).

ConvTranspose and DeformConv live in ``convtranspose.py`` and reuse the helpers here.

Strategy (each path was timed against onnxruntime on the 2-core target; GEMM time dominates):

* 1x1 convolutions without padding are a plain matmul of the weights with the (strided) input.
* Depthwise convolutions (one input channel per group) accumulate ``prod(kernel)`` shifted slices of
  the input times per-channel weights, on stride-phase planes (:class:`PhasePlanes`) so every slice
  is contiguous; im2col + per-channel GEMV measured ~2x slower. Winograd F(2x2, 3x3) was tried for
  3x3 convs and lost: its transforms move more memory than the GEMM it saves.
* Everything else is im2col: a zero-copy strided view of the padded input shaped
  (N, group, C/group * prod(kernel), prod(out)) is materialized once and multiplied by the weights in
  one (batched over N and group) GEMM, so the arithmetic runs in BLAS.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np

from ..backends import parallel, xp_of
from ..errors import ExecutionError
from ._spatial import Geometry, PhasePlanes, pad_input, window_geometry
from .registry import kernel

_BLAS_FLOATS = frozenset((np.dtype(np.float32), np.dtype(np.float64)))


def compute_dtype(dt):
    """The dtype a convolution over ``dt`` computes in: float32/64 as is, other floats in float32."""
    return dt if dt in _BLAS_FLOATS else np.dtype(np.float32)


def check_conv_shapes(op, x, w, group, w_in_axis=1):
    """Validate the (N, C, *spatial) input against the weights; returns the number of spatial axes."""
    if x.ndim < 3 or w.ndim != x.ndim:
        raise ExecutionError(
            f"{op} needs X of rank >= 3 (N, C, spatial...) and W of the same rank; "
            f"got X {x.shape} and W {w.shape}"
        )
    c_w = w.shape[w_in_axis] * group if w_in_axis == 1 else w.shape[0]
    if x.shape[1] != c_w:
        raise ExecutionError(
            f"{op}: X has {x.shape[1]} channels but W {w.shape} with group={group} expects {c_w}"
        )
    return x.ndim - 2


def _geometry(x, w, kernel_shape, strides, dilations, pads, auto_pad) -> Geometry:
    kernel_shape = tuple(w.shape[2:]) if kernel_shape is None else tuple(kernel_shape)
    return window_geometry(
        x.shape[2:],
        kernel_shape,
        strides=strides,
        dilations=dilations,
        pads=pads,
        auto_pad=auto_pad,
    )


def im2col(buf, geo: Geometry, group):
    """Columns (N, group, C/group * prod(kernel), prod(out)) of the padded input ``buf``.

    Built as a strided view (no copy) and materialized by the reshape, in one pass.
    """
    xp = xp_of(buf)
    n, c = buf.shape[:2]
    st = buf.strides
    sp = st[2:]
    shape = (n, group, c // group) + geo.kernel + geo.out
    strides = (
        (st[0], st[1] * (c // group), st[1])
        + tuple(d * s for d, s in zip(geo.dilations, sp, strict=True))
        + tuple(k * s for k, s in zip(geo.strides, sp, strict=True))
    )
    view = xp.lib.stride_tricks.as_strided(buf, shape, strides, writeable=False)
    return view.reshape(n, group, (c // group) * math.prod(geo.kernel), math.prod(geo.out))


def _pointwise(x, w, geo: Geometry, group):
    """1x1 kernel, no padding: the convolution is weights @ (optionally strided) input."""
    n, c = x.shape[:2]
    m = w.shape[0]
    if any(s != 1 for s in geo.strides):
        x = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in geo.strides)]
    length = math.prod(geo.out)
    xp = xp_of(x)
    if group == 1:
        w2 = w.reshape(m, c)
        if n == 1:
            return xp.matmul(w2, x.reshape(c, length))
        return xp.matmul(w2, x.reshape(n, c, length))
    return xp.matmul(
        w.reshape(group, m // group, c // group), x.reshape(n, group, c // group, length)
    )


_DW_BLOCK = 1 << 16  # elements of input planes per channel block: its taps stay in L2


def _depthwise_parallel(x, w, geo: Geometry, bias):
    """Depthwise conv with channel chunks on all cores (each output channel is independent).

    Each chunk runs in blocks of channels whose phase planes, accumulator and temporary fit in
    L2 (~3 x 256 KiB), so the 2 passes per kernel tap re-read cache, not memory: measured on
    MobileNetV2's 3x3 layers 1.1-1.4x faster than whole chunks (144x56x56: 2.1 -> 1.5 ms).
    """
    n, c = x.shape[:2]
    if type(x) is not np.ndarray or n != 1 or x.size < parallel.MIN_ELEMENTS:
        return _depthwise(x, w, geo, bias)
    mult = w.shape[0] // c
    y = np.empty((n, c * mult) + tuple(geo.out), dtype=x.dtype)
    plane = math.prod(o * s + k for o, s, k in zip(geo.out, geo.strides, geo.kernel, strict=True))
    block = max(1, _DW_BLOCK // max(plane * mult, 1))

    def part(lo: int, hi: int) -> None:
        for a in range(lo, hi, block):
            e = min(a + block, hi)
            b = None if bias is None else bias[a * mult : e * mult]
            _depthwise(x[:, a:e], w[a * mult : e * mult], geo, b, out=y[:, a * mult : e * mult])

    parallel.for_rows(part, c, x[0, 0].size)
    return y


def _depthwise(x, w, geo: Geometry, bias, out=None):
    """One input channel per group: sum over kernel offsets of shifted input times per-channel weights.

    Returns the finished (N, M, *out) output with the bias added (written to ``out`` if given).
    """
    xp = xp_of(x)
    n, c = x.shape[:2]
    mult = w.shape[0] // c
    planes = PhasePlanes(x, geo)
    # w (C*mult, 1, *K) -> (K, C, mult, 1): output channel c*mult + j reads input channel c.
    wk = xp.ascontiguousarray(w.reshape(c, mult, -1).transpose(2, 0, 1))[..., None]
    if mult == 1:
        wk = wk[:, :, 0]
    acc = tmp = None
    for k in range(len(planes.shifts)):
        sl = planes.window(k)
        if mult > 1:
            sl = sl[:, :, None]
        if acc is None:
            acc = sl * wk[k]
            tmp = xp.empty_like(acc)
        else:
            xp.multiply(sl, wk[k], out=tmp)
            acc += tmp
    wide = acc.reshape(n, c * mult, planes.length)
    y = xp.empty((n, c * mult) + tuple(geo.out), dtype=x.dtype) if out is None else out
    view = planes.crop(wide, geo.out)
    if bias is None:
        y[...] = view
    else:
        # Add the bias while cropping: one pass instead of two.
        xp.add(view, bias.reshape((c * mult,) + (1,) * len(geo.out)), out=y)
    return y


def conv_core(x, w, geo: Geometry, group, bias=None):
    """Convolution of ``x`` (N, C, *S) with ``w`` (M, C/group, *K) plus ``bias`` -> (N, M, *out).

    All must already be in the compute dtype (see :func:`compute_dtype`).
    """
    xp = xp_of(x, w)
    n, c = x.shape[:2]
    m = w.shape[0]
    if all(k == 1 for k in geo.kernel) and not any(geo.pads_begin) and not any(geo.buf_end):
        return _finish(_pointwise(x, w, geo, group), n, m, geo.out, bias)
    if group == c and w.shape[1] == 1 and m % c == 0 and c > 1:
        return _depthwise_parallel(x, w, geo, bias)
    buf = pad_input(x, geo.pads_begin, geo.buf_end)
    cols = im2col(buf, geo, group)  # (N, G, Cg*K, L)
    ck = cols.shape[2]
    if group == 1:
        w2 = w.reshape(m, ck)
        y = xp.matmul(w2, cols[0, 0]) if n == 1 else xp.matmul(w2, cols[:, 0])
    else:
        y = xp.matmul(w.reshape(group, m // group, ck), cols)
    return _finish(y, n, m, geo.out, bias)


def _finish(y, n, m, out, bias):
    """A fresh GEMM result (N, M, L) or (M, L) -> (N, M, *out) with the bias added in place."""
    y = y.reshape((n, m) + tuple(out))
    if bias is not None:
        y += bias.reshape((m,) + (1,) * len(out))
    return y


def native_ok(x, w, b, skip=None, bf16=False) -> bool:
    """Whether oneDNN can run this float32 convolution (see backends/cpu/conv.py).

    ``ZIGGURAT_DNNL_CONV=0`` (or ``ZIGGURAT_DNNL=0``) forces the portable numpy path.
    """
    if type(x) is not np.ndarray or type(w) is not np.ndarray:
        return False
    if w.dtype != np.float32 or not 3 <= x.ndim <= 5:
        return False
    if x.dtype != np.float32 and not (bf16 and x.dtype.name == "bfloat16"):
        return False
    if b is not None and (type(b) is not np.ndarray or b.dtype != np.float32):
        return False
    if skip is not None and (
        type(skip) is not np.ndarray or skip.dtype != np.float32 and skip.dtype.name != "bfloat16"
    ):
        return False
    if os.environ.get("ZIGGURAT_DNNL_CONV") == "0":
        return False
    from ..backends.cpu import conv as dnnl_conv

    return dnnl_conv.available()


_dnnl_conv = None  # backends.cpu.conv once a convolution first ran natively


def native_conv(
    x, w, b, skip, attrs: tuple, op: str, post: tuple = ("", None, None, "", "fp32", "", 0)
):
    """Run a Conv-like node on oneDNN, or return None when the portable path must run it.

    ``attrs`` = (auto_pad, dilations, group, kernel_shape, pads, strides) as the node passes them;
    ``post`` = (activation, clip_min, clip_max, layout, precision, out_dtype, inplace_skip). A
    repeat call (same weights, attribute objects, input shape and strides) skips straight to the
    cached primitive.
    """
    global _dnnl_conv
    dc = _dnnl_conv
    # ZIGGURAT_DNNL_CONV is read when a primitive is first made: a hit is a node already on oneDNN.
    if dc is not None and type(x) is np.ndarray:
        key = (
            id(w), id(b), x.shape, x.strides, x.dtype, None if skip is None else skip.shape,
            *map(id, attrs), *post,
        )  # fmt: skip
        hit = dc.lookup(key)
        if hit is not None:
            prim = hit[0]  # None: oneDNN has no implementation for this node, numpy runs it
            return None if prim is None else prim.run(x, skip)
    auto_pad, dilations, group, kernel_shape, pads, strides = attrs
    geo = conv_geometry(x, w, group, op, kernel_shape, strides, dilations, pads, auto_pad)
    if skip is not None and skip.shape != geo_out_shape(x, w, geo):
        return None  # a broadcast residual: not the sum post-op's case
    activation, lo, hi, layout, precision, out_dtype, inplace = post
    if not native_ok(x, w, b, skip, bf16=precision == "bf16"):
        return None
    from ..backends.cpu import conv as dc

    _dnnl_conv = dc
    bf16 = precision == "bf16" and dc.bf16_supported()
    key = (
        id(w), id(b), x.shape, x.strides, x.dtype, None if skip is None else skip.shape,
        *map(id, attrs), *post,
    )  # fmt: skip
    prim = dc.build(
        key, x, w, b, geo, group, activation=activation, bounds=(lo, hi),
        has_skip=skip is not None, bf16=bf16, channels_last_out=layout == "nhwc",
        out_bf16=bf16 and out_dtype == "bf16", inplace_skip=bool(inplace), keep=attrs,
    )  # fmt: skip
    return None if prim is None else prim.run(x, skip)


def geo_out_shape(x, w, geo: Geometry) -> tuple[int, ...]:
    """The (N, M, *out) shape of a convolution's result."""
    return (x.shape[0], w.shape[0]) + tuple(geo.out)


def conv_geometry(x, w, group, op, kernel_shape, strides, dilations, pads, auto_pad) -> Geometry:
    """Check shapes and resolve the window geometry of a Conv-like node."""
    check_conv_shapes(op, x, w, group)
    if w.shape[0] % group:
        raise ExecutionError(
            f"{op}: W has {w.shape[0]} output channels, not divisible by group={group}"
        )
    return _geometry(x, w, kernel_shape, strides, dilations, pads, auto_pad)


@kernel("Conv", since=1)
def Conv(
    x, w, b=None, /, *,
    auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
):  # fmt: skip
    """N-D convolution (cross-correlation) of X (N, C, *S) with W (M, C/group, *K), plus bias B (M,)."""
    attrs = (auto_pad, dilations, group, kernel_shape, pads, strides)
    y = native_conv(x, w, b, None, attrs, "Conv")
    if y is not None:
        return (y,)
    geo = conv_geometry(x, w, group, "Conv", kernel_shape, strides, dilations, pads, auto_pad)
    dt = x.dtype
    cdt = compute_dtype(dt)
    xc = x.astype(cdt, copy=False)
    wc = w.astype(cdt, copy=False)
    bc = None if b is None else b.astype(cdt, copy=False)
    y = conv_core(xc, wc, geo, group, bc)
    return (y if y.dtype == dt else y.astype(dt),)


@kernel("ConvInteger", since=10)
def ConvInteger(
    x, w, x_zero_point=None, w_zero_point=None, /, *,
    auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
):  # fmt: skip
    """Integer convolution of (X - x_zero_point) with (W - w_zero_point), int32 output.

    Padding uses the zero point (so padded cells contribute 0). ``w_zero_point`` may be per output
    channel. Computed in float64, which is exact for 8-bit operands and runs through BLAS.
    """
    check_conv_shapes("ConvInteger", x, w, group)
    geo = _geometry(x, w, kernel_shape, strides, dilations, pads, auto_pad)
    xc = x.astype(np.float64)
    wc = w.astype(np.float64)
    if x_zero_point is not None:
        xc -= x_zero_point.astype(np.float64).reshape(-1)[0]
    if w_zero_point is not None:
        wz = w_zero_point.astype(np.float64)
        wc -= wz.reshape((-1,) + (1,) * (w.ndim - 1)) if wz.size > 1 else wz.reshape(-1)[0]
    return (conv_core(xc, wc, geo, group).astype(np.int32),)


# ---------------------------------------------------------------------------------------------
# Col2Im


@kernel("Col2Im", since=18)
def Col2Im(x, image_shape, block_shape, /, *, dilations=None, pads=None, strides=None):
    """Fold column blocks (N, C*prod(block), L) back into an image (N, C, *image_shape)."""
    xp = xp_of(x)
    img = [int(v) for v in np.asarray(image_shape).reshape(-1)]
    blk = [int(v) for v in np.asarray(block_shape).reshape(-1)]
    r = len(img)
    dil = list(dilations) if dilations else [1] * r
    st = list(strides) if strides else [1] * r
    pd = list(pads) if pads else [0] * (2 * r)
    if len(blk) != r or len(dil) != r or len(st) != r or len(pd) != 2 * r:
        raise ExecutionError(
            f"Col2Im: image_shape {img}, block_shape {blk}, dilations {dil}, strides {st} and pads "
            f"{pd} disagree on the number of spatial dimensions"
        )
    n, ck, l_total = x.shape
    kprod = math.prod(blk)
    if ck % kprod:
        raise ExecutionError(
            f"Col2Im: input dim 1 ({ck}) must be a multiple of prod(block_shape) = {kprod}"
        )
    c = ck // kprod
    padded = [img[i] + pd[i] + pd[r + i] for i in range(r)]
    nblocks = [(padded[i] - (dil[i] * (blk[i] - 1) + 1)) // st[i] + 1 for i in range(r)]
    if math.prod(nblocks) != l_total:
        raise ExecutionError(
            f"Col2Im: input has {l_total} blocks but image_shape/pads/strides/dilations give "
            f"{nblocks} = {math.prod(nblocks)}"
        )
    cols = x.reshape(n, c, *blk, *nblocks)
    out = xp.zeros((n, c, *padded), dtype=x.dtype)
    for k in itertools.product(*(range(b) for b in blk)):  # one strided add per kernel offset
        sl = tuple(
            slice(k[i] * dil[i], k[i] * dil[i] + st[i] * (nblocks[i] - 1) + 1, st[i])
            for i in range(r)
        )
        out[(slice(None), slice(None), *sl)] += cols[(slice(None), slice(None), *k)]
    crop = tuple(slice(pd[i], pd[i] + img[i]) for i in range(r))
    return (out[(slice(None), slice(None), *crop)],)
