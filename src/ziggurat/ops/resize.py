"""Resize (opset 10, 11-19) and the deprecated Upsample (opset 7, 9).

Resizing is separable: for every resized axis we build, on the host, an ``(out_len, taps)`` array of
input indices and one of weights, then apply them one axis at a time (a gather per tap plus a
multiply-add). Nearest mode is a single gather, so it keeps integer dtypes exactly.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel

_MODES = ("nearest", "linear", "cubic")
_CTMS = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "tf_crop_and_resize",
)


def _source_coords(out_len, in_len, scale, ctm, roi_start=0.0, roi_end=1.0):
    """Input-space coordinate of every output position along one axis.

    Computed in float32 like onnxruntime: it decides which side of a .5 tie nearest mode lands on
    (e.g. a float32 scale of 0.7 is 0.69999999; 3.5 / scale is exactly 5.0 in float32).
    """
    f = np.float32
    x = np.arange(out_len, dtype=f)
    scale, roi_start, roi_end = f(scale), f(roi_start), f(roi_end)
    # The spec's "length_resized" is the unrounded in_len * scale (equal to out_len for sizes).
    out_float = f(in_len) * scale * (roi_end - roi_start)
    if ctm == "half_pixel":
        return (x + f(0.5)) / scale - f(0.5)
    if ctm == "half_pixel_symmetric":
        adjustment = out_len / out_float if out_float else 1.0
        offset = f(in_len / 2) * (1 - adjustment)
        return offset + (x + f(0.5)) / scale - f(0.5)
    if ctm == "pytorch_half_pixel":
        return (x + f(0.5)) / scale - f(0.5) if out_len > 1 else np.zeros_like(x)
    if ctm == "align_corners":
        return x * (f(in_len - 1) / (out_float - 1)) if out_len > 1 else np.zeros_like(x)
    if ctm == "asymmetric":
        return x / scale
    if ctm == "tf_half_pixel_for_nn":
        return (x + f(0.5)) / scale
    # tf_crop_and_resize
    if out_len > 1:
        span = (roi_end - roi_start) * f(in_len - 1) / (out_float - 1)
        return roi_start * f(in_len - 1) + x * span
    return np.full_like(x, f(0.5) * (roi_start + roi_end) * f(in_len - 1))


def _nearest_index(x, nearest_mode, scale):
    if nearest_mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if nearest_mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if nearest_mode == "floor":
        return np.floor(x)
    if nearest_mode == "ceil":
        return np.ceil(x)
    if nearest_mode == "simple":  # Resize-10 / Upsample: ceil when shrinking, truncate otherwise
        return np.ceil(x) if scale < 1 else np.trunc(x)
    raise ExecutionError(
        f"Resize: unknown nearest_mode {nearest_mode!r}; expected round_prefer_floor, "
        "round_prefer_ceil, floor or ceil"
    )


def _cubic(t, a):
    t = np.abs(t)
    t2, t3 = t * t, t * t * t
    near = (a + 2) * t3 - (a + 3) * t2 + 1
    far = a * t3 - 5 * a * t2 + 8 * a * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _axis_plan(
    in_len,
    out_len,
    scale,
    *,
    mode,
    ctm,
    roi,
    nearest_mode,
    cubic_coeff_a,
    exclude_outside,
    antialias,
):
    """(indices, weights or None, outside mask or None) for resizing one axis."""
    x = _source_coords(out_len, in_len, scale, ctm, *roi).astype(np.float64)
    outside = None
    if ctm == "tf_crop_and_resize":
        outside = (x < 0) | (x > in_len - 1)
        if not outside.any():
            outside = None
    if mode == "nearest":
        idx = _nearest_index(x, nearest_mode, scale).astype(np.int64)
        return np.clip(idx, 0, in_len - 1)[:, None], None, outside

    # Linear / cubic: taps around floor(x). With antialias and downscaling the filter is stretched
    # by 1/scale, so more input pixels contribute (weights are renormalized to sum to one).
    s = min(scale, 1.0) if antialias else 1.0
    support = 1.0 if mode == "linear" else 2.0
    lo = math.floor(-support / s) + 1
    hi = math.ceil(support / s) + 1  # exclusive: offsets lo .. hi-1 relative to floor(x)
    base = np.floor(x)
    offsets = np.arange(lo, hi, dtype=np.float64)
    d = (offsets[None, :] - (x - base)[:, None]) * s
    if mode == "linear":
        w = np.clip(1 - np.abs(d), 0, None)
    else:
        w = _cubic(d, cubic_coeff_a)
    idx = base.astype(np.int64)[:, None] + offsets.astype(np.int64)[None, :]
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
    total = w.sum(axis=1, keepdims=True)
    w = w / np.where(total == 0, 1.0, total)
    # Out-of-range taps read the edge pixel (edge padding).
    return np.clip(idx, 0, in_len - 1), w, outside


def _compute_dtype(dtype):
    if dtype == np.float64 or dtype.kind in "iu" and dtype.itemsize >= 4:
        return np.float64
    return np.float32


def _resize(
    x,
    out_shape,
    scales,
    *,
    mode="nearest",
    ctm="half_pixel",
    roi=None,
    nearest_mode="round_prefer_floor",
    cubic_coeff_a=-0.75,
    exclude_outside=0,
    extrapolation_value=0.0,
    antialias=0,
):
    """Resize ``x`` to ``out_shape`` with per-axis ``scales`` used in the coordinate transform."""
    xp = xp_of(x)
    if mode not in _MODES:
        raise ExecutionError(f"Resize: unknown mode {mode!r}; expected one of {', '.join(_MODES)}")
    if ctm not in _CTMS:
        raise ExecutionError(
            f"Resize: unknown coordinate_transformation_mode {ctm!r}; expected one of {', '.join(_CTMS)}"
        )
    rank = x.ndim
    if roi is None:
        roi = [(0.0, 1.0)] * rank
    plans = []
    for ax in range(rank):
        in_len, out_len, sc = x.shape[ax], out_shape[ax], scales[ax]
        if out_len == in_len and sc == 1 and ctm != "tf_crop_and_resize":
            continue  # identity along this axis
        if in_len == 0 or out_len == 0:
            plans.append((ax, None, None, None))
            continue
        plan = _axis_plan(
            in_len,
            out_len,
            sc,
            mode=mode,
            ctm=ctm,
            roi=roi[ax],
            nearest_mode=nearest_mode,
            cubic_coeff_a=cubic_coeff_a,
            exclude_outside=exclude_outside,
            antialias=antialias,
        )
        plans.append((ax, *plan))
    # Shrinking axes first keeps the intermediate arrays small.
    plans.sort(key=lambda p: out_shape[p[0]] / max(x.shape[p[0]], 1))

    out_dtype = x.dtype
    y = x
    if mode != "nearest":
        y = x.astype(_compute_dtype(x.dtype), copy=False)
    masks = []
    for ax, idx, w, outside in plans:
        if idx is None:
            shape = list(y.shape)
            shape[ax] = out_shape[ax]
            y = xp.zeros(shape, dtype=y.dtype)
            continue
        if w is None:
            y = xp.take(y, xp.asarray(idx[:, 0]), axis=ax)
        else:
            bshape = [1] * rank
            bshape[ax] = -1
            acc = None
            for k in range(idx.shape[1]):  # a handful of taps, not elements
                wk = xp.asarray(w[:, k].astype(y.dtype)).reshape(bshape)
                term = xp.take(y, xp.asarray(idx[:, k]), axis=ax)
                term *= wk  # in place: the taps dominate the run time, so avoid temporaries
                if acc is None:
                    acc = term
                else:
                    acc += term
            y = acc
        if outside is not None:
            bshape = [1] * rank
            bshape[ax] = -1
            masks.append(outside.reshape(bshape))
    if masks:
        mask = masks[0]
        for m in masks[1:]:
            mask = mask | m
        y = xp.where(xp.asarray(mask), xp.asarray(extrapolation_value, dtype=y.dtype), y)
    if y.dtype != out_dtype:
        if out_dtype.kind in "iu":  # truncate like onnxruntime, clipped to the type's range
            info = np.iinfo(out_dtype)
            y = xp.clip(y, info.min, info.max)
        y = y.astype(out_dtype)
    return y


def _floats(a):
    return None if a is None or a.size == 0 else [float(v) for v in np.asarray(a).reshape(-1)]


def _norm_axes(axes, rank):
    if axes is None:
        return list(range(rank))
    out = [a + rank if a < 0 else a for a in axes]
    if any(a < 0 or a >= rank for a in out) or len(set(out)) != len(out):
        raise ExecutionError(f"Resize: axes {axes} must be distinct and in [-{rank}, {rank - 1}]")
    return out


def _sizes_and_scales(x, scales, sizes, axes, policy, roi=None):
    """Output shape and per-axis scales from either the ``scales`` or the ``sizes`` input.

    With tf_crop_and_resize (``roi`` given) a scale applies to the cropped extent.
    """
    rank = x.ndim
    in_shape = list(x.shape)
    out_shape = list(in_shape)
    full_scales = [1.0] * rank
    if scales is not None:
        if len(scales) != len(axes):
            raise ExecutionError(
                f"Resize: scales has {len(scales)} values but {len(axes)} axes are resized; "
                "give one scale per axis"
            )
        for ax, sc in zip(axes, scales):
            if sc <= 0:
                raise ExecutionError(f"Resize: scales must be positive, got {scales}")
            full_scales[ax] = sc
            # float32 product, as the scales tensor is float32 (matches onnxruntime's rounding)
            extent = np.float32(in_shape[ax])
            if roi is not None:
                extent = extent * np.float32(roi[ax][1] - roi[ax][0])
            out_shape[ax] = int(math.floor(extent * np.float32(sc)))
        return out_shape, full_scales
    if sizes is None:
        raise ExecutionError(
            "Resize: needs either the 'scales' or the 'sizes' input; neither was given"
        )
    sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
    if len(sizes) != len(axes):
        raise ExecutionError(
            f"Resize: sizes has {len(sizes)} values but {len(axes)} axes are resized; give one size per axis"
        )
    if policy == "stretch":
        for ax, sz in zip(axes, sizes):
            out_shape[ax] = sz
            extent = in_shape[ax] * (1.0 if roi is None else roi[ax][1] - roi[ax][0])
            full_scales[ax] = sz / extent if extent else 1.0
        return out_shape, full_scales
    ratios = [sz / in_shape[ax] for ax, sz in zip(axes, sizes)]
    if policy == "not_larger":
        sc = min(ratios)
    elif policy == "not_smaller":
        sc = max(ratios)
    else:
        raise ExecutionError(
            f"Resize: unknown keep_aspect_ratio_policy {policy!r}; expected stretch, not_larger or not_smaller"
        )
    for ax in axes:
        out_shape[ax] = int(math.floor(sc * in_shape[ax] + 0.5))
        full_scales[ax] = sc
    return out_shape, full_scales


@kernel("Resize", since=11)
def Resize(
    x,
    roi=None,
    scales=None,
    sizes=None,
    /,
    *,
    antialias=0,
    axes=None,
    coordinate_transformation_mode="half_pixel",
    cubic_coeff_a=-0.75,
    exclude_outside=0,
    extrapolation_value=0.0,
    keep_aspect_ratio_policy="stretch",
    mode="nearest",
    nearest_mode="round_prefer_floor",
):
    """Resize with every opset 11-19 option (scales or sizes, axes, roi, antialias, ...)."""
    ax_list = _norm_axes(axes, x.ndim)
    sc = _floats(scales)
    if sc is not None and sizes is not None and np.asarray(sizes).size:
        raise ExecutionError("Resize: give only one of 'scales' and 'sizes', not both")
    sz = None if sizes is None or np.asarray(sizes).size == 0 else sizes
    roi_pairs = None
    if coordinate_transformation_mode == "tf_crop_and_resize":
        r = _floats(roi)
        if r is None or len(r) != 2 * len(ax_list):
            raise ExecutionError(
                f"Resize: tf_crop_and_resize needs roi with {2 * len(ax_list)} values "
                f"(starts then ends), got {0 if r is None else len(r)}"
            )
        roi_pairs = [(0.0, 1.0)] * x.ndim
        n = len(ax_list)
        for i, ax in enumerate(ax_list):
            roi_pairs[ax] = (r[i], r[n + i])
    out_shape, full_scales = _sizes_and_scales(
        x, sc, sz, ax_list, keep_aspect_ratio_policy, roi_pairs
    )
    y = _resize(
        x,
        out_shape,
        full_scales,
        mode=mode,
        ctm=coordinate_transformation_mode,
        roi=roi_pairs,
        nearest_mode=nearest_mode,
        cubic_coeff_a=cubic_coeff_a,
        exclude_outside=exclude_outside,
        extrapolation_value=extrapolation_value,
        antialias=antialias,
    )
    return (y,)


def _legacy_resize(x, scales, mode, op):
    sc = _floats(scales)
    if sc is None or len(sc) != x.ndim:
        raise ExecutionError(
            f"{op}: scales must have one value per input dimension ({x.ndim}), got {sc}"
        )
    if mode not in ("nearest", "linear", "bilinear"):
        raise ExecutionError(f"{op}: unknown mode {mode!r}; expected nearest or linear")
    out_shape, full_scales = _sizes_and_scales(x, sc, None, list(range(x.ndim)), "stretch")
    return _resize(
        x,
        out_shape,
        full_scales,
        mode="nearest" if mode == "nearest" else "linear",
        ctm="asymmetric",
        nearest_mode="simple",
    )


@kernel("Resize", since=10)
def Resize_10(x, scales, /, *, mode="nearest"):
    """Resize-10: scales only, asymmetric coordinates (the Upsample behaviour)."""
    return (_legacy_resize(x, scales, mode, "Resize"),)


@kernel("Upsample", since=7)
def Upsample_7(x, /, *, mode="nearest", scales=None):
    """Upsample-7: scales as an attribute."""
    return (_legacy_resize(x, np.asarray(scales, dtype=np.float32), mode, "Upsample"),)


@kernel("Upsample", since=9)
def Upsample(x, scales, /, *, mode="nearest"):
    """Upsample-9: scales as an input (deprecated in opset 10 in favour of Resize)."""
    return (_legacy_resize(x, scales, mode, "Upsample"),)
