"""Model file formats. ``formats.onnx`` reads ONNX protobuf files into ``ziggurat.ir``."""
