"""Matrix products through oneDNN's matmul primitive, with bias and activation fused as post-ops.

Why oneDNN and where. Measured with ``benchmarks/gemm.py`` on the 2-core Xeon (AVX-512, AMX) this
was written on, 2 threads, each variant in its own process; dense = GEMM + bias (+ erf-GELU where
marked); best / median of 60 repeats at a quiet moment (load average ~4), and the medians we saw
while other jobs kept the machine busy (load average 10-15):

========================  =====================  =====================  ==================  ============
GEMM (M x K x N)          numpy (OpenBLAS)       oneDNN fp32 in place   oneDNN fp32 packed  oneDNN bf16
                          quiet / busy median    quiet / busy median    quiet / busy        quiet
========================  =====================  =====================  ==================  ============
128x768x768 (BERT QKV)    0.55-0.58 / 0.6-48 ms  0.39-0.42 / 0.8-3 ms   0.36-0.39 / 0.8     0.11 ms
128x768x3072 + GELU       2.97-3.13 / 14-160 ms  4.39-4.49 (aliasing)   1.45-1.53 / 5-28    0.43 ms
128x3072x768 (FFN down)   1.99-2.08 / 14-400 ms  1.62-1.72 / 8-16 ms    1.56-1.61 / 6-20    0.41 ms
1x784x128 + ReLU (MLP)    7-9 us (gemv)          23 us                  23 us               28 us
========================  =====================  =====================  ==================  ============

- fp32: oneDNN is 1.2-2x faster than OpenBLAS on BERT's shapes once the erf-GELU is fused into
  the GEMM, and its medians under load stayed within 2-10x of quiet where OpenBLAS's went 20-200x
  (its threads spin and yield against other processes). Weights whose row stride is a multiple of
  4 KiB alias in the cache when read in place (the 768x3072 FFN weight: 4.4 vs 1.5 ms), and packed
  weights were 10-25 % faster for the other shapes too in a later quiet measurement (table in
  passes/pack_weights.py), so every Dense weight of >= 2^18 elements is packed at session creation.
- Tiny products (< ``MIN_MACS`` multiply-adds, e.g. the 784-128-10 MLP): OpenMP's fork/join and the
  ctypes calls (10-30 us) cost more than the product; numpy's gemv stays.
- bf16 (``precision="bf16"``): AMX tiles (or AVX512-BF16) with fp32 accumulation run the BERT
  GEMMs 3-4x faster than packed fp32, on weights converted once and stored in oneDNN's blocked layout
  (``PackedWeight``), which is the only copy the session keeps.

Every entry point returns None when oneDNN cannot run the case, and the caller computes it with
numpy; results agree within float32 rounding (fp32) or bf16 input rounding (bf16).
"""

from __future__ import annotations

import threading

import numpy as np

from ...errors import ConfigError
from . import dnnl

# Below this many multiply-adds, numpy (gemv/OpenBLAS) wins: see the table above.
MIN_MACS = 1 << 18
_ACTIVATIONS = {
    "relu": dnnl.ELTWISE_RELU,
    "gelu": dnnl.ELTWISE_GELU_ERF,
    "gelu_tanh": dnnl.ELTWISE_GELU_TANH,
    "clip": dnnl.ELTWISE_CLIP,
}
_F32 = np.dtype(np.float32)
_lock = threading.Lock()


class Bf16UnsupportedError(ConfigError):
    """``precision="bf16"`` asked for on a CPU (or build) that cannot run bf16 GEMMs."""


def _bf16_dtype() -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_supported() -> bool:
    """Whether bf16 GEMMs run natively here: oneDNN loaded and the CPU has AVX512-BF16 or AMX."""
    return dnnl.available() and dnnl.has_isa(dnnl.ISA_AVX512_CORE_BF16)


def require_bf16(what: str = "precision='bf16'") -> None:
    """Raise Bf16UnsupportedError, saying which CPU flags are needed, unless bf16 can run."""
    if bf16_supported():
        return
    if not dnnl.available():
        raise Bf16UnsupportedError(
            f"{what} needs oneDNN, which is not available: {dnnl.unavailable_reason()}; "
            "use precision='fp32'"
        )
    flags = _cpu_flags()
    have = sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2"})
    raise Bf16UnsupportedError(
        f"{what} needs a CPU with the avx512_bf16 or amx_bf16 instruction set (Intel Cooper Lake, "
        f"Sapphire Rapids or later; AMD Zen 4 or later); this CPU has {have or 'neither'}. "
        "Use precision='fp32'."
    )


class BlockedArray(np.ndarray):
    """A constant matrix stored in a blocked layout of oneDNN's, behind a logical numpy view.

    Its shape and dtype are the logical ones (so shape inference, memory stats and ``inspect``
    see a (K, N) matrix), but the element order is oneDNN's: only the backend module that made it
    reads it. ``md`` is the layout; ``_buf`` the whole blocked buffer (it may be padded beyond
    K x N, so kernels read ``_buf``, never the view: copies of the view share it); ``_plans``
    caches primitives per batch shape. Subclasses (``PackedWeight``, ``int8.PackedInt8``) say
    which kernels take them and give ``unpacked()``.
    """

    md: dnnl.MemoryDesc
    _buf: np.ndarray
    _plans: dict

    def __array_finalize__(self, obj):
        self.md = getattr(obj, "md", None)
        self._buf = getattr(obj, "_buf", None)
        self._plans = getattr(obj, "_plans", None) or {}


class PackedWeight(BlockedArray):
    """A constant float32/bfloat16 (K, N) weight in the blocked layout oneDNN's matmul prefers."""

    def unpacked(self) -> np.ndarray:
        """The weights as a plain C-contiguous (K, N) array (a reorder; for fallbacks and tests)."""
        out = np.empty(self.shape, self.dtype)
        src = self._buf
        plain = dnnl.MemoryDesc.strided(self.shape, self.dtype)
        pd = dnnl.PrimitiveDesc(
            "dnnl_reorder_primitive_desc_create", self.md, dnnl.engine(), plain, dnnl.engine(), None
        )
        dnnl.Primitive(pd).execute(
            {dnnl.ARG_FROM: dnnl.Memory(self.md, src), dnnl.ARG_TO: dnnl.Memory(plain, out)}
        )
        return out


def pack_weight(w: np.ndarray, dtype=np.float32, m_hint: int = 128) -> PackedWeight:
    """Convert a constant (K, N) float matrix to ``dtype`` (float32 or bfloat16) in oneDNN's
    preferred matmul layout (asked for an M x K input of ``m_hint`` rows; the layout depends only
    on K, N and the types, and serves every M)."""
    dt = np.dtype(dtype)
    k, n = w.shape
    src = np.ascontiguousarray(w, dtype=np.float32)
    pd = _matmul_pd((m_hint, k), dnnl.MemoryDesc.any((k, n), dt), n, dt, False, "", (None, None))
    md = pd.query_md(dnnl.QUERY_WEIGHTS_MD, (k, n))
    buf = dnnl.reorder(src, dnnl.MemoryDesc.from_array(src), md)
    out = buf[: k * n * dt.itemsize].view(dt).reshape(k, n).view(PackedWeight)
    out.md = md
    out._buf = buf
    out._plans = {}
    out.flags.writeable = False
    return out


def _matmul_pd(
    src_shape, wmd, n, dt, bias: bool, activation: str, bounds, residual=None, out_dt=_F32
):
    """The matmul primitive: ``activation(src @ w + bias) [+ residual]``, ``out_dt`` out;
    ``residual``: None or the residual's dtype."""
    m = src_shape[0]
    attr = dnnl.Attr(user_scratchpad=_USER_SCRATCH)
    if activation == "clip":
        lo, hi = bounds
        attr.eltwise(
            dnnl.ELTWISE_CLIP,
            -np.inf if lo is None else float(lo),
            np.inf if hi is None else float(hi),
        )
    elif activation:
        attr.eltwise(_ACTIVATIONS[activation])
    if residual is not None:
        attr.binary(dnnl.BINARY_ADD, dnnl.MemoryDesc.strided((m, n), residual))
    attr.finish()
    return dnnl.PrimitiveDesc(
        "dnnl_matmul_primitive_desc_create",
        dnnl.engine(),
        dnnl.MemoryDesc.strided(src_shape, dt),
        wmd,
        dnnl.MemoryDesc.strided((1, n), _F32) if bias else None,
        dnnl.MemoryDesc.strided((m, n), out_dt),
        attr,
    )


# The matmuls made here run in user scratchpad mode: each thread brings its own scratchpad
# (``_Plan``), so concurrent runs (the parallel executor's branches, a server's workers) need not
# queue on the library's shared one (see dnnl.Primitive).
_USER_SCRATCH = True


class _Plan:
    """A primitive plus per-thread execute arguments whose memories are re-pointed each call
    (memory objects are not thread-safe to re-point; primitives are safe to share). A primitive
    made in user scratchpad mode (``_USER_SCRATCH``) gets a scratchpad per thread, so threads run
    it at once; one in the library's mode shares the library's scratchpad and runs under
    ``dnnl.Primitive``'s lock."""

    __slots__ = ("prim", "mds", "keys", "local", "scratch")

    def __init__(self, pd: dnnl.PrimitiveDesc, mds: dict[int, dnnl.MemoryDesc]):
        self.prim = dnnl.Primitive(pd)
        self.mds = mds
        self.keys = tuple(mds)
        self.local = threading.local()
        self.scratch = None
        if self.prim.user_scratchpad():
            md = pd.query_md(dnnl.QUERY_SCRATCHPAD_MD, (0,))
            self.scratch = md if md.nbytes else None

    def _thread_args(self, local):
        mems = {k: dnnl.Memory(md) for k, md in self.mds.items()}
        local.handles = [m.handle for m in mems.values()]
        local.ptrs = [0] * len(self.mds)  # where each memory points now (0: nowhere yet)
        if self.scratch is not None:  # this thread's own, for good
            mems[dnnl.ARG_SCRATCHPAD] = dnnl.Memory(
                self.scratch, dnnl.aligned_empty(self.scratch.nbytes)
            )
        local.args = dnnl.ExecArgs(mems)
        return local.args

    def run(self, *arrays: np.ndarray) -> None:
        local = self.local
        args = getattr(local, "args", None)
        if args is None:
            args = self._thread_args(local)
        set_handle, ptr, ptrs = dnnl.lib().dnnl_memory_set_data_handle, dnnl.data_ptr, local.ptrs
        for i, (h, arr) in enumerate(zip(local.handles, arrays)):
            p = ptr(arr)  # the caller holds ``arrays`` meanwhile
            if p != ptrs[i]:  # weights, biases, scales: the same buffer every call (0.4 us each)
                set_handle(h, p)
                ptrs[i] = p
        self.prim.execute_args(args)


def _to_bf16_plan(shape) -> _Plan:
    f32 = dnnl.MemoryDesc.strided(shape, _F32)
    bf = dnnl.MemoryDesc.strided(shape, _bf16_dtype())
    pd = dnnl.PrimitiveDesc(
        "dnnl_reorder_primitive_desc_create", f32, dnnl.engine(), bf, dnnl.engine(), None
    )
    return _Plan(pd, {dnnl.ARG_FROM: f32, dnnl.ARG_TO: bf})


_convert_plans: dict[tuple, _Plan] = {}


def to_bf16(x: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 array converted to bfloat16 (round to nearest even) by oneDNN's
    vectorized, multi-threaded reorder (3-10x numpy's ``astype`` through ml_dtypes)."""
    plan = _convert_plans.get(x.shape)
    if plan is None:
        with _lock:
            plan = _convert_plans.setdefault(x.shape, _to_bf16_plan(x.shape))
    out = np.empty(x.shape, _bf16_dtype())
    plan.run(x, out)
    return out


_plain_plans: dict[tuple, _Plan] = {}


def _dense_plan(
    w: np.ndarray, m: int, bias: bool, activation: str, bounds, residual=None, out_dt=_F32
) -> _Plan:
    """The cached primitive for an (m, K) input: on a PackedWeight it lives with the weight; for a
    plain float32 weight (any strides: oneDNN reads it in place, no copy) in a module table keyed
    by layout, not by data."""
    packed = isinstance(w, PackedWeight)
    if packed:
        key, table = (m, bias, activation, bounds, residual, out_dt), w._plans
    else:
        key = (w.shape, w.strides, m, bias, activation, bounds, residual, out_dt)
        table = _plain_plans
    plan = table.get(key)
    if plan is None:
        k, n = w.shape
        wmd = w.md if packed else dnnl.MemoryDesc.from_array(w)
        pd = _matmul_pd((m, k), wmd, n, w.dtype, bias, activation, bounds, residual, out_dt)
        mds = {
            dnnl.ARG_SRC: dnnl.MemoryDesc.strided((m, k), w.dtype),
            dnnl.ARG_WEIGHTS: wmd,
            dnnl.ARG_DST: dnnl.MemoryDesc.strided((m, n), out_dt),
        }
        if bias:
            mds[dnnl.ARG_BIAS] = dnnl.MemoryDesc.strided((1, n), _F32)
        if residual is not None:  # the binary add is the last post-op: after any activation
            index = 1 if activation else 0
            res_md = dnnl.MemoryDesc.strided((m, n), residual)
            mds[dnnl.ARG_POST_OP(index) | dnnl.ARG_SRC_1] = res_md
        plan = _Plan(pd, mds)
        with _lock:
            if not packed and len(table) > 512:  # bounded however many shapes a model sees
                table.clear()
            plan = table.setdefault(key, plan)
    return plan


def dense(
    x: np.ndarray,
    w: np.ndarray,
    b=None,
    activation: str = "",
    bounds=(None, None),
    residual=None,
    out_bf16: bool = False,
):
    """``activation(x @ w + b) [+ residual]`` as one oneDNN primitive, for a float32 ``x``
    (..., K) and a (K, N) weight: a PackedWeight (float32 or bfloat16; x is converted to bfloat16
    for the latter) or a plain float32 array. ``activation``: '', 'relu', 'gelu' (erf) or 'clip'
    (to ``bounds``), 'gelu_tanh'; ``residual``: a float32 array of the result's size (read in
    row-major order, so a reshaped view of the result's shape), added last (a binary post-op:
    the residual stream of a transformer without a separate pass over it). Returns a fresh
    float32 (..., N) array, or None when oneDNN cannot run it (x or the residual not float32 or
    of another size, or a plain weight of another dtype): the caller then uses numpy.

    With a bfloat16 weight, ``x`` may be bfloat16 already (another bf16 GEMM's output: no
    conversion), so may the residual (a LayerNorm's bf16 output), and ``out_bf16`` writes the
    result in bfloat16 (rounded once from the float32 accumulator and epilogue) for a consumer
    that is itself a bf16 GEMM (passes/bf16_activations.py)."""
    bf16_w = isinstance(w, PackedWeight) and w.dtype != _F32
    if x.ndim < 1 or (x.dtype != _F32 and not (bf16_w and x.dtype == w.dtype)):
        return None
    if (out_bf16 and not bf16_w) or not dnnl.available():
        return None
    if not isinstance(w, PackedWeight) and (w.dtype != _F32 or w.ndim != 2 or min(w.strides) < 0):
        return None
    k, n = w.shape
    x2 = np.ascontiguousarray(x).reshape(-1, k)
    m = x2.shape[0]
    if residual is not None and (
        type(residual) is not np.ndarray
        or residual.dtype not in (_F32, w.dtype)
        or residual.size != m * n
    ):
        return None
    if w.dtype != x2.dtype:
        x2 = to_bf16(x2)
    has_bias = b is not None
    out_dt = w.dtype if out_bf16 else _F32
    res = None if residual is None else residual.dtype
    plan = _dense_plan(w, m, has_bias, activation, tuple(bounds), res, out_dt)
    y = np.empty((m, n), out_dt)
    wbuf = w._buf if isinstance(w, PackedWeight) else w
    args = [x2, wbuf, y]
    if has_bias:
        args.append(np.ascontiguousarray(b, _F32))
    if residual is not None:
        args.append(np.ascontiguousarray(residual))  # read as (m, n) rows
    plan.run(*args)
    return y.reshape(*x.shape[:-1], n)


def worth_it(m: int, k: int, n: int) -> bool:
    """Whether an (m, k) @ (k, n) float32 product should go to oneDNN (see MIN_MACS)."""
    return m * k * n >= MIN_MACS and dnnl.available()


_mm_plans: dict[tuple, _Plan] = {}


def matmul(a: np.ndarray, b: np.ndarray, scale: float = 1.0):
    """``a @ b`` for float32 arrays of equal rank 2-4 and equal batch dims (or ``b`` 2-D), both
    in any strided layout (transposed views included); None when oneDNN should not run it.

    ``scale`` multiplies the float32 product (``scale * (a @ b)``, one more rounding) through
    oneDNN's source-scale attribute, at no extra pass: attention's 1/sqrt(d) without first
    writing a scaled copy of q (BERT-base QK^T, 12 x 128 x 64 x 128: 183 -> 118 us, 2 cores)."""
    if a.dtype != _F32 or b.dtype != _F32 or a.ndim < 2 or not 2 <= b.ndim <= a.ndim <= 4:
        return None
    if scale != 1.0:
        return _scaled_matmul(a, b, float(scale))
    if b.ndim == 2 and a.ndim > 2:
        if not a.flags.c_contiguous:
            return None
        y = matmul(a.reshape(-1, a.shape[-1]), b)
        return None if y is None else y.reshape(*a.shape[:-1], b.shape[1])
    if a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        return None
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = int(np.prod(a.shape[:-2], dtype=np.int64))
    if not worth_it(m * batch, k, n) or a.strides[-1] < 0 or b.strides[-1] < 0:
        return None
    if any(s % 4 for s in a.strides + b.strides):
        return None
    out_shape = a.shape[:-1] + (n,)
    key = (a.shape, a.strides, b.shape, b.strides)
    plan = _mm_plans.get(key)
    if plan is None:
        mds = {
            dnnl.ARG_SRC: dnnl.MemoryDesc.from_array(a),
            dnnl.ARG_WEIGHTS: dnnl.MemoryDesc.from_array(b),
            dnnl.ARG_DST: dnnl.MemoryDesc.strided(out_shape, _F32),
        }
        pd = dnnl.PrimitiveDesc(
            "dnnl_matmul_primitive_desc_create", dnnl.engine(), mds[dnnl.ARG_SRC],
            mds[dnnl.ARG_WEIGHTS], None, mds[dnnl.ARG_DST],
            dnnl.Attr(user_scratchpad=_USER_SCRATCH).finish(),
        )  # fmt: skip
        plan = _Plan(pd, mds)
        with _lock:
            if len(_mm_plans) > 512:  # shapes vary without bound in some models: stay bounded
                _mm_plans.clear()
            plan = _mm_plans.setdefault(key, plan)
    y = np.empty(out_shape, _F32)
    plan.run(a, b, y)
    return y


_scaled_plans: dict[tuple, _Plan] = {}


def _scaled_matmul(a: np.ndarray, b: np.ndarray, scale: float):
    """``scale * (a @ b)`` for equal-rank a and b (see ``matmul``), or None."""
    if a.ndim != b.ndim or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        return None
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = int(np.prod(a.shape[:-2], dtype=np.int64))
    if not worth_it(m * batch, k, n) or any(s < 0 or s % 4 for s in a.strides + b.strides):
        return None
    out_shape = a.shape[:-1] + (n,)
    key = (a.shape, a.strides, b.shape, b.strides)
    plan = _scaled_plans.get(key)
    if plan is None:
        mds = {
            dnnl.ARG_SRC: dnnl.MemoryDesc.from_array(a),
            dnnl.ARG_WEIGHTS: dnnl.MemoryDesc.from_array(b),
            dnnl.ARG_DST: dnnl.MemoryDesc.strided(out_shape, _F32),
            dnnl.ARG_SRC_SCALES: dnnl.MemoryDesc.strided((1,), _F32),
        }
        attr = dnnl.Attr(user_scratchpad=_USER_SCRATCH)
        dnnl.call("dnnl_primitive_attr_set_scales_mask", attr.handle, dnnl.ARG_SRC, 0)
        attr.finish()
        pd = dnnl.PrimitiveDesc(
            "dnnl_matmul_primitive_desc_create", dnnl.engine(), mds[dnnl.ARG_SRC],
            mds[dnnl.ARG_WEIGHTS], None, mds[dnnl.ARG_DST], attr,
        )  # fmt: skip
        plan = _Plan(pd, mds)
        with _lock:
            if len(_scaled_plans) > 512:
                _scaled_plans.clear()
            plan = _scaled_plans.setdefault(key, plan)
    y = np.empty(out_shape, _F32)
    plan.run(a, b, y, np.array([scale], _F32))
    return y
