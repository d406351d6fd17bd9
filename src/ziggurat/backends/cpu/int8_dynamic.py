"""``ziggurat::DynamicQDense`` on oneDNN: quantize a float32 activation to uint8 from its own range
and multiply it with packed int8 weights, with as little Python per call as possible.

It runs the primitives ``int8.quantize_u8`` and ``int8.matmul_u8s8`` run, one after the other
(so the same values bit for bit), but each is bound once per thread with its constant operands
(packed weights, weight scales, bias) already in place and the activation's scale and zero point
in one-element arrays overwritten in place: a call re-points at most its two variable buffers
(and only when their address changed) instead of four to seven, with no per-call array
conversions. Re-pointing one handle costs about 0.5-1.5 us of Python; BERT-base runs 49 int8
GEMMs, each with two primitives.

Only for weights packed by ``passes/pack_int8.py`` (``int8.PackedInt8``: they exist only where
the int8 matmul runs natively); ``dense`` returns None for anything else and the caller takes the
generic way.
"""

from __future__ import annotations

import threading

import numpy as np

from . import dnnl, int8

_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)
_S32 = np.dtype(np.int32)
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce
_F32_ZERO, _F32_255 = np.float32(0), np.float32(255)
_lock = threading.Lock()


class _Bound:
    """A primitive whose execute arguments are built once per thread: the constant operands bound
    at creation, the per-call scale and zero point in per-thread one-element arrays."""

    __slots__ = ("prim", "mds", "roles", "consts", "keep", "local")

    def __init__(self, prim, mds: dict, roles: tuple, consts: dict, keep=None):
        """``prim``: a dnnl.Primitive (safe to share between threads); ``mds``: argument ->
        (MemoryDesc, numpy dtype); ``roles``: the arguments of (source, destination, scale, zero
        point); ``consts``: argument -> array bound for good; ``keep``: anything to keep alive."""
        self.prim, self.mds, self.roles, self.consts, self.keep = prim, mds, roles, consts, keep
        self.local = threading.local()

    def _state(self):
        mems = {k: dnnl.Memory(md) for k, (md, _) in self.mds.items()}
        for k, arr in self.consts.items():
            mems[k].rebind(arr)  # Memory keeps a reference to the array
        src, dst, scale, zp = self.roles
        s = np.zeros(1, self.mds[scale][1])
        z = np.zeros(1, self.mds[zp][1])
        mems[scale].rebind(s)
        mems[zp].rebind(z)
        # [args, source handle, destination handle, scale, zero point, where the two point now]
        st = [dnnl.ExecArgs(mems), mems[src].handle, mems[dst].handle, s, z, 0, 0]
        self.local.st = st
        return st

    def run(self, src: np.ndarray, dst: np.ndarray, scale, zp) -> None:
        st = getattr(self.local, "st", None) or self._state()
        args, h_src, h_dst, s, z, p_src, p_dst = st
        s[0] = scale
        z[0] = zp
        set_handle = dnnl.lib().dnnl_memory_set_data_handle
        p = dnnl.data_ptr(src)  # the caller holds src and dst meanwhile
        if p != p_src:  # numpy's allocator often hands back the same buffer
            set_handle(h_src, p)
            st[5] = p
        p = dnnl.data_ptr(dst)
        if p != p_dst:
            set_handle(h_dst, p)
            st[6] = p
        self.prim.execute_args(args)


_quantizers: dict[int, _Bound] = {}


def _quantizer(n: int) -> _Bound:
    """x (n float32) -> saturate_u8(round_half_even(x / scale) + zp): int8.quantize_u8's primitive."""
    b = _quantizers.get(n)
    if b is None:
        pd, mds = int8.quantize_pd(n)
        prim = dnnl.Primitive(pd)
        roles = (dnnl.ARG_SRC, dnnl.ARG_DST, dnnl.ARG_SRC_1, dnnl.ARG_POST_OP(1) | dnnl.ARG_SRC_1)
        typed = {k: (md, _U8 if k == dnnl.ARG_DST else _F32) for k, md in mds.items()}
        b = _Bound(prim, typed, roles, {})
        with _lock:
            if len(_quantizers) > 512:  # bounded however many shapes a server sees
                _quantizers.clear()
            b = _quantizers.setdefault(n, b)
    return b


def _matmul(w, m: int, ws: np.ndarray, bias, activation: str) -> _Bound:
    """(m, K) uint8 x packed ``w`` -> (m, N) float32 with ``ws``, ``bias`` and ``activation``
    bound: cached with the weight, keyed by the constant operands' identity (kept alive here)."""
    key = ("dynamic", m, id(ws), id(bias), activation)
    b = w._plans.get(key)
    if b is None:
        k, n = w.shape
        ws_c = np.ascontiguousarray(ws, _F32).reshape(-1)
        plan = int8._plan(w, m, ws_c.size, bias is not None, activation)
        types = {
            dnnl.ARG_SRC: _U8,
            dnnl.ARG_DST: _F32,
            int8._ARG_ATTR_SCALES | dnnl.ARG_SRC: _F32,
            int8._ARG_ATTR_ZERO_POINTS | dnnl.ARG_SRC: _S32,
        }
        mds = {a: (md, types.get(a)) for a, md in plan.mds.items()}
        consts = {
            dnnl.ARG_WEIGHTS: w._buf,
            int8._ARG_ATTR_SCALES | dnnl.ARG_WEIGHTS: ws_c,
        }
        if bias is not None:
            consts[dnnl.ARG_BIAS] = np.ascontiguousarray(bias, _F32).reshape(-1)
        roles = (
            dnnl.ARG_SRC,
            dnnl.ARG_DST,
            int8._ARG_ATTR_SCALES | dnnl.ARG_SRC,
            int8._ARG_ATTR_ZERO_POINTS | dnnl.ARG_SRC,
        )
        # keep (ws, bias): the identities in the key stay valid while this entry lives
        b = _Bound(plan.prim, mds, roles, consts, keep=(ws, bias))
        with _lock:
            if len(w._plans) > 64:
                w._plans.clear()
            b = w._plans.setdefault(key, b)
    return b


def dense(x, w, w_scale, bias=None, activation: str = ""):
    """``activation(DynamicQuantizeLinear(x) @ w * scales + bias)`` for a C-contiguous float32
    ``x`` (..., K) and a ``PackedInt8`` ``w`` (K, N) with zero point 0; ``w_scale``: one float
    or N; ``bias``: None or N floats; ``activation``: '', 'relu' or 'gelu' (erf). The activation
    is quantized as ``quant.dynamic_quantize_u8`` does it (onnxruntime's rule: range widened to
    include 0, scale (hi - lo) / 255, zero point rint(-lo / scale), x / scale rounded half to
    even). Returns a fresh float32 (..., N) array, or None when this path does not apply."""
    if (
        type(x) is not np.ndarray
        or type(w) is not int8.PackedInt8
        or x.dtype != _F32
        or not x.flags.c_contiguous
        or not x.size
        or x.ndim < 1
        or x.shape[-1] != w.shape[0]
        or np.size(w_scale) not in (1, w.shape[1])
        or (bias is not None and np.size(bias) != w.shape[1])
    ):
        return None
    lo = min(_MIN(x, axis=None), _F32_ZERO)
    hi = max(_MAX(x, axis=None), _F32_ZERO)
    scale = np.float32((np.float32(hi) - np.float32(lo)) / _F32_255)
    qa = np.empty(x.shape, _U8)
    if scale == 0:  # all zeros: onnxruntime's scale 1, zero point 0
        qa.fill(0)
        scale, zp = np.float32(1), np.float32(0)
    else:
        zp = np.float32(min(max(np.rint(-np.float32(lo) / scale), 0), 255))
        _quantizer(x.size).run(x, qa, scale, zp)
    m = x.size // x.shape[-1]
    y = np.empty((*x.shape[:-1], w.shape[1]), _F32)
    _matmul(w, m, w_scale, bias, activation).run(qa, y, scale, zp)
    return y
