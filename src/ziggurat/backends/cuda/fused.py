"""The CUDA backend's native overrides of the hot fused ops (raw kernels from ``sources.py``).

Each override handles the common layout (contiguous float32/float16 rows, same-shape residual,
a 4-D attention mask that broadcasts) and hands anything else to the shared array kernel it
replaces, so the semantics stay those of ``xp_kernels``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..kernels import KernelTable
from ..xp_kernels import ARRAY_KERNELS, floats_only

_FAST = (np.dtype(np.float32), np.dtype(np.float16))
_elementwise: dict[str, Any] = {}


def _generic(op: str, domain: str) -> Any:
    for o, d, _, fn, _ in ARRAY_KERNELS:
        if (o, d) == (op, domain):
            return fn
    raise KeyError(op)


def elementwise(name: str) -> Any:
    """CuPy ElementwiseKernel ``name`` (compiled per dtype by CuPy on first call)."""
    k = _elementwise.get(name)
    if k is None:
        import cupy

        from .sources import ELEMENTWISE

        ins, outs, body = ELEMENTWISE[name]
        k = cupy.ElementwiseKernel(ins, outs, body, f"ziggurat_{name}")
        _elementwise[name] = k
    return k


def _rows(x: Any, n_axes: int) -> tuple[int, int]:
    cols = math.prod(x.shape[x.ndim - n_axes :])
    return (x.size // cols if cols else 0), cols


def skip_layer_norm(backend: Any, inputs: list, attrs: dict) -> list:
    import cupy

    a, b, gamma = inputs[0], inputs[1], inputs[2]
    beta = inputs[3] if len(inputs) > 3 else None
    axis = attrs.get("axis", -1)
    axis = axis + a.ndim if axis < 0 else axis
    if a.dtype not in _FAST or b.shape != a.shape or b.dtype != a.dtype:
        return _generic("SkipLayerNorm", "ziggurat")(backend.ns, inputs, attrs)
    two = attrs.get("n_outputs", 1) >= 2
    return _layer_norm_rows(backend, a, b, gamma, beta, a.ndim - axis, attrs, two, cupy)


def layer_norm(backend: Any, inputs: list, attrs: dict) -> list:
    import cupy

    x, gamma = inputs[0], inputs[1]
    beta = inputs[2] if len(inputs) > 2 else None
    if x.dtype not in _FAST:
        return _generic("LayerNorm", "ziggurat")(backend.ns, inputs, attrs)
    return _layer_norm_rows(backend, x, None, gamma, beta, 1, attrs, False, cupy)


def _layer_norm_rows(backend, a, b, gamma, beta, n_axes, attrs, two, cupy) -> list:
    a = cupy.ascontiguousarray(a)
    b = cupy.ascontiguousarray(b) if b is not None else a
    gamma = cupy.ascontiguousarray(gamma.astype(a.dtype, copy=False)).reshape(-1)
    beta_c = gamma if beta is None else cupy.ascontiguousarray(beta.astype(a.dtype, copy=False))
    rows, cols = _rows(a, n_axes)
    y = cupy.empty_like(a)
    s = cupy.empty_like(a) if two else y
    eps = np.float32(attrs.get("epsilon", 1e-5))
    args = (
        a, b, gamma, beta_c, y, s, np.int32(cols), eps,
        np.int32(b is not a), np.int32(beta is not None), np.int32(two),
    )  # fmt: skip
    if rows:
        backend.launch_rows("skip_layer_norm", a.dtype, rows, args)
    return [y, s] if two else [y]


def attention(backend: Any, inputs: list, attrs: dict) -> list:
    """softmax(scale * q @ k_t + mask) @ v: two cuBLAS products around one fused softmax."""
    import cupy

    q, k_t, v = inputs[0], inputs[1], inputs[2]
    mask = inputs[3] if len(inputs) > 3 else None
    scores = cupy.matmul(q, k_t)
    if scores.dtype not in _FAST or scores.ndim != 4 or (mask is not None and mask.ndim > 4):
        return _generic("FusedAttention", "ziggurat")(backend.ns, inputs, attrs)
    p = scaled_masked_softmax(backend, scores, mask, attrs.get("scale", 1.0), attrs)
    return [cupy.matmul(p, v)]


def scaled_masked_softmax(backend: Any, scores: Any, mask: Any, scale: float, attrs: dict) -> Any:
    """softmax(scale * scores + mask) over the last axis of 4-D ``scores`` (B, H, S, T)."""
    import cupy

    B, H, S, T = scores.shape
    scores = cupy.ascontiguousarray(scores)
    y = cupy.empty_like(scores)
    if mask is not None:
        mask = mask.astype(scores.dtype, copy=False)
        full = cupy.broadcast_to(mask, scores.shape)  # a view: strides 0 where it broadcasts
        mb, mh, ms, mc = (st // full.itemsize for st in full.strides)
        m = mask
    else:
        mb = mh = ms = mc = 0
        m = scores
    args = (
        scores, m, y, np.int32(T), np.int32(H), np.int32(S),
        np.int64(mb), np.int64(mh), np.int64(ms), np.int64(mc),
        np.float32(scale), np.int32(mask is not None), np.int32(attrs.get("nan_to_zero", 0)),
    )  # fmt: skip
    if y.size:
        backend.launch_rows("scaled_masked_softmax", scores.dtype, B * H * S, args)
    return y


def softmax(backend: Any, inputs: list, attrs: dict) -> list:
    x = inputs[0]
    axis = attrs.get("axis", -1)
    if x.dtype not in _FAST or axis not in (-1, x.ndim - 1) or x.ndim == 0:
        return _generic("Softmax", "")(backend.ns, inputs, attrs)
    rows = x.size // x.shape[-1] if x.shape[-1] else 0
    y4 = scaled_masked_softmax(backend, x.reshape(1, 1, rows, x.shape[-1]), None, 1.0, {})
    return [y4.reshape(x.shape)]


def dense(backend: Any, inputs: list, attrs: dict) -> list:
    """x @ w (cuBLAS) with the bias and activation in one elementwise pass."""
    import cupy

    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    act = attrs.get("activation", "")
    if b is None or act not in ("gelu", "relu") or x.dtype not in _FAST:
        return _generic("Dense", "ziggurat")(backend.ns, inputs, attrs)
    y = cupy.matmul(x, w)
    return [elementwise(f"bias_{act}")(y, b.astype(y.dtype, copy=False))]


def gelu(backend: Any, inputs: list, attrs: dict) -> list:
    x = inputs[0]
    if x.dtype not in _FAST:
        return _generic("Gelu", "ziggurat")(backend.ns, inputs, attrs)
    return [elementwise("gelu")(x)]


def register(table: KernelTable, backend: Any) -> None:
    """Add the overrides to ``table`` (registered after the array kernels: they win)."""
    from ..xp_kernels import ARRAY_KERNELS as kernels

    supports = {(o, d): s for o, d, _, _, s in kernels}
    for op, domain, fn in (
        ("SkipLayerNorm", "ziggurat", skip_layer_norm),
        ("LayerNorm", "ziggurat", layer_norm),
        ("FusedAttention", "ziggurat", attention),
        ("Softmax", "", softmax),
        ("Dense", "ziggurat", dense),
        ("Gelu", "ziggurat", gelu),
    ):
        since = 13 if op == "Softmax" else 1
        table.kernel(op, domain=domain, since=since, supports=supports.get((op, domain)))(fn)


__all__ = ["floats_only", "register"]
