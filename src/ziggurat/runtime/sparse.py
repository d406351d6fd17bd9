"""``SparseTensor``: onnxruntime's sparse tensor API (COO and CSR(C) formats), on the CPU.

Values and indices are kept as given (read-only views are handed out, as onnxruntime's are); a
sparse tensor fed to a session is densified first, since Ziggurat's kernels compute on dense data.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from .. import ir
from ..errors import ConfigError, InputError
from .ortvalue import OrtDevice


class OrtSparseFormat(enum.IntEnum):
    ORT_SPARSE_UNDEFINED = 0
    ORT_SPARSE_COO = 1
    ORT_SPARSE_CSRC = 2
    ORT_SPARSE_BLOCK_SPARSE = 4


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


class SparseCooView:
    """COO indices: linear (NNZ,) or coordinates (NNZ, rank)."""

    def __init__(self, indices: np.ndarray):
        self._indices = indices

    def indices(self) -> np.ndarray:
        return _readonly(self._indices)


class SparseCsrView:
    """CSR(C) indices: ``inner`` (column per value) and ``outer`` (row starts, rows + 1)."""

    def __init__(self, inner: np.ndarray, outer: np.ndarray):
        self._inner, self._outer = inner, outer

    def inner(self) -> np.ndarray:
        return _readonly(self._inner)

    def outer(self) -> np.ndarray:
        return _readonly(self._outer)


class SparseTensor:
    """A sparse tensor (onnxruntime's ``SparseTensor``). Build one with ``sparse_coo_from_numpy``
    or ``sparse_csr_from_numpy``."""

    def __init__(self, fmt: OrtSparseFormat, shape: list[int], values: np.ndarray, idx: tuple):
        self._format, self._shape, self._values, self._idx = fmt, shape, values, idx

    @staticmethod
    def sparse_coo_from_numpy(
        dense_shape: Any, values: np.ndarray, coo_indices: np.ndarray, ort_device: OrtDevice
    ) -> SparseTensor:
        """COO: ``values`` (NNZ,), ``coo_indices`` int64 linear (NNZ,) or (NNZ, rank)."""
        shape = _shape(dense_shape, ort_device)
        vals, idx = _values(values), np.asarray(coo_indices)
        if idx.dtype != np.int64:
            raise InputError(f"COO indices must be int64; got {idx.dtype}")
        nnz = vals.shape[0]
        if idx.shape not in ((nnz,), (nnz, len(shape))) and not (nnz == 0 and idx.size == 0):
            raise InputError(
                f"COO indices of shape {list(idx.shape)} do not fit {nnz} values of a rank-"
                f"{len(shape)} tensor; expected ({nnz},) or ({nnz}, {len(shape)})"
            )
        size = int(np.prod(shape))
        if idx.size and (idx.min() < 0 or (idx.ndim == 1 and idx.max() >= size)):
            raise InputError(f"COO indices out of range for dense shape {shape}")
        return SparseTensor(OrtSparseFormat.ORT_SPARSE_COO, shape, vals, (idx,))

    @staticmethod
    def sparse_csr_from_numpy(
        dense_shape: Any, values: np.ndarray, inner_indices: np.ndarray,
        outer_indices: np.ndarray, ort_device: OrtDevice,
    ) -> SparseTensor:  # fmt: skip
        """CSR(C) of a 2-D tensor: ``inner_indices`` (NNZ,) columns, ``outer_indices`` (rows+1,)."""
        shape = _shape(dense_shape, ort_device)
        vals = _values(values)
        inner, outer = np.asarray(inner_indices), np.asarray(outer_indices)
        if len(shape) != 2:
            raise InputError(f"CSR needs a 2-D dense shape; got {shape}")
        if inner.dtype != np.int64 or outer.dtype != np.int64:
            raise InputError(f"CSR indices must be int64; got {inner.dtype} and {outer.dtype}")
        if inner.shape != (vals.shape[0],) or outer.shape != (shape[0] + 1,):
            raise InputError(
                f"CSR indices: inner must be ({vals.shape[0]},) and outer ({shape[0] + 1},); got "
                f"{list(inner.shape)} and {list(outer.shape)}"
            )
        return SparseTensor(OrtSparseFormat.ORT_SPARSE_CSRC, shape, vals, (inner, outer))

    def format(self) -> OrtSparseFormat:
        return self._format

    def dense_shape(self) -> list[int]:
        return list(self._shape)

    def data_type(self) -> str:
        et = ir.dtypes.from_numpy(self._values.dtype)
        return f"sparse_tensor({ir.dtypes.name(et)})"

    def device_name(self) -> str:
        return "cpu"

    def values(self) -> np.ndarray:
        return _readonly(self._values)

    def as_coo_view(self) -> SparseCooView:
        self._require(OrtSparseFormat.ORT_SPARSE_COO)
        return SparseCooView(self._idx[0])

    def as_csrc_view(self) -> SparseCsrView:
        self._require(OrtSparseFormat.ORT_SPARSE_CSRC)
        return SparseCsrView(*self._idx)

    def to_cuda(self, ort_device: OrtDevice) -> SparseTensor:
        raise ConfigError(
            "SparseTensor.to_cuda: sparse tensors stay in CPU memory in this build (no CUDA "
            "sparse support); feed it from the CPU"
        )

    def to_dense(self) -> np.ndarray:
        """The dense array this sparse tensor stands for (zeros elsewhere)."""
        dense = np.zeros(self._shape, dtype=self._values.dtype)
        if self._format == OrtSparseFormat.ORT_SPARSE_COO:
            (idx,) = self._idx
            if idx.ndim == 2:
                dense[tuple(idx.T)] = self._values
            else:
                dense.reshape(-1)[idx] = self._values
        else:
            inner, outer = self._idx
            rows = np.repeat(np.arange(self._shape[0]), np.diff(outer))
            dense[rows, inner] = self._values
        return dense

    def _require(self, fmt: OrtSparseFormat) -> None:
        if self._format != fmt:
            raise InputError(f"this sparse tensor is {self._format.name}, not {fmt.name}")


def _shape(dense_shape: Any, device: OrtDevice) -> list[int]:
    if device.device_type() != OrtDevice.cpu():
        raise ConfigError(f"sparse tensors are kept on the CPU in this build; got {device!r}")
    shape = [int(d) for d in dense_shape]
    if any(d < 0 for d in shape):
        raise InputError(f"dense shape has a negative dimension: {shape}")
    return shape


def _values(values: np.ndarray) -> np.ndarray:
    vals = np.asarray(values)
    if vals.ndim != 1:
        raise InputError(f"sparse values must be 1-D; got shape {list(vals.shape)}")
    return vals.astype(object) if vals.dtype.kind in "US" else vals
