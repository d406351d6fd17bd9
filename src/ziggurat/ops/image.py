"""Image and geometry: GridSample, AffineGrid, ImageDecoder (Col2Im, the inverse of a convolution's
im2col, lives in ``conv.py``).

Resize and Upsample live in ``resize.py``; RoiAlign and NonMaxSuppression in ``detection.py``.
"""

from __future__ import annotations

import io
import itertools

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel

# ---------------------------------------------------------------------------------------------
# GridSample


def _reflect(x, lo2, hi2):
    """Reflect coordinates into [lo2/2, hi2/2] (bounds given doubled, as in torch's grid_sample)."""
    if lo2 == hi2:
        return np.zeros_like(x)
    lo = lo2 / 2
    span = (hi2 - lo2) / 2
    d = np.abs(x - lo)
    extra = np.fmod(d, span)
    flips = np.floor(d / span)
    return np.where(flips % 2 == 0, extra + lo, span - extra + lo)


def _pad_coord(x, size, padding_mode, align_corners):
    """Apply border / reflection padding to (possibly fractional) pixel coordinates."""
    if padding_mode == "border":
        return np.clip(x, 0, size - 1)
    if padding_mode == "reflection":
        if align_corners:
            x = _reflect(x, 0, 2 * (size - 1))
        else:
            x = _reflect(x, -1, 2 * size - 1)
        return np.clip(x, 0, size - 1)
    return x


def _cubic_weights(t, a=-0.75):
    """Weights of the 4 taps floor(x)-1 .. floor(x)+2 for fractional offset ``t``."""

    def near(d):
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _grid_taps(g, size, mode, padding_mode, align_corners):
    """Per-axis taps of normalized grid coordinates ``g``: list of (index, weight, valid) arrays."""
    if align_corners:
        x = (g + 1) / 2 * (size - 1)
    else:
        x = ((g + 1) * size - 1) / 2
    if mode == "cubic":
        # Padding applies to each tap's integer position, not to the sampling point.
        base = np.floor(x)
        taps = []
        for k, w in zip(range(-1, 3), _cubic_weights(x - base)):
            pos = _pad_coord(base + k, size, padding_mode, align_corners)
            taps.append((pos, w))
    else:
        x = _pad_coord(x, size, padding_mode, align_corners)
        if mode == "nearest":
            taps = [(np.rint(x), np.ones_like(x))]  # rint: ties to even, as the spec says
        else:
            base = np.floor(x)
            frac = x - base
            taps = [(base, 1 - frac), (base + 1, frac)]
    out = []
    for pos, w in taps:
        valid = (pos >= 0) & (pos <= size - 1)
        idx = np.where(valid, pos, 0).astype(np.int64)
        out.append((idx, w, valid))
    return out


_GRID_MODES = {
    "bilinear": "linear",
    "linear": "linear",
    "nearest": "nearest",
    "bicubic": "cubic",
    "cubic": "cubic",
}


@kernel("GridSample", since=16)
def GridSample(x, grid, /, *, align_corners=0, mode="linear", padding_mode="zeros"):
    """Sample ``x`` (N, C, *spatial) at the normalized positions in ``grid`` (N, *out, r).

    Accepts both the opset-16 mode names (bilinear/bicubic) and the opset-20 ones (linear/cubic),
    and any number of spatial dimensions.
    """
    xp = xp_of(x, grid)
    if mode not in _GRID_MODES:
        raise ExecutionError(
            f"GridSample: unknown mode {mode!r}; expected linear, nearest or cubic"
        )
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ExecutionError(
            f"GridSample: unknown padding_mode {padding_mode!r}; expected zeros, border or reflection"
        )
    kind = _GRID_MODES[mode]
    n, c = x.shape[:2]
    in_sp = x.shape[2:]
    r = len(in_sp)
    if grid.ndim != r + 2 or grid.shape[-1] != r or grid.shape[0] != n:
        raise ExecutionError(
            f"GridSample: grid shape {tuple(grid.shape)} does not fit input {tuple(x.shape)}; "
            f"expected (N={n}, *out_spatial, {r})"
        )
    out_sp = grid.shape[1:-1]
    g = np.asarray(grid, dtype=np.float64).reshape(n, -1, r)
    # grid[..., 0] indexes the last (width) axis, grid[..., 1] the one before, and so on.
    per_axis = [
        _grid_taps(g[..., r - 1 - ax], in_sp[ax], kind, padding_mode, align_corners)
        for ax in range(r)
    ]
    strides = [int(np.prod(in_sp[ax + 1 :], dtype=np.int64)) for ax in range(r)]
    # Channels-last copy: every sample then gathers C contiguous values (one row) per tap.
    rows = xp.ascontiguousarray(x.reshape(n, c, -1).transpose(0, 2, 1)).reshape(-1, c)
    base = (np.arange(n, dtype=np.int64) * int(np.prod(in_sp, dtype=np.int64)))[:, None]
    acc = None
    for combo in itertools.product(*per_axis):  # 2**r, 4**r or 1 tap combinations
        lin = base.copy()
        w = np.ones(g.shape[:2], dtype=np.float64)
        for ax, (idx, wk, valid) in enumerate(combo):
            lin = lin + idx * strides[ax]
            w = w * np.where(valid, wk, 0.0)
        term = xp.take(rows, xp.asarray(lin.reshape(-1)), axis=0)  # (N*P, C)
        term *= xp.asarray(w.astype(x.dtype).reshape(-1, 1))
        if acc is None:
            acc = term
        else:
            acc += term
    out = acc.reshape(n, -1, c).transpose(0, 2, 1)
    return (xp.ascontiguousarray(out).reshape(n, c, *out_sp).astype(x.dtype, copy=False),)


# ---------------------------------------------------------------------------------------------
# AffineGrid


def _base_coords(n, align_corners):
    if n <= 1:
        return np.zeros(max(n, 0))
    if align_corners:
        return np.linspace(-1.0, 1.0, n)
    return (np.arange(n) * 2 + 1) / n - 1


@kernel("AffineGrid", since=20)
def AffineGrid(theta, size, /, *, align_corners=0):
    """Sampling grid (N, H, W, 2) or (N, D, H, W, 3) from affine matrices ``theta``."""
    xp = xp_of(theta)
    dims = [int(v) for v in np.asarray(size).reshape(-1)]
    spatial = dims[2:]
    r = len(spatial)
    if r not in (2, 3) or tuple(theta.shape[1:]) != (r, r + 1):
        raise ExecutionError(
            f"AffineGrid: theta shape {tuple(theta.shape)} and size {dims} do not match; expected "
            "theta (N, 2, 3) with size (N, C, H, W) or theta (N, 3, 4) with size (N, C, D, H, W)"
        )
    axes = [_base_coords(s, align_corners) for s in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")  # D, H, W order
    # Homogeneous positions in (x, y[, z], 1) order: x runs along the last spatial axis.
    pts = np.stack([*mesh[::-1], np.ones_like(mesh[0])], axis=-1).reshape(-1, r + 1)
    pts = xp.asarray(pts.astype(theta.dtype))
    grid = xp.einsum("pk,nik->npi", pts, theta)
    return (grid.reshape(theta.shape[0], *spatial, r).astype(theta.dtype, copy=False),)


# ---------------------------------------------------------------------------------------------
# ImageDecoder


@kernel("ImageDecoder", since=20)
def ImageDecoder(encoded, /, *, pixel_format="RGB"):
    """Decode an encoded image (1-D uint8 bytes) to an (H, W, C) uint8 array using Pillow."""
    try:
        from PIL import Image
    except ImportError as exc:  # optional dependency
        raise ExecutionError(
            "ImageDecoder needs Pillow to decode images, which is not installed; "
            "run `pip install pillow`"
        ) from exc
    modes = {"RGB": "RGB", "BGR": "RGB", "Grayscale": "L"}
    if pixel_format not in modes:
        raise ExecutionError(
            f"ImageDecoder: unknown pixel_format {pixel_format!r}; expected RGB, BGR or Grayscale"
        )
    data = np.asarray(encoded, dtype=np.uint8).reshape(-1).tobytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert(modes[pixel_format]), dtype=np.uint8)
    except Exception as exc:
        raise ExecutionError(f"ImageDecoder: could not decode the image ({exc})") from exc
    if pixel_format == "Grayscale":
        arr = arr[:, :, None]
    elif pixel_format == "BGR":
        arr = arr[:, :, ::-1]
    return (np.ascontiguousarray(arr),)
