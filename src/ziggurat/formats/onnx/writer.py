"""Write an ``ir.Model`` as an ONNX ModelProto: the protobuf encoded by hand, as it is read.

``save_model(model, path, external_file=..., external_min_bytes=...)`` writes the file; tensors of
at least ``external_min_bytes`` go to ``external_file`` (a name relative to the model's folder),
each at a 64-byte aligned offset so that the loader can view them in place. Field numbers are
``schema.py``'s; values keep their ONNX types (strings as ``string_data``, 4-/2-bit types packed).
"""

from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO

import numpy as np

from ... import ir
from ...errors import ModelLoadError
from ...ir import dtypes
from . import schema as S

_ALIGN = 64
_VARINT, _FIXED32, _LEN = 0, 5, 2


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1  # negative int64s are ten-byte varints, as protobuf writes them
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _key(num: int, wt: int) -> bytes:
    return _varint((num << 3) | wt)


def _int(num: int, v: int) -> bytes:
    return _key(num, _VARINT) + _varint(int(v))


def _bytes(num: int, data: bytes | bytearray | memoryview) -> bytes:
    return _key(num, _LEN) + _varint(len(data)) + bytes(data)


def _str(num: int, s: str | bytes) -> bytes:
    return _bytes(num, s.encode("utf-8") if isinstance(s, str) else s)


class _External:
    """Where large tensors go: an open file and the bytes written so far."""

    def __init__(self, f: BinaryIO, location: str, min_bytes: int):
        self.f, self.location, self.min_bytes, self.offset = f, location, min_bytes, 0

    def put(self, data: memoryview) -> tuple[int, int]:
        pad = (-self.offset) % _ALIGN
        if pad:
            self.f.write(b"\0" * pad)
            self.offset += pad
        at = self.offset
        self.f.write(data)
        self.offset += len(data)
        return at, len(data)


def _raw(arr: np.ndarray, et: int) -> bytes | memoryview:
    bits = dtypes.PACKED_BITS.get(et)
    if bits is not None:  # 4-/2-bit types: one value a byte in memory, packed low bits first
        codes = np.ascontiguousarray(arr).view(np.uint8).reshape(-1) & ((1 << bits) - 1)
        per = 8 // bits
        codes = np.concatenate([codes, np.zeros((-codes.size) % per, np.uint8)])
        packed = np.zeros(codes.size // per, np.uint8)
        for k in range(per):
            packed |= codes[k::per] << (k * bits)
        return packed.tobytes()
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return memoryview(a.reshape(-1).view(np.uint8))  # bytes of any dtype (ml_dtypes' too)


def tensor_proto(name: str, arr: Any, ext: _External | None = None) -> bytes:
    """A TensorProto for ``arr`` (an ndarray); in ``ext`` when it is at least ext.min_bytes."""
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    et = dtypes.from_numpy(arr.dtype)
    out = bytearray(b"".join(_int(S.TENSOR_DIMS, d) for d in arr.shape))
    out += _int(S.TENSOR_DATA_TYPE, et)
    if name:
        out += _str(S.TENSOR_NAME, name)
    if et == dtypes.STRING:
        for s in arr.reshape(-1):
            out += _str(S.TENSOR_STRING_DATA, s if isinstance(s, (str, bytes)) else str(s))
        return bytes(out)
    data = _raw(arr, et)
    if ext is not None and len(data) >= ext.min_bytes and len(data) > 0:
        offset, length = ext.put(memoryview(data))
        for k, v in (("location", ext.location), ("offset", str(offset)), ("length", str(length))):
            out += _bytes(S.TENSOR_EXTERNAL_DATA, _str(S.ENTRY_KEY, k) + _str(S.ENTRY_VALUE, v))
        out += _int(S.TENSOR_DATA_LOCATION, S.LOCATION_EXTERNAL)
        return bytes(out)
    out += _bytes(S.TENSOR_RAW_DATA, data)
    return bytes(out)


def type_proto(t: ir.Type | None) -> bytes:
    if t is None:
        return b""
    if t.kind in ("tensor", "sparse_tensor"):
        body = _int(S.TENSOR_TYPE_ELEM_TYPE, t.elem_type)
        if t.shape is not None:
            dims = b""
            for d in t.shape:
                if isinstance(d, int):
                    dims += _bytes(S.SHAPE_DIM, _int(S.DIM_VALUE, d))
                elif isinstance(d, str):
                    dims += _bytes(S.SHAPE_DIM, _str(S.DIM_PARAM, d))
                else:
                    dims += _bytes(S.SHAPE_DIM, b"")
            body += _bytes(S.TENSOR_TYPE_SHAPE, dims)
        num = S.TYPE_TENSOR if t.kind == "tensor" else S.TYPE_SPARSE_TENSOR
        return _bytes(num, body)
    if t.kind in ("sequence", "optional"):
        num = S.TYPE_SEQUENCE if t.kind == "sequence" else S.TYPE_OPTIONAL
        return _bytes(num, _bytes(S.SEQUENCE_ELEM_TYPE, type_proto(t.elem)))
    if t.kind == "map":
        body = _int(S.MAP_KEY_TYPE, t.elem_type) + _bytes(S.MAP_VALUE_TYPE, type_proto(t.elem))
        return _bytes(S.TYPE_MAP, body)
    return _bytes(S.TYPE_OPAQUE, b"")


def _value_info(v: ir.ValueInfo) -> bytes:
    out = _str(S.VI_NAME, v.name)
    if v.type is not None:
        out += _bytes(S.VI_TYPE, type_proto(v.type))
    if v.doc:
        out += _str(S.VI_DOC_STRING, v.doc)
    return out


def _attribute(name: str, v: Any, ext: _External | None) -> bytes:
    head = _str(S.ATTR_NAME, name)
    if isinstance(v, (bool, int, np.integer, np.bool_)):
        return head + _int(S.ATTR_TYPE, S.AT_INT) + _int(S.ATTR_I, int(v))
    if isinstance(v, (float, np.floating)):
        return (
            head + _int(S.ATTR_TYPE, S.AT_FLOAT) + _key(S.ATTR_F, _FIXED32) + struct.pack("<f", v)
        )
    if isinstance(v, (str, bytes)):
        return head + _int(S.ATTR_TYPE, S.AT_STRING) + _str(S.ATTR_S, v)
    if isinstance(v, np.ndarray):
        return head + _int(S.ATTR_TYPE, S.AT_TENSOR) + _bytes(S.ATTR_T, tensor_proto("", v, ext))
    if isinstance(v, ir.Graph):
        return head + _int(S.ATTR_TYPE, S.AT_GRAPH) + _bytes(S.ATTR_G, graph_proto(v, ext))
    if isinstance(v, ir.Type):
        return head + _int(S.ATTR_TYPE, S.AT_TYPE_PROTO) + _bytes(S.ATTR_TP, type_proto(v))
    if isinstance(v, (list, tuple)):
        return head + _list_attribute(name, list(v), ext)
    raise ModelLoadError(f"attribute '{name}': cannot serialize a {type(v).__name__}")


def _list_attribute(name: str, v: list, ext: _External | None) -> bytes:
    if all(isinstance(x, (bool, int, np.integer, np.bool_)) for x in v):  # also the empty list
        packed = b"".join(_varint(int(x)) for x in v)
        return _int(S.ATTR_TYPE, S.AT_INTS) + (_bytes(S.ATTR_INTS, packed) if v else b"")
    if all(isinstance(x, (int, float, np.number)) for x in v):
        return _int(S.ATTR_TYPE, S.AT_FLOATS) + _bytes(
            S.ATTR_FLOATS, struct.pack(f"<{len(v)}f", *v)
        )
    if all(isinstance(x, (str, bytes)) for x in v):
        return _int(S.ATTR_TYPE, S.AT_STRINGS) + b"".join(_str(S.ATTR_STRINGS, x) for x in v)
    if all(isinstance(x, np.ndarray) for x in v):
        body = b"".join(_bytes(S.ATTR_TENSORS, tensor_proto("", x, ext)) for x in v)
        return _int(S.ATTR_TYPE, S.AT_TENSORS) + body
    if all(isinstance(x, ir.Graph) for x in v):
        body = b"".join(_bytes(S.ATTR_GRAPHS, graph_proto(x, ext)) for x in v)
        return _int(S.ATTR_TYPE, S.AT_GRAPHS) + body
    raise ModelLoadError(f"attribute '{name}': cannot serialize a list of mixed types")


def _node(n: ir.Node, ext: _External | None) -> bytes:
    out = bytearray()
    for i in n.inputs:
        out += _str(S.NODE_INPUT, i)
    for o in n.outputs:
        out += _str(S.NODE_OUTPUT, o)
    if n.name:
        out += _str(S.NODE_NAME, n.name)
    out += _str(S.NODE_OP_TYPE, n.op_type)
    if n.domain:
        out += _str(S.NODE_DOMAIN, n.domain)
    for k, v in n.attrs.items():
        out += _bytes(S.NODE_ATTRIBUTE, _attribute(k, v, ext))
    return bytes(out)


def graph_proto(g: ir.Graph, ext: _External | None = None) -> bytes:
    out = bytearray()
    for n in g.nodes:
        out += _bytes(S.GRAPH_NODE, _node(n, ext))
    out += _str(S.GRAPH_NAME, g.name or "graph")
    for name, arr in g.initializers.items():
        if not isinstance(arr, np.ndarray):
            raise ModelLoadError(
                f"initializer '{name}' is a {type(arr).__name__}, not an array; it cannot be "
                "written as ONNX (write the model before weights are packed)"
            )
        out += _bytes(S.GRAPH_INITIALIZER, tensor_proto(name, arr, ext))
    if g.doc:
        out += _str(S.GRAPH_DOC_STRING, g.doc)
    for v in g.inputs:
        out += _bytes(S.GRAPH_INPUT, _value_info(v))
    for v in g.outputs:
        out += _bytes(S.GRAPH_OUTPUT, _value_info(v))
    for v in g.value_info.values():
        out += _bytes(S.GRAPH_VALUE_INFO, _value_info(v))
    return bytes(out)


def model_proto(m: ir.Model, ext: _External | None = None) -> bytes:
    # IR 4 is the first where initializers need not be listed as graph inputs (the loader drops
    # them from the inputs of older models).
    out = bytearray(_int(S.MODEL_IR_VERSION, max(m.ir_version or 8, 4)))
    out += _str(S.MODEL_PRODUCER_NAME, m.producer_name or "ziggurat")
    if m.producer_version:
        out += _str(S.MODEL_PRODUCER_VERSION, m.producer_version)
    if m.domain:
        out += _str(S.MODEL_DOMAIN, m.domain)
    if m.model_version:
        out += _int(S.MODEL_MODEL_VERSION, m.model_version)
    if m.doc:
        out += _str(S.MODEL_DOC_STRING, m.doc)
    out += _bytes(S.MODEL_GRAPH, graph_proto(m.graph, ext))
    for domain, version in m.opsets.items():
        body = (_str(S.OPSET_DOMAIN, domain) if domain else b"") + _int(S.OPSET_VERSION, version)
        out += _bytes(S.MODEL_OPSET_IMPORT, body)
    for k, v in m.metadata.items():
        out += _bytes(S.MODEL_METADATA_PROPS, _str(S.ENTRY_KEY, k) + _str(S.ENTRY_VALUE, v))
    return bytes(out)


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_file: str = "",
    external_min_bytes: int = 0,
) -> None:
    """Write ``model`` to ``path``; with ``external_file``, tensors of at least
    ``external_min_bytes`` bytes go to that file (named relative to ``path``'s folder)."""
    path = os.fspath(path)
    if not external_file:
        data = model_proto(model)
    else:
        if os.path.isabs(external_file) or ".." in external_file.replace("\\", "/").split("/"):
            raise ModelLoadError(
                f"external initializers file {external_file!r} must be a name relative to the "
                "model's folder (ONNX external data cannot point outside it)"
            )
        folder = os.path.dirname(os.path.abspath(path))
        with open(os.path.join(folder, external_file), "wb") as f:
            data = model_proto(model, _External(f, external_file, external_min_bytes))
    with open(path, "wb") as f:
        f.write(data)
