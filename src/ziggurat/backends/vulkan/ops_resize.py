"""Resize on the device, every mode the CPU kernel has (nearest, linear, cubic; antialias; each
coordinate transformation, tf_crop_and_resize's extrapolation): the per-axis tap indices and
weights come from the CPU kernel's own planning (``ops/resize.py``: float32 coordinates, the
same tie-breaking), are uploaded, and ``shaders/taps.wgsl`` applies one axis per pass in the
CPU's order, so results match it within float32 rounding of the same sums."""

from __future__ import annotations

import math

import numpy as np

from ...ops import resize as cpu_resize
from ._backend import TABLE, VkTensor, VulkanBackend
from ._common import F32, check


def _axis_pass(be: VulkanBackend, y: VkTensor, ax: int, out_len: int, idx, w) -> VkTensor:
    shape = list(y.shape)
    shape[ax] = out_len
    out = be.empty(tuple(shape), np.float32)
    total = out.size
    if total == 0:
        return out
    taps = idx.shape[1]
    tables = [be.to_device(np.ascontiguousarray(idx, dtype=np.int32).reshape(-1))]
    tables.append(None if w is None else be.to_device(w.astype(np.float32).reshape(-1)))
    try:
        meta = [total, out_len, y.shape[ax], math.prod(y.shape[ax + 1 :]), taps, int(w is not None)]
        be.dispatch("taps", meta, [y, tables[0], tables[1], out], be.groups_1d(total))
    finally:
        for t in tables:
            if t is not None:
                be.release(t)
    return out


def _plans(x_shape, out_shape, scales, attrs, roi):
    """The CPU kernel's per-axis plans, in its order (shrinking axes first)."""
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    plans = []
    for ax, (n_in, n_out) in enumerate(zip(x_shape, out_shape)):
        if n_out == n_in and scales[ax] == 1 and ctm != "tf_crop_and_resize":
            continue
        if n_in == 0 or n_out == 0:
            plans.append((ax, None, None, None))
            continue
        plan = cpu_resize._axis_plan(
            n_in, n_out, scales[ax], mode=attrs.get("mode", "nearest"), ctm=ctm,
            roi=(roi or [(0.0, 1.0)] * len(x_shape))[ax],
            nearest_mode=attrs.get("nearest_mode", "round_prefer_floor"),
            cubic_coeff_a=attrs.get("cubic_coeff_a", -0.75),
            exclude_outside=attrs.get("exclude_outside", 0), antialias=attrs.get("antialias", 0),
        )  # fmt: skip
        plans.append((ax, *plan))
    plans.sort(key=lambda p: out_shape[p[0]] / max(x_shape[p[0]], 1))
    return plans


def _resize(be, inputs, attrs):
    x = inputs[0]
    roi, scales, sizes = (list(inputs[1:]) + [None] * 3)[:3]
    axes = cpu_resize._norm_axes(attrs.get("axes"), x.ndim)
    sc = cpu_resize._floats(None if scales is None else np.asarray(scales))
    sz = None if sizes is None or np.asarray(sizes).size == 0 else np.asarray(sizes)
    roi_pairs = None
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        r = cpu_resize._floats(np.asarray(roi))
        roi_pairs = [(0.0, 1.0)] * x.ndim
        for i, ax in enumerate(axes):
            roi_pairs[ax] = (r[i], r[len(axes) + i])
    out_shape, full = cpu_resize._sizes_and_scales(
        np.broadcast_to(np.zeros((), np.float32), x.shape), sc, sz, axes,
        attrs.get("keep_aspect_ratio_policy", "stretch"), roi_pairs,
    )  # fmt: skip
    y, masks = be.view(x, x.shape), []
    for ax, idx, w, outside in _plans(x.shape, out_shape, full, attrs, roi_pairs):
        if idx is None:
            shape = list(y.shape)
            shape[ax] = out_shape[ax]
            nxt = be.to_device(np.zeros(shape, np.float32))
        else:
            nxt = _axis_pass(be, y, ax, out_shape[ax], idx, w)
        be.release(y)
        y = nxt
        if outside is not None:
            bshape = [1] * x.ndim
            bshape[ax] = -1
            masks.append(outside.reshape(bshape))
    if not masks:
        return [y]
    from .ops_elementwise import _broadcast

    mask = masks[0]
    for m in masks[1:]:
        mask = mask | m  # the union of small per-axis masks, on the host as the CPU does
    m = be.to_device(np.ascontiguousarray(mask))
    try:
        value = float(attrs.get("extrapolation_value", 0.0))
        out = _broadcast(be, "select(a1, p0, a0 != 0u)", [m, y], F32, value)
    finally:
        be.release(m)
        be.release(y)
    return [out]


def _resize_supports(inputs, attrs):
    if attrs.get("mode", "nearest") not in ("nearest", "linear", "cubic"):
        return f"Resize mode {attrs.get('mode')!r}"
    return check(inputs[:1], frozenset({F32}), None)


TABLE.kernel("Resize", since=11, supports=_resize_supports)(_resize)
