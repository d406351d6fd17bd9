"""ConvTranspose (GEMM + col2im) and DeformConv (bilinear sampling + GEMM)."""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from ._spatial import window_geometry
from .conv import check_conv_shapes, compute_dtype
from .registry import kernel


def _ints(value, n, default):
    return (default,) * n if value is None else tuple(int(v) for v in value)


def _transpose_pads(in_sizes, eff, strides, output_padding, pads, auto_pad, output_shape):
    """Output sizes and begin paddings of a transposed convolution (the spec's equations)."""
    n = len(in_sizes)
    full = [
        s * (i - 1) + op + e
        for s, i, op, e in zip(strides, in_sizes, output_padding, eff, strict=True)
    ]
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if output_shape is not None:
            # Some exporters include N and C: keep the spatial part.
            out = [int(v) for v in output_shape][-n:]
        else:
            out = [i * s for i, s in zip(in_sizes, strides, strict=True)]
        total = [f - o for f, o in zip(full, out, strict=True)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        return out, begin
    pads = _ints(pads, 2 * n, 0) if auto_pad != "VALID" else (0,) * (2 * n)
    out = [f - b - e for f, b, e in zip(full, pads[:n], pads[n:], strict=True)]
    if any(o <= 0 for o in out):
        raise ExecutionError(
            f"ConvTranspose output size {out} is not positive; check pads {list(pads)}"
        )
    return out, list(pads[:n])


@kernel("ConvTranspose", since=1)
def ConvTranspose(
    x, w, b=None, /, *,
    auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, output_padding=None,
    output_shape=None, pads=None, strides=None,
):  # fmt: skip
    """Transposed convolution of X (N, C, *S) with W (C, M/group, *K), plus bias B (M,).

    Computed as one GEMM per group (W^T @ X gives every input pixel's contribution to each kernel
    offset) followed by col2im: ``prod(K)`` strided slice additions into the output buffer.
    """
    check_conv_shapes("ConvTranspose", x, w, group, w_in_axis=0)
    xp = xp_of(x, w)
    nsp = x.ndim - 2
    n, c = x.shape[:2]
    in_sizes = x.shape[2:]
    ks = tuple(w.shape[2:]) if kernel_shape is None else tuple(int(k) for k in kernel_shape)
    st = _ints(strides, nsp, 1)
    dl = _ints(dilations, nsp, 1)
    op = _ints(output_padding, nsp, 0)
    eff = [(k - 1) * d + 1 for k, d in zip(ks, dl, strict=True)]
    out, begin = _transpose_pads(in_sizes, eff, st, op, pads, auto_pad, output_shape)
    mg = w.shape[1]
    m = mg * group
    cg = c // group
    dt = x.dtype
    cdt = compute_dtype(dt)
    kk = math.prod(ks)
    lin = math.prod(in_sizes)
    # (G, Mg*K, Cg) @ (N, G, Cg, Lin) -> (N, G, Mg*K, Lin): every input pixel's contribution per offset.
    wt = w.astype(cdt, copy=False).reshape(group, cg, mg * kk).transpose(0, 2, 1)
    xr = x.astype(cdt, copy=False).reshape(n, group, cg, lin)
    cols = xp.matmul(wt[0], xr[:, 0]) if group == 1 else xp.matmul(wt, xr)
    cols = cols.reshape((n, m) + ks + tuple(in_sizes))
    # col2im into a buffer indexed by "full" position (input*stride + offset*dilation), shifted so a
    # negative begin padding (output_shape larger than the full extent) still lands inside it.
    shift = [max(0, -bg) for bg in begin]
    size = [
        max((i - 1) * s + e, bg + o) + sh
        for i, s, e, bg, o, sh in zip(in_sizes, st, eff, begin, out, shift, strict=True)
    ]
    buf = xp.zeros((n, m) + tuple(size), dtype=cdt)
    lead = (slice(None), slice(None))
    for off in itertools.product(*(range(k) for k in ks)):
        dst = tuple(
            slice(sh + o * d, sh + o * d + (i - 1) * s + 1, s)
            for sh, o, d, i, s in zip(shift, off, dl, in_sizes, st, strict=True)
        )
        buf[lead + dst] += cols[lead + off]
    crop = lead + tuple(
        slice(sh + bg, sh + bg + o) for sh, bg, o in zip(shift, begin, out, strict=True)
    )
    view = buf[crop]
    y = xp.empty((n, m) + tuple(out), dtype=cdt)
    if b is None:
        y[...] = view
    else:
        xp.add(view, b.astype(cdt, copy=False).reshape((m,) + (1,) * nsp), out=y)
    return (y if y.dtype == dt else y.astype(dt),)


def _sample_columns(x, positions, offset_group, xp):
    """Multilinear samples of ``x`` (N, C, *S) at ``positions`` (per axis, each (N, OG, K, L)).

    Returns (N, C, K, L); samples outside the input read zero.
    """
    n, c = x.shape[:2]
    sizes = x.shape[2:]
    cog = c // offset_group
    kk, length = positions[0].shape[2:]
    xr = x.reshape(n, offset_group, cog, math.prod(sizes))
    lows = [xp.floor(p) for p in positions]
    fracs = [p - lo for p, lo in zip(positions, lows, strict=True)]
    lows = [lo.astype(np.int64) for lo in lows]
    out = xp.zeros((n, offset_group, cog, kk * length), dtype=x.dtype)
    strides_flat = [math.prod(sizes[i + 1 :]) for i in range(len(sizes))]
    for corner in itertools.product((0, 1), repeat=len(sizes)):
        weight = None
        flat = None
        valid = None
        for bit, lo, fr, size, sf in zip(corner, lows, fracs, sizes, strides_flat, strict=True):
            idx = lo + bit
            wgt = fr if bit else 1 - fr
            ok = (idx >= 0) & (idx < size)
            weight = wgt if weight is None else weight * wgt
            valid = ok if valid is None else valid & ok
            term = xp.clip(idx, 0, size - 1) * sf
            flat = term if flat is None else flat + term
        weight = xp.where(valid, weight, 0).astype(x.dtype, copy=False)
        flat = flat.reshape(n, offset_group, 1, kk * length)
        gathered = xp.take_along_axis(
            xr, xp.broadcast_to(flat, (n, offset_group, cog, kk * length)), axis=-1
        )
        out += gathered * weight.reshape(n, offset_group, 1, kk * length)
    return out.reshape(n, c, kk, length)


@kernel("DeformConv", since=19)
def DeformConv(
    x, w, offset, b=None, mask=None, /, *,
    dilations=None, group=1, kernel_shape=None, offset_group=1, pads=None, strides=None,
):  # fmt: skip
    """Deformable convolution: each kernel tap samples X at its grid position plus a learned offset.

    ``offset`` is (N, offset_group * prod(K) * nsp, *out) with per-tap displacements in axis order;
    ``mask`` (N, offset_group * prod(K), *out) scales each sample. Sampling is multilinear with zeros
    outside the input; the sampled columns then go through one GEMM per group like im2col.
    """
    check_conv_shapes("DeformConv", x, w, group)
    xp = xp_of(x, w, offset)
    nsp = x.ndim - 2
    n, c = x.shape[:2]
    m = w.shape[0]
    ks = tuple(w.shape[2:]) if kernel_shape is None else tuple(int(k) for k in kernel_shape)
    geo = window_geometry(x.shape[2:], ks, strides=strides, dilations=dilations, pads=pads)
    kk = math.prod(ks)
    length = math.prod(geo.out)
    expected = (n, offset_group * kk * nsp) + geo.out
    if tuple(offset.shape) != expected:
        raise ExecutionError(f"DeformConv offset has shape {offset.shape}, expected {expected}")
    dt = x.dtype
    cdt = compute_dtype(dt)
    off = offset.astype(cdt, copy=False).reshape(n, offset_group, kk, nsp, length)
    positions = []
    grids = xp.meshgrid(*(xp.arange(o) for o in geo.out), indexing="ij")
    taps = list(itertools.product(*(range(k) for k in ks)))
    for axis in range(nsp):
        base = (grids[axis].reshape(-1) * geo.strides[axis] - geo.pads_begin[axis]).astype(cdt)
        tap = xp.asarray([t[axis] * geo.dilations[axis] for t in taps], dtype=cdt)
        positions.append(base[None, None, None, :] + tap[None, None, :, None] + off[:, :, :, axis])
    cols = _sample_columns(x.astype(cdt, copy=False), positions, offset_group, xp)  # (N, C, K, L)
    if mask is not None:
        mk = mask.astype(cdt, copy=False).reshape(n, offset_group, 1, kk, length)
        cols = (cols.reshape(n, offset_group, c // offset_group, kk, length) * mk).reshape(
            n, c, kk, length
        )
    cg = c // group
    cols = cols.reshape(n, group, cg * kk, length)
    y = xp.matmul(w.astype(cdt, copy=False).reshape(group, m // group, cg * kk), cols)
    y = y.reshape((n, m) + geo.out)
    if b is not None:
        y += b.astype(cdt, copy=False).reshape((m,) + (1,) * nsp)
    return (y if y.dtype == dt else y.astype(dt),)
