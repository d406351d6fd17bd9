"""ONNX model reading: ``load_model(path_or_bytes) -> ziggurat.ir.Model`` without the onnx package."""

from .loader import load_model

__all__ = ["load_model"]
