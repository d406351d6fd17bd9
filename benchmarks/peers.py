"""The engines a benchmark compares, behind one interface: ``open_session(engine, src, batch, seq)``
returns ``(run, feeds)``, where ``run()`` runs the model once on ``feeds``.

Engines: ``ziggurat`` (fp32), ``ziggurat-bf16`` (``SessionOptions.precision = "bf16"``),
``ziggurat-int8`` (``SessionOptions.enable_quantization = True``),
``onnxruntime`` (CPU, fp32), ``openvino`` (its default precision on this CPU: bf16 where the CPU
has AVX512-BF16/AMX) and ``openvino-fp32`` (``INFERENCE_PRECISION_HINT=f32``). Each is imported
only when asked for, so a benchmark child process holds one engine only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from common import make_feeds

ENGINES = ("ziggurat", "ziggurat-bf16", "ziggurat-int8", "onnxruntime", "openvino", "openvino-fp32")


@dataclass
class _Arg:  # the NodeArg fields make_feeds reads
    name: str
    shape: list
    type: str


def open_session(engine: str, src: str | bytes, batch: int, seq: int):
    if engine.startswith("ziggurat"):
        import ziggurat as zg

        so = zg.SessionOptions()
        if engine == "ziggurat-bf16":
            so.precision = "bf16"
        elif engine == "ziggurat-int8":  # dynamic int8 quantization of MatMul/Gemm weights at load
            so.enable_quantization = True
        sess = zg.InferenceSession(src, so)
    elif engine == "onnxruntime":
        import onnxruntime as ort

        sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    elif engine.startswith("openvino"):
        return _openvino(src, batch, seq, fp32=engine == "openvino-fp32")
    else:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    feeds = make_feeds(sess.get_inputs(), batch, seq)
    return (lambda: sess.run(None, feeds)), feeds


def _openvino(src: str | bytes, batch: int, seq: int, fp32: bool):
    import openvino as ov

    core = ov.Core()
    if isinstance(src, bytes):  # OpenVINO reads ONNX from a file
        fd, path = tempfile.mkstemp(suffix=".onnx")
        with os.fdopen(fd, "wb") as f:
            f.write(src)
        model = core.read_model(path)
        os.unlink(path)
    else:
        model = core.read_model(src)
    args = []
    for p in model.inputs:
        ps = p.get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in ps]
        kind = "int64" if p.get_element_type() == ov.Type.i64 else "float"
        args.append(_Arg(p.get_any_name(), dims, f"tensor({kind})"))
    feeds = make_feeds(args, batch, seq)
    # Static shapes, as the other engines specialise for the shapes they see.
    model.reshape({p.get_any_name(): list(feeds[p.get_any_name()].shape) for p in model.inputs})
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if fp32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    return (lambda: request.infer(feeds)), feeds
