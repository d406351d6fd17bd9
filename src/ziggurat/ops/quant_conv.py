"""N-D convolution by im2col for the quantized conv ops (exact when run in float64)."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError


def _resolve_pads(auto_pad: str, in_shape, k_ext, strides, pads) -> list[int]:
    """Begin pads followed by end pads, as in the ONNX ``pads`` attribute."""
    n = len(in_shape)
    if auto_pad in ("NOTSET", "", None):
        if len(pads) != 2 * n:
            raise ExecutionError(
                f"pads has {len(pads)} values; expected {2 * n} (begin and end per spatial axis)"
            )
        return [int(p) for p in pads]
    if auto_pad == "VALID":
        return [0] * (2 * n)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ExecutionError(
            f"auto_pad is {auto_pad!r}; expected NOTSET, SAME_UPPER, SAME_LOWER or VALID"
        )
    begin, end = [], []
    for size, ext, s in zip(in_shape, k_ext, strides):
        out = -(-size // s)
        total = max(0, (out - 1) * s + ext - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin + end


def conv_nd(x, w, *, auto_pad="NOTSET", dilations, group, pads, strides):
    """Grouped N-D cross-correlation of x [N, C, *S] with w [M, C/group, *K] -> [N, M, *out]."""
    xp = xp_of(x)
    n_sp = x.ndim - 2
    N, C = x.shape[:2]
    M, Cg = w.shape[:2]
    ksize = w.shape[2:]
    if C != Cg * group:
        raise ExecutionError(
            f"x has {C} channels but w expects {Cg} per group x {group} groups = {Cg * group}"
        )
    k_ext = [(k - 1) * d + 1 for k, d in zip(ksize, dilations)]
    p = _resolve_pads(auto_pad, x.shape[2:], k_ext, strides, pads)
    xpad = xp.pad(x, [(0, 0), (0, 0)] + [(p[i], p[i + n_sp]) for i in range(n_sp)])
    axes = tuple(range(2, 2 + n_sp))
    win = xp.lib.stride_tricks.sliding_window_view(xpad, k_ext, axis=axes)  # [N, C, *full, *ext]
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
    sl += tuple(slice(None, None, d) for d in dilations)
    cols = win[sl]  # [N, C, *out, *K]
    out_sp = cols.shape[2 : 2 + n_sp]
    # -> [N, G, *out, Cg * prod(K)] against w -> [G, Cg * prod(K), M/G]
    cols = cols.reshape((N, group, Cg) + out_sp + tuple(ksize))
    order = (0, 1) + tuple(range(3, 3 + n_sp)) + (2,) + tuple(range(3 + n_sp, 3 + 2 * n_sp))
    cols = xp.transpose(cols, order).reshape((N, group, int(np.prod(out_sp, dtype=np.int64)), -1))
    wg = xp.transpose(w.reshape(group, M // group, -1), (0, 2, 1))
    y = cols @ wg[None]  # [N, G, P, M/G]
    y = xp.transpose(y, (0, 1, 3, 2)).reshape((N, M) + tuple(out_sp))
    return y
