"""ONNX element types <-> numpy dtypes.

numpy has no bfloat16, float8, float4 or int4/int2 dtypes; ``ml_dtypes`` supplies them.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

# ONNX TensorProto.DataType codes (onnx.proto3). Kept here so the engine never imports onnx.
UNDEFINED, FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL = range(10)
FLOAT16, DOUBLE, UINT32, UINT64, COMPLEX64, COMPLEX128, BFLOAT16 = range(10, 17)
FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ, UINT4, INT4 = range(17, 23)
FLOAT4E2M1, FLOAT8E8M0, UINT2, INT2, FLOAT6E2M3, FLOAT6E3M2 = range(23, 29)

_TO_NUMPY: dict[int, np.dtype] = {
    FLOAT: np.dtype(np.float32),
    UINT8: np.dtype(np.uint8),
    INT8: np.dtype(np.int8),
    UINT16: np.dtype(np.uint16),
    INT16: np.dtype(np.int16),
    INT32: np.dtype(np.int32),
    INT64: np.dtype(np.int64),
    STRING: np.dtype(object),
    BOOL: np.dtype(np.bool_),
    FLOAT16: np.dtype(np.float16),
    DOUBLE: np.dtype(np.float64),
    UINT32: np.dtype(np.uint32),
    UINT64: np.dtype(np.uint64),
    COMPLEX64: np.dtype(np.complex64),
    COMPLEX128: np.dtype(np.complex128),
    BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    UINT4: np.dtype(ml_dtypes.uint4),
    INT4: np.dtype(ml_dtypes.int4),
    FLOAT4E2M1: np.dtype(ml_dtypes.float4_e2m1fn),
    FLOAT8E8M0: np.dtype(ml_dtypes.float8_e8m0fnu),
    UINT2: np.dtype(ml_dtypes.uint2),
    INT2: np.dtype(ml_dtypes.int2),
    FLOAT6E2M3: np.dtype(ml_dtypes.float6_e2m3fn),
    FLOAT6E3M2: np.dtype(ml_dtypes.float6_e3m2fn),
}
_FROM_NUMPY: dict[np.dtype, int] = {v: k for k, v in _TO_NUMPY.items()}

_NAMES = {
    FLOAT: "float", UINT8: "uint8", INT8: "int8", UINT16: "uint16", INT16: "int16",
    INT32: "int32", INT64: "int64", STRING: "string", BOOL: "bool", FLOAT16: "float16",
    DOUBLE: "double", UINT32: "uint32", UINT64: "uint64", COMPLEX64: "complex64",
    COMPLEX128: "complex128", BFLOAT16: "bfloat16", FLOAT8E4M3FN: "float8e4m3fn",
    FLOAT8E4M3FNUZ: "float8e4m3fnuz", FLOAT8E5M2: "float8e5m2", FLOAT8E5M2FNUZ: "float8e5m2fnuz",
    UINT4: "uint4", INT4: "int4", FLOAT4E2M1: "float4e2m1", FLOAT8E8M0: "float8e8m0",
    UINT2: "uint2", INT2: "int2", FLOAT6E2M3: "float6e2m3", FLOAT6E3M2: "float6e3m2",
}  # fmt: skip

# Types whose elements are packed several to a byte in raw_data.
PACKED_BITS = {UINT4: 4, INT4: 4, FLOAT4E2M1: 4, UINT2: 2, INT2: 2}


def to_numpy(elem_type: int) -> np.dtype:
    """The numpy dtype for an ONNX element type code."""
    try:
        return _TO_NUMPY[elem_type]
    except KeyError:
        raise ValueError(f"unknown ONNX element type {elem_type}") from None


def from_numpy(dtype: np.dtype | type) -> int:
    """The ONNX element type code for a numpy dtype (str_/bytes_ map to STRING)."""
    dt = np.dtype(dtype)
    if dt.kind in "USO":
        return STRING
    try:
        return _FROM_NUMPY[dt]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no ONNX element type") from None


def name(elem_type: int) -> str:
    """ONNX Runtime's spelling, e.g. 'float', used in NodeArg.type as 'tensor(float)'."""
    return _NAMES.get(elem_type, f"unknown({elem_type})")


def is_known(elem_type: int) -> bool:
    return elem_type in _TO_NUMPY
