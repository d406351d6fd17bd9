"""TensorProto -> numpy array, for every ONNX element type, raw_data or typed fields, inline or external.

``raw_data`` (and external data) become views on the source buffer when the bytes sit at an offset
aligned for the dtype, so a memory-mapped model's weights are never copied; unaligned ones are copied
once (numpy's BLAS and SIMD paths want aligned data). The typed fields (float_data, int32_data, ...)
are decoded with numpy. Sub-byte types (int4/uint4/float4e2m1 two per byte, int2/uint2 four per byte,
float6 four per three bytes; low bits first) are unpacked to one element per numpy item, which is how
ml_dtypes stores them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ModelLoadError
from ...ir import SparseTensor, dtypes
from . import schema as S
from .wire import LEN, VARINT, Repeated, WireError, iter_fields, text, varints_list

if TYPE_CHECKING:
    from .loader import Context

_FLOAT6 = (dtypes.FLOAT6E2M3, dtypes.FLOAT6E3M2)
# Element types whose int32_data entries hold a bit pattern to reinterpret, keyed to its width.
_BITS_IN_INT32 = {
    dtypes.FLOAT16: np.uint16,
    dtypes.BFLOAT16: np.uint16,
    dtypes.FLOAT8E4M3FN: np.uint8,
    dtypes.FLOAT8E4M3FNUZ: np.uint8,
    dtypes.FLOAT8E5M2: np.uint8,
    dtypes.FLOAT8E5M2FNUZ: np.uint8,
    dtypes.FLOAT8E8M0: np.uint8,
    dtypes.FLOAT6E2M3: np.uint8,
    dtypes.FLOAT6E3M2: np.uint8,
}
_PLAIN_INT32 = {dtypes.INT32, dtypes.INT16, dtypes.INT8, dtypes.UINT16, dtypes.UINT8, dtypes.BOOL}


class _Fields:
    """The fields of one TensorProto, as offsets; decoding happens once the dtype is known."""

    __slots__ = (
        "dims", "data_type", "name", "raw", "floats", "int32s", "int64s", "uint64s", "doubles",
        "strings", "external", "location", "segment",
    )  # fmt: skip

    def __init__(self) -> None:
        self.dims: list[int] = []
        self.data_type = 0
        self.name = ""
        self.raw: tuple[int, int] | None = None
        self.floats: Repeated | None = None
        self.int32s: Repeated | None = None
        self.int64s: Repeated | None = None
        self.uint64s: Repeated | None = None
        self.doubles: Repeated | None = None
        self.strings: list[tuple[int, int]] = []
        self.external: dict[str, str] = {}
        self.location = 0
        self.segment = False


def _scan(buf: Any, a: int, b: int) -> _Fields:
    f = _Fields()
    for num, wt, x, y in iter_fields(buf, a, b):
        if num == S.TENSOR_RAW_DATA and wt == LEN:
            f.raw = (x, y)
        elif num == S.TENSOR_DIMS:
            if wt == VARINT:
                f.dims.append(x)
            elif wt == LEN:
                f.dims.extend(varints_list(buf, x, y))
            else:
                raise WireError(f"tensor dims have wire type {wt} (byte {x})")
        elif num == S.TENSOR_DATA_TYPE and wt == VARINT:
            f.data_type = x
        elif num == S.TENSOR_NAME and wt == LEN:
            f.name = text(buf, x, y)
        elif num == S.TENSOR_FLOAT_DATA:
            f.floats = f.floats or Repeated("<f4")
            f.floats.add(buf, wt, x, y)
        elif num == S.TENSOR_INT32_DATA:
            f.int32s = f.int32s or Repeated("varint")
            f.int32s.add(buf, wt, x, y)
        elif num == S.TENSOR_INT64_DATA:
            f.int64s = f.int64s or Repeated("varint")
            f.int64s.add(buf, wt, x, y)
        elif num == S.TENSOR_UINT64_DATA:
            f.uint64s = f.uint64s or Repeated("varint")
            f.uint64s.add(buf, wt, x, y)
        elif num == S.TENSOR_DOUBLE_DATA:
            f.doubles = f.doubles or Repeated("<f8")
            f.doubles.add(buf, wt, x, y)
        elif num == S.TENSOR_STRING_DATA and wt == LEN:
            f.strings.append((x, y))
        elif num == S.TENSOR_EXTERNAL_DATA and wt == LEN:
            key = value = ""
            for n2, w2, x2, y2 in iter_fields(buf, x, y):
                if n2 == S.ENTRY_KEY and w2 == LEN:
                    key = text(buf, x2, y2)
                elif n2 == S.ENTRY_VALUE and w2 == LEN:
                    value = text(buf, x2, y2)
            f.external[key] = value
        elif num == S.TENSOR_DATA_LOCATION and wt == VARINT:
            f.location = x
        elif num == S.TENSOR_SEGMENT:
            f.segment = True
        # anything else (doc_string, metadata_props, future fields) is skipped
    return f


def read_tensor(ctx: Context, a: int, b: int, what: str = "tensor") -> tuple[str, np.ndarray]:
    """Decode the TensorProto in ``ctx.buf[a:b]``; return (name, array). ``what`` names it in errors."""
    buf = ctx.buf
    f = _scan(buf, a, b)
    label = f"{what} '{f.name}'" if f.name else what
    if f.segment:
        raise ModelLoadError(
            f"{label} is stored in segments (TensorProto.segment), which Ziggurat does not support;"
            " re-save the model with whole tensors (onnx.save_model)"
        )
    et = f.data_type
    if not dtypes.is_known(et):
        raise ModelLoadError(
            f"{label} has unknown data_type {et}; expected an ONNX TensorProto type"
        )
    dt = dtypes.to_numpy(et)
    dims = [_signed(d) for d in f.dims]
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{label} has a negative dimension: dims={dims}")
    count = math.prod(dims)
    shape = tuple(dims)

    if f.location == S.LOCATION_EXTERNAL and f.name in ctx.provided:
        arr = _provided(ctx.provided[f.name], dt, shape, label)
    elif f.location == S.LOCATION_EXTERNAL:
        src, offset, length = ctx.external(label, f.external)
        arr = _from_bytes(ctx, src, offset, length, et, dt, count, label)
    elif f.raw is not None and (f.raw[1] > f.raw[0] or count == 0 or _no_typed(f)):
        if et == dtypes.STRING:
            raise ModelLoadError(
                f"{label} is a string tensor with raw_data; strings use string_data"
            )
        x, y = f.raw
        arr = _from_bytes(ctx, buf, x, y - x, et, dt, count, label)
    else:
        arr = _from_typed(buf, f, et, dt, count, label)
    return f.name, arr.reshape(shape)


def _provided(arr: np.ndarray, dt: np.dtype, shape: tuple[int, ...], label: str) -> np.ndarray:
    """An externally stored tensor's data given by the caller: same dtype and shape as declared."""
    if arr.dtype != dt or tuple(arr.shape) != shape:
        raise ModelLoadError(
            f"{label}: the data given for it is {arr.dtype} {list(arr.shape)}, the model declares"
            f" {dt} {list(shape)}"
        )
    return arr


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= (1 << 63) else v


def _no_typed(f: _Fields) -> bool:
    return not (f.floats or f.int32s or f.int64s or f.uint64s or f.doubles or f.strings)


def _from_bytes(
    ctx: Context, src: Any, offset: int, nbytes: int, et: int, dt: np.dtype, count: int, label: str
) -> np.ndarray:
    """Little-endian packed bytes -> array; a zero-copy view when aligned."""
    bits = dtypes.PACKED_BITS.get(et)
    if bits is not None:
        need = (count * bits + 7) // 8
    elif et in _FLOAT6:
        need = (count * 6 + 7) // 8
    else:
        need = count * dt.itemsize
    if nbytes != need:
        raise ModelLoadError(
            f"{label} has {count} elements of {dtypes.name(et)} ({need} bytes) but its data holds"
            f" {nbytes} bytes; the file is corrupt or was written by a buggy exporter"
        )
    if count == 0:
        return np.zeros(0, dt)
    if bits is not None:
        return _unpack_bits(np.frombuffer(src, np.uint8, nbytes, offset), bits, count, dt)
    if et in _FLOAT6:
        return _unpack_float6(np.frombuffer(src, np.uint8, nbytes, offset), count, dt)
    ctx.passed(src, nbytes)
    arr = np.frombuffer(src, dt, count, offset)
    if (not arr.flags.aligned and not ctx.view_unaligned) or nbytes < ctx.view_min_bytes:
        # numpy's fast paths (BLAS, SIMD loops, gufuncs) need aligned data: copy this one. Small
        # tensors are copied too: a view would pin a whole page-cache folio (up to 2 MiB) in RSS.
        return ctx.aligned_copy(src, offset, nbytes, dt, count)
    ctx.viewed_bytes += nbytes
    ctx.viewed += 1
    arr.flags.writeable = False
    return arr


def _unpack_bits(packed: np.ndarray, bits: int, count: int, dt: np.dtype) -> np.ndarray:
    per = 8 // bits
    mask = (1 << bits) - 1
    out = np.empty((packed.size, per), np.uint8)
    for k in range(per):  # 2 or 4 lanes, each vectorized over all bytes
        out[:, k] = (packed >> (bits * k)) & mask
    return out.reshape(-1)[:count].view(dt)


def _unpack_float6(packed: np.ndarray, count: int, dt: np.dtype) -> np.ndarray:
    pad = (-packed.size) % 3
    if pad:
        packed = np.concatenate([packed, np.zeros(pad, np.uint8)])
    g = packed.reshape(-1, 3).astype(np.uint32)
    word = g[:, 0] | (g[:, 1] << 8) | (g[:, 2] << 16)  # 24-bit little-endian bitstream per group
    out = (word[:, None] >> np.array([0, 6, 12, 18], np.uint32)) & 0x3F
    return out.astype(np.uint8).reshape(-1)[:count].view(dt)


def _from_typed(buf: Any, f: _Fields, et: int, dt: np.dtype, count: int, label: str) -> np.ndarray:
    """Decode the type-specific repeated fields (float_data, int32_data, ...)."""
    if et == dtypes.STRING:
        vals = [_str_or_bytes(buf[x:y]) for x, y in f.strings]
        arr = np.empty(len(vals), object)
        arr[:] = vals
        return _check_count(arr, count, label, "string_data")
    if et in (dtypes.FLOAT, dtypes.COMPLEX64):
        src = f.floats.array() if f.floats else np.zeros(0, np.float32)
        arr = src.astype(np.float32, copy=False)
        if et == dtypes.COMPLEX64:
            arr = _pairs(arr, count, label, np.complex64)
        return _check_count(arr, count, label, "float_data")
    if et in (dtypes.DOUBLE, dtypes.COMPLEX128):
        src = f.doubles.array() if f.doubles else np.zeros(0, np.float64)
        arr = src.astype(np.float64, copy=False)
        if et == dtypes.COMPLEX128:
            arr = _pairs(arr, count, label, np.complex128)
        return _check_count(arr, count, label, "double_data")
    if et == dtypes.INT64:
        src = f.int64s.array() if f.int64s else np.zeros(0, np.uint64)
        return _check_count(src.view(np.int64), count, label, "int64_data")
    if et in (dtypes.UINT64, dtypes.UINT32):
        src = f.uint64s.array() if f.uint64s else np.zeros(0, np.uint64)
        return _check_count(src.astype(dt), count, label, "uint64_data")
    # Everything else travels in int32_data (values, bit patterns, or packed sub-byte groups).
    i32 = (f.int32s.array() if f.int32s else np.zeros(0, np.uint64)).view(np.int64)
    if et in _PLAIN_INT32:
        return _check_count(i32.astype(dt), count, label, "int32_data")
    if et in _BITS_IN_INT32:
        bits = i32.astype(_BITS_IN_INT32[et])
        return _check_count(bits.view(dt), count, label, "int32_data")
    packed_bits = dtypes.PACKED_BITS.get(et)
    if packed_bits is not None:
        per = 8 // packed_bits
        if i32.size != (count + per - 1) // per:
            raise ModelLoadError(
                f"{label} has {count} {dtypes.name(et)} elements ({per} per int32_data entry) but"
                f" int32_data has {i32.size} entries"
            )
        return _unpack_bits(i32.astype(np.uint8), packed_bits, count, dt)
    raise ModelLoadError(f"{label}: cannot decode data_type {dtypes.name(et)} from typed fields")


def _pairs(arr: np.ndarray, count: int, label: str, ct: type) -> np.ndarray:
    if arr.size % 2:
        raise ModelLoadError(f"{label}: complex data has an odd number ({arr.size}) of components")
    return np.ascontiguousarray(arr).view(ct)


def _check_count(arr: np.ndarray, count: int, label: str, field: str) -> np.ndarray:
    if arr.size != count:
        raise ModelLoadError(
            f"{label} has {count} elements by its dims but {field} holds {arr.size}; the file is"
            " corrupt (or the tensor's data was stripped, e.g. saved without external data)"
        )
    return arr


def _str_or_bytes(raw: Any) -> str | bytes:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError:
        return bytes(raw)


def read_sparse(ctx: Context, a: int, b: int, what: str) -> tuple[str, SparseTensor]:
    """Decode a SparseTensorProto; the name is the name of its ``values`` tensor."""
    buf = ctx.buf
    values = indices = None
    name = ""
    dims: list[int] = []
    for num, wt, x, y in iter_fields(buf, a, b):
        if num == S.SPARSE_VALUES and wt == LEN:
            name, values = read_tensor(ctx, x, y, f"{what} values")
        elif num == S.SPARSE_INDICES and wt == LEN:
            _, indices = read_tensor(ctx, x, y, f"{what} indices")
        elif num == S.SPARSE_DIMS:
            if wt == VARINT:
                dims.append(_signed(x))
            elif wt == LEN:
                dims.extend(_signed(v) for v in varints_list(buf, x, y))
    label = f"{what} '{name}'" if name else what
    ctx.finish_copies()  # values/indices are read below; background copies must be done
    if values is None:
        raise ModelLoadError(f"{label} has no values tensor")
    if indices is None:
        indices = np.zeros((0,), np.int64)
    nnz = values.size
    values = values.reshape(-1)
    if indices.ndim == 1 and indices.size != nnz:
        raise ModelLoadError(f"{label}: {nnz} values but {indices.size} linear indices")
    if indices.ndim == 2 and (indices.shape[0] != nnz or indices.shape[1] != len(dims)):
        raise ModelLoadError(
            f"{label}: indices shape {indices.shape} does not match {nnz} values x rank {len(dims)}"
        )
    if indices.size and (indices.min() < 0 or _out_of_range(indices, dims)):
        raise ModelLoadError(f"{label}: an index is out of range for dims {dims}")
    return name, SparseTensor(values, indices, tuple(dims))


def _out_of_range(indices: np.ndarray, dims: list[int]) -> bool:
    if indices.ndim == 1:
        return int(indices.max()) >= math.prod(dims)
    return bool((indices >= np.asarray(dims, np.int64)).any())
