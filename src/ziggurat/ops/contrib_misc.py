"""``com.microsoft`` ops that predate their ``ai.onnx`` twins or have none (onnxruntime's
ContribOperators.md): Trilu, GridSample, Inverse, CDist, and the older converters' ExpandDims,
Range, Pad and Unique.

The ones with ``ai.onnx`` twins call those kernels (``tensor.py``, ``image.py``, ``shape.py``,
``pad.py``) with the contrib inputs and attributes mapped.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .image import GridSample as _onnx_grid_sample
from .matmul import MatMul
from .matmul import Trilu as _onnx_trilu
from .pad import Pad as _onnx_pad
from .registry import kernel
from .shape import Unsqueeze
from .sort import Unique as _onnx_unique
from .tensor import Range as _onnx_range

MS = "com.microsoft"
_GRID_MODES = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}


@kernel("Trilu", domain=MS, since=1)
def Trilu(x, k=None, /, *, upper=1):
    """Keep the upper (or lower) triangle of the last two axes from diagonal ``k``."""
    return _onnx_trilu(x, k, upper=upper)


@kernel("GridSample", domain=MS, since=1)
def GridSample(x, grid, /, *, align_corners=0, mode="bilinear", padding_mode="zeros"):
    """4-D GridSample with the contrib mode names (bilinear, nearest, bicubic)."""
    if mode not in _GRID_MODES:
        raise ExecutionError(
            f"GridSample (com.microsoft): mode {mode!r}; expected one of {sorted(_GRID_MODES)}"
        )
    return _onnx_grid_sample(
        x, grid, align_corners=align_corners, mode=_GRID_MODES[mode], padding_mode=padding_mode
    )


@kernel("Inverse", domain=MS, since=1)
def Inverse(x, /):
    """Inverse of the square matrices in the last two axes (float16 computed in float32)."""
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ExecutionError(f"Inverse needs (..., M, M) input, got shape {tuple(x.shape)}")
    xp = xp_of(x)
    cdt = np.float64 if x.dtype == np.float64 else np.float32
    return (xp.linalg.inv(x.astype(cdt, copy=False)).astype(x.dtype, copy=False),)


@kernel("CDist", domain=MS, since=1)
def CDist(a, b, /, *, metric="sqeuclidean"):
    """Pairwise distances between the rows of A (N, D) and B (M, D): (N, M), ``sqeuclidean`` or
    ``euclidean``. Computed as |a|^2 + |b|^2 - 2 a.b (one GEMM), clamped at 0 against rounding."""
    if metric not in ("sqeuclidean", "euclidean"):
        raise ExecutionError(f"CDist: metric {metric!r}; expected 'sqeuclidean' or 'euclidean'")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ExecutionError(
            f"CDist needs A (N, D) and B (M, D) with one D, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    xp = xp_of(a)
    (ab,) = MatMul(a, b.T)
    d = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * ab
    d = xp.maximum(d, 0)
    if metric == "euclidean":
        d = xp.sqrt(d)
    return (d.astype(a.dtype, copy=False),)


@kernel("ExpandDims", domain=MS, since=1)
def ExpandDims(x, axis, /):
    """Insert one size-1 axis at ``axis`` (a scalar; negative counts from the output's end)."""
    return Unsqueeze(x, np.asarray(axis).reshape(1).astype(np.int64))


@kernel("Range", domain=MS, since=1)
def Range(start, limit, delta=None, /):
    """start, start + delta, ... below limit (delta defaults to 1), in start's dtype."""
    if delta is None:
        delta = np.ones((), dtype=start.dtype)
    return _onnx_range(start, limit, delta)


@kernel("Pad", domain=MS, since=1)
def Pad(data, pads, value=None, /, *, mode="constant"):
    """Pad-11's semantics; ``pads`` may also be (1, 2 * rank) as older converters wrote it."""
    return _onnx_pad(data, pads.reshape(-1), value, mode=mode)


@kernel("Unique", domain=MS, since=1)
def Unique(x, /):
    """Unique values of a 1-D tensor in order of first occurrence: (y, idx, counts), idx
    mapping each input to its value in y."""
    if x.ndim != 1:
        raise ExecutionError(f"Unique (com.microsoft) takes a 1-D input, got shape {x.shape}")
    y, _, inverse, counts = _onnx_unique(x, sorted=0)
    return y, inverse, counts
