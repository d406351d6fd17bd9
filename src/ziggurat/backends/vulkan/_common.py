"""What every Vulkan kernel shares: dtype and binding-size checks for ``supports``, strides, and
the strided elementwise dispatch (``shaders/elementwise.wgsl``) that broadcasting, transposes,
slices, expands and concatenations all reduce to."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._backend import STORAGE, VkTensor, VulkanBackend, wgsl_type

F32 = np.dtype(np.float32)
I32 = np.dtype(np.int32)
I64 = np.dtype(np.int64)
BOOL = np.dtype(np.bool_)
FLOAT = frozenset({F32})
CARRIED = frozenset(STORAGE)  # float32, int32, int64 (as i32), bool
# WebGPU's guaranteed minimum of max_storage_buffer_binding_size; the open device's own value
# replaces it (``supports`` has no backend argument, so it reads the process's backend).
_DEFAULT_MAX_BINDING = 128 << 20


def max_binding() -> int:
    from .. import vulkan

    be = vulkan._open
    return be.max_binding if be is not None else _DEFAULT_MAX_BINDING


def max_groups() -> int:
    """max_compute_workgroups_per_dimension of the open device (WebGPU's minimum before)."""
    from .. import vulkan

    be = vulkan._open
    return be.max_groups if be is not None else 65535


def product_reason(batch: int, m: int, n: int) -> str | None:
    """Why a [batch, m, n] product cannot be dispatched (64x64 tiles in x/y, batch in z)."""
    limit = max_groups()
    worst = max(batch, -(-m // 64), -(-n // 64))
    if worst > limit:
        return f"{worst} workgroups in one dimension, over the device's {limit}"
    return None


def bits(x: float) -> int:
    """A float32's bits as an int32 (how float parameters travel in the i32 meta buffer)."""
    return struct.unpack("<i", struct.pack("<f", float(x)))[0]


def dtype_reason(dtype: np.dtype, allowed: frozenset = FLOAT) -> str | None:
    dtype = np.dtype(dtype)
    if dtype in allowed:
        return None
    if dtype == np.float64:
        return "float64: WGSL has no f64"
    if dtype == np.int64 and dtype not in allowed:
        return "int64 arithmetic: WGSL has no i64 and the i32 carry could overflow"
    if dtype == np.float16:
        return "float16: needs the shader-f16 feature, not used by this backend"
    if dtype in CARRIED:
        names = ", ".join(sorted(str(d) for d in allowed))
        return f"{dtype} operands: this kernel takes {names}"
    return f"{dtype}: not carried by the Vulkan backend"


def check(
    inputs: Sequence[tuple[tuple[int, ...], Any] | None],
    allowed: frozenset = FLOAT,
    out_elems: int | None = None,
    positions: Sequence[int] | None = None,
) -> str | None:
    """The common ``supports`` checks: dtypes of the given input positions (all present ones by
    default) and every binding (inputs, and an output of ``out_elems``) within the device's
    max_storage_buffer_binding_size."""
    limit = max_binding()
    for i, spec in enumerate(inputs):
        if spec is None:
            continue
        shape, dtype = spec
        if positions is None or i in positions:
            why = dtype_reason(dtype, allowed)
            if why:
                return why
        elif np.dtype(dtype) not in CARRIED:
            return dtype_reason(dtype, CARRIED)
        if math.prod(shape) * 4 > limit:
            return f"input {i} binding of {math.prod(shape) * 4} bytes over {limit}"
    if out_elems is not None and out_elems * 4 > limit:
        return f"output binding of {out_elems * 4} bytes over {limit}"
    return None


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= int(d)
    return strides[::-1]


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Element strides reading a contiguous ``shape`` broadcast to ``out_shape`` (0 where
    broadcast)."""
    pad = len(out_shape) - len(shape)
    full = [1] * pad + list(shape)
    st = [0] * pad + contiguous_strides(shape)
    return [0 if full[d] == 1 and out_shape[d] != 1 else st[d] for d in range(len(out_shape))]


Operand = tuple[VkTensor, int, Sequence[int]]  # (tensor, element offset, element strides)


def elementwise(
    be: VulkanBackend,
    expr: str,
    operands: Sequence[Operand],
    out: VkTensor,
    out_shape: Sequence[int] | None = None,
    out_off: int = 0,
    out_strides: Sequence[int] | None = None,
    p0: float = 0.0,
    p1: float = 0.0,
) -> VkTensor:
    """``out[...] = expr(a0, a1, ...)`` over ``out_shape`` (``out``'s shape by default), each
    input read at ``offset + sum(coord * stride)``; ``p0``/``p1`` are float parameters."""
    shape = list(out.shape if out_shape is None else out_shape)
    if out_strides is None:
        out_strides = contiguous_strides(shape)
    total = math.prod(shape)
    if total == 0:
        return out
    rank = len(shape)
    meta = [total, rank, bits(p0), bits(p1), *shape]
    for _, off, st in operands:
        meta += [off, *st]
    meta += [out_off, *out_strides]
    be.dispatch(
        "elementwise",
        meta,
        [t for t, _, _ in operands] + [out],
        be.groups_1d(total),
        _subs(expr, [t.dtype for t, _, _ in operands], out.dtype),
    )
    return out


def _subs(expr: str, in_dtypes: list[np.dtype], out_dtype: np.dtype) -> dict[str, str]:
    n = len(in_dtypes)
    binds = [
        f"@group(0) @binding({k + 1}) var<storage, read> in{k}: array<{wgsl_type(d)}>;"
        for k, d in enumerate(in_dtypes)
    ]
    binds.append(
        f"@group(0) @binding({n + 1}) var<storage, read_write> o: array<{wgsl_type(out_dtype)}>;"
    )
    offs = "\n".join(f"    var off{k} = prm[ops + {k} * (rank + 1)];" for k in range(n + 1))
    steps = "\n".join(
        f"        off{k} += c * prm[ops + {k} * (rank + 1) + 1 + d];" for k in range(n + 1)
    )
    loads = "\n".join(f"    let a{k} = in{k}[off{k}];" for k in range(n))
    return {
        "BINDINGS": "\n".join(binds),
        "OFFSETS": offs,
        "STEPS": steps,
        "LOADS": loads,
        "NOUT": str(n),
        "EXPR": expr,
    }


def copy_into(
    be: VulkanBackend,
    src: VkTensor,
    src_off: int,
    src_strides: Sequence[int],
    out: VkTensor,
    shape: Sequence[int],
    out_off: int = 0,
    out_strides: Sequence[int] | None = None,
) -> VkTensor:
    """A strided copy (transpose, slice, expand, a concat's part) of ``src`` into ``out``."""
    return elementwise(be, "a0", [(src, src_off, src_strides)], out, shape, out_off, out_strides)


def contiguous(be: VulkanBackend, x: VkTensor, perm: Sequence[int]) -> VkTensor:
    """A fresh tensor holding ``x`` transposed by ``perm``."""
    st = contiguous_strides(x.shape)
    shape = [x.shape[p] for p in perm]
    out = be.empty(tuple(shape), x.dtype)
    return copy_into(be, x, 0, [st[p] for p in perm], out, shape)
