"""oneDNN convolution forward for the Conv/FusedConv kernels (pooling: ``pool.py``).

One :class:`ConvPrimitive` per (weights, input shape and layout, geometry, post-ops, precision): the
primitive descriptor lets oneDNN pick its implementation (direct/brgemm, 1x1, depthwise via
groups) and its weight layout (``format_tag_any``); the weights are reordered into that
layout once, when the primitive is built (the first run of a shape), and kept. Post-ops fused into
the convolution: bias, residual sum, ReLU and clip (ReLU6).

Activation layout. Every tensor between ops stays a numpy array with the ONNX (N, C, H, W) shape,
but a convolution may *return* it NHWC in memory (a transposed view of an (N, H, W, C) buffer):
numpy consumers see the same values, while the next convolution reads it with no reorder, as
oneDNN's AVX-512/AMX kernels prefer channels-last. Measured (2 busy cores, oneDNN 3.2): a 64-channel
3x3 conv at 56x56 took 6.1 ms from an NCHW input (reorder + conv) vs 2.2 ms from channels-last;
left to choose (``any``), oneDNN 3.2 picks the same channels-last brgemm kernels on AVX-512/AMX,
and its blocked layouts timed the same within noise, so channels-last costs nothing there and
needs no reorder at the boundaries (pools, residual adds, Flatten) either.

bf16: weights converted once, fp32 accumulation. A convolution whose readers are all bf16
convolutions hands them its output in bf16 (``out_bf16``, set by passes/fuse_conv.py): half the
memory traffic and no conversion on the next input; any other reader gets float32, and a float32
input is converted (with the layout change) before the call.
"""

from __future__ import annotations

import threading
import weakref
from ctypes import byref, c_void_p

import numpy as np

from . import dnnl

# dnnl_alg_kind_t (dnnl_types.h)
_CONV_DIRECT = 0x1
_CONV_AUTO = 0x3
_POOL_MAX = 0x1FF
_POOL_AVG_INCLUDE = 0x2FF
_POOL_AVG_EXCLUDE = 0x3FF
_FORWARD_INFERENCE = 96
_DT_UNDEF = 0


def available() -> bool:
    """Whether oneDNN convolutions can run here (library loaded, AVX-512 or AVX2 at least)."""
    return dnnl.available() and dnnl.has_isa(dnnl.ISA_AVX2)


def bf16_dtype() -> np.dtype:
    """numpy's bfloat16 (from ml_dtypes, which onnx already depends on)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def bf16_supported() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AVX512-BF16 or AMX)."""
    return dnnl.available() and dnnl.has_isa(dnnl.ISA_AVX512_CORE_BF16)


class _Attr(dnnl.Attr):
    """Primitive attributes with the sum post-op (residual add into the destination)."""

    __slots__ = ()

    def sum(self, scale: float = 1.0) -> _Attr:
        dnnl.call("dnnl_post_ops_append_sum", self._post_ops, scale, 0, _DT_UNDEF)
        return self


def is_channels_last(x: np.ndarray) -> bool:
    """Whether ``x`` (N, C, *S) lies in memory as (N, *S, C), contiguous."""
    if x.ndim < 3:
        return False
    nd = x.ndim
    return x.transpose(0, *range(2, nd), 1).flags.c_contiguous


class ConvPrimitive:
    """A oneDNN convolution (with its weights in oneDNN's layout) for one input signature.

    ``run(x, skip)`` returns ``activation(conv(x, w) + b + skip)`` as a float32 array of the ONNX
    output shape, channels-last in memory when ``channels_last_out``.
    """

    def __init__(self, x_shape, x_strides, w, b, geo, group, activation, bounds, has_skip,
                 bf16=False, channels_last_out=True, x_dtype=np.float32, out_bf16=False,
                 inplace_skip=False):  # fmt: skip
        # oneDNN sizes its work split by the thread count at creation: make it the one runs use.
        dnnl._apply_threads()
        n = x_shape[0]
        m = w.shape[0]
        out_shape = (n, m) + tuple(geo.out)
        self.out_shape = out_shape
        self.channels_last_out = channels_last_out
        self.bf16 = bf16
        self.inplace_skip = inplace_skip and has_skip
        # oneDNN's weights: (M, C/g, *K), or (g, M/g, C/g, *K) with groups.
        wdims = tuple(w.shape) if group == 1 else (group, m // group) + tuple(w.shape[1:])
        w_user = dnnl.MemoryDesc.strided(wdims, np.float32)
        x_user = dnnl.MemoryDesc.strided(x_shape, x_dtype, x_strides)
        src_any = _any(x_shape, bf16)
        wei_any = _any(wdims, bf16)
        self.out_dtype = bf16_dtype() if out_bf16 else np.dtype(np.float32)
        self._dst_user = _layout_md(out_shape, channels_last_out, self.out_dtype)
        bias_md = dnnl.MemoryDesc.strided((m,), np.float32) if b is not None else None
        attr = _Attr(user_scratchpad=True)
        if has_skip:
            attr.sum()
        if activation == "relu":
            attr.eltwise(dnnl.ELTWISE_RELU)
        elif activation == "clip":
            attr.eltwise(dnnl.ELTWISE_CLIP, float(bounds[0]), float(bounds[1]))
        elif activation:
            raise ValueError(f"oneDNN conv: unsupported fused activation {activation!r}")
        attr.finish()
        geo_args = (
            dnnl.DIMS(*geo.strides),
            dnnl.DIMS(*(d - 1 for d in geo.dilations)),  # oneDNN counts dilation from 0
            dnnl.DIMS(*geo.pads_begin),
            dnnl.DIMS(*geo.pads_end),
        )
        # The caller's layouts first: no reorder at all when a direct JIT kernel takes them
        # (measured: ResNet's 7x7 stem 4.5 ms NCHW->NHWC direct vs 7.3 ms blocked + reorder);
        # then the source's layout left to oneDNN; then both (reorders around the call).
        dst_any = dnnl.MemoryDesc.any(out_shape, self.out_dtype)
        tries = [(src_any, self._dst_user), (src_any, dst_any)]
        if bf16 == (np.dtype(x_dtype) == bf16_dtype()):  # x already in the compute type
            tries.insert(0, (x_user, self._dst_user))
        for src_try, dst_try in tries:
            self.pd = _conv_pd(src_try, wei_any, bias_md, dst_try, geo_args, attr)
            if self.pd is not None and _is_direct(self.pd.impl_name()):
                break
        else:
            self.pd = _conv_pd(src_any, wei_any, bias_md, dst_any, geo_args, attr, required=True)
        self.prim = dnnl.Primitive(self.pd)
        self.impl = self.pd.impl_name()
        src_md = self.pd.query_md(dnnl.QUERY_SRC_MD, x_shape)
        dst_md = self.pd.query_md(dnnl.QUERY_DST_MD, out_shape)
        wei_md = self.pd.query_md(dnnl.QUERY_WEIGHTS_MD, wdims)
        scratch_md = self.pd.query_md(dnnl.QUERY_SCRATCHPAD_MD, (0,))
        self._scratch_bytes = scratch_md.nbytes
        # Weights (and bias) into the primitive's layout, once.
        self._w = _packed_weights(w, w_user, wei_md)
        self._b = None if b is None else np.ascontiguousarray(b, dtype=np.float32)
        # Source: straight from the caller's array when the layout matches, else a reorder.
        self._src_reorder = None if src_md == x_user else _Reorder(x_user, src_md)
        self._dst_reorder = None if dst_md == self._dst_user else _Reorder(dst_md, self._dst_user)
        self._src_md, self._dst_md = src_md, dst_md
        self._mem = {
            dnnl.ARG_SRC: dnnl.Memory(src_md),
            dnnl.ARG_WEIGHTS: dnnl.Memory(wei_md, self._w),
            dnnl.ARG_DST: dnnl.Memory(dst_md),
            dnnl.ARG_SCRATCHPAD: dnnl.Memory(scratch_md),
        }
        if self._b is not None:
            self._mem[dnnl.ARG_BIAS] = dnnl.Memory(bias_md, self._b)
        self._args = dnnl.Primitive.args(self._mem)
        self._attr = attr
        self._lock = threading.Lock()
        self._bind_run(x_shape, channels_last_out)

    def run(self, x: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        """The convolution of ``x`` (same shape and strides as at creation) plus ``skip``.

        Per call this is a few microseconds of Python: the memory objects, argument array and
        scratchpad are made once; each run only points the memories at this call's buffers.
        With ``inplace_skip``, a ``skip`` already in the output's layout and dtype is the output.
        """
        if (
            self.inplace_skip
            and self._dst_reorder is None
            and skip.dtype == self.out_dtype
            and skip.strides == self._y_strides
            and skip.flags.writeable
            and not np.may_share_memory(x, skip)  # bounds only: cheap, and never a false "no"
        ):
            return self._run_into(x, skip)
        buf = np.empty(self._buf_shape, dtype=self.out_dtype)
        y = buf.transpose(self._perm) if self._perm is not None else buf
        set_handle = self._set_handle
        with self._lock:
            if self._src_reorder is None:
                set_handle(self._src_h, _ptr(x))
            else:
                set_handle(self._src_h, _ptr(self._src_reorder.run(x)))
            if self._dst_reorder is None:
                if skip is not None:
                    # The sum post-op adds what dst holds before the run.
                    np.copyto(y, skip, casting="unsafe")
                set_handle(self._dst_h, _ptr(buf))
                self.prim.execute_args(self._args)
            else:
                dst = dnnl.aligned_empty(self._dst_md.nbytes)
                if skip is not None:
                    np.copyto(y, skip, casting="unsafe")
                    self._dst_reorder.run_back(y, dst)
                set_handle(self._dst_h, _ptr(dst))
                self.prim.execute_args(self._args)
                self._dst_reorder.run(dst, y)
        return y

    def _run_into(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The convolution plus ``y`` (the residual, dead after this node) written over ``y``:
        no copy of the residual into a fresh destination."""
        with self._lock:
            if self._src_reorder is None:
                self._set_handle(self._src_h, _ptr(x))
            else:
                self._set_handle(self._src_h, _ptr(self._src_reorder.run(x)))
            self._set_handle(self._dst_h, _ptr(y))
            self.prim.execute_args(self._args)
        return y

    def _bind_run(self, x_shape, channels_last_out: bool) -> None:
        """Precompute what ``run`` needs: raw handles, the output buffer's shape and view."""
        nd = len(self.out_shape)
        if channels_last_out:
            n, c, *sp = self.out_shape
            self._buf_shape = (n, *sp, c)
            self._perm = (0, nd - 1, *range(1, nd - 1))
        else:
            self._buf_shape, self._perm = self.out_shape, None
        # The strides of the view ``run`` returns: a residual with these can take the result.
        buf_strides, acc = [], self.out_dtype.itemsize
        for d in reversed(self._buf_shape):
            buf_strides.insert(0, acc)
            acc *= d
        perm = self._perm or range(nd)
        self._y_strides = tuple(buf_strides[i] for i in perm)
        self._set_handle = dnnl.lib().dnnl_memory_set_data_handle
        self._src_h = self._mem[dnnl.ARG_SRC].handle
        self._dst_h = self._mem[dnnl.ARG_DST].handle
        # The scratchpad is only used inside a run, which holds the lock: one per primitive.
        self._scratch = dnnl.aligned_empty(max(self._scratch_bytes, 1))
        self._mem[dnnl.ARG_SCRATCHPAD].rebind(self._scratch)


class _Reorder:
    """A cached reorder primitive between two layouts (and data types) of one tensor."""

    def __init__(self, src_md: dnnl.MemoryDesc, dst_md: dnnl.MemoryDesc):
        self.src_md, self.dst_md = src_md, dst_md
        self._fwd = self._back = None
        self._lock = threading.Lock()

    def _prim(self, a, b):
        pd = dnnl.PrimitiveDesc(
            "dnnl_reorder_primitive_desc_create", a, dnnl.engine(), b, dnnl.engine(), None
        )
        mem = {dnnl.ARG_FROM: dnnl.Memory(a), dnnl.ARG_TO: dnnl.Memory(b)}
        return dnnl.Primitive(pd), mem, dnnl.Primitive.args(mem)

    def run(self, src: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        """``src`` (laid out as src_md) into ``dst`` (default: a fresh buffer) as dst_md."""
        if self._fwd is None:
            self._fwd = self._prim(self.src_md, self.dst_md)
        return self._exec(self._fwd, src, dst, self.dst_md)

    def run_back(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """The reverse direction: ``src`` laid out as dst_md into ``dst`` laid out as src_md."""
        if self._back is None:
            self._back = self._prim(self.dst_md, self.src_md)
        return self._exec(self._back, src, dst, self.src_md)

    def _exec(self, p, src, dst, dst_md):
        prim, mem, args = p
        if dst is None:
            dst = dnnl.aligned_empty(dst_md.nbytes)
        with self._lock:
            mem[dnnl.ARG_FROM].rebind(src)
            mem[dnnl.ARG_TO].rebind(dst)
            prim.execute_args(args)
        return dst


def _conv_pd(src, wei, bias_md, dst, geo_args, attr, required=False):
    """A forward-inference convolution descriptor, or None when oneDNN has no implementation for
    these layouts (unless ``required``: then its error propagates)."""
    try:
        return dnnl.PrimitiveDesc(
            "dnnl_convolution_forward_primitive_desc_create",
            dnnl.engine(), _FORWARD_INFERENCE, _CONV_DIRECT,
            src, wei, bias_md, dst, *geo_args, attr,
        )  # fmt: skip
    except dnnl.DnnlError:
        if required:
            raise
        return None


def _is_direct(impl: str) -> bool:
    """A JIT direct kernel (not the im2col GEMM or reference fallbacks). ``jit_dw`` is oneDNN
    3.2's only bf16-to-bf16 depthwise kernel: without it here, each bf16 depthwise convolution
    went through every layout try before settling on it."""
    return impl.startswith(("jit:", "jit_dw:", "brg", "brdgmm")) and "gemm" not in impl


# An array's address: 0.25 us against 1.8 us for ``.ctypes.data``, x2-3 per convolution.
_ptr = dnnl.data_ptr


def _any(shape, bf16: bool) -> dnnl.MemoryDesc:
    """A format-``any`` descriptor (float32, or bf16 given by its dnnl code)."""
    if not bf16:
        return dnnl.MemoryDesc.any(shape, np.float32)
    h = c_void_p()
    dnnl.call(
        "dnnl_memory_desc_create_with_tag",
        byref(h), len(shape), dnnl.DIMS(*shape), dnnl.DT_BF16, dnnl.FORMAT_TAG_ANY,
    )  # fmt: skip
    return dnnl.MemoryDesc(h, tuple(shape))


def _layout_md(shape, channels_last: bool, dtype=np.float32) -> dnnl.MemoryDesc:
    """Float32 (N, C, *S) descriptor, NCHW or channels-last in memory."""
    if not channels_last:
        return dnnl.MemoryDesc.strided(shape, dtype)
    n, c, *sp = shape
    strides_nhwc = [0] * len(shape)
    acc = c
    strides_nhwc[1] = 1
    for i in range(len(shape) - 1, 1, -1):
        strides_nhwc[i] = acc
        acc *= shape[i]
    strides_nhwc[0] = acc
    return dnnl.MemoryDesc.strided(shape, dtype, tuple(strides_nhwc))


# --- the cache -----------------------------------------------------------------------------------
# Keyed by the identity of the weights and of the node's attribute objects (the plan binds each
# node's attributes once, so they are the same objects on every run) plus the input's shape and
# strides: a hit costs one dict lookup, no geometry. Each entry holds the attribute objects, so
# their ids cannot be reused while it lives; entries of a weight go when it is garbage-collected.
_cache: dict[tuple, tuple[ConvPrimitive | None, tuple]] = {}
_cache_lock = threading.Lock()
_MAX_PER_WEIGHT = 16  # a weight called with ever new attribute objects: start over past this
# Reordered weights per id(w), shared by every primitive of that weight whose layout is the same
# (a model run at several input sizes keeps one copy, not one per size).
_packed: dict[int, list[tuple[dnnl.MemoryDesc, np.ndarray]]] = {}


def _packed_weights(w, w_user, wei_md) -> np.ndarray:
    with _cache_lock:
        for md, buf in _packed.get(id(w), ()):
            if md == wei_md:
                return buf
    buf = dnnl.reorder(np.ascontiguousarray(w, dtype=np.float32), w_user, wei_md)
    with _cache_lock:
        _packed.setdefault(id(w), []).append((wei_md, buf))
    return buf


def _forget(wid: int) -> None:
    with _cache_lock:
        for key in [k for k in _cache if k[0] == wid]:
            del _cache[key]
        _packed.pop(wid, None)


def lookup(key: tuple) -> tuple[ConvPrimitive | None, tuple] | None:
    """(primitive or None if oneDNN cannot run it, kept objects) stored under ``key`` (its first
    item is ``id(w)``), or None when nothing is stored yet."""
    return _cache.get(key)


def build(key, x, w, b, geo, group, *, activation="", bounds=(None, None), has_skip=False,
          bf16=False, channels_last_out=True, out_bf16=False, inplace_skip=False,
          keep=()) -> ConvPrimitive | None:  # fmt: skip
    """Make the primitive for these arguments and store it under ``key`` (see ``lookup``);
    ``keep``: the objects whose ids the key holds (besides ``w``). Returns None, and remembers
    it, when oneDNN has no implementation for this convolution (the caller runs numpy's).
    ``inplace_skip``: the residual dies at this node, its buffer may take the result."""
    isz = x.itemsize
    try:
        prim = ConvPrimitive(
            x.shape, tuple(s // isz for s in x.strides), w, b, geo, group, activation, bounds,
            has_skip, bf16=bf16, channels_last_out=channels_last_out, x_dtype=x.dtype,
            out_bf16=out_bf16, inplace_skip=inplace_skip,
        )  # fmt: skip
    except dnnl.DnnlError:
        prim = None
    wid = id(w)
    with _cache_lock:
        mine = [k for k in _cache if k[0] == wid]
        if not mine:
            weakref.finalize(w, _forget, wid)
        elif len(mine) >= _MAX_PER_WEIGHT:
            for k in mine:
                del _cache[k]
            _packed.pop(wid, None)
        _cache[key] = (prim, (b, *keep))
    return prim
