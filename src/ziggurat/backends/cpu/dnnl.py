"""oneDNN (``libdnnl.so``, C API v3) through ctypes: loading, engine, stream, memory, primitives.

This is the low-level layer that the CPU's native kernels (``gemm.py``, convolutions) build on. It
knows oneDNN's C API and nothing about ONNX. Everything loads on first use (``lib()``), never at
``import ziggurat``: the library is 55 MB and costs ~30 ms to map.

Where the library comes from, in order:

1. ``ZIGGURAT_DNNL_PATH``: an explicit path to a ``libdnnl.so``;
2. the ``onednn-cpu-gomp`` wheel (a dependency): it installs ``libdnnl.so.3`` into ``<prefix>/lib``,
   self-contained except for the system's GNU OpenMP (``libgomp.so.1``);
3. the system's loader (``libdnnl.so.3``).

``ZIGGURAT_DNNL=0`` makes the library count as absent (the portable numpy path runs instead; tests
use it to exercise the fallback). ``available()`` says whether oneDNN can be used and
``unavailable_reason()`` why not; nothing here raises at import.

Typical use (every object frees its native handle when garbage-collected)::

    from ziggurat.backends.cpu import dnnl
    if dnnl.available():
        mds = [dnnl.MemoryDesc.from_array(t) for t in (a, w, y)]   # plain strided layouts
        attr = dnnl.Attr().eltwise(dnnl.ELTWISE_RELU).finish()     # fused post-ops
        pd = dnnl.PrimitiveDesc("dnnl_matmul_primitive_desc_create", dnnl.engine(),
                                mds[0], mds[1], None, mds[2], attr)
        prim = dnnl.Primitive(pd)
        args = prim.args({dnnl.ARG_SRC: dnnl.Memory(mds[0], a), ...})  # build once,
        prim.execute_args(args)                                      # rebind memories, rerun

Errors come back as ``DnnlError`` (an ``ExecutionError``) naming the C function and the status.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from ctypes import POINTER, byref, c_char_p, c_float, c_int, c_int64, c_size_t, c_uint, c_void_p

import numpy as np

from ...errors import ExecutionError

# --- constants of the C API (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h; v3.x) -----------------
MAX_NDIMS = 12
DIMS = c_int64 * MAX_NDIMS

# dnnl_data_type_t
DT_F16, DT_BF16, DT_F32, DT_S32, DT_S8, DT_U8 = 1, 2, 3, 4, 5, 6
# dnnl_format_tag_t: ``any`` lets a primitive choose its preferred (blocked) layout
FORMAT_TAG_ANY = 1
# dnnl_engine_kind_t, dnnl_stream_flags_t
_ENGINE_CPU = 1
_STREAM_IN_ORDER = 1
# dnnl_alg_kind_t
ELTWISE_RELU = 0x20
ELTWISE_TANH = 0x21
ELTWISE_LINEAR = 0x26
ELTWISE_LOGISTIC = 0x29
ELTWISE_GELU_TANH = 0x2B
ELTWISE_CLIP = 0x2E
ELTWISE_GELU_ERF = 0x31
BINARY_ADD = 0x1FFF0
BINARY_MUL = 0x1FFF1
# dnnl_query_t (memory-descriptor section)
QUERY_IMPL_INFO_STR = 8
QUERY_SRC_MD = 129
QUERY_WEIGHTS_MD = 131
QUERY_DST_MD = 133
QUERY_SCRATCHPAD_MD = 136
# dnnl_prop_kind_t; convolution algorithms (dnnl_alg_kind_t)
FORWARD_INFERENCE = 96
CONVOLUTION_DIRECT, CONVOLUTION_WINOGRAD, CONVOLUTION_AUTO = 1, 2, 3
SOFTMAX_ACCURATE = 0x30000  # softmax: row maximum subtracted, float32 exp and sum
# dnnl_fpmath_mode_t, dnnl_scratchpad_mode_t
FPMATH_STRICT, FPMATH_BF16 = 0, 1
SCRATCHPAD_LIBRARY, SCRATCHPAD_USER = 0, 1
# execute-argument indices
ARG_SRC = 1
ARG_SRC_1 = 2
ARG_DST = 17
ARG_WEIGHTS = 33
ARG_BIAS = 41
ARG_SCRATCHPAD = 80
ARG_FROM, ARG_TO = ARG_SRC, ARG_DST
ARG_SRC_SCALES = 4096 | ARG_SRC  # DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC: the source's runtime scale


def ARG_POST_OP(index: int) -> int:
    """Argument base of the ``index``-th post-op (OR it with ARG_SRC_1 for a binary's operand)."""
    return 32768 * (index + 1)


# dnnl_cpu_isa_t values are bit masks: an ISA includes every bit of the ones below it.
ISA_AVX2 = 0x7
ISA_AVX512_CORE = 0x27
ISA_AVX512_CORE_BF16 = 0xE7
ISA_AVX512_CORE_AMX = 0xFEF

_STATUS = {
    1: "out of memory",
    2: "invalid arguments",
    3: "unimplemented (no implementation for these shapes, types or attributes)",
    4: "last implementation reached",
    5: "runtime error",
    6: "not required",
}

_NP_TO_DT = {np.dtype(np.float32): DT_F32, np.dtype(np.float16): DT_F16}
_NP_TO_DT.update({np.dtype(np.int32): DT_S32, np.dtype(np.int8): DT_S8, np.dtype(np.uint8): DT_U8})


class DnnlError(ExecutionError):
    """A oneDNN call returned an error status (names the call and the status)."""


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", c_int), ("memory", c_void_p)]


class _Version(ctypes.Structure):
    _fields_ = [
        ("major", c_int),
        ("minor", c_int),
        ("patch", c_int),
        ("hash", c_char_p),
        ("cpu_runtime", c_uint),
        ("gpu_runtime", c_uint),
    ]


# Argument types of every function used; declaring them makes ctypes convert and check each call
# (int64 dims and pointers would otherwise be truncated to C int).
_SIGNATURES: dict[str, tuple] = {
    "dnnl_engine_create": (POINTER(c_void_p), c_int, c_size_t),
    "dnnl_stream_create": (POINTER(c_void_p), c_void_p, c_uint),
    "dnnl_stream_wait": (c_void_p,),
    "dnnl_memory_desc_create_with_strides": (POINTER(c_void_p), c_int, DIMS, c_int, DIMS),
    "dnnl_memory_desc_create_with_tag": (POINTER(c_void_p), c_int, DIMS, c_int, c_int),
    "dnnl_memory_desc_clone": (POINTER(c_void_p), c_void_p),
    "dnnl_memory_desc_destroy": (c_void_p,),
    "dnnl_memory_desc_equal": (c_void_p, c_void_p),
    "dnnl_memory_desc_get_size": (c_void_p,),
    "dnnl_memory_create": (POINTER(c_void_p), c_void_p, c_void_p, c_void_p),
    "dnnl_memory_set_data_handle": (c_void_p, c_void_p),
    "dnnl_memory_destroy": (c_void_p,),
    "dnnl_primitive_attr_create": (POINTER(c_void_p),),
    "dnnl_primitive_attr_destroy": (c_void_p,),
    "dnnl_primitive_attr_set_post_ops": (c_void_p, c_void_p),
    "dnnl_primitive_attr_set_fpmath_mode": (c_void_p, c_int),
    "dnnl_primitive_attr_set_scratchpad_mode": (c_void_p, c_int),
    "dnnl_post_ops_create": (POINTER(c_void_p),),
    "dnnl_post_ops_destroy": (c_void_p,),
    "dnnl_post_ops_append_eltwise": (c_void_p, c_int, c_float, c_float),
    "dnnl_post_ops_append_binary": (c_void_p, c_int, c_void_p),
    "dnnl_primitive_desc_query_md": (c_void_p, c_int, c_int),
    "dnnl_primitive_desc_query": (c_void_p, c_int, c_int, c_void_p),
    "dnnl_primitive_desc_destroy": (c_void_p,),
    "dnnl_primitive_create": (POINTER(c_void_p), c_void_p),
    "dnnl_primitive_destroy": (c_void_p,),
    "dnnl_primitive_execute": (c_void_p, c_void_p, c_int, POINTER(_ExecArg)),
    "dnnl_matmul_primitive_desc_create": (POINTER(c_void_p),) + (c_void_p,) * 6,
    "dnnl_reorder_primitive_desc_create": (POINTER(c_void_p),) + (c_void_p,) * 5,
    # (pd*, engine, prop_kind, alg_kind, src, weights, bias, dst, strides, dilates, pad_l, pad_r, attr)
    "dnnl_convolution_forward_primitive_desc_create": (
        POINTER(c_void_p),
        c_void_p,
        c_int,
        c_int,
        c_void_p,
        c_void_p,
        c_void_p,
        c_void_p,
        DIMS,
        DIMS,
        DIMS,
        DIMS,
        c_void_p,
    ),  # fmt: skip
    # (pd*, engine, prop_kind, alg_kind, src, dst, alpha, beta, attr)
    "dnnl_eltwise_forward_primitive_desc_create": (
        POINTER(c_void_p),
        c_void_p,
        c_int,
        c_int,
        c_void_p,
        c_void_p,
        c_float,
        c_float,
        c_void_p,
    ),  # fmt: skip
    # (pd*, engine, alg_kind, src0, src1, dst, attr)
    "dnnl_binary_primitive_desc_create": (POINTER(c_void_p), c_void_p, c_int) + (c_void_p,) * 4,
    # (pd*, engine, prop_kind, alg_kind, src, dst, strides, kernel, dilation, pad_l, pad_r, attr)
    "dnnl_pooling_forward_primitive_desc_create": (POINTER(c_void_p), c_void_p, c_int, c_int)
    + (c_void_p,) * 2
    + (DIMS,) * 5
    + (c_void_p,),
    # (pd*, engine, prop_kind, alg_kind, src, dst, softmax_axis, attr)
    "dnnl_softmax_forward_primitive_desc_create": (
        POINTER(c_void_p),
        c_void_p,
        c_int,
        c_int,
        c_void_p,
        c_void_p,
        c_int,
        c_void_p,
    ),  # fmt: skip
    # (pd*, engine, prop_kind, src, dst, stat, epsilon, flags, attr)
    "dnnl_layer_normalization_forward_primitive_desc_create": (
        POINTER(c_void_p),
        c_void_p,
        c_int,
        c_void_p,
        c_void_p,
        c_void_p,
        c_float,
        c_uint,
        c_void_p,
    ),  # fmt: skip
    "dnnl_post_ops_append_sum": (c_void_p, c_float, ctypes.c_int32, c_int),
    "dnnl_primitive_attr_set_scales_mask": (c_void_p, c_int, c_int),
    "dnnl_primitive_attr_set_zero_points_mask": (c_void_p, c_int, c_int),
    # (transa, transb, offsetc, M, N, K, alpha, A, lda, ao, B, ldb, bo, beta, C, ldc, co)
    "dnnl_gemm_u8s8s32": (
        ctypes.c_char,
        ctypes.c_char,
        ctypes.c_char,
        c_int64,
        c_int64,
        c_int64,
        c_float,
        c_void_p,
        c_int64,
        ctypes.c_uint8,
        c_void_p,
        c_int64,
        ctypes.c_int8,
        c_float,
        c_void_p,
        c_int64,
        c_void_p,
    ),  # fmt: skip
    "dnnl_get_effective_cpu_isa": (),
    "dnnl_cpu_isa2str": (c_int,),
    "dnnl_set_primitive_cache_capacity": (c_int,),
    "dnnl_version": (),
    "dnnl_sgemm": (
        ctypes.c_char,
        ctypes.c_char,
        c_int64,
        c_int64,
        c_int64,
        c_float,
        c_void_p,
        c_int64,
        c_void_p,
        c_int64,
        c_float,
        c_void_p,
        c_int64,
    ),  # fmt: skip
}
_RESTYPES = {
    "dnnl_memory_desc_equal": c_int,
    "dnnl_memory_desc_get_size": c_size_t,
    "dnnl_primitive_desc_query_md": c_void_p,
    "dnnl_get_effective_cpu_isa": c_int,
    "dnnl_cpu_isa2str": c_char_p,
    "dnnl_version": POINTER(_Version),
}

_lock = threading.Lock()
_state: dict = {}  # filled once by lib(): "lib", "engine", "stream", "reason", "path"


def _candidate_paths() -> list[str]:
    explicit = os.environ.get("ZIGGURAT_DNNL_PATH")
    if explicit:
        return [explicit]
    paths = []
    try:  # where pip put the wheel's library (its RECORD lists '../../libdnnl.so.3')
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            for f in distribution("onednn-cpu-gomp").files or ():
                if f.name == "libdnnl.so.3":
                    paths.append(os.path.realpath(f.locate()))
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover - importlib.metadata is stdlib since 3.8
        pass
    paths.append(os.path.join(sys.prefix, "lib", "libdnnl.so.3"))
    paths.append("libdnnl.so.3")  # the system loader's search path
    return paths


def _configure_openmp() -> None:
    """Set GNU OpenMP's wait policy before libgomp is first loaded (it reads it once).

    After each parallel region libgomp's workers spin (GOMP_SPINCOUNT iterations of a pause
    instruction; 300,000 by default) before sleeping on a futex. Waking a sleeping worker costs
    each oneDNN call tens of microseconds, which models of many short primitives feel; a spinning
    worker holds a core that numpy, our row-parallel pool or another process wants.
    Measured (each engine in its own process, medians of 5 rounds, ratio to onnxruntime, quiet
    2-core AMX Xeon): MobileNetV2 1.42x with 0, 1.19x with 3,000, 1.22x with 30,000; bert-tiny
    1.68x / 1.51x / 1.48x; ResNet-50 1.23x (0) / 1.16-1.18x; BERT-base, GPT-2, ViT (long GEMMs)
    unchanged. With two busy processes on the same 2 cores, MobileNetV2 went 3.6-3.8 ms (0) to
    6.3-8.2 ms (3,000): the short spin is the default for machines the model has to itself, as
    onnxruntime's spinning thread pool is; ``ZIGGURAT_GOMP_SPINCOUNT=0`` suits shared,
    oversubscribed ones (the test suite sets it). The user's own GOMP_SPINCOUNT / OMP_WAIT_POLICY
    win.
    """
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = os.environ.get("ZIGGURAT_GOMP_SPINCOUNT", "3000")


def _load() -> None:
    if os.environ.get("ZIGGURAT_DNNL", "1") == "0":
        _state["reason"] = "oneDNN disabled by ZIGGURAT_DNNL=0"
        return
    if not sys.platform.startswith("linux"):
        _state["reason"] = (
            f"oneDNN through the onednn-cpu-gomp wheel is Linux-only ({sys.platform})"
        )
        return
    _configure_openmp()
    errors = []
    for path in _candidate_paths():
        try:
            handle = ctypes.CDLL(path)
            break
        except OSError as e:
            errors.append(f"{path}: {e}")
    else:
        _state["reason"] = (
            "libdnnl.so not found (install the onednn-cpu-gomp wheel or set ZIGGURAT_DNNL_PATH); "
            "tried " + "; ".join(errors)
        )
        return
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(handle, name)
        fn.argtypes = argtypes
        fn.restype = _RESTYPES.get(name, c_int)
    ver = handle.dnnl_version().contents
    if ver.major != 3:
        _state["reason"] = f"{path} is oneDNN {ver.major}.{ver.minor}; the C API used here is v3"
        return
    engine, stream = c_void_p(), c_void_p()
    _check(handle.dnnl_engine_create(byref(engine), _ENGINE_CPU, 0), "dnnl_engine_create")
    _check(handle.dnnl_stream_create(byref(stream), engine, _STREAM_IN_ORDER), "dnnl_stream_create")
    _state.update(lib=handle, engine=engine, stream=stream, path=path)
    _state["version"] = (ver.major, ver.minor, ver.patch)


def lib():
    """The loaded ``libdnnl`` (a ``ctypes.CDLL``), or None when unavailable (see
    ``unavailable_reason``). Loads it on the first call; thread-safe."""
    if "done" not in _state:
        with _lock:
            if "done" not in _state:
                try:
                    _load()
                finally:
                    _state["done"] = True
    return _state.get("lib")


def available() -> bool:
    """Whether oneDNN is loaded and usable on this machine (loads it on first call)."""
    return lib() is not None


def unavailable_reason() -> str:
    """Why ``available()`` is False ('' when it is True)."""
    lib()
    return _state.get("reason", "")


def info() -> dict:
    """Library path, version and the instruction set oneDNN dispatches to (for logs/inspect)."""
    L = lib()
    if L is None:
        return {"available": False, "reason": unavailable_reason()}
    isa = L.dnnl_get_effective_cpu_isa()
    return {
        "available": True,
        "path": _state["path"],
        "version": ".".join(map(str, _state["version"])),
        "isa": (L.dnnl_cpu_isa2str(isa) or b"").decode(),
    }


def effective_isa() -> int:
    """oneDNN's dnnl_cpu_isa_t bit mask for this CPU (0 when unavailable)."""
    L = lib()
    return 0 if L is None else L.dnnl_get_effective_cpu_isa()


def has_isa(isa: int) -> bool:
    """Whether oneDNN dispatches at least ``isa`` (e.g. ISA_AVX512_CORE_BF16) here."""
    return (effective_isa() & isa) == isa


def engine() -> c_void_p:
    lib()
    return _state["engine"]


def stream() -> c_void_p:
    lib()
    return _state["stream"]


def _check(status: int, what: str) -> None:
    if status != 0:
        detail = _STATUS.get(status, f"status {status}")
        raise DnnlError(f"oneDNN {what} failed: {detail} (dnnl_status_t {status})")


def declare(name: str, argtypes: tuple, restype=c_int) -> None:
    """Declare the C signature of a function not listed in ``_SIGNATURES`` before ``call``-ing it
    (ctypes would otherwise pass every Python int as a C int and floats not at all)."""
    _SIGNATURES[name] = tuple(argtypes)
    _RESTYPES[name] = restype
    L = _state.get("lib")
    if L is not None:
        fn = getattr(L, name)
        fn.argtypes, fn.restype = tuple(argtypes), restype


def call(name: str, *args) -> None:
    """Call a status-returning C function by name; raise DnnlError on a non-zero status."""
    L = lib()
    if L is None:
        raise DnnlError(f"oneDNN is not available: {unavailable_reason()}")
    _check(getattr(L, name)(*args), name)


# --- threads ----------------------------------------------------------------------------------------
_omp_threads = threading.local()
_threads_wanted = 0


def set_threads(n: int) -> None:
    """Use ``n`` OpenMP threads in oneDNN (0: one per available core). Applied in each calling
    thread before its next primitive (OpenMP's thread count is a per-thread setting)."""
    global _threads_wanted
    _threads_wanted = n if n > 0 else len(os.sched_getaffinity(0))


def _apply_threads() -> None:
    want = _threads_wanted or len(os.sched_getaffinity(0))
    if getattr(_omp_threads, "n", None) != want:
        gomp = _state.get("gomp")
        if gomp is None:  # libdnnl depends on libgomp: it is loaded, this finds it
            gomp = _state["gomp"] = ctypes.CDLL("libgomp.so.1")
        gomp.omp_set_num_threads(c_int(want))
        _omp_threads.n = want


# --- memory -----------------------------------------------------------------------------------------
def dtype_code(dtype) -> int:
    """dnnl_data_type_t for a numpy dtype (float32, float16, bfloat16, int32, int8, uint8)."""
    dt = np.dtype(dtype)
    code = _NP_TO_DT.get(dt)
    if code is None and dt.name == "bfloat16":
        code = DT_BF16
    if code is None:
        raise DnnlError(f"oneDNN has no data type for numpy {dt}")
    return code


class MemoryDesc:
    """An owned ``dnnl_memory_desc_t`` (shape, data type, layout)."""

    __slots__ = ("handle", "shape", "__weakref__")

    def __init__(self, handle: c_void_p, shape: tuple[int, ...]):
        self.handle = handle
        self.shape = shape

    @classmethod
    def strided(cls, shape, dtype, strides=None) -> MemoryDesc:
        """A plain layout; ``strides`` in elements (default: C-contiguous)."""
        shape = tuple(int(s) for s in shape)
        if strides is None:
            strides, acc = [], 1
            for s in reversed(shape):
                strides.append(acc)
                acc *= max(s, 1)
            strides = tuple(reversed(strides))
        h = c_void_p()
        call(
            "dnnl_memory_desc_create_with_strides",
            byref(h), len(shape), DIMS(*shape), dtype_code(dtype), DIMS(*strides),
        )  # fmt: skip
        return cls(h, shape)

    @classmethod
    def from_array(cls, a: np.ndarray) -> MemoryDesc:
        """Describe numpy array ``a`` as it lies in memory (its strides may be non-contiguous)."""
        isz = a.itemsize
        return cls.strided(a.shape, a.dtype, tuple(s // isz for s in a.strides))

    @classmethod
    def any(cls, shape, dtype) -> MemoryDesc:
        """Layout left to the primitive (``format_tag_any``): query the chosen one afterwards."""
        shape = tuple(int(s) for s in shape)
        h = c_void_p()
        call(
            "dnnl_memory_desc_create_with_tag",
            byref(h), len(shape), DIMS(*shape), dtype_code(dtype), FORMAT_TAG_ANY,
        )  # fmt: skip
        return cls(h, shape)

    @classmethod
    def clone_of(cls, borrowed: int, shape) -> MemoryDesc:
        """Own a copy of a descriptor borrowed from a primitive descriptor query."""
        h = c_void_p()
        call("dnnl_memory_desc_clone", byref(h), c_void_p(borrowed))
        return cls(h, tuple(shape))

    @property
    def nbytes(self) -> int:
        return _state["lib"].dnnl_memory_desc_get_size(self.handle)

    def __eq__(self, other) -> bool:
        if not isinstance(other, MemoryDesc):
            return NotImplemented
        return bool(_state["lib"].dnnl_memory_desc_equal(self.handle, other.handle))

    __hash__ = object.__hash__

    def __del__(self):
        L = _state.get("lib")
        if L is not None and self.handle:
            L.dnnl_memory_desc_destroy(self.handle)
            self.handle = None


class Memory:
    """A ``dnnl_memory_t`` over a buffer we own (numpy array): oneDNN never allocates here.

    ``rebind(array)`` points it at another buffer of the same layout, which is how a cached
    primitive runs on each call's arrays without creating memory objects again.
    """

    __slots__ = ("handle", "desc", "_keep")

    def __init__(self, desc: MemoryDesc, array: np.ndarray | None = None):
        self.desc = desc
        self.handle = c_void_p()
        self._keep = array
        ptr = c_void_p(array.ctypes.data) if array is not None else None
        call("dnnl_memory_create", byref(self.handle), desc.handle, engine(), ptr)

    def rebind(self, array: np.ndarray) -> None:
        self._keep = array
        _state["lib"].dnnl_memory_set_data_handle(self.handle, c_void_p(array.ctypes.data))

    def __del__(self):
        L = _state.get("lib")
        if L is not None and self.handle:
            L.dnnl_memory_destroy(self.handle)
            self.handle = None


def _data_offset() -> int | None:
    """Offset of numpy's data pointer in an ndarray object (``PyArrayObject.data``, right
    after the object header), checked against ``.ctypes.data`` on arrays of several kinds; None
    if it does not hold on this build (``data_ptr`` then takes the slow, always-right path)."""
    off = ctypes.sizeof(c_void_p) * 2  # ob_refcnt, ob_type
    probes = [np.empty(3, np.float32), np.zeros((4, 5), np.int8)[1:, 2:], np.empty(0)]
    probes.append(np.empty((2, 3)).T)
    for a in probes:
        if c_size_t.from_address(id(a) + off).value != a.ctypes.data:
            return None
    return off


_DATA_OFFSET = _data_offset()


def data_ptr(a: np.ndarray) -> int:
    """The address of ``a``'s first element. Why not ``a.ctypes.data``: that builds a ctypes
    helper object per call (1.5 us, measured) and a oneDNN call re-points 3-5 memories: bert-tiny's
    19 primitives a run spent ~100 us there. This reads the pointer field itself (0.25 us)."""
    if _DATA_OFFSET is None or not isinstance(a, np.ndarray):
        return a.ctypes.data
    return c_size_t.from_address(id(a) + _DATA_OFFSET).value


def aligned_empty(nbytes: int, align: int = 64) -> np.ndarray:
    """A uint8 buffer of ``nbytes`` starting on an ``align``-byte boundary (oneDNN's blocked
    weights are read with aligned vector loads; numpy only guarantees 16 bytes)."""
    raw = np.empty(nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off : off + nbytes]


# --- attributes and primitives ---------------------------------------------------------------------
class Attr:
    """Primitive attributes: post-ops (eltwise and binary), fpmath mode, scratchpad mode."""

    __slots__ = ("handle", "_post_ops", "_keep")

    def __init__(self, *, fpmath: int = FPMATH_STRICT, user_scratchpad: bool = False):
        self.handle = c_void_p()
        self._post_ops = c_void_p()
        self._keep: list = []  # memory descs referenced by binary post-ops
        call("dnnl_primitive_attr_create", byref(self.handle))
        call("dnnl_post_ops_create", byref(self._post_ops))
        if fpmath != FPMATH_STRICT:
            call("dnnl_primitive_attr_set_fpmath_mode", self.handle, fpmath)
        if user_scratchpad:
            call("dnnl_primitive_attr_set_scratchpad_mode", self.handle, SCRATCHPAD_USER)

    def eltwise(self, alg: int, alpha: float = 0.0, beta: float = 0.0) -> Attr:
        """Append ``dst <- alg(dst; alpha, beta)``."""
        call("dnnl_post_ops_append_eltwise", self._post_ops, alg, alpha, beta)
        return self

    def binary(self, alg: int, operand: MemoryDesc) -> Attr:
        """Append ``dst <- dst (alg) operand``; pass the operand as ARG_POST_OP(i) | ARG_SRC_1."""
        call("dnnl_post_ops_append_binary", self._post_ops, alg, operand.handle)
        self._keep.append(operand)
        return self

    def finish(self) -> Attr:
        call("dnnl_primitive_attr_set_post_ops", self.handle, self._post_ops)
        return self

    def __del__(self):
        L = _state.get("lib")
        if L is not None and self.handle:
            L.dnnl_post_ops_destroy(self._post_ops)
            L.dnnl_primitive_attr_destroy(self.handle)
            self.handle = None


class PrimitiveDesc:
    """An owned ``dnnl_primitive_desc_t``: ``PrimitiveDesc(creator, *args)`` calls the C function
    ``creator`` (a ``dnnl_*_primitive_desc_create``) with a fresh handle and ``args``.

    Pass ``MemoryDesc`` and ``Attr`` objects themselves (not their ``.handle``): they are kept
    alive for the call and for as long as this descriptor (a temporary's handle would be freed
    by the garbage collector before oneDNN reads it)."""

    __slots__ = ("handle", "_keep")

    def __init__(self, creator: str, *args):
        self.handle = c_void_p()
        self._keep = args
        raw = [a.handle if isinstance(a, (MemoryDesc, Attr)) else a for a in args]
        call(creator, byref(self.handle), *raw)

    def query_md(self, what: int, shape, index: int = 0) -> MemoryDesc:
        """An owned copy of the descriptor the primitive chose for ``what`` (QUERY_*_MD)."""
        md = _state["lib"].dnnl_primitive_desc_query_md(self.handle, what, index)
        if not md:
            raise DnnlError(f"oneDNN primitive has no memory descriptor for query {what}")
        return MemoryDesc.clone_of(md, shape)

    def impl_name(self) -> str:
        """The implementation oneDNN picked, e.g. 'brg:avx512_core_amx' (for profiling)."""
        out = c_char_p()
        call("dnnl_primitive_desc_query", self.handle, QUERY_IMPL_INFO_STR, 0, byref(out))
        return (out.value or b"").decode()

    def __del__(self):
        L = _state.get("lib")
        if L is not None and self.handle:
            L.dnnl_primitive_desc_destroy(self.handle)
            self.handle = None


class ExecArgs:
    """A C array of (argument index, memory) pairs that keeps its Memory objects alive (the C
    array holds only their handles: a collected Memory would leave a dangling pointer)."""

    __slots__ = ("array", "memories")

    def __init__(self, mapping: dict[int, Memory]):
        self.memories = dict(mapping)
        self.array = (_ExecArg * len(mapping))()
        for i, (k, m) in enumerate(mapping.items()):
            self.array[i].arg = k
            self.array[i].memory = m.handle.value


# oneDNN (this build: ONEDNN_ENABLE_CONCURRENT_EXEC off) gives every primitive in the default,
# library-managed scratchpad mode one scratchpad shared by all of them: two such primitives
# running at once from two threads (a server's workers on two models, the parallel executor, a
# user's threads) overwrite each other's temporaries and return wrong numbers — measured: 3-5
# wrong results in 12,000 runs of one packed Dense from 4 threads. Those primitives run one at a
# time under this lock; primitives in user scratchpad mode (convolutions: backends/cpu/conv.py)
# or with no scratchpad at all run freely.
_shared_scratchpad = threading.Lock()
_QUERY_MEMORY_CONSUMPTION = 6  # dnnl_query_memory_consumption_s64: the library scratchpad's bytes


class Primitive:
    """A created primitive (keeps its descriptor alive); ``execute`` runs it and waits."""

    __slots__ = ("handle", "pd", "_lock")

    def __init__(self, pd: PrimitiveDesc):
        self.pd = pd
        self.handle = c_void_p()
        call("dnnl_primitive_create", byref(self.handle), pd.handle)
        scratch = c_int64(0)
        call("dnnl_primitive_desc_query", pd.handle, _QUERY_MEMORY_CONSUMPTION, 0, byref(scratch))
        self._lock = _shared_scratchpad if scratch.value > 0 else None

    def user_scratchpad(self) -> bool:
        """Whether this primitive neither uses the library's shared scratchpad nor needs a lock:
        made in user scratchpad mode (the caller passes a scratchpad) or needing none."""
        return self._lock is None

    @staticmethod
    def args(mapping: dict[int, Memory]) -> ExecArgs:
        """Execute arguments as a C array; build once, rebind its memories, reuse."""
        return ExecArgs(mapping)

    def execute_args(self, args: ExecArgs) -> None:
        """Run with prebuilt arguments (from ``args``); returns when the result is ready."""
        _apply_threads()
        L = _state["lib"]
        st = _state["stream"]
        arr = args.array
        lock = self._lock
        if lock is None:
            _check(
                L.dnnl_primitive_execute(self.handle, st, len(arr), arr), "dnnl_primitive_execute"
            )
            _check(L.dnnl_stream_wait(st), "dnnl_stream_wait")
            return
        with lock:  # the library's one shared scratchpad (see _shared_scratchpad)
            _check(
                L.dnnl_primitive_execute(self.handle, st, len(arr), arr), "dnnl_primitive_execute"
            )
            _check(L.dnnl_stream_wait(st), "dnnl_stream_wait")

    def execute(self, mapping: dict[int, Memory]) -> None:
        self.execute_args(self.args(mapping))

    def __del__(self):
        L = _state.get("lib")
        if L is not None and self.handle:
            L.dnnl_primitive_destroy(self.handle)
            self.handle = None


def reorder(src: np.ndarray, src_md: MemoryDesc, dst_md: MemoryDesc) -> np.ndarray:
    """Copy ``src`` (laid out as ``src_md``) into a fresh aligned buffer laid out as ``dst_md``;
    converts the data type too (e.g. float32 -> bfloat16 into a blocked weight layout)."""
    dst = aligned_empty(dst_md.nbytes)
    pd = PrimitiveDesc(
        "dnnl_reorder_primitive_desc_create", src_md, engine(), dst_md, engine(), None
    )
    Primitive(pd).execute({ARG_FROM: Memory(src_md, src), ARG_TO: Memory(dst_md, dst)})
    return dst
