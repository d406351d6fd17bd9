"""oneDNN max and average pooling for ops/pool.py (float32 or bf16, 1-3 spatial axes).

The output keeps the input's layout: a channels-last activation from a convolution stays
channels-last for the next one (measured on ResNet-50's stem MaxPool under load: numpy's separable
reduction over the strided channels-last input took ~11 ms, oneDNN well under 1 ms), and bf16 stays
bf16. Primitives are cached per (input shape, strides, dtype, geometry, algorithm).
"""

from __future__ import annotations

import threading

import numpy as np

from . import dnnl

_POOL_MAX = 0x1FF
_POOL_AVG_INCLUDE = 0x2FF
_POOL_AVG_EXCLUDE = 0x3FF
_FORWARD_INFERENCE = 96
_ALGS = {"max": _POOL_MAX, "avg_include": _POOL_AVG_INCLUDE, "avg_exclude": _POOL_AVG_EXCLUDE}


class PoolPrimitive:
    """One pooling primitive; ``run(x)`` returns a fresh output in ``x``'s layout and dtype."""

    def __init__(self, x: np.ndarray, geo, alg: str):
        dnnl._apply_threads()  # oneDNN splits the work by the thread count at creation
        n, c = x.shape[:2]
        out_shape = (n, c) + tuple(geo.out)
        perm = np.argsort([-s for s in x.strides], kind="stable")  # x's axes, outermost first
        self._buf_shape = tuple(out_shape[i] for i in perm)
        self._perm = tuple(int(i) for i in np.argsort(perm))
        isz = x.itemsize
        strides = np.empty(len(out_shape), dtype=np.int64)
        acc = 1
        for i in reversed(perm):
            strides[i] = acc
            acc *= out_shape[i]
        self.dtype = x.dtype
        src_md = dnnl.MemoryDesc.strided(x.shape, x.dtype, tuple(s // isz for s in x.strides))
        dst_md = dnnl.MemoryDesc.strided(out_shape, x.dtype, tuple(int(s) for s in strides))
        self.pd = dnnl.PrimitiveDesc(
            "dnnl_pooling_forward_primitive_desc_create",
            dnnl.engine(), _FORWARD_INFERENCE, _ALGS[alg], src_md, dst_md,
            dnnl.DIMS(*geo.strides), dnnl.DIMS(*geo.kernel),
            dnnl.DIMS(*(d - 1 for d in geo.dilations)),  # oneDNN counts dilation from 0
            dnnl.DIMS(*geo.pads_begin), dnnl.DIMS(*geo.buf_end), None,
        )  # fmt: skip
        self.impl = self.pd.impl_name()
        self.prim = dnnl.Primitive(self.pd)
        self._mem = {dnnl.ARG_SRC: dnnl.Memory(src_md), dnnl.ARG_DST: dnnl.Memory(dst_md)}
        self._args = dnnl.Primitive.args(self._mem)
        self._src_h = self._mem[dnnl.ARG_SRC].handle
        self._dst_h = self._mem[dnnl.ARG_DST].handle
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> np.ndarray:
        buf = np.empty(self._buf_shape, dtype=self.dtype)
        set_handle = dnnl.lib().dnnl_memory_set_data_handle
        with self._lock:  # the memories hold this call's buffers only while it runs
            set_handle(self._src_h, dnnl.data_ptr(x))
            set_handle(self._dst_h, dnnl.data_ptr(buf))
            self.prim.execute_args(self._args)
        return buf.transpose(self._perm)


_cache: dict[tuple, PoolPrimitive] = {}


def _dense(x: np.ndarray) -> bool:
    """Whether ``x`` covers its memory exactly in some axis order (C order or channels-last)."""
    if x.flags.c_contiguous:
        return True
    nd = x.ndim
    return x.transpose(0, *range(2, nd), 1).flags.c_contiguous


def usable(x) -> bool:
    """Whether oneDNN can pool ``x``: a dense float32/bf16 numpy array of rank 3-5."""
    if type(x) is not np.ndarray or not 3 <= x.ndim <= 5 or not _dense(x):
        return False
    if x.dtype != np.float32 and x.dtype.name != "bfloat16":
        return False
    from . import conv

    return conv.available()


def pool(x: np.ndarray, geo, alg: str) -> np.ndarray:
    """Max ('max') or average ('avg_include'/'avg_exclude' padding) pooling of ``x``."""
    key = (x.shape, x.strides, x.dtype, geo, alg)
    prim = _cache.get(key)
    if prim is None:
        if len(_cache) > 256:  # shapes of a dynamic model: start over rather than grow
            _cache.clear()
        prim = _cache[key] = PoolPrimitive(x, geo, alg)
    return prim.run(x)
