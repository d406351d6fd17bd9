"""What ``InferenceSession`` does to a loaded model before optimizing it, from ``SessionOptions``.

onnxruntime's semantics: options stored in the model (``ORT_LOAD_CONFIG_FROM_MODEL=1``),
initializers given by the user (``add_initializer``), free-dimension overrides (by ``dim_param``
name or by dimension denotation), and after optimization the optimized graph written to
``optimized_model_filepath``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .. import ir
from ..errors import ConfigError
from .options import ExecutionMode, GraphOptimizationLevel, SessionOptions

# onnxruntime's session-options keys in a model's "ort_config" metadata -> how to read them.
_MODEL_CONFIG_KEYS = {
    "intra_op_num_threads": int,
    "inter_op_num_threads": int,
    "execution_mode": lambda v: ExecutionMode(int(v)),
    "graph_optimization_level": lambda v: GraphOptimizationLevel(int(v)),
    "enable_profiling": lambda v: bool(int(v)),
    "log_severity_level": int,
    "log_verbosity_level": int,
    "logid": str,
    "optimized_model_filepath": str,
    "profile_file_prefix": str,
    "enable_cpu_mem_arena": lambda v: bool(int(v)),
    "enable_mem_pattern": lambda v: bool(int(v)),
    "enable_mem_reuse": lambda v: bool(int(v)),
    "use_deterministic_compute": lambda v: bool(int(v)),
}
_DIM_DENOTATION = 3  # TensorShapeProto.Dimension.denotation (schema.py lists only what loads)
EXTERNAL_FILE_KEY = "session.optimized_model_external_initializers_file_name"
EXTERNAL_MIN_KEY = "session.optimized_model_external_initializers_min_size_in_bytes"


def options_from_model(model: ir.Model, options: SessionOptions) -> SessionOptions:
    """With ``ORT_LOAD_CONFIG_FROM_MODEL=1`` in the environment and an ``ort_config`` entry in the
    model's metadata (JSON ``{"session_options": {...}}``), a copy of ``options`` with the model's
    settings applied; otherwise ``options`` itself."""
    if os.environ.get("ORT_LOAD_CONFIG_FROM_MODEL") != "1" or "ort_config" not in model.metadata:
        return options
    where = f"model {model.path or model.graph.name!r}: metadata 'ort_config'"
    try:
        settings = json.loads(model.metadata["ort_config"]).get("session_options", {})
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"{where} is not a JSON object with 'session_options': {e}") from None
    unknown = sorted(set(settings) - set(_MODEL_CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"{where} sets {', '.join(unknown)}, which Ziggurat does not know; known: "
            f"{', '.join(sorted(_MODEL_CONFIG_KEYS))}"
        )
    opts = dataclasses.replace(options)
    for key, value in settings.items():
        try:
            setattr(opts, key, _MODEL_CONFIG_KEYS[key](value))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: bad value {value!r} for {key}: {e}") from None
    return opts


def apply_initializers(model: ir.Model, options: SessionOptions) -> None:
    """Replace the model's initializers by those given with ``add_initializer``."""
    inits = model.graph.initializers
    for name, arr in options._initializers.items():
        old = inits.get(name)
        if old is None:
            raise ConfigError(
                f"add_initializer: model {model.graph.name!r} has no initializer {name!r}; its "
                f"initializers are: {', '.join(list(inits)[:20]) or 'none'}"
            )
        if getattr(old, "dtype", arr.dtype) != arr.dtype:
            raise ConfigError(
                f"add_initializer: {name!r} is {arr.dtype} but the model's is {old.dtype}"
            )
        inits[name] = arr


def apply_free_dims(model: ir.Model, options: SessionOptions, source: Any) -> None:
    """Fix symbolic input dimensions overridden by name or by denotation (graph inputs only, as
    onnxruntime does; shape inference carries them on)."""
    by_name, by_den = options._dims_by_name, options._dims_by_denotation
    if not by_name and not by_den:
        return
    denotations = _input_denotations(source) if by_den else {}
    for v in model.graph.inputs:
        t = v.type
        if t is None or t.kind != "tensor" or t.shape is None:
            continue
        dens = denotations.get(v.name, [])
        shape = list(t.shape)
        for i, d in enumerate(shape):
            den = dens[i] if i < len(dens) else ""
            if den in by_den:
                shape[i] = _fixed(v.name, i, d, by_den[den])
            elif isinstance(d, str) and d in by_name:
                shape[i] = by_name[d]
        v.type = dataclasses.replace(t, shape=tuple(shape))


def _fixed(name: str, axis: int, dim: Any, value: int) -> int:
    if isinstance(dim, int) and dim != value:
        raise ConfigError(
            f"free dimension override: input {name!r} dim {axis} is fixed at {dim}, the override "
            f"asks for {value}"
        )
    return value


def _input_denotations(source: Any) -> dict[str, list[str]]:
    """Per graph input, the denotation of each dimension ("" where none), read from the file's
    bytes (the IR does not keep denotations: only these overrides need them)."""
    if isinstance(source, (str, os.PathLike)):
        import mmap

        with open(source, "rb") as f:  # mapped: only the pages holding these fields are read
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _scan_denotations(mm)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _scan_denotations(source)
    return {}


def _scan_denotations(buf: Any) -> dict[str, list[str]]:
    from ..formats.onnx import schema as S
    from ..formats.onnx.wire import iter_fields, text

    def sub(a: int, b: int, num: int) -> list[tuple[int, int]]:
        return [(x, y) for n, wt, x, y in iter_fields(buf, a, b) if n == num and wt == 2]

    out: dict[str, list[str]] = {}
    for ga, gb in sub(0, len(buf), S.MODEL_GRAPH):
        for va, vb in sub(ga, gb, S.GRAPH_INPUT):
            name = "".join(text(buf, x, y) for x, y in sub(va, vb, S.VI_NAME))
            dens = []
            for ta, tb in sub(va, vb, S.VI_TYPE):
                for sa, sb in sub(ta, tb, S.TYPE_TENSOR):
                    for ha, hb in sub(sa, sb, S.TENSOR_TYPE_SHAPE):
                        for da, db in sub(ha, hb, S.SHAPE_DIM):
                            den = sub(da, db, _DIM_DENOTATION)
                            dens.append("".join(text(buf, x, y) for x, y in den))
            out[name] = dens
    return out


def save_optimized(model: ir.Model, graph: ir.Graph, options: SessionOptions) -> None:
    """Write the optimized ``graph`` to ``options.optimized_model_filepath`` as ONNX; with the
    session config entry EXTERNAL_FILE_KEY, initializers of at least EXTERNAL_MIN_KEY bytes
    (default 1024, as onnxruntime's) go to that file next to the model."""
    from ..formats.onnx.writer import save_model

    out = ir.Model(
        graph, dict(model.opsets), model.ir_version, model.producer_name, model.producer_version,
        model.domain, model.model_version, model.doc, dict(model.metadata),
    )  # fmt: skip
    cfg = options._config
    path = options.optimized_model_filepath
    # onnxruntime picks its own ORT flatbuffer format for a ".ort" name or this entry: refused
    # rather than writing ONNX bytes under a name that promises the other format.
    fmt = cfg.get("session.save_model_format", "ORT" if path.lower().endswith(".ort") else "ONNX")
    if fmt.upper() != "ONNX":
        raise ConfigError(
            f"optimized_model_filepath {path!r}: Ziggurat writes ONNX files only, not "
            "onnxruntime's ORT format; use a .onnx name (session.save_model_format = ONNX)"
        )
    save_model(
        out,
        options.optimized_model_filepath,
        external_file=cfg.get(EXTERNAL_FILE_KEY, ""),
        external_min_bytes=int(cfg.get(EXTERNAL_MIN_KEY, "1024")),
    )
