"""Detection heads: RoiAlign and NonMaxSuppression."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel

# ---------------------------------------------------------------------------------------------
# RoiAlign
#
# Every output bin is a weighted sum (avg) or a max over K = grid_h * grid_w * 4 input pixels (the
# four bilinear corners of each sample point). We build the K flat pixel indices and weights of
# every bin on the host, then gather channel vectors from a channels-last copy of the input, so
# each gathered row is C contiguous values. Rois are processed in blocks to bound memory.

_INDEX_BLOCK = 1 << 20  # pixel indices per roi block
_VALUE_BLOCK = 1 << 23  # gathered values per step


def _roi_axis(start, bin_size, grid, out_len, size):
    """Bilinear taps of every sample along one axis: low/high index, weights, (R, out, G)."""
    g_max = int(grid.max())
    ig = np.arange(g_max)
    pos = (
        start[:, None, None]
        + np.arange(out_len)[None, :, None] * bin_size[:, None, None]
        + (ig[None, None, :] + 0.5) * (bin_size / grid)[:, None, None]
    )
    used = ig[None, None, :] < grid[:, None, None]
    # Detectron / onnxruntime rules: far outside -> 0; clamp at the borders.
    empty = (pos < -1.0) | (pos > size) | ~used
    pos = np.maximum(pos, 0.0)
    low = np.floor(pos).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    frac = np.where(at_end, 0.0, pos - low)
    return low, high, np.where(empty, 0.0, 1 - frac), np.where(empty, 0.0, frac), used


def _roi_bins(rois, bidx, h, w, oh, ow, sampling_ratio, offset):
    """(bins, K) flat pixel indices and weights, plus the sample mask, for a block of rois."""
    x1, y1, x2, y2 = (rois[:, i] - offset for i in range(4))
    rw, rh = x2 - x1, y2 - y1
    if offset == 0.0:  # legacy mode forces rois to be at least 1x1
        rw, rh = np.maximum(rw, 1.0), np.maximum(rh, 1.0)
    if sampling_ratio > 0:
        gh = np.full(len(rois), sampling_ratio, dtype=np.int64)
        gw = gh.copy()
    else:
        gh = np.maximum(np.ceil(rh / oh), 1).astype(np.int64)
        gw = np.maximum(np.ceil(rw / ow), 1).astype(np.int64)
    ylo, yhi, wyl, wyh, used_y = _roi_axis(y1, rh / oh, gh, oh, h)  # (R, oh, Gh)
    xlo, xhi, wxl, wxh, used_x = _roi_axis(x1, rw / ow, gw, ow, w)  # (R, ow, Gw)
    r = len(rois)
    base = (bidx * (h * w))[:, None, None, None, None]

    def grid(a, b):  # (R, oh, Gh) x (R, ow, Gw) -> (R, oh, ow, Gh, Gw)
        return a[:, :, None, :, None], b[:, None, :, None, :]

    idx, wt = [], []
    for yi, wy in ((ylo, wyl), (yhi, wyh)):
        for xi, wx in ((xlo, wxl), (xhi, wxh)):
            gy, gx = grid(yi, xi)
            idx.append(base + gy * w + gx)
            wy_, wx_ = grid(wy, wx)
            wt.append(wy_ * wx_)
    idx = np.stack(np.broadcast_arrays(*idx), axis=-1)  # (R, oh, ow, Gh, Gw, 4)
    wt = np.stack(np.broadcast_arrays(*wt), axis=-1)
    uy, ux = grid(used_y, used_x)
    used = np.broadcast_to(uy & ux, idx.shape[:-1])
    count = np.maximum(gh * gw, 1).astype(np.float64)
    k = idx.shape[3] * idx.shape[4] * 4
    return (
        idx.reshape(r * oh * ow, k),
        wt.reshape(r * oh * ow, k),
        used.reshape(r * oh * ow, -1),
        np.repeat(count, oh * ow),
    )


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
    """Bilinear RoI pooling (avg or max) to (num_rois, C, output_height, output_width).

    Opset 10 has no coordinate_transformation_mode and behaves as 'output_half_pixel'. Max mode
    takes, per sample point, the largest of the four weighted corner values (onnxruntime's rule).
    """
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
    r_all = np.asarray(rois, dtype=np.float64).reshape(-1, 4) * spatial_scale
    b_all = np.asarray(batch_indices).reshape(-1).astype(np.int64)
    if r_all.shape[0] != b_all.shape[0]:
        raise ExecutionError(
            f"RoiAlign: {r_all.shape[0]} rois but {b_all.shape[0]} batch indices; they must match"
        )
    if b_all.size and (b_all.min() < 0 or b_all.max() >= n):
        raise ExecutionError(
            f"RoiAlign: batch_indices must be in [0, {n - 1}], got {b_all.tolist()}"
        )
    offset = 0.5 if coordinate_transformation_mode == "half_pixel" else 0.0
    rows = xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1, c)  # channels last
    out = xp.zeros((r_all.shape[0] * oh * ow, c), dtype=x.dtype)
    # Rois per block from the largest sampling grid, so index arrays stay ~1M entries.
    if sampling_ratio > 0:
        k_max = sampling_ratio * sampling_ratio * 4
    else:
        ext = (r_all[:, 2:] - r_all[:, :2]).max(axis=0, initial=1.0) if r_all.size else np.ones(2)
        k_max = int(np.ceil(max(ext[1], 1) / oh) * np.ceil(max(ext[0], 1) / ow)) * 4
    per_block = max(1, _INDEX_BLOCK // max(oh * ow * k_max, 1))
    for s in range(0, r_all.shape[0], per_block):
        idx, wt, used, count = _roi_bins(
            r_all[s : s + per_block], b_all[s : s + per_block], h, w, oh, ow, sampling_ratio, offset
        )
        dst = slice(s * oh * ow, s * oh * ow + idx.shape[0])
        out[dst] = _pool_bins(xp, rows, idx, wt, used, count, mode, x.dtype)
    return (out.reshape(-1, oh, ow, c).transpose(0, 3, 1, 2).copy(),)


def _pool_bins(xp, rows, idx, wt, used, count, mode, dtype):
    """Pool gathered channel rows: (bins, K) indices/weights -> (bins, C)."""
    bins, k = idx.shape
    c = rows.shape[1]
    out = xp.empty((bins, c), dtype=dtype)
    step = max(1, _VALUE_BLOCK // max(k * c, 1))
    if mode == "avg":
        wt = wt / count[:, None]
    for s in range(0, bins, step):
        vals = xp.take(rows, xp.asarray(idx[s : s + step].reshape(-1)), axis=0).reshape(-1, k, c)
        w = xp.asarray(wt[s : s + step].astype(dtype))
        if mode == "avg":
            out[s : s + step] = xp.matmul(w[:, None, :], vals)[:, 0]
        else:
            v = (vals * w[:, :, None]).reshape(vals.shape[0], -1, 4, c).max(axis=2)
            u = xp.asarray(used[s : s + step])[:, :, None]
            out[s : s + step] = xp.where(u, v, xp.asarray(-np.inf, dtype=dtype)).max(axis=1)
    return out


# ---------------------------------------------------------------------------------------------
# NonMaxSuppression


def _corners(boxes, center_point_box):
    b = np.asarray(boxes, dtype=np.float64)
    if center_point_box:
        xc, yc, bw, bh = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
        return np.stack([yc - bh / 2, xc - bw / 2, yc + bh / 2, xc + bw / 2], axis=-1)
    y1, x1, y2, x2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    # Corners may come in either order; normalize to (ymin, xmin, ymax, xmax).
    return np.stack(
        [np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], axis=-1
    )


def _iou_matrix(a, b):
    """IoU of every box in ``a`` (A, 4) with every box in ``b`` (B, 4); 0 for empty boxes."""
    ih = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iw = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(ih, 0, None) * np.clip(iw, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    ok = (area_a[:, None] > 0) & (area_b[None, :] > 0) & (union > 0)
    return np.where(ok, inter / np.where(union > 0, union, 1.0), 0.0)


def _greedy(corners, order, max_out, iou_thr):
    """Greedy NMS over candidates in score order; returns the kept box indices.

    Candidates are taken in blocks: a block is first checked against the boxes already kept (one
    IoU matrix), then resolved among itself, visiting only the boxes that overlap an earlier box
    of the block. Work stops as soon as ``max_out`` boxes are kept.
    """
    kept: list[int] = []
    kept_boxes = np.empty((0, 4))
    pos, block = 0, 64
    while pos < order.size and len(kept) < max_out:
        cand = order[pos : pos + block]
        pos += block
        block = min(block * 2, 4096)
        boxes = corners[cand]
        if kept:
            alive = (_iou_matrix(boxes, kept_boxes) <= iou_thr).all(axis=1)
            cand, boxes = cand[alive], boxes[alive]
        if cand.size == 0:
            continue
        # over[j, i]: an earlier (better) box j of the block would suppress box i.
        over = np.triu(_iou_matrix(boxes, boxes) > iou_thr, k=1)
        keep = np.ones(cand.size, dtype=bool)
        for i in np.flatnonzero(over.any(axis=0)).tolist():  # only boxes with a rival
            keep[i] = not (over[:i, i] & keep[:i]).any()
        local = np.flatnonzero(keep)[: max_out - len(kept)]
        kept.extend(cand[local].tolist())
        kept_boxes = np.concatenate([kept_boxes, boxes[local]])
    return kept


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
    """Greedy per-batch, per-class NMS; returns (num_selected, 3) int64 [batch, class, box].

    A box is suppressed when its IoU with a kept box is strictly above iou_threshold; only scores
    strictly above score_threshold are candidates; ties in score keep the lower box index first.
    """
    max_out = int(_scalar(max_output_boxes_per_class, 0))
    iou_thr = float(_scalar(iou_threshold, 0.0))
    score_thr = _scalar(score_threshold, None)
    boxes_h = np.asarray(boxes)
    scores_h = np.asarray(scores)
    if (
        boxes_h.ndim != 3
        or boxes_h.shape[2] != 4
        or scores_h.ndim != 3
        or scores_h.shape[0] != boxes_h.shape[0]
        or scores_h.shape[2] != boxes_h.shape[1]
    ):
        raise ExecutionError(
            f"NonMaxSuppression: boxes {tuple(boxes_h.shape)} and scores {tuple(scores_h.shape)} "
            "must be (batch, boxes, 4) and (batch, classes, boxes)"
        )
    corners = _corners(boxes_h, center_point_box)
    selected = []
    if max_out > 0:
        for b in range(scores_h.shape[0]):  # batches x classes: a few independent problems
            for cls in range(scores_h.shape[1]):
                sc = scores_h[b, cls].astype(np.float64)
                cand = np.arange(sc.shape[0])
                if score_thr is not None:
                    cand = cand[sc > score_thr]
                order = cand[np.argsort(-sc[cand], kind="stable")]
                for box in _greedy(corners[b], order, max_out, iou_thr):
                    selected.append((b, cls, box))
    out = np.array(selected, dtype=np.int64).reshape(-1, 3)
    return (xp_of(boxes).asarray(out),)
