"""Image and geometry: GridSample, AffineGrid, RoiAlign, NonMaxSuppression, Col2Im, ImageDecoder.

Resize and Upsample live in ``resize.py``.
"""

from __future__ import annotations

import io
import itertools
import math

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


_GRID_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest",
               "bicubic": "cubic", "cubic": "cubic"}


@kernel("GridSample", since=16)
def GridSample(x, grid, /, *, align_corners=0, mode="linear", padding_mode="zeros"):
    """Sample ``x`` (N, C, *spatial) at the normalized positions in ``grid`` (N, *out, r).

    Accepts both the opset-16 mode names (bilinear/bicubic) and the opset-20 ones (linear/cubic),
    and any number of spatial dimensions.
    """
    xp = xp_of(x, grid)
    if mode not in _GRID_MODES:
        raise ExecutionError(f"GridSample: unknown mode {mode!r}; expected linear, nearest or cubic")
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
    strides = [int(np.prod(in_sp[ax + 1:], dtype=np.int64)) for ax in range(r)]
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
# RoiAlign


def _roi_axis_samples(start, bin_size, grid, out_len, max_grid):
    """Sample coordinates (R, out_len, max_grid) and a mask of the samples each roi really uses."""
    ig = np.arange(max_grid)
    p = np.arange(out_len)
    pos = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
           + (ig[None, None, :] + 0.5) * (bin_size / grid)[:, None, None])
    used = np.broadcast_to(ig[None, None, :] < grid[:, None, None], pos.shape)
    return pos, used


def _roi_bilinear(pos, size):
    """Low/high indices and weights of the bilinear taps along one axis (ORT/Detectron rules)."""
    empty = (pos < -1.0) | (pos > size)
    pos = np.maximum(pos, 0.0)
    low = np.floor(pos).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    pos = np.where(at_end, low, pos)
    frac = pos - low
    keep = ~empty
    return low, high, np.where(keep, 1 - frac, 0.0), np.where(keep, frac, 0.0)


@kernel("RoiAlign", since=10)
def RoiAlign(
    x,
    rois,
    batch_indices,
    /,
    *,
    coordinate_transformation_mode="half_pixel",
    mode="avg",
    output_height=1,
    output_width=1,
    sampling_ratio=0,
    spatial_scale=1.0,
    opset=16,
):
    """Bilinear RoI pooling (avg or max). Opset 10 has no coordinate_transformation_mode and
    behaves as 'output_half_pixel'."""
    xp = xp_of(x)
    if opset < 16:
        coordinate_transformation_mode = "output_half_pixel"
    if coordinate_transformation_mode not in ("half_pixel", "output_half_pixel"):
        raise ExecutionError(
            f"RoiAlign: unknown coordinate_transformation_mode {coordinate_transformation_mode!r}; "
            "expected half_pixel or output_half_pixel"
        )
    if mode not in ("avg", "max"):
        raise ExecutionError(f"RoiAlign: unknown mode {mode!r}; expected avg or max")
    n, c, h, w = x.shape
    oh, ow = int(output_height), int(output_width)
    r_all = np.asarray(rois, dtype=np.float64).reshape(-1, 4)
    b_all = np.asarray(batch_indices).reshape(-1).astype(np.int64)
    if r_all.shape[0] != b_all.shape[0]:
        raise ExecutionError(
            f"RoiAlign: {r_all.shape[0]} rois but {b_all.shape[0]} batch indices; they must match"
        )
    if b_all.size and (b_all.min() < 0 or b_all.max() >= n):
        raise ExecutionError(f"RoiAlign: batch_indices must be in [0, {n - 1}], got {b_all.tolist()}")
    offset = 0.5 if coordinate_transformation_mode == "half_pixel" else 0.0
    out = xp.zeros((r_all.shape[0], c, oh, ow), dtype=x.dtype)
    # Chunk the rois so the gathered (rois, C, samples_y, W) block stays a few million elements.
    start = 0
    while start < r_all.shape[0]:
        stop = start + 1
        box = r_all[start:] * spatial_scale - offset
        rh_all = box[:, 3] - box[:, 1]
        gh_all = np.ceil(rh_all / oh) if sampling_ratio <= 0 else np.full(len(box), sampling_ratio)
        per_roi = c * oh * max(float(np.max(gh_all, initial=1)), 1) * max(w, ow * 4)
        stop = start + max(1, min(len(box), int(4_000_000 // max(per_roi, 1))))
        out[start:stop] = _roi_align_chunk(
            xp, x, r_all[start:stop], b_all[start:stop], oh, ow, sampling_ratio, spatial_scale,
            offset, mode,
        )
        start = stop
    return (out,)


def _roi_align_chunk(xp, x, rois, bidx, oh, ow, sampling_ratio, spatial_scale, offset, mode):
    _, c, h, w = x.shape
    box = rois * spatial_scale - offset
    x1, y1, x2, y2 = box.T
    rw, rh = x2 - x1, y2 - y1
    if offset == 0.0:  # legacy mode forces rois to be at least 1x1
        rw, rh = np.maximum(rw, 1.0), np.maximum(rh, 1.0)
    bin_h, bin_w = rh / oh, rw / ow
    if sampling_ratio > 0:
        gh = np.full(len(box), sampling_ratio, dtype=np.int64)
        gw = gh.copy()
    else:
        gh = np.maximum(np.ceil(rh / oh), 1).astype(np.int64)
        gw = np.maximum(np.ceil(rw / ow), 1).astype(np.int64)
    ys, used_y = _roi_axis_samples(y1, bin_h, gh, oh, int(gh.max()))
    xs, used_x = _roi_axis_samples(x1, bin_w, gw, ow, int(gw.max()))
    r = len(box)
    ylo, yhi, wyl, wyh = (a.reshape(r, -1) for a in _roi_bilinear(ys, h))
    xlo, xhi, wxl, wxh = (a.reshape(r, -1) for a in _roi_bilinear(xs, w))
    feat = x[xp.asarray(bidx)]  # (R, C, H, W)
    dt = x.dtype

    def rows(idx):  # (R, C, Sy, W)
        return xp.take_along_axis(feat, xp.asarray(idx)[:, None, :, None], axis=2)

    def cols(a, idx):  # (R, C, Sy, Sx)
        return xp.take_along_axis(a, xp.asarray(idx)[:, None, None, :], axis=3)

    def wt(a, shape):
        return xp.asarray(a.astype(dt)).reshape(shape)

    sy, sx = ylo.shape[1], xlo.shape[1]
    wy_shape, wx_shape = (r, 1, sy, 1), (r, 1, 1, sx)
    r_lo, r_hi = rows(ylo), rows(yhi)
    if mode == "avg":
        # Bilinear sampling is separable: interpolate rows, then columns.
        mixed = r_lo * wt(wyl, wy_shape) + r_hi * wt(wyh, wy_shape)
        vals = cols(mixed, xlo) * wt(wxl, wx_shape) + cols(mixed, xhi) * wt(wxh, wx_shape)
        mask = (used_y.reshape(r, 1, sy, 1) & used_x.reshape(r, 1, 1, sx)).astype(dt)
        vals = vals * xp.asarray(mask)
        vals = vals.reshape(r, c, oh, sy // oh, ow, sx // ow).sum(axis=(3, 5))
        count = np.maximum(gh * gw, 1).astype(dt).reshape(r, 1, 1, 1)
        return vals / xp.asarray(count)
    # max: each sample is the largest of its four weighted corner values (onnxruntime's rule).
    best = None
    for rv, wy in ((r_lo, wyl), (r_hi, wyh)):
        for xi, wx in ((xlo, wxl), (xhi, wxh)):
            term = cols(rv, xi) * wt(wy, wy_shape) * wt(wx, wx_shape)
            best = term if best is None else xp.maximum(best, term)
    mask = used_y.reshape(r, 1, sy, 1) & used_x.reshape(r, 1, 1, sx)
    best = xp.where(xp.asarray(mask), best, xp.asarray(-np.inf, dtype=dt))
    return best.reshape(r, c, oh, sy // oh, ow, sx // ow).max(axis=(3, 5))


# ---------------------------------------------------------------------------------------------
# NonMaxSuppression


def _corners(boxes, center_point_box):
    b = np.asarray(boxes, dtype=np.float64)
    if center_point_box:
        xc, yc, bw, bh = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
        return np.stack([yc - bh / 2, xc - bw / 2, yc + bh / 2, xc + bw / 2], axis=-1)
    y1, x1, y2, x2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    # Corners may come in either order; normalize to (ymin, xmin, ymax, xmax).
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2),
                     np.maximum(x1, x2)], axis=-1)


def _iou(one, many):
    inter_h = np.minimum(one[2], many[:, 2]) - np.maximum(one[0], many[:, 0])
    inter_w = np.minimum(one[3], many[:, 3]) - np.maximum(one[1], many[:, 1])
    inter = np.clip(inter_h, 0, None) * np.clip(inter_w, 0, None)
    area1 = (one[2] - one[0]) * (one[3] - one[1])
    area2 = (many[:, 2] - many[:, 0]) * (many[:, 3] - many[:, 1])
    union = area1 + area2 - inter
    ok = (area1 > 0) & (area2 > 0) & (union > 0)
    return np.where(ok, inter / np.where(union > 0, union, 1.0), 0.0)


def _scalar(a, default):
    """The value of an optional scalar (or 1-element) input, or ``default`` when omitted/empty."""
    if a is None:
        return default
    a = np.asarray(a).reshape(-1)
    return a[0].item() if a.size else default


@kernel("NonMaxSuppression", since=10)
def NonMaxSuppression(
    boxes,
    scores,
    max_output_boxes_per_class=None,
    iou_threshold=None,
    score_threshold=None,
    /,
    *,
    center_point_box=0,
):
    """Greedy per-batch, per-class NMS; returns (num_selected, 3) int64 [batch, class, box]."""
    max_out = int(_scalar(max_output_boxes_per_class, 0))
    iou_thr = float(_scalar(iou_threshold, 0.0))
    score_thr = _scalar(score_threshold, None)
    boxes_h = np.asarray(boxes)
    scores_h = np.asarray(scores)
    if boxes_h.ndim != 3 or boxes_h.shape[2] != 4 or scores_h.ndim != 3 or \
            scores_h.shape[0] != boxes_h.shape[0] or scores_h.shape[2] != boxes_h.shape[1]:
        raise ExecutionError(
            f"NonMaxSuppression: boxes {tuple(boxes_h.shape)} and scores {tuple(scores_h.shape)} "
            "must be (batch, boxes, 4) and (batch, classes, boxes)"
        )
    corners = _corners(boxes_h, center_point_box)
    selected = []
    if max_out > 0:
        for b in range(scores_h.shape[0]):
            for cls in range(scores_h.shape[1]):
                sc = scores_h[b, cls].astype(np.float64)
                cand = np.arange(sc.shape[0])
                if score_thr is not None:
                    cand = cand[sc > score_thr]
                # Highest score first; ties keep the lower box index first.
                cand = cand[np.argsort(-sc[cand], kind="stable")]
                kept = 0
                while cand.size and kept < max_out:  # one iteration per selected box
                    best = cand[0]
                    selected.append((b, cls, best))
                    kept += 1
                    rest = cand[1:]
                    cand = rest[_iou(corners[b, best], corners[b, rest]) <= iou_thr]
    out = np.array(selected, dtype=np.int64).reshape(-1, 3)
    return (xp_of(boxes).asarray(out),)


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
            slice(k[i] * dil[i], k[i] * dil[i] + st[i] * (nblocks[i] - 1) + 1, st[i]) for i in range(r)
        )
        out[(slice(None), slice(None), *sl)] += cols[(slice(None), slice(None), *k)]
    crop = tuple(slice(pd[i], pd[i] + img[i]) for i in range(r))
    return (out[(slice(None), slice(None), *crop)],)


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
