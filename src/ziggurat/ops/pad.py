"""Padding and cropping: Pad (constant, reflect, edge, wrap), CenterCropPad."""

from __future__ import annotations

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel
from .shape import host_ints, host_scalar, norm_axes

_NUMPY_MODES = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad(data, pads: list[int], mode: str, value, axes: list[int] | None):
    """Pad (or, for negative pads, crop) ``data``; ``pads`` is [begin_0..begin_k, end_0..end_k]."""
    rank = data.ndim
    axes = list(range(rank)) if axes is None else norm_axes(axes, rank)
    if len(pads) != 2 * len(axes):
        raise ExecutionError(
            f"Pad: pads has {len(pads)} values but {len(axes)} axes are padded; expected "
            f"2 * {len(axes)} = {2 * len(axes)} (all begins, then all ends)"
        )
    before = [0] * rank
    after = [0] * rank
    for i, a in enumerate(axes):
        before[a], after[a] = pads[i], pads[i + len(axes)]

    # Negative pads crop: do that first, then pad with the non-negative amounts.
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for b, e, d in zip(before, after, data.shape))
    if any(b < 0 or e < 0 for b, e in zip(before, after)):
        data = data[crop]
    before = [max(b, 0) for b in before]
    after = [max(e, 0) for e in after]
    xp = xp_of(data)
    if not any(before) and not any(after):
        return data

    if mode == "constant":
        if value is None:
            value = "" if data.dtype == object else 0
        shape = tuple(d + b + e for d, b, e in zip(data.shape, before, after))
        out = xp.full(shape, value, dtype=data.dtype)
        out[tuple(slice(b, b + d) for b, d in zip(before, data.shape))] = data
        return out
    if mode not in _NUMPY_MODES:
        raise ExecutionError(
            f"Pad: mode must be one of constant, reflect, edge, wrap; got {mode!r}"
        )
    if data.size == 0:
        raise ExecutionError(
            f"Pad: mode {mode!r} cannot pad an empty tensor (shape {list(data.shape)})"
        )
    return xp.pad(data, list(zip(before, after)), mode=_NUMPY_MODES[mode])


@kernel("Pad", since=11)
def Pad(data, pads, constant_value=None, axes=None, /, *, mode="constant"):
    """Pad with a constant, a reflection, the edge value, or by wrapping around; pads (and, from
    opset 18, axes) are inputs. Negative pads remove elements."""
    value = None if constant_value is None else host_scalar(constant_value)
    return (_pad(data, host_ints(pads), mode, value, None if axes is None else host_ints(axes)),)


@kernel("Pad", since=2)
def Pad_2(data, /, *, pads, mode="constant", value=0.0):
    """Pad-2: pads and value are attributes."""
    return (_pad(data, list(pads), mode, value, None),)


@kernel("Pad", since=1)
def Pad_1(data, /, *, paddings, mode="constant", value=0.0):
    """Pad-1: the pads attribute was called ``paddings``."""
    return (_pad(data, list(paddings), mode, value, None),)


@kernel("CenterCropPad", since=18)
def CenterCropPad(data, shape, /, *, axes=None):
    """Crop or zero-pad each of ``axes`` to ``shape``, keeping the content centred (an odd remainder
    goes to the end)."""
    target = host_ints(shape)
    axes = list(range(data.ndim)) if axes is None else norm_axes(axes, data.ndim)
    if len(target) != len(axes):
        raise ExecutionError(
            f"CenterCropPad: shape has {len(target)} values for {len(axes)} axes; give one size per axis"
        )
    out_shape = list(data.shape)
    src = [slice(None)] * data.ndim
    dst = [slice(None)] * data.ndim
    for a, size in zip(axes, target):
        dim = data.shape[a]
        out_shape[a] = size
        if dim > size:
            lo = (dim - size) // 2
            src[a] = slice(lo, lo + size)
        elif dim < size:
            lo = (size - dim) // 2
            dst[a] = slice(lo, lo + dim)
    xp = xp_of(data)
    if out_shape == list(data.shape):
        return (data,)
    out = xp.zeros(out_shape, dtype=data.dtype)
    out[tuple(dst)] = data[tuple(src)]
    return (out,)
