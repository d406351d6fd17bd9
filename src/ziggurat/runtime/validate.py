"""One tensor validation for every entry point: ``InferenceSession.run`` and the model server.

A feed is checked against the model's declared inputs (names, element type, rank, fixed dims)
here and only here, so the same mistake gets the same message whether it arrives as a numpy
array in Python or as a V2 tensor over HTTP. Messages name types in the KServe V2 vocabulary
with onnxruntime's in parentheses, e.g. ``input 'x' expects FP32 (tensor(float)), got INT64
(tensor(int64))``, and end with the fix. Every error is an :class:`~ziggurat.errors.InputError`
(HTTP 400 in the server).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..ir import dtypes

# ONNX type strings as NodeArg.type spells them -> KServe V2 datatype names.
ONNX_TO_V2 = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}

# "tensor(float)" -> float32, for every element type the engine knows.
_ONNX_DTYPES: dict[str, np.dtype] = {
    f"tensor({dtypes.name(code)})": dt
    for code, dt in ((c, dtypes.to_numpy(c)) for c in range(1, 29) if dtypes.is_known(c))
}


def dtype_of(type_str: str) -> np.dtype | None:
    """The numpy dtype of an ONNX tensor type string (``tensor(float)``); None for others."""
    return _ONNX_DTYPES.get(type_str)


def onnx_type(dtype: np.dtype) -> str:
    """onnxruntime's name of a numpy dtype: ``tensor(float)``; str/bytes arrays are strings."""
    try:
        return f"tensor({dtypes.name(dtypes.from_numpy(dtype))})"
    except ValueError:
        return f"numpy {np.dtype(dtype)}"


def describe(dtype: np.dtype) -> str:
    """A dtype in both vocabularies: ``FP32 (tensor(float))``."""
    onnx = onnx_type(dtype)
    v2 = ONNX_TO_V2.get(onnx)
    return f"{v2} ({onnx})" if v2 else onnx


@dataclass(frozen=True)
class InputSpec:
    """What a model declares for one input; ``dtype`` None: not a plain tensor (not checked)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...] | None  # ints >= 0 are fixed dims; None: rank unknown
    optional: bool = False
    fixed: tuple[tuple[int, int], ...] = ()  # (axis, size) of each fixed dim

    @classmethod
    def of(cls, name: str, type_str: str, shape: Sequence[Any] | None) -> InputSpec:
        """From a NodeArg's fields (``type_str`` like ``tensor(float)``)."""
        dims = tuple(shape) if shape is not None else None
        fixed = tuple((i, d) for i, d in enumerate(dims or ()) if isinstance(d, int) and d >= 0)
        return cls(name, _ONNX_DTYPES.get(type_str), dims, type_str.startswith("optional("), fixed)

    def shape_text(self) -> str:
        return "unknown" if self.shape is None else str(list(self.shape))


def check_feeds(model: str, specs: Sequence[InputSpec], feeds: Mapping[str, Any]) -> list[Any]:
    """The feeds in input order, each checked (and lists converted); raises InputError."""
    if type(feeds) is dict and len(feeds) == len(specs):
        values = _exact(specs, feeds)
        if values is not None:
            return values
    if not isinstance(feeds, Mapping):
        raise InputError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
    check_names(model, specs, feeds)
    return [check_tensor(model, s, feeds[s.name]) if s.name in feeds else None for s in specs]


def _exact(specs: Sequence[InputSpec], feeds: dict) -> list[Any] | None:
    """The common case with as little Python as possible: every feed an ndarray of the declared
    dtype, rank and fixed dims (None: take the full check and its messages)."""
    values = []
    for s in specs:
        v = feeds.get(s.name)
        if type(v) is not np.ndarray or v.dtype != s.dtype or s.shape is None:
            return None
        shape = v.shape
        if len(shape) != len(s.shape):
            return None
        for i, d in s.fixed:
            if shape[i] != d:
                return None
        values.append(v)
    return values


def check_names(model: str, specs: Sequence[InputSpec], given: Iterable[str]) -> None:
    """Unknown or missing input names (optional inputs may be left out)."""
    declared = {s.name for s in specs}
    given = list(given)
    unknown = [k for k in given if k not in declared]
    if unknown:
        raise InputError(
            f"model '{model}' has no input(s) {', '.join(map(repr, unknown))}; its inputs "
            f"are: {', '.join(s.name for s in specs)}"
        )
    present = set(given)
    for s in specs:
        if s.name not in present and not s.optional:
            what = describe(s.dtype) if s.dtype is not None else "a value"
            raise InputError(
                f"model '{model}': missing input '{s.name}' ({what}, shape {s.shape_text()}); "
                "every non-optional input must be given"
            )


def check_tensor(model: str, spec: InputSpec, value: Any) -> Any:
    """``value`` as an array of the declared element type, rank and fixed dims."""
    want = spec.dtype
    if want is None:
        return value
    if not isinstance(value, np.ndarray):
        if type(value).__module__.startswith("cupy"):
            return value  # a device array: its owner checked it
        try:
            value = np.asarray(value, dtype=want)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(
                f"model '{model}': input '{spec.name}' expects {describe(want)}; could not "
                f"convert {type(value).__name__}: {exc}"
            ) from None
    if value.dtype != want:
        if not (want.kind == "O" and value.dtype.kind in "OUS"):
            raise InputError(
                f"model '{model}': input '{spec.name}' expects {describe(want)}, got "
                f"{describe(value.dtype)}; send {describe(want).split()[0]} data "
                f"(numpy: .astype(np.{want}))"
            )
        value = value.astype(object)
    shape = spec.shape
    if shape is not None:
        if value.ndim != len(shape):
            raise InputError(
                f"model '{model}': input '{spec.name}' expects rank {len(shape)} (shape "
                f"{list(shape)}), got rank {value.ndim} (shape {list(value.shape)})"
            )
        for axis, (d, got) in enumerate(zip(shape, value.shape)):
            if isinstance(d, int) and d >= 0 and d != got:
                raise InputError(
                    f"model '{model}': input '{spec.name}' expects dim {axis} = {d} (shape "
                    f"{list(shape)}), got {got} (shape {list(value.shape)})"
                )
    return value
