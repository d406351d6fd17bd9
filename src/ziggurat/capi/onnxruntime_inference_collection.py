"""onnxruntime's Python-level classes module, under Ziggurat's names."""

from ..runtime.io_binding import IOBinding
from ..runtime.ort_session import check_and_normalize_provider_args
from ..runtime.ortvalue import OrtDevice, OrtValue
from ..runtime.session import InferenceSession
from ..runtime.sparse import SparseTensor

__all__ = [
    "IOBinding",
    "InferenceSession",
    "OrtDevice",
    "OrtValue",
    "SparseTensor",
    "check_and_normalize_provider_args",
]
