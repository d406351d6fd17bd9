"""LoRA adapters in onnxruntime's adapter file format (``.onnx_adapter``): ``AdapterFormat``
reads and writes them, ``LoraAdapter`` loads one for ``RunOptions.add_active_adapter``.

The file is a FlatBuffer (onnxruntime's ``adapter_schema.fbs``, identifier "TORT")::

    table Adapter   { format_version:int; adapter_version:int; model_version:int;
                      parameters:[Parameter]; }
    table Parameter { name:string; dims:[int64]; data_type:int (ONNX element type);
                      raw_data:[uint8] (force_align: 8); }

read and written here by hand (little-endian, the layout rules of FlatBuffers: a table starts with
the signed offset back to its vtable; strings and vectors are a uint32 length then the data; every
reference is an unsigned offset forward from where it is stored). Parameters replace the
model's same-named inputs or overridable initializers in runs whose options activate the adapter.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

from .. import ir
from ..errors import ConfigError, ModelLoadError
from .ortvalue import OrtValue

FORMAT_VERSION = 1
_IDENT = b"TORT"


# -- reading ------------------------------------------------------------------------------------
class _Table:
    def __init__(self, buf: memoryview, pos: int):
        self.buf, self.pos = buf, pos
        (soff,) = struct.unpack_from("<i", buf, pos)
        self.vt = pos - soff
        self.vt_size, _ = struct.unpack_from("<HH", buf, self.vt)

    def _field(self, i: int) -> int:
        at = 4 + 2 * i
        if at >= self.vt_size:
            return 0
        (off,) = struct.unpack_from("<H", self.buf, self.vt + at)
        return self.pos + off if off else 0

    def scalar(self, i: int, fmt: str = "<i", default: int = 0) -> int:
        p = self._field(i)
        return struct.unpack_from(fmt, self.buf, p)[0] if p else default

    def ref(self, i: int) -> int:
        p = self._field(i)
        return p + struct.unpack_from("<I", self.buf, p)[0] if p else 0

    def vector(self, i: int) -> tuple[int, int]:
        """(position of the first element, length); (0, 0) when absent."""
        p = self.ref(i)
        return (p + 4, struct.unpack_from("<I", self.buf, p)[0]) if p else (0, 0)


def read_adapter_bytes(data: bytes | memoryview, what: str = "adapter") -> tuple[dict, dict]:
    """(header {format_version, adapter_version, model_version}, {name: ndarray})."""
    buf = memoryview(data)
    try:
        if len(buf) < 8 or bytes(buf[4:8]) != _IDENT:
            raise ModelLoadError(
                f"{what} is not an onnxruntime adapter file (no 'TORT' identifier)"
            )
        root = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        header = {
            "format_version": root.scalar(0),
            "adapter_version": root.scalar(1),
            "model_version": root.scalar(2),
        }
        if header["format_version"] != FORMAT_VERSION:
            raise ModelLoadError(
                f"{what} has adapter format version {header['format_version']}; this build reads"
                f" version {FORMAT_VERSION}"
            )
        params = {}
        start, count = root.vector(3)
        for k in range(count):
            at = start + 4 * k
            name, arr = _read_parameter(_Table(buf, at + struct.unpack_from("<I", buf, at)[0]))
            params[name] = arr
        return header, params
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{what} is truncated or corrupt ({type(e).__name__}: {e})") from None


def _read_parameter(t: _Table) -> tuple[str, np.ndarray]:
    p = t.ref(0)
    (n,) = struct.unpack_from("<I", t.buf, p)
    name = bytes(t.buf[p + 4 : p + 4 + n]).decode("utf-8")
    d0, nd = t.vector(1)
    dims = struct.unpack_from(f"<{nd}q", t.buf, d0) if nd else ()
    et = t.scalar(2)
    if not ir.dtypes.is_known(et) or et == ir.dtypes.STRING:
        raise ModelLoadError(f"adapter parameter '{name}' has unsupported data type {et}")
    dt = ir.dtypes.to_numpy(et)
    r0, nr = t.vector(3)
    arr = np.frombuffer(t.buf[r0 : r0 + nr], dtype=np.uint8).view(dt.newbyteorder("<"))
    if arr.size != int(np.prod(dims)):
        raise ModelLoadError(f"adapter parameter '{name}': {arr.size} values for dims {list(dims)}")
    return name, arr.astype(dt, copy=False).reshape(dims)


# -- writing (front to back: every reference points forward) ------------------------------------
class _Builder:
    def __init__(self) -> None:
        self.out = bytearray()

    def align(self, n: int, extra: int = 0) -> None:
        """Pad so that position + extra is a multiple of n."""
        self.out += b"\0" * ((-(len(self.out) + extra)) % n)

    def table(self, slots: list[tuple[str, Any]]) -> tuple[int, dict[int, int]]:
        """Write a vtable then its table; slots are ("i", int) scalars or ("ref", None) offsets to
        patch. Returns (table position, {slot: position of its uint32})."""
        self.align(4)
        vt = len(self.out)
        size = 4 + 4 * len(slots)
        self.out += struct.pack(f"<HH{len(slots)}H", 4 + 2 * len(slots), size,
                                *[4 + 4 * i for i in range(len(slots))])  # fmt: skip
        self.align(4)
        pos = len(self.out)
        self.out += struct.pack("<i", pos - vt)
        refs = {}
        for i, (kind, value) in enumerate(slots):
            if kind == "ref":
                refs[i] = len(self.out)
            self.out += struct.pack("<i", value if kind == "i" else 0)
        return pos, refs

    def patch(self, at: int, target: int) -> None:
        struct.pack_into("<I", self.out, at, target - at)

    def vector(self, data: bytes, count: int, elem_align: int) -> int:
        self.align(max(elem_align, 4), extra=4)  # the length, then aligned elements
        pos = len(self.out)
        self.out += struct.pack("<I", count) + data
        return pos


def adapter_bytes(adapter_version: int, model_version: int, params: dict[str, np.ndarray]) -> bytes:
    b = _Builder()
    b.out += b"\0\0\0\0" + _IDENT
    root, refs = b.table(
        [("i", FORMAT_VERSION), ("i", adapter_version), ("i", model_version), ("ref", None)]
    )
    struct.pack_into("<I", b.out, 0, root)
    vec = b.vector(b"\0" * (4 * len(params)), len(params), 4)
    b.patch(refs[3], vec)
    for k, (name, arr) in enumerate(params.items()):
        a = np.ascontiguousarray(arr)
        et = ir.dtypes.from_numpy(a.dtype)
        if et == ir.dtypes.STRING:
            raise ConfigError(f"adapter parameter '{name}': string tensors cannot be stored")
        pos, prefs = b.table([("ref", None), ("ref", None), ("i", et), ("ref", None)])
        b.patch(vec + 4 + 4 * k, pos)
        encoded = name.encode("utf-8")
        b.patch(prefs[0], b.vector(encoded + b"\0", len(encoded), 4))
        b.patch(prefs[1], b.vector(struct.pack(f"<{a.ndim}q", *a.shape), a.ndim, 8))
        raw = a.reshape(-1).view(np.uint8).tobytes()
        b.patch(prefs[3], b.vector(raw, len(raw), 8))
    b.align(8)
    return bytes(b.out)


# -- onnxruntime's classes ----------------------------------------------------------------------
class AdapterFormat:
    """Read or write an adapter file: versions plus named parameters (OrtValues)."""

    def __init__(self) -> None:
        self._format_version = FORMAT_VERSION
        self._adapter_version = 0
        self._model_version = 0
        self._parameters: dict[str, OrtValue] = {}

    @staticmethod
    def read_adapter(file_path: str | os.PathLike) -> AdapterFormat:
        with open(file_path, "rb") as f:
            header, params = read_adapter_bytes(f.read(), os.fspath(file_path))
        out = AdapterFormat()
        out._format_version = header["format_version"]
        out._adapter_version = header["adapter_version"]
        out._model_version = header["model_version"]
        out._parameters = {k: OrtValue(v) for k, v in params.items()}
        return out

    def export_adapter(self, file_path: str | os.PathLike) -> None:
        params = {k: v.numpy() if isinstance(v, OrtValue) else np.asarray(v)
                  for k, v in self._parameters.items()}  # fmt: skip
        with open(file_path, "wb") as f:
            f.write(adapter_bytes(self._adapter_version, self._model_version, params))

    def get_format_version(self) -> int:
        return self._format_version

    def get_adapter_version(self) -> int:
        return self._adapter_version

    def set_adapter_version(self, adapter_version: int) -> None:
        self._adapter_version = int(adapter_version)

    def get_model_version(self) -> int:
        return self._model_version

    def set_model_version(self, model_version: int) -> None:
        self._model_version = int(model_version)

    def get_parameters(self) -> dict[str, OrtValue]:
        return dict(self._parameters)

    def set_parameters(self, params: dict[str, Any]) -> None:
        self._parameters = {str(k): v if isinstance(v, OrtValue) else OrtValue(np.asarray(v))
                            for k, v in params.items()}  # fmt: skip


class LoraAdapter:
    """An adapter file loaded for runs (``RunOptions.add_active_adapter``)."""

    def __init__(self) -> None:
        self.parameters: dict[str, np.ndarray] = {}
        self.path = ""

    def Load(self, file_path: str | os.PathLike) -> None:  # noqa: N802 (onnxruntime's name)
        """Read the adapter's parameters from ``file_path``."""
        with open(file_path, "rb") as f:
            _, self.parameters = read_adapter_bytes(f.read(), os.fspath(file_path))
        self.path = os.fspath(file_path)
