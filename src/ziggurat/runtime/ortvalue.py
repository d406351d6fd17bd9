"""``OrtValue`` and ``OrtDevice``: onnxruntime's value and device handles, on the CPU.

An ``OrtValue`` holds one value a model reads or writes: a tensor (a numpy array), a sequence, a map
or a sparse tensor. A tensor made from a numpy array shares that array's memory, as onnxruntime's
CPU values do: ``numpy()`` returns a view, ``update_inplace`` writes through to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ir
from ..errors import ConfigError, InputError


class OrtDevice:
    """A device: type (``OrtDevice.cpu()`` = 0, ``gpu()`` = 1, ``fpga()`` = 2, ``npu()`` = 3),
    memory type (``default_memory()`` = 0) and id, as onnxruntime's ``OrtDevice``."""

    _TYPES = {"cpu": 0, "cuda": 1, "gpu": 1, "dml": 1, "webgpu": 1, "cann": 3, "npu": 3}
    _VENDORS = {"cuda": 0x10DE}  # PCI vendor id onnxruntime records for the device (NVIDIA)

    __slots__ = ("_type", "_mem", "_id", "_vendor")

    def __init__(
        self, device_type: int, memory_type: int = 0, device_id: int = 0, vendor_id: int = 0
    ):
        self._type, self._mem, self._id, self._vendor = (
            device_type,
            memory_type,
            device_id,
            vendor_id,
        )

    @staticmethod
    def make(device_name: str, device_id: int = 0) -> OrtDevice:
        """A device by onnxruntime's name ("cpu", "cuda", "cann", "dml", "webgpu") and id."""
        kind = OrtDevice._TYPES.get(str(device_name).lower())
        if kind is None:
            raise ConfigError(
                f"unknown device name {device_name!r}; expected one of {', '.join(OrtDevice._TYPES)}"
            )
        return OrtDevice(kind, 0, device_id, OrtDevice._VENDORS.get(str(device_name).lower(), 0))

    @staticmethod
    def cpu() -> int:
        return 0

    @staticmethod
    def gpu() -> int:
        return 1

    @staticmethod
    def fpga() -> int:
        return 2

    @staticmethod
    def npu() -> int:
        return 3

    @staticmethod
    def default_memory() -> int:
        return 0

    def device_type(self) -> int:
        return self._type

    def device_mem_type(self) -> int:
        return self._mem

    def device_id(self) -> int:
        return self._id

    def vendor_id(self) -> int:
        return self._vendor

    def device_vendor_id(self) -> int:
        return self._vendor

    def name(self) -> str:
        """ "cpu" or "cuda"-style name of the device (what ``OrtValue.device_name`` says)."""
        return "cpu" if self._type == 0 else ("cuda" if self._type == 1 else "npu")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrtDevice) and (self._type, self._mem, self._id) == (
            other._type, other._mem, other._id,
        )  # fmt: skip

    def __hash__(self) -> int:
        return hash((self._type, self._mem, self._id))

    def __repr__(self) -> str:
        return f"OrtDevice({self.name()}, id={self._id})"


def _cpu_only(device_type: str) -> None:
    if str(device_type).lower() != "cpu":
        raise ConfigError(
            f"OrtValue on device {device_type!r}: this build keeps OrtValues in CPU memory only; "
            "use device_type='cpu' (the session moves data to its provider)"
        )


def type_of(value: Any) -> str:
    """onnxruntime's type string of a Python value: tensor(float), seq(tensor(int64)), ..."""
    if isinstance(value, OrtValue):
        return value.data_type()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUS":
            return "tensor(string)"
        return f"tensor({ir.dtypes.name(ir.dtypes.from_numpy(value.dtype))})"
    if isinstance(value, list):
        return f"seq({type_of(value[0])})" if value else "seq(tensor(float))"
    if isinstance(value, dict):
        if not value:
            return "map(int64,tensor(float))"
        k, v = next(iter(value.items()))
        key = "string" if isinstance(k, str) else "int64"
        return f"map({key},{type_of(np.asarray(v))})"
    from .sparse import SparseTensor

    if isinstance(value, SparseTensor):
        return value.data_type()
    return "unknown"


class OrtValue:
    """A value for ``InferenceSession.run`` / ``run_with_ort_values`` (onnxruntime's OrtValue)."""

    __slots__ = ("_value",)

    def __init__(self, ortvalue: Any, numpy_obj: Any = None):
        # onnxruntime's constructor wraps its C value; here the value itself (array, list, dict).
        self._value = ortvalue._value if isinstance(ortvalue, OrtValue) else ortvalue

    # -- construction --------------------------------------------------------------------------
    @staticmethod
    def ortvalue_from_numpy(
        numpy_obj: np.ndarray, device_type: str = "cpu", device_id: int = 0, vendor_id: int = -1
    ) -> OrtValue:
        """A tensor sharing ``numpy_obj``'s memory (a contiguous copy if it is not C-contiguous)."""
        _cpu_only(device_type)
        arr = np.asarray(numpy_obj)
        if arr.dtype.kind in "US":
            arr = arr.astype(object)
        return OrtValue(np.ascontiguousarray(arr))

    @staticmethod
    def ortvalue_from_numpy_with_onnx_type(data: np.ndarray, onnx_element_type: int) -> OrtValue:
        """A tensor of ONNX element type ``onnx_element_type`` over ``data``'s bytes (for types
        numpy lacks: bfloat16 from uint16 data, float8 from uint8, ...)."""
        want = ir.dtypes.to_numpy(int(onnx_element_type))
        arr = np.ascontiguousarray(data)
        if arr.dtype == want:
            return OrtValue(arr)
        if arr.dtype.itemsize != want.itemsize:
            raise InputError(
                f"ortvalue_from_numpy_with_onnx_type: {ir.dtypes.name(onnx_element_type)} needs "
                f"{want.itemsize}-byte elements; got {arr.dtype} ({arr.dtype.itemsize} bytes)"
            )
        return OrtValue(arr.view(want))

    @staticmethod
    def ortvalue_from_shape_and_type(
        shape: Any, element_type: Any, device_type: str = "cpu", device_id: int = 0,
        vendor_id: int = -1,
    ) -> OrtValue:  # fmt: skip
        """A new zero-filled tensor; ``element_type`` a numpy type or an ONNX element type int."""
        _cpu_only(device_type)
        if isinstance(element_type, (int, np.integer)) and not isinstance(element_type, bool):
            dt = ir.dtypes.to_numpy(int(element_type))
        else:
            dt = np.dtype(element_type)
        return OrtValue(np.zeros(tuple(int(d) for d in shape), dtype=dt))

    @staticmethod
    def ort_value_from_sparse_tensor(sparse_tensor: Any) -> OrtValue:
        return OrtValue(sparse_tensor)

    # -- onnxruntime's C-value plumbing: the Python and C objects are one here ------------------
    def _get_c_value(self) -> OrtValue:
        return self

    @property
    def _ortvalue(self) -> OrtValue:
        return self

    # -- inspection ----------------------------------------------------------------------------
    def has_value(self) -> bool:
        return self._value is not None

    def is_tensor(self) -> bool:
        return isinstance(self._value, np.ndarray)

    def is_tensor_sequence(self) -> bool:
        return isinstance(self._value, list)

    def is_sparse_tensor(self) -> bool:
        from .sparse import SparseTensor

        return isinstance(self._value, SparseTensor)

    def as_sparse_tensor(self) -> Any:
        if not self.is_sparse_tensor():
            raise InputError(f"this OrtValue holds {self.data_type()}, not a sparse tensor")
        return self._value

    def _tensor(self) -> np.ndarray:
        if not isinstance(self._value, np.ndarray):
            raise InputError(f"this OrtValue holds {self.data_type()}, not a tensor")
        return self._value

    def data_type(self) -> str:
        """onnxruntime's type string: 'tensor(float)', 'seq(tensor(int64))', ..."""
        return type_of(self._value)

    def element_type(self) -> int:
        """The ONNX element type of a tensor (TensorProto.FLOAT = 1, ...)."""
        arr = self._tensor()
        return ir.dtypes.STRING if arr.dtype.kind in "OUS" else ir.dtypes.from_numpy(arr.dtype)

    def shape(self) -> list[int]:
        return list(self._tensor().shape)

    def tensor_size_in_bytes(self) -> int:
        return int(self._tensor().nbytes)

    def device_name(self) -> str:
        return "cpu"

    def data_ptr(self) -> int:
        return int(self._tensor().ctypes.data)

    def numpy(self) -> Any:
        """The tensor as a numpy array sharing this value's memory (a list for a sequence, a dict
        for a map)."""
        v = self._value
        if isinstance(v, list):
            return [x.numpy() if isinstance(x, OrtValue) else x for x in v]
        return v

    # -- DLPack: zero-copy exchange with torch, JAX, CuPy, ... (numpy's implementation) ------------
    def to_dlpack(self) -> Any:
        """A DLPack capsule viewing this tensor's memory."""
        return self._tensor().__dlpack__()

    def __dlpack__(self, *, stream: Any = None, **kwargs: Any) -> Any:
        return self._tensor().__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0

    @staticmethod
    def from_dlpack(data: Any, is_bool_tensor: bool = False) -> OrtValue:
        """An OrtValue sharing the memory of a DLPack capsule or of an object with
        ``__dlpack__`` (CPU memory). ``is_bool_tensor``: the producer stored bools as uint8
        (DLPack before 0.8 had no bool type)."""
        src = data if hasattr(data, "__dlpack__") else _Capsule(data)
        arr = np.from_dlpack(src)
        if is_bool_tensor and arr.dtype == np.uint8:
            arr = arr.view(np.bool_)
        return OrtValue(arr)

    def update_inplace(self, np_arr: np.ndarray) -> None:
        """Overwrite the tensor's data with ``np_arr`` (same number of elements)."""
        arr = self._tensor()
        src = np.asarray(np_arr)
        if src.size != arr.size:
            raise InputError(
                f"update_inplace: the array has {src.size} elements, the OrtValue {arr.size} "
                f"(shape {list(arr.shape)}); the input size must match"
            )
        np.copyto(arr, src.reshape(arr.shape), casting="unsafe")

    def __repr__(self) -> str:
        if isinstance(self._value, np.ndarray):
            return f"OrtValue({self.data_type()}, shape={self.shape()})"
        return f"OrtValue({self.data_type()})"


class _Capsule:
    """A bare DLPack capsule, presented to ``np.from_dlpack`` as a CPU producer."""

    def __init__(self, capsule: Any):
        self._capsule = capsule

    def __dlpack__(self, *, stream: Any = None, **kwargs: Any) -> Any:
        return self._capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)


def is_dlpack_uint8_tensor(capsule: Any) -> bool:
    """Whether a DLPack capsule holds uint8 data (without consuming it): onnxruntime's helper
    for producers that store bools as uint8. Reads DLTensor.dtype (code 1 = unsigned, 8 bits)."""
    import ctypes

    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    ptr = get(capsule, b"dltensor")  # DLManagedTensor*: its DLTensor comes first
    # DLTensor: void* data; DLDevice {int32 type, int32 id}; int32 ndim; DLDataType {u8 code,
    # u8 bits, u16 lanes}: the dtype sits at byte 20.
    code, bits = ctypes.string_at(ptr + 20, 2)
    return code == 1 and bits == 8


class OrtValueVector(list):
    """What ``run_with_ort_values`` of the C-level session returns: a list of OrtValues."""

    def push_back(self, value: OrtValue) -> None:
        self.append(value)


def unwrap(value: Any) -> Any:
    """A feed as the engine takes it: the array/list/dict inside an OrtValue, else unchanged."""
    if isinstance(value, OrtValue):
        v = value._value
        if isinstance(v, list):
            return [unwrap(x) for x in v]
        from .sparse import SparseTensor

        if isinstance(v, SparseTensor):
            return v.to_dense()
        return v
    return value
