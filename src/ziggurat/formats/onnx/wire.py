"""A minimal protobuf wire-format reader over any buffer (bytes, mmap, memoryview).

Messages are never materialized: ``iter_fields`` walks one message's fields and hands back numbers and
byte offsets, so a length-delimited field (a 100 MB ``raw_data``) costs nothing until someone asks
for it, and then it can be viewed in place. Every read is bounds-checked against the enclosing
message's end; a malformed buffer raises ``WireError`` (a ValueError) naming the byte offset, which
the loader turns into a ``ModelLoadError``.

Wire types (protobuf encoding spec): 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32,
3/4 start/end group (deprecated, skipped).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_MAX_GROUP_DEPTH = 32
# Packed fields longer than this are decoded with numpy; shorter ones in Python (less overhead).
_NUMPY_MIN_BYTES = 64


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; return (value, position after it)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError(f"a varint runs past the end of its message (byte {pos})")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError(f"a varint is longer than 10 bytes (ends at byte {pos})")


def iter_fields(buf: Any, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field_number, wire_type, a, b)`` for each field of the message in ``buf[pos:end]``.

    varint: ``a`` is the (unsigned) value; length-delimited: ``buf[a:b]`` is the payload;
    fixed32/fixed64: ``buf[a:b]`` holds the 4 or 8 little-endian bytes. Groups are skipped.
    """
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos, end)
        wt = key & 7
        num = key >> 3
        if num == 0:
            raise WireError(f"field number 0 before byte {pos} (not a protobuf message)")
        if wt == LEN:
            if pos >= end:
                raise WireError(f"field {num} has no length (message ends at byte {end})")
            n = buf[pos]
            if n < 0x80:
                pos += 1
            else:
                n, pos = read_varint(buf, pos, end)
            stop = pos + n
            if stop > end:
                raise WireError(
                    f"field {num} at byte {pos} claims {n} bytes but only {end - pos} remain"
                    " (the file is truncated or not a protobuf message)"
                )
            yield num, LEN, pos, stop
            pos = stop
        elif wt == VARINT:
            if pos < end and buf[pos] < 0x80:
                v = buf[pos]
                pos += 1
            else:
                v, pos = read_varint(buf, pos, end)
            yield num, VARINT, v, pos
        elif wt == FIXED32 or wt == FIXED64:
            stop = pos + (4 if wt == FIXED32 else 8)
            if stop > end:
                raise WireError(f"fixed-size field {num} at byte {pos} runs past the end")
            yield num, wt, pos, stop
            pos = stop
        elif wt == START_GROUP:
            pos = _skip_group(buf, pos, end, num, 0)
        else:
            raise WireError(f"invalid wire type {wt} for field {num} before byte {pos}")


def _skip_group(buf: Any, pos: int, end: int, group: int, depth: int) -> int:
    if depth > _MAX_GROUP_DEPTH:
        raise WireError(f"groups nested deeper than {_MAX_GROUP_DEPTH} at byte {pos}")
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        wt, num = key & 7, key >> 3
        if wt == END_GROUP:
            if num != group:
                raise WireError(f"group {group} closed by end-group {num} at byte {pos}")
            return pos
        if wt == VARINT:
            _, pos = read_varint(buf, pos, end)
        elif wt == LEN:
            n, pos = read_varint(buf, pos, end)
            pos += n
        elif wt == FIXED32:
            pos += 4
        elif wt == FIXED64:
            pos += 8
        elif wt == START_GROUP:
            pos = _skip_group(buf, pos, end, num, depth + 1)
        else:
            raise WireError(f"invalid wire type {wt} inside group {group} at byte {pos}")
    raise WireError(f"group {group} is not closed before byte {end}")


# ---- scalar conversions -------------------------------------------------------------------------


def signed(v: int) -> int:
    """Reinterpret a decoded varint as int64/int32 (negative values are 10-byte two's complement)."""
    return v - _U64 if v > _I64_MAX else v


def text(buf: Any, a: int, b: int) -> str:
    """A protobuf ``string`` field as str (strict UTF-8)."""
    return str(buf[a:b], "utf-8")


def fixed32_float(buf: Any, a: int) -> float:
    return struct.unpack_from("<f", buf, a)[0]


# ---- packed repeated fields ---------------------------------------------------------------------


def varints_list(buf: Any, a: int, b: int) -> list[int]:
    """A packed run of varints as Python ints (unsigned)."""
    if b - a >= _NUMPY_MIN_BYTES:
        return varints_array(buf, a, b).tolist()
    out = []
    pos = a
    while pos < b:
        v = buf[pos]
        if v < 0x80:
            pos += 1
        else:
            v, pos = read_varint(buf, pos, b)
        out.append(v)
    return out


def varints_array(buf: Any, a: int, b: int) -> np.ndarray:
    """A packed run of varints decoded at once with numpy; returns uint64 (reinterpret as needed)."""
    raw = np.frombuffer(buf, np.uint8, b - a, a)
    if raw.size == 0:
        return np.zeros(0, np.uint64)
    if raw[-1] & 0x80:
        raise WireError(f"a packed varint run ends mid-value (byte {b})")
    last = raw < 0x80  # the final byte of each value
    if last.all():
        return raw.astype(np.uint64)
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if int(lengths.max()) > 10:
        raise WireError(f"a varint longer than 10 bytes in the packed run at byte {a}")
    # Byte k of a value contributes its low 7 bits shifted by 7*k; OR them per value.
    k = np.arange(raw.size, dtype=np.int64) - np.repeat(starts, lengths)
    parts = (raw & 0x7F).astype(np.uint64) << (7 * k).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)


def fixed_array(buf: Any, a: int, b: int, dtype: str) -> np.ndarray:
    """A packed run of fixed-size little-endian numbers (a fresh, aligned copy)."""
    dt = np.dtype(dtype)
    if (b - a) % dt.itemsize:
        raise WireError(
            f"packed {dt} run at byte {a} is {b - a} bytes, not a multiple of {dt.itemsize}"
        )
    return np.frombuffer(buf, dt, (b - a) // dt.itemsize, a).copy()


class Repeated:
    """Collects a repeated numeric field that writers may emit packed (LEN) or one by one."""

    __slots__ = ("chunks", "kind")

    def __init__(self, kind: str):
        self.kind = kind  # "varint", "<f4" or "<f8" (fixed32/fixed64 element type)
        self.chunks: list[Any] = []

    def add(self, buf: Any, wt: int, a: int, b: int) -> None:
        if wt == LEN:
            if self.kind == "varint":
                self.chunks.append(varints_array(buf, a, b))
            else:
                self.chunks.append(fixed_array(buf, a, b, self.kind))
        elif wt == VARINT and self.kind == "varint":
            self.chunks.append(np.array([a], np.uint64))
        elif (wt == FIXED32 and self.kind == "<f4") or (wt == FIXED64 and self.kind == "<f8"):
            self.chunks.append(fixed_array(buf, a, b, self.kind))
        else:
            raise WireError(f"repeated field has wire type {wt}, expected {self.kind} (byte {a})")

    def array(self) -> np.ndarray:
        if len(self.chunks) == 1:
            return self.chunks[0]
        if not self.chunks:
            return np.zeros(0, np.uint64 if self.kind == "varint" else self.kind)
        return np.concatenate(self.chunks)
