"""SessionOptions and the enums onnxruntime users know, with the same names and values."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

# Compute precisions a CPU session accepts: "fp32" (exact float32 semantics) and "bf16" (constant
# weights of MatMul/Gemm/Dense stored in bfloat16, their GEMMs in bf16 with float32 accumulation;
# needs AVX512-BF16 or AMX). "fp16" is for GPU providers.
PRECISIONS = ("fp32", "bf16", "fp16")  # fp16: device sessions only (check_precision refuses it)


class GraphOptimizationLevel(enum.IntEnum):
    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


class ExecutionOrder(enum.IntEnum):
    DEFAULT = 0
    PRIORITY_BASED = 1
    MEMORY_EFFICIENT = 2


@dataclass(slots=True)
class SessionOptions:
    """Per-session settings; the same fields are reachable from ``ziggurat.Config``.

    Slotted, as onnxruntime's is: assigning a misspelt field (``so.precison = "bf16"``) raises
    AttributeError instead of being silently ignored."""

    graph_optimization_level: GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL
    intra_op_num_threads: int = 0  # 0: all cores
    inter_op_num_threads: int = 0
    execution_mode: ExecutionMode = ExecutionMode.ORT_SEQUENTIAL
    enable_profiling: bool = False
    profile_file_prefix: str = "ziggurat_profile"
    log_severity_level: int = 2
    enable_fusion: bool = True
    # dynamic int8 quantization: MatMul/Gemm weights per column at load, inputs per call
    # (passes/quantize_weights.py).
    enable_quantization: bool = False
    # "fp32" (default) or "bf16" (passes/pack_weights.py; refused on CPUs without bf16 support).
    precision: str = "fp32"
    # onnxruntime's: a name for this session's log lines, and the verbosity of level-0 logging.
    logid: str = ""
    log_verbosity_level: int = 0
    # Where to write the optimized graph as ONNX ("" = don't); see add_session_config_entry for
    # the external-initializer file keys (runtime/session_setup.py).
    optimized_model_filepath: str = ""
    # onnxruntime's memory and scheduling switches, accepted so that code setting them runs
    # unchanged. They change nothing here, by design: Ziggurat has no CPU arena (numpy allocates,
    # glibc keeps freed pages: backends/cpu.tune_allocator), always plans buffer reuse per shape
    # signature (runtime/plan.py), runs nodes in one topological order (sequential mode), and
    # its kernels do not pick algorithms at run time.
    enable_cpu_mem_arena: bool = True
    enable_mem_pattern: bool = True
    enable_mem_reuse: bool = True
    use_deterministic_compute: bool = False
    execution_order: ExecutionOrder = ExecutionOrder.DEFAULT
    use_per_session_threads: bool = True
    # Set through the methods below, as in onnxruntime.
    _config: dict[str, str] = field(default_factory=dict, repr=False)
    _initializers: dict[str, Any] = field(default_factory=dict, repr=False)
    _external_initializers: dict[str, Any] = field(default_factory=dict, repr=False)
    _external_files: dict[str, Any] = field(default_factory=dict, repr=False)
    _dims_by_name: dict[str, int] = field(default_factory=dict, repr=False)
    _dims_by_denotation: dict[str, int] = field(default_factory=dict, repr=False)

    def add_session_config_entry(self, key: str, value: str) -> None:
        """Set a session configuration entry (onnxruntime's string key/value pairs). Keys Ziggurat
        acts on: ``session.optimized_model_external_initializers_file_name`` and
        ``session.optimized_model_external_initializers_min_size_in_bytes`` (with
        ``optimized_model_filepath``: initializers of at least that size go to that file, next to
        the model), ``session.save_model_format`` (only "ONNX" is written; "ORT" is refused),
        ``session.use_env_allocators`` (recorded: Ziggurat sessions allocate from
        numpy and the plan's buffers either way). Other keys are kept and returned by
        ``get_session_config_entry`` but change nothing."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(
                f"add_session_config_entry takes two strings; got {type(key).__name__} and "
                f"{type(value).__name__}"
            )
        if key == "session.optimized_model_external_initializers_min_size_in_bytes":
            _check_int(key, value)
        self._config[key] = value

    def get_session_config_entry(self, key: str) -> str:
        """The value set by ``add_session_config_entry``; RuntimeError (ConfigError) if unset."""
        try:
            return self._config[key]
        except KeyError:
            raise ConfigError(
                f"SessionOptions does not have configuration with key: {key}"
            ) from None

    def add_initializer(self, name: str, value: Any) -> None:
        """Use ``value`` (an OrtValue or ndarray) for the model's initializer ``name`` instead of
        the one stored in the model. The array is used as given (not copied): keep it unchanged
        while sessions built from these options exist, as onnxruntime asks."""
        self._initializers[name] = _as_array(name, value)

    def add_external_initializers(self, names: list[str], values: list[Any]) -> None:
        """Provide the data of initializers that the model keeps in external files, by name: the
        model's reference to the file is not followed for these (the file need not exist)."""
        if len(names) != len(values):
            raise ConfigError(
                f"add_external_initializers: {len(names)} names but {len(values)} values"
            )
        for name, value in zip(names, values):
            self._external_initializers[name] = _as_array(name, value)

    def add_external_initializers_from_files_in_memory(
        self, file_names: list[str], buffers: list[Any], lengths: list[int]
    ) -> None:
        """Provide the contents of the model's external data files from memory: each file name
        as the model's tensors name it, its bytes, and how many of them to use."""
        if not len(file_names) == len(buffers) == len(lengths):
            raise ConfigError(
                f"add_external_initializers_from_files_in_memory: {len(file_names)} names, "
                f"{len(buffers)} buffers and {len(lengths)} lengths; give one of each per file"
            )
        for name, buf, n in zip(file_names, buffers, lengths):
            view = memoryview(buf).cast("B")
            if not 0 <= int(n) <= len(view):
                raise ConfigError(f"external file {name!r}: length {n} but {len(view)} bytes given")
            self._external_files[str(name)] = view[: int(n)]

    def register_custom_ops_library(self, library_path: str) -> None:
        """onnxruntime's custom-op shared libraries implement its C ABI (OrtCustomOp), which
        Ziggurat does not host: refused with UnsupportedModelError (NOT_IMPLEMENTED)."""
        from ..errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"register_custom_ops_library({library_path!r}): custom-op libraries are built "
            "against onnxruntime's C API, which Ziggurat does not load; run models that need "
            "them with onnxruntime, or implement the op as a Ziggurat kernel (ops/registry.py)"
        )

    def add_free_dimension_override_by_name(self, dim_name: str, dim_value: int) -> None:
        """Fix the symbolic input dimension ``dim_name`` (a dim_param) to ``dim_value``."""
        self._dims_by_name[dim_name] = _check_dim(dim_name, dim_value)

    def add_free_dimension_override_by_denotation(
        self, dim_denotation: str, dim_value: int
    ) -> None:
        """Fix every input dimension with this denotation (e.g. "DATA_BATCH") to ``dim_value``."""
        self._dims_by_denotation[dim_denotation] = _check_dim(dim_denotation, dim_value)


def _check_int(key: str, value: str) -> None:
    try:
        int(value)
    except ValueError:
        raise ConfigError(f"session config entry {key} must be an integer; got {value!r}") from None


def _check_dim(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"free dimension override {what!r} must be an int >= 0; got {value!r}")
    return value


def _as_array(name: str, value: Any) -> Any:
    import numpy as np

    arr = value.numpy() if hasattr(value, "_get_c_value") else value
    if not isinstance(arr, np.ndarray):
        raise ConfigError(
            f"initializer {name!r} must be an OrtValue or a numpy array; got {type(value).__name__}"
        )
    return arr


def check_precision(value: str) -> str:
    """Validate a ``precision`` setting; for "bf16" also that this CPU can run it. Returns it
    lower-cased; raises ConfigError (``Bf16UnsupportedError`` for a CPU without bf16)."""
    p = str(value).lower()
    if p == "fp16":
        raise ConfigError(
            "precision='fp16' runs on GPU providers only; on the CPU use 'fp32' or 'bf16'"
        )
    if p not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {value!r}")
    if p == "bf16":
        from ..backends.cpu import gemm

        gemm.require_bf16()
    return p
