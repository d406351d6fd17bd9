"""Pooling: MaxPool, AveragePool, LpPool, global pools, MaxUnpool, MaxRoiPool.

Max and sum windows are separable, so the windowed pools reduce one spatial axis at a time over the
padded input: ``sum(kernel - 1)`` vectorized maximum/add passes instead of ``prod(kernel) - 1``
(measured 2x faster for 3x3 windows). MaxPool's Indices output needs the winning offset per window,
so it reduces over all ``prod(kernel)`` offsets on stride-phase planes (:class:`PhasePlanes`)
instead. Neither loops over output pixels.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from ._spatial import PhasePlanes, pad_input, window_geometry
from .registry import kernel


def _check_rank(op, x):
    if x.ndim < 3:
        raise ExecutionError(
            f"{op} needs input of rank >= 3 (N, C, spatial...), got shape {x.shape}"
        )


def _lowest(dtype):
    return -np.inf if dtype.kind == "f" or dtype.name == "bfloat16" else np.iinfo(dtype).min


def _finish(planes, wide, geo, xp, dtype):
    """Crop the wide-grid reduction to the output and make it a contiguous array of ``dtype``."""
    n, c = wide.shape[:2]
    y = xp.empty((n, c) + geo.out, dtype=dtype)
    y[...] = planes.crop(wide, geo.out)
    return y


def _max_indices(best, geo, x_shape, storage_order, xp):
    """Flat input indices of the maxima given the winning kernel offset per output position."""
    n, c = x_shape[:2]
    sizes = x_shape[2:]
    taps = xp.asarray(list(geo.offsets()), dtype=np.int64)  # (K, nsp)
    grids = xp.meshgrid(*(xp.arange(o, dtype=np.int64) for o in geo.out), indexing="ij")
    coords = [
        grids[i] * geo.strides[i] - geo.pads_begin[i] + taps[best, i] * geo.dilations[i]
        for i in range(len(sizes))
    ]
    # storage_order=1 counts the spatial axes column-major (last axis slowest), as the spec describes.
    order = range(len(sizes)) if not storage_order else reversed(range(len(sizes)))
    flat = xp.zeros(best.shape, dtype=np.int64)
    for i in order:
        flat = flat * sizes[i] + coords[i]
    base = xp.arange(n * c, dtype=np.int64).reshape((n, c) + (1,) * len(sizes)) * math.prod(sizes)
    return flat + base


@kernel("MaxPool", since=1)
def MaxPool(
    x, /, *,
    auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, pads=None, storage_order=0, strides=None,
    n_outputs=1,
):  # fmt: skip
    """Max over sliding windows; with a second output, the flat input index of each maximum."""
    _check_rank("MaxPool", x)
    xp = xp_of(x)
    geo = window_geometry(
        x.shape[2:], kernel_shape, strides=strides, dilations=dilations, pads=pads, auto_pad=auto_pad,
        ceil_mode=bool(ceil_mode),
    )  # fmt: skip
    if n_outputs < 2 and (y := _native(x, geo, "max")) is not None:
        return (y,)
    dt = x.dtype
    xc = x if dt.kind != "f" or dt.itemsize >= 4 else x.astype(np.float32)
    if n_outputs < 2:
        y = _separable_reduce(xc, geo, _lowest(xc.dtype), xp.maximum)
        return (y.astype(dt, copy=False),)
    planes = PhasePlanes(xc, geo, fill=_lowest(xc.dtype))
    acc = planes.window(0).copy()
    best = xp.zeros(acc.shape, dtype=np.int64)
    for k in range(1, len(planes)):
        sl = planes.window(k)
        # Strictly greater: the first maximum in window order wins, like the reference.
        xp.copyto(best, k, where=sl > acc)
        xp.maximum(acc, sl, out=acc)
    y = _finish(planes, acc, geo, xp, dt)
    best = _finish(planes, best, geo, xp, np.dtype(np.int64))
    return y, _max_indices(best, geo, x.shape, storage_order, xp)


def _separable_reduce(x, geo, fill, op):
    """Reduce every window of ``x`` with the associative ``op`` (maximum or add), axis by axis.

    Cells outside the input (padding, ceil-mode overhang) hold ``fill``. Returns a fresh array.
    """
    y = pad_input(x, geo.pads_begin, geo.buf_end, fill)
    for i, (k, d, s, o) in enumerate(zip(geo.kernel, geo.dilations, geo.strides, geo.out)):
        lead = (slice(None),) * (2 + i)

        def tap(t, y=y, lead=lead, d=d, s=s, o=o):
            return y[lead + (slice(t * d, t * d + (o - 1) * s + 1, s),)]

        acc = op(tap(0), tap(1)) if k > 1 else tap(0).copy()
        for t in range(2, k):
            op(acc, tap(t), out=acc)
        y = acc
    return y


def _window_counts(geo, in_sizes, include_pad, xp, dtype):
    """Per output position, how many window cells count toward the average (broadcastable array).

    Cells in the input always count; with ``include_pad`` so do cells in the explicit padding. Cells a
    ceil-mode window reads past the padded input never count.
    """
    counts = None
    nsp = len(in_sizes)
    for i, size in enumerate(in_sizes):
        lo, hi = (-geo.pads_begin[i], size + geo.pads_end[i]) if include_pad else (0, size)
        o = np.arange(geo.out[i])[:, None] * geo.strides[i] - geo.pads_begin[i]
        pos = o + np.arange(geo.kernel[i])[None, :] * geo.dilations[i]
        cnt = ((pos >= lo) & (pos < hi)).sum(axis=1)
        shape = [1] * nsp
        shape[i] = geo.out[i]
        cnt = cnt.reshape(shape)
        counts = cnt if counts is None else counts * cnt
    return xp.asarray(np.maximum(counts, 1).astype(dtype))


def _native(x, geo, alg: str):
    """oneDNN pooling of a float32/bf16 array in its own layout, or None (portable path).

    ``ZIGGURAT_DNNL_CONV=0`` (or ``ZIGGURAT_DNNL=0``) forces the portable path, as for Conv.
    """
    if os.environ.get("ZIGGURAT_DNNL_CONV") == "0":
        return None
    from ..backends.cpu import pool as dnnl_pool

    if not dnnl_pool.usable(x):
        return None
    from ..backends.cpu.dnnl import DnnlError

    try:
        return dnnl_pool.pool(x, geo, alg)
    except DnnlError:  # a geometry oneDNN does not take (e.g. some ceil-mode shapes)
        return None


def _pool_geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    return window_geometry(
        x.shape[2:], kernel_shape, strides=strides, dilations=dilations, pads=pads, auto_pad=auto_pad,
        ceil_mode=bool(ceil_mode),
    )  # fmt: skip


@kernel("AveragePool", since=1)
def AveragePool(
    x, /, *,
    auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape, pads=None, strides=None,
):  # fmt: skip
    """Mean over sliding windows; padding counts toward the divisor only with ``count_include_pad``."""
    _check_rank("AveragePool", x)
    xp = xp_of(x)
    geo = _pool_geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    # oneDNN's include-padding average also counts a ceil-mode overhang, which ONNX does not.
    if not count_include_pad or geo.buf_end == geo.pads_end:
        alg = "avg_include" if count_include_pad else "avg_exclude"
        if (y := _native(x, geo, alg)) is not None:
            return (y,)
    dt = x.dtype
    cdt = dt if dt in (np.float32, np.float64) else np.dtype(np.float32)
    y = _separable_reduce(x.astype(cdt, copy=False), geo, 0, xp.add)
    y /= _window_counts(geo, x.shape[2:], bool(count_include_pad), xp, cdt)
    return (y if y.dtype == dt else y.astype(dt),)


def _p_norm_inputs(x, p, xp):
    a = xp.abs(x)
    return a * a if p == 2 else a**p


def _p_root(s, p, xp):
    return xp.sqrt(s) if p == 2 else s ** (1.0 / p)


@kernel("LpPool", since=1)
def LpPool(
    x, /, *,
    auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, p=2, pads=None, strides=None,
):  # fmt: skip
    """``(sum |x|^p) ^ (1/p)`` over sliding windows (padding contributes zeros)."""
    _check_rank("LpPool", x)
    xp = xp_of(x)
    geo = _pool_geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    dt = x.dtype
    cdt = dt if dt in (np.float32, np.float64) else np.dtype(np.float32)
    y = _p_root(
        _separable_reduce(_p_norm_inputs(x.astype(cdt, copy=False), p, xp), geo, 0, xp.add), p, xp
    )
    return (y.astype(dt, copy=False),)


def _spatial_axes(x):
    return tuple(range(2, x.ndim))


def _channels_last(x) -> bool:
    return not x.flags.c_contiguous and x.transpose(0, *range(2, x.ndim), 1).flags.c_contiguous


@kernel("GlobalAveragePool", since=1)
def GlobalAveragePool(x, /):
    """Mean over all spatial axes, kept as size-1 axes."""
    _check_rank("GlobalAveragePool", x)
    xp = xp_of(x)
    dt = x.dtype
    xc = x if dt in (np.float32, np.float64) else x.astype(np.float32)
    n, c = x.shape[:2]
    length = math.prod(x.shape[2:])
    if xp is np and dt == np.float32 and _channels_last(x):
        # A convolution's channels-last output: oneDNN averages it on the OpenMP threads the
        # convolutions run on. A BLAS call here would wake OpenBLAS's own threads, which keep
        # spinning after it returns and take the cores from the next run's first convolutions.
        geo = window_geometry(x.shape[2:], x.shape[2:])
        if (y := _native(x, geo, "avg_exclude")) is not None:
            return (y,)
    # A BLAS matrix-vector product with a ones vector beats numpy's mean reduction here.
    if n == 1 and xp is np and x.ndim > 2 and _channels_last(xc):
        # A convolution's channels-last output: (spatial, C) rows, no copy.
        cols = xc.transpose(0, *range(2, x.ndim), 1).reshape(length, c)
        y = (xp.ones(length, dtype=xc.dtype) @ cols) * xc.dtype.type(1 / max(length, 1))
        return (y.reshape((n, c) + (1,) * (x.ndim - 2)).astype(dt, copy=False),)
    rows = xp.ascontiguousarray(xc).reshape(n * c, length)
    y = (rows @ xp.ones(length, dtype=xc.dtype)) * xc.dtype.type(1 / max(length, 1))
    return (y.reshape((n, c) + (1,) * (x.ndim - 2)).astype(dt, copy=False),)


@kernel("GlobalMaxPool", since=1)
def GlobalMaxPool(x, /):
    """Max over all spatial axes, kept as size-1 axes."""
    _check_rank("GlobalMaxPool", x)
    return (x.max(axis=_spatial_axes(x), keepdims=True),)


@kernel("GlobalLpPool", since=1)
def GlobalLpPool(x, /, *, p=2):
    """``(sum |x|^p) ^ (1/p)`` over all spatial axes, kept as size-1 axes."""
    _check_rank("GlobalLpPool", x)
    xp = xp_of(x)
    dt = x.dtype
    xc = x if dt.kind == "f" and dt.itemsize >= 4 else x.astype(np.float32)
    s = _p_norm_inputs(xc, p, xp).sum(axis=_spatial_axes(x), keepdims=True)
    return (_p_root(s, p, xp).astype(dt, copy=False),)


@kernel("MaxUnpool", since=9)
def MaxUnpool(x, indices, output_shape=None, /, *, kernel_shape, pads=None, strides=None):
    """Scatter ``x`` into a zero tensor at the flat ``indices`` a MaxPool produced."""
    _check_rank("MaxUnpool", x)
    xp = xp_of(x)
    nsp = x.ndim - 2
    st = (1,) * nsp if strides is None else tuple(strides)
    pd = (0,) * (2 * nsp) if pads is None else tuple(pads)
    pooled_from = x.shape[:2] + tuple(
        (i - 1) * s + k - b - e
        for i, s, k, b, e in zip(x.shape[2:], st, kernel_shape, pd[:nsp], pd[nsp:], strict=True)
    )
    shape = pooled_from
    if output_shape is not None:
        shape = tuple(int(v) for v in np.asarray(output_shape).reshape(-1))
    if indices.shape != x.shape:
        raise ExecutionError(
            f"MaxUnpool indices shape {indices.shape} differs from X shape {x.shape}"
        )
    y = xp.zeros(shape, dtype=x.dtype)
    flat = indices.reshape(-1).astype(np.int64, copy=False)
    if flat.size and (flat.min() < 0 or flat.max() >= math.prod(pooled_from)):
        raise ExecutionError(
            f"MaxUnpool index out of range for the pooled input shape {pooled_from}"
        )
    if shape != pooled_from:
        # Indices address the tensor MaxPool read; keep each value at the same coordinates in the
        # (larger) requested output.
        flat = xp.ravel_multi_index(xp.unravel_index(flat, pooled_from), shape)
    y.reshape(-1)[flat] = x.reshape(-1)
    return (y,)


def _round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


@kernel("MaxRoiPool", since=1)
def MaxRoiPool(x, rois, /, *, pooled_shape, spatial_scale=1.0):
    """Max over a ``pooled_shape`` grid of bins in each region of interest (Fast R-CNN).

    ``rois`` is (R, 5): batch index, x1, y1, x2, y2 in input coordinates (scaled by ``spatial_scale``
    and rounded). Empty bins give 0. Loops over the regions; each is vectorized over channels and bins.
    """
    if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 5:
        raise ExecutionError(
            f"MaxRoiPool needs X (N, C, H, W) and rois (R, 5); got {x.shape} and {rois.shape}"
        )
    xp = xp_of(x)
    n, c, h, w = x.shape
    ph, pw = (int(v) for v in pooled_shape)
    r_host = np.asarray(rois, dtype=np.float64)
    y = xp.zeros((r_host.shape[0], c, ph, pw), dtype=x.dtype)
    low = _lowest(x.dtype)
    for r, (b, x1, y1, x2, y2) in enumerate(r_host):
        bi = int(b)
        if not 0 <= bi < n:
            raise ExecutionError(f"MaxRoiPool roi {r} has batch index {bi}, input batch is {n}")
        x1, y1, x2, y2 = (int(_round_half_away(v * spatial_scale)) for v in (x1, y1, x2, y2))
        hmask = _bin_masks(y1, y2, ph, h)  # (ph, H)
        wmask = _bin_masks(x1, x2, pw, w)  # (pw, W)
        rows = np.flatnonzero(hmask.any(axis=0))
        cols = np.flatnonzero(wmask.any(axis=0))
        if not rows.size or not cols.size:
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        region = x[bi, :, r0:r1, c0:c1]  # (C, h', w')
        wm = xp.asarray(wmask[:, c0:c1])
        hm = xp.asarray(hmask[:, r0:r1])
        # Separable max: over columns of each bin, then over rows.
        colmax = xp.where(wm[None, None], region[:, :, None, :], low).max(axis=-1)  # (C, h', pw)
        binmax = xp.where(hm[None, :, :, None], colmax[:, None], low).max(axis=2)  # (C, ph, pw)
        empty = ~(hm.any(axis=1)[:, None] & wm.any(axis=1)[None, :])
        y[r] = xp.where(empty[None], 0, binmax)
    return (y,)


def _bin_masks(start, end, bins, size):
    """(bins, size) bool: which input cells fall in each bin of the roi span [start, end]."""
    extent = max(end - start + 1, 1)
    step = extent / bins
    i = np.arange(bins)
    lo = np.clip(np.floor(i * step).astype(np.int64) + start, 0, size)
    hi = np.clip(np.ceil((i + 1) * step).astype(np.int64) + start, 0, size)
    pos = np.arange(size)
    return (pos[None, :] >= lo[:, None]) & (pos[None, :] < hi[:, None])
