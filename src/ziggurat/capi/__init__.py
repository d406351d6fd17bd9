"""onnxruntime's ``onnxruntime.capi`` modules under Ziggurat, so that code importing from them
(``from onnxruntime.capi.onnxruntime_pybind11_state import Fail``) works after switching the
import to ``ziggurat``: ``onnxruntime_pybind11_state`` (and its alias ``_pybind_state``) with the
exception types and value classes, ``onnxruntime_inference_collection`` with the session classes
and ``check_and_normalize_provider_args``. Nothing here is imported by ``import ziggurat``.
"""
