"""Window geometry shared by the convolution and pooling kernels (not a kernel module).

Every sliding-window op resolves the same attributes: ``kernel_shape``, ``strides``, ``dilations``,
``pads`` (``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``), ``auto_pad`` and, for pools,
``ceil_mode``. :func:`window_geometry` turns them into output sizes and per-side paddings;
:func:`pad_input` builds the padded buffer that strided views and slices then read from.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

from ..backends import xp_of
from ..errors import ExecutionError


@dataclass(frozen=True)
class Geometry:
    """Resolved window geometry along the spatial axes.

    ``pads_end`` is the explicit end padding; ``buf_end`` (>= what the windows read past the input) is
    how much the padded buffer must extend so every window lies inside it: in ceil mode the last window
    may reach beyond the declared padding, and those extra cells are not real padding.
    """

    out: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    buf_end: tuple[int, ...]

    def offsets(self):
        """All kernel offsets as index tuples, row-major (the ONNX window order)."""
        return itertools.product(*(range(k) for k in self.kernel))

    def window_slices(self, offset):
        """Per spatial axis, the strided slice of the padded buffer that kernel ``offset`` reads."""
        return tuple(
            slice(o * d, o * d + (n - 1) * s + 1, s)
            for o, d, n, s in zip(offset, self.dilations, self.out, self.strides, strict=True)
        )


def _ints(value, n, default, name):
    if value is None:
        return (default,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ExecutionError(
            f"attribute {name} has {len(value)} values, expected {n} (one per spatial axis)"
        )
    return value


def window_geometry(
    in_sizes,
    kernel,
    *,
    strides=None,
    dilations=None,
    pads=None,
    auto_pad="NOTSET",
    ceil_mode=False,
) -> Geometry:
    """Resolve a sliding window over spatial sizes ``in_sizes`` with the ONNX attribute rules."""

    def tup(v):
        return None if v is None else tuple(int(i) for i in v)

    # Cached: a model calls each node with the same shapes and attributes on every run.
    return _window_geometry(
        tuple(in_sizes),
        tup(kernel),
        tup(strides),
        tup(dilations),
        tup(pads),
        auto_pad,
        bool(ceil_mode),
    )


@functools.lru_cache(maxsize=1024)
def _window_geometry(in_sizes, kernel, strides, dilations, pads, auto_pad, ceil_mode) -> Geometry:
    n = len(in_sizes)
    kernel = _ints(kernel, n, 1, "kernel_shape")
    strides = _ints(strides, n, 1, "strides")
    dilations = _ints(dilations, n, 1, "dilations")
    pads = _ints(pads, 2 * n, 0, "pads")
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(in_sizes, strides, strict=True)]
        total = [
            max((o - 1) * s + e - i, 0)
            for o, s, e, i in zip(out, strides, eff, in_sizes, strict=True)
        ]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    elif auto_pad in ("NOTSET", "VALID", "", None):
        begin, end = (list(pads[:n]), list(pads[n:])) if auto_pad != "VALID" else ([0] * n, [0] * n)
        out = []
        for i, e, s, b, f in zip(in_sizes, eff, strides, begin, end, strict=True):
            span = i + b + f - e
            if span < 0:
                raise ExecutionError(
                    f"window of effective size {e} does not fit input size {i} with pads ({b}, {f}); "
                    f"use a smaller kernel/dilation or more padding"
                )
            o = (-(-span // s) if ceil_mode else span // s) + 1
            # A ceil-mode window must start inside the input or the begin padding, not in the end padding.
            if ceil_mode and (o - 1) * s >= i + b:
                o -= 1
            out.append(o)
    else:
        raise ExecutionError(
            f"auto_pad {auto_pad!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"
        )
    buf_end = [
        max(f, (o - 1) * s + e - i - b)
        for o, s, e, i, b, f in zip(out, strides, eff, in_sizes, begin, end, strict=True)
    ]
    return Geometry(
        tuple(out), kernel, strides, dilations, tuple(begin), tuple(end), tuple(buf_end)
    )


def pad_input(x, begin, end, value=0):
    """``x`` (N, C, *spatial) with ``begin``/``end`` cells of ``value`` around each spatial axis.

    Returns ``x`` itself when there is nothing to pad. Negative ``end`` crops (windows never read there).
    """
    if not any(begin) and not any(end):
        return x
    xp = xp_of(x)
    spatial = x.shape[2:]
    if any(e < 0 for e in end):
        x = x[
            (slice(None), slice(None))
            + tuple(slice(0, s + min(e, 0)) for s, e in zip(spatial, end))
        ]
        end = [max(e, 0) for e in end]
        spatial = x.shape[2:]
    shape = x.shape[:2] + tuple(s + b + e for s, b, e in zip(spatial, begin, end, strict=True))
    buf = xp.full(shape, value, dtype=x.dtype) if value != 0 else xp.zeros(shape, dtype=x.dtype)
    buf[
        (slice(None), slice(None))
        + tuple(slice(b, b + s) for b, s in zip(begin, spatial, strict=True))
    ] = x
    return buf


@dataclass(frozen=True)
class _PlaneLayout:
    q: tuple[int, ...]  # per-axis extent of each phase plane
    size: int  # prod(q)
    length: int  # flat length of the wide output grid (O1, Q2, ..., Qn)
    total: int  # flat length of a plane including the tail the last shifts read
    n_phases: int
    shifts: tuple[tuple[int, int], ...]  # per kernel offset: (phase, flat shift)
    # (phase, dst, src): where each stride phase of the input is copied into its plane
    copies: tuple[tuple[int, tuple[slice, ...], tuple[slice, ...]], ...]
    crop: tuple[slice, ...]


@functools.lru_cache(maxsize=512)
def _plane_layout(in_sizes: tuple[int, ...], geo: Geometry) -> _PlaneLayout:
    st, dl, ks, out = geo.strides, geo.dilations, geo.kernel, geo.out
    q = tuple(o + (k - 1) * d // s for o, k, d, s in zip(out, ks, dl, st, strict=True))
    inner = [math.prod(q[i + 1 :]) for i in range(len(out))]
    length = out[0] * inner[0]
    phases = list(itertools.product(*(range(s) for s in st)))
    index = {p: i for i, p in enumerate(phases)}
    shifts = []
    for off in geo.offsets():
        pos = [o * d for o, d in zip(off, dl, strict=True)]
        phase = tuple(t % s for t, s in zip(pos, st, strict=True))
        flat = sum((t // s) * m for t, s, m in zip(pos, st, inner, strict=True))
        shifts.append((index[phase], flat))
    size = math.prod(q)
    total = max(size, max(f for _, f in shifts) + length)
    copies = []
    for p in phases:
        dst, src = [], []
        for ph, s, b, qi, i in zip(p, st, geo.pads_begin, q, in_sizes, strict=True):
            q0 = max(-(-(b - ph) // s), 0)  # first q whose position q*s+ph is inside the input
            r0 = q0 * s + ph - b
            cnt = max(min(qi - q0, -(-(i - r0) // s)), 0)
            dst.append(slice(q0, q0 + cnt))
            src.append(slice(r0, r0 + (cnt - 1) * s + 1, s) if cnt else slice(0, 0))
        if all(d.stop > d.start for d in dst):
            copies.append((index[p], tuple(dst), tuple(src)))
    crop = tuple(slice(0, o) for o in out)
    return _PlaneLayout(q, size, length, total, len(phases), tuple(shifts), tuple(copies), crop)


class PhasePlanes:
    """The padded input split by stride phase, each phase flattened over its spatial axes.

    Along axis i the padded input position ``t = q * stride + p`` goes to phase ``p`` at ``q``. A kernel
    offset then reads, for every output position, one phase at a fixed flat shift: the window sum is a
    sum of *contiguous* 1-D slices (fast numpy loops, no per-row overhead), computed on a "wide" output
    grid (O1, Q2, ..., Qn) whose extra columns are cropped at the end. With stride 1 there is one phase.
    The layout depends only on shapes and attributes and is cached.
    """

    def __init__(self, x, geo: Geometry, fill=0):
        xp = xp_of(x)
        n, c = x.shape[:2]
        lay = self.layout = _plane_layout(tuple(x.shape[2:]), geo)
        self.length = lay.length
        self.shifts = lay.shifts
        self.q = lay.q
        shape = (lay.n_phases, n, c, lay.total)
        # Everything outside the input (padding, ceil-mode overhang, alignment) holds ``fill``.
        self.planes = (
            xp.zeros(shape, dtype=x.dtype) if fill == 0 else xp.full(shape, fill, dtype=x.dtype)
        )
        lead = (slice(None), slice(None))
        for ph, dst, src in lay.copies:
            view = self.planes[ph, :, :, : lay.size].reshape((n, c) + lay.q)
            view[lead + dst] = x[lead + src]

    def __len__(self):
        return len(self.shifts)

    def window(self, k):
        """(N, C, L) slice of the planes read by the k-th kernel offset."""
        ph, flat = self.shifts[k]
        return self.planes[ph, :, :, flat : flat + self.length]

    def crop(self, wide, out=None):
        """View (..., *out) of a wide-grid result (..., L)."""
        lead = wide.shape[:-1]
        grid = wide.reshape(lead + (self.length // math.prod(self.q[1:]),) + self.q[1:])
        return grid[(Ellipsis,) + self.layout.crop]
