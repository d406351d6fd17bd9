"""Tensor codecs: V2 JSON tensors and the V2 binary tensor data extension.

A V2 tensor is ``{"name", "shape", "datatype", "data"}`` with row-major ``data`` (flat or nested).
With the binary extension the body is a JSON header of ``Inference-Header-Content-Length`` bytes
followed by raw tensor bytes; each binary input says its size in ``parameters.binary_data_size``,
in input order. ``BYTES`` elements in binary form are a 4-byte little-endian length and the bytes.

Everything here validates what the client sent and raises ``HTTPError(400)`` with what was wrong:
the server never trusts a shape, a length or a datatype it was told.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np
import orjson

from ziggurat.runtime.validate import ONNX_TO_V2  # noqa: F401 (re-exported: the server's name)
from ziggurat.server.errors import HTTPError, bad_request

MAX_RANK = 32
MAX_DIM = 2**40  # any larger dimension is absurd: no body can carry it

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(object),
}
_V2_OF_DTYPE = {dt: name for name, dt in DATATYPES.items()}


def v2_datatype(dtype: np.dtype) -> str:
    """The V2 datatype name of a numpy dtype (str/bytes arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return "BYTES"
    try:
        return _V2_OF_DTYPE[dtype]
    except KeyError:
        raise HTTPError(500, f"output dtype {dtype} has no V2 datatype") from None


# ----------------------------------------------------------------------------- JSON


def loads(body: bytes | str) -> Any:
    """Parse JSON; 400 on malformed or absurdly nested input. Accepts NaN/Infinity tokens."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as first:
        # orjson refuses NaN/Infinity, which Python clients send for non-finite floats;
        # the stdlib parser accepts them. Its recursion limit guards against deep nesting.
        try:
            return json.loads(body)
        except RecursionError:
            raise bad_request("malformed JSON: nested too deeply") from None
        except (ValueError, UnicodeDecodeError):
            raise bad_request(f"malformed JSON: {first}") from None


def _nonfinite_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def dumps(obj: Any, *, nonfinite: bool = False) -> bytes:
    """Serialize a response. numpy arrays serialize natively (fast path).

    ``nonfinite``: the payload has NaN/Infinity floats. orjson would write them as null, so the
    stdlib encoder writes the NaN/Infinity tokens Python and most JSON clients read back.
    """
    if nonfinite:
        return json.dumps(obj, default=_nonfinite_default, separators=(",", ":")).encode()
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


# ----------------------------------------------------------------------------- request parsing


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request-wide default
    classification: int = 0  # > 0: return the top-k classes as "value:index" strings


@dataclass
class InferRequest:
    """A decoded inference request: feeds, requested outputs and request parameters."""

    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    binary_output: bool = False  # parameters.binary_data_output
    timeout_us: int | None = None  # parameters.timeout
    parameters: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # /api/v1 bodies name the model in the body
    version: str | None = None


def split_binary(body: bytes, header_length: str | int | None) -> tuple[bytes, memoryview | None]:
    """Split a body into its JSON header and binary section per ``Inference-Header-Content-Length``."""
    if header_length is None:
        return body, None
    try:
        n = int(header_length)
    except (TypeError, ValueError):
        raise bad_request(
            f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
        ) from None
    if n <= 0 or n > len(body):
        raise bad_request(
            f"Inference-Header-Content-Length is {n} but the body has {len(body)} bytes; "
            "it must be the size of the JSON header, between 1 and the body size"
        )
    return body[:n], memoryview(body)[n:]


def parse_infer_request(
    body: bytes, header_length: str | int | None = None, *, v1: bool = False
) -> InferRequest:
    """Decode a V2 (or /api/v1) inference request body, binary extension included."""
    header, binary = split_binary(body, header_length)
    obj = loads(header)
    return request_from_json(obj, binary, v1=v1)


def request_from_json(obj: Any, binary: memoryview | None, *, v1: bool = False) -> InferRequest:
    if not isinstance(obj, dict):
        raise bad_request("the request body must be a JSON object")
    params = _params(obj.get("parameters"), "request")
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad_request('"inputs" must be a non-empty list of tensors')
    reader = _BinaryReader(binary)
    feeds: dict[str, np.ndarray] = {}
    for i, t in enumerate(inputs):
        name, arr = decode_tensor(t, reader, where=f"inputs[{i}]")
        if name in feeds:
            raise bad_request(f"input {name!r} is given twice")
        feeds[name] = arr
    reader.finish()
    req = InferRequest(inputs=feeds, parameters=params)
    req.id = _opt_str(obj.get("id"), "id")
    req.outputs = _parse_outputs(obj.get("outputs"))
    req.binary_output = _opt_bool(params.get("binary_data_output"), "binary_data_output")
    timeout = params.get("timeout")
    if timeout is not None:
        timeout = as_int(timeout)
        if timeout is None or timeout < 0:
            raise bad_request("parameters.timeout must be a non-negative integer (microseconds)")
        req.timeout_us = timeout or None
    if v1:
        req.model, req.version = model_ref(obj)
    return req


def as_int(value: Any) -> int | None:
    """``value`` as an int when JSON Schema calls it an integer (``3`` or ``3.0``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def version_text(value: Any) -> str | None:
    """A request's ``"version"`` (string or integer) as text; 400 for anything else."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    v = as_int(value)
    if v is None:
        raise bad_request('"version" must be a string or an integer')
    return str(v)


def model_ref(obj: dict) -> tuple[str, str | None]:
    """The ``"model"`` and optional ``"version"`` of an /api/v1 or stream request body."""
    model = _opt_str(obj.get("model"), "model")
    if not model:
        raise bad_request('"model" (the model name) is required')
    return model, version_text(obj.get("version"))


def _params(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{where} parameters must be a JSON object")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f'"{what}" must be a string')
    return value


def _opt_bool(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"parameters.{what} must be true or false")
    return value


def _parse_outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad_request('"outputs" must be a list of names or {"name": ...} objects')
    out = []
    for i, o in enumerate(value):
        if isinstance(o, str):  # /api/v1 allows plain names
            out.append(RequestedOutput(o))
            continue
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise bad_request(f'outputs[{i}] must be a name or an object with a "name" string')
        p = _params(o.get("parameters"), f"outputs[{i}]")
        binary = p.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise bad_request(f"outputs[{i}].parameters.binary_data must be true or false")
        k = p.get("classification", 0)
        k = as_int(k)
        if k is None or k < 0:
            raise bad_request(f"outputs[{i}].parameters.classification must be an integer >= 0")
        out.append(RequestedOutput(o["name"], binary, k))
    return out


class _BinaryReader:
    """Hands out consecutive slices of the binary section and checks it is used up exactly."""

    def __init__(self, data: memoryview | None):
        self.data = data
        self.pos = 0

    def take(self, n: int, where: str) -> memoryview:
        if self.data is None:
            raise bad_request(
                f"{where} has binary_data_size but the request has no binary section; "
                "send the Inference-Header-Content-Length header"
            )
        if self.pos + n > len(self.data):
            raise bad_request(
                f"{where}: binary_data_size {n} runs past the end of the body "
                f"({len(self.data) - self.pos} bytes left)"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def finish(self) -> None:
        if self.data is not None and self.pos != len(self.data):
            raise bad_request(
                f"the binary section has {len(self.data)} bytes but the inputs' "
                f"binary_data_size add up to {self.pos}"
            )


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise bad_request(f'{where}: "shape" must be a list of integers')
    if len(value) > MAX_RANK:
        raise bad_request(f"{where}: rank {len(value)} exceeds the maximum of {MAX_RANK}")
    dims = []
    for d in value:
        n = as_int(d)
        if n is None:
            raise bad_request(f'{where}: "shape" must hold integers, got {d!r}')
        if n < 0 or n > MAX_DIM:
            raise bad_request(f"{where}: dimension {n} is out of range (0..{MAX_DIM})")
        dims.append(n)
    return tuple(dims)


def decode_tensor(t: Any, reader: _BinaryReader, *, where: str) -> tuple[str, np.ndarray]:
    """Decode one V2 input tensor (JSON data or binary slice) into a numpy array."""
    if not isinstance(t, dict):
        raise bad_request(f"{where} must be a tensor object")
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f'{where}: "name" must be a non-empty string')
    where = f"input {name!r}"
    datatype = t.get("datatype")
    if datatype not in DATATYPES:
        raise bad_request(
            f"{where}: datatype {datatype!r} is not a V2 datatype (one of {', '.join(DATATYPES)})"
        )
    shape = _shape(t.get("shape"), where)
    count = math.prod(shape)
    if count > MAX_DIM:
        raise bad_request(f"{where}: shape {list(shape)} has {count} elements, out of range")
    dtype = DATATYPES[datatype]
    size = _params(t.get("parameters"), where).get("binary_data_size")
    if size is not None:
        size = as_int(size)
        if size is None or size < 0:
            raise bad_request(f"{where}: binary_data_size must be a non-negative integer")
        if "data" in t:
            raise bad_request(f'{where}: give either "data" or binary_data_size, not both')
        chunk = reader.take(size, where)
        return name, _from_binary(chunk, datatype, dtype, shape, count, where)
    if "data" not in t:
        raise bad_request(f'{where}: "data" is missing (or use the binary extension)')
    return name, _from_json(t["data"], datatype, dtype, shape, count, where)


def _from_binary(
    chunk: memoryview, datatype: str, dtype: np.dtype, shape: tuple, count: int, where: str
) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_from_binary(chunk, shape, count, where)
    if len(chunk) != count * dtype.itemsize:
        raise bad_request(
            f"{where}: binary_data_size is {len(chunk)} bytes but shape {list(shape)} of "
            f"{datatype} needs {count * dtype.itemsize}"
        )
    # frombuffer is zero-copy; the body outlives the request, and kernels never write to feeds.
    return np.frombuffer(chunk, dtype=dtype, count=count).reshape(shape)


def _bytes_from_binary(chunk: memoryview, shape: tuple, count: int, where: str) -> np.ndarray:
    items: list[str] = []
    pos, end = 0, len(chunk)
    raw = bytes(chunk)
    # A loop per element is inherent to length-prefixed strings; count is bounded by the body size.
    for _ in range(count):
        if pos + 4 > end:
            raise bad_request(f"{where}: BYTES data ends before element {len(items)}'s length")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > end:
            raise bad_request(f"{where}: BYTES element {len(items)} of {n} bytes overruns the data")
        try:
            items.append(raw[pos : pos + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise bad_request(f"{where}: BYTES element {len(items)} is not valid UTF-8") from None
        pos += n
    if pos != end:
        raise bad_request(f"{where}: {end - pos} bytes left after {count} BYTES elements")
    arr = np.empty(count, dtype=object)
    arr[:] = items
    return arr.reshape(shape)


def _from_json(
    data: Any, datatype: str, dtype: np.dtype, shape: tuple, count: int, where: str
) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]  # a scalar for a one-element tensor
    try:
        raw = np.array(data)
    except (ValueError, OverflowError, RecursionError):
        raise bad_request(f"{where}: data is ragged or not numbers/strings/booleans") from None
    if raw.size != count:
        raise bad_request(
            f"{where}: data has {raw.size} elements but shape {list(shape)} needs {count}"
        )
    kind = raw.dtype.kind
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    if datatype == "BYTES":
        if kind != "U":
            raise bad_request(f"{where}: BYTES data must be strings")
        return raw.astype(object).reshape(shape)
    if datatype == "BOOL":
        if kind != "b":
            raise bad_request(f"{where}: BOOL data must be true/false")
        return raw.reshape(shape)
    if dtype.kind in "iu":
        if kind not in "iu":
            raise bad_request(f"{where}: {datatype} data must be integers, got {_kind_name(kind)}")
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise bad_request(f"{where}: a value is out of {datatype}'s range")
        return raw.astype(dtype).reshape(shape)
    if kind not in "iuf":
        raise bad_request(f"{where}: {datatype} data must be numbers, got {_kind_name(kind)}")
    return raw.astype(dtype).reshape(shape)


def _kind_name(kind: str) -> str:
    return {"U": "strings", "b": "booleans", "f": "floats", "O": "mixed values"}.get(kind, kind)


# ----------------------------------------------------------------------------- response encoding


def classify(arr: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` of the last axis as "value:index" strings (Triton's classification extension)."""
    if arr.ndim == 0 or arr.dtype.kind not in "iuf" and arr.dtype != DATATYPES["BF16"]:
        raise bad_request("classification needs a numeric output of rank >= 1")
    k = min(k, arr.shape[-1])
    flat = np.asarray(arr, dtype=np.float64).reshape(-1, arr.shape[-1])
    idx = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(flat, idx, axis=1)
    out = np.array(
        [f"{v:f}:{i}" for v, i in zip(vals.ravel().tolist(), idx.ravel().tolist())], dtype=object
    )
    return out.reshape(*arr.shape[:-1], k)


def bytes_element(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    return str(v).encode("utf-8")


def tensor_json(name: str, arr: np.ndarray) -> tuple[dict[str, Any], bool]:
    """(V2 JSON tensor, has non-finite floats)."""
    datatype = v2_datatype(arr.dtype)
    nonfinite = False
    if datatype == "BYTES":
        data: Any = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in arr.ravel().tolist()
        ]
    else:
        if datatype == "BF16":  # orjson has no bfloat16; float32 holds every bfloat16 exactly
            arr = arr.astype(np.float32)
        data = np.ascontiguousarray(arr).reshape(-1)
        if arr.dtype.kind == "f" and not np.isfinite(data).all():
            nonfinite = True
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}, nonfinite


def tensor_bytes(arr: np.ndarray) -> bytes:
    """Raw bytes of a tensor in the binary extension's layout."""
    if v2_datatype(arr.dtype) == "BYTES":
        parts = []
        for v in arr.ravel().tolist():
            b = bytes_element(v)
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(arr).tobytes()


def encode_outputs(
    results: list[tuple[RequestedOutput, np.ndarray]], binary_default: bool
) -> tuple[list[dict[str, Any]], list[bytes], bool]:
    """Encode outputs: (tensor dicts, binary chunks in order, any non-finite floats in JSON)."""
    tensors, chunks, nonfinite = [], [], False
    for req, arr in results:
        if req.classification:
            arr = classify(arr, req.classification)
        binary = binary_default if req.binary is None else req.binary
        if binary:
            blob = tensor_bytes(arr)
            chunks.append(blob)
            tensors.append(
                {
                    "name": req.name,
                    "datatype": v2_datatype(arr.dtype),
                    "shape": list(arr.shape),
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
        else:
            t, nf = tensor_json(req.name, arr)
            nonfinite |= nf
            tensors.append(t)
    return tensors, chunks, nonfinite


def encode_response(
    head: dict[str, Any], chunks: list[bytes], nonfinite: bool
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when no binary data follows)."""
    header = dumps(head, nonfinite=nonfinite)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
