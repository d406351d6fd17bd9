"""``InferenceSession``: load, optimize and compile a model once, then ``run`` it many times.

Names and semantics follow onnxruntime so switching is one import. ``run`` is thread-safe: the
compiled graph keeps all state in locals of the call.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ir
from ..backends import cpu, parallel
from ..errors import ExecutionError, InputError
from ..passes import optimize
from .executor import CompiledGraph
from .options import ExecutionMode, SessionOptions, check_precision
from .ort_session import OrtSessionMixin, Overridden
from .profiler import Profiler
from .session_setup import apply_free_dims, apply_initializers, options_from_model, save_optimized
from .validate import InputSpec, check_feeds

_PROVIDERS = ("CPUExecutionProvider",)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeArg:
    """A model input or output: ``shape`` like ['batch', 784], ``type`` like 'tensor(float)'."""

    name: str
    shape: list[int | str | None] | None
    type: str


@dataclass(frozen=True)
class ModelMetadata:
    producer_name: str = ""
    graph_name: str = ""
    domain: str = ""
    description: str = ""
    graph_description: str = ""
    version: int = 0
    custom_metadata_map: dict[str, str] = field(default_factory=dict)


def type_string(t: ir.Type | None) -> str:
    """onnxruntime's spelling of a type: tensor(float), seq(tensor(int64)), optional(...)."""
    if t is None:
        return "unknown"
    if t.kind == "sequence":
        return f"seq({type_string(t.elem)})"
    if t.kind == "optional":
        return f"optional({type_string(t.elem)})"
    if t.kind == "map":
        return f"map({ir.dtypes.name(t.elem_type)},{type_string(t.elem)})"
    return str(t)


def _requested(providers: Any, provider_options: Any) -> tuple[list[str], list[dict]] | None:
    """The providers asked for with their options as strings (for get_provider_options)."""
    if providers is None:
        return None
    from .ort_session import check_and_normalize_provider_args

    with warnings.catch_warnings():  # availability is warned about when providers are picked
        warnings.simplefilter("ignore")
        return check_and_normalize_provider_args(providers, provider_options, ())


def _node_arg(v: ir.ValueInfo) -> NodeArg:
    shape = None
    if v.type is not None and v.type.kind == "tensor" and v.type.shape is not None:
        shape = list(v.type.shape)
    return NodeArg(v.name, shape, type_string(v.type))


class InferenceSession(OrtSessionMixin):
    """Runs one ONNX model. ``path_or_bytes``: a file path, os.PathLike, bytes, or an ``ir.Model``.

    onnxruntime's methods beyond ``run`` (``run_with_ort_values``, ``run_async``,
    ``set_providers``, ...) are in ``runtime/ort_session.py``."""

    def __init__(
        self,
        path_or_bytes: str | os.PathLike | bytes | ir.Model,
        sess_options: SessionOptions | None = None,
        providers: Sequence[str | tuple[str, dict]] | None = None,
        provider_options: Sequence[dict] | None = None,
        *,
        max_size_bytes: int | None = None,
    ):
        self._options = sess_options or SessionOptions()
        self._source, self._max_size_bytes = path_or_bytes, max_size_bytes  # for set_providers
        self._requested_providers = _requested(providers, provider_options)
        self._providers = self._pick_providers(providers)  # sets self._device_kind
        precision = self._session_precision()  # bf16 on a CPU without it: refused
        cpu.tune_allocator()
        cpu.set_blas_threads(self._options.intra_op_num_threads)
        parallel.set_threads(self._options.intra_op_num_threads)
        if isinstance(path_or_bytes, ir.Model):
            model = copy.deepcopy(path_or_bytes)
        else:
            from ..formats.onnx import load_model

            model = load_model(
                path_or_bytes,
                max_size_bytes=max_size_bytes,
                external_initializers=self._options._external_initializers,
                external_files=self._options._external_files,
                # int8 quantization and bf16 convert the float weights at once: view them in
                # the file (quantize_weights / pack_weights re-align what they leave as float)
                view_unaligned=(
                    self._options.enable_quantization
                    and int(self._options.graph_optimization_level) >= 2
                )
                or (precision == "bf16" and self._device_kind is None),
            )
        self._model = model
        opts = options_from_model(model, self._options)  # ORT_LOAD_CONFIG_FROM_MODEL=1
        if opts is not self._options:
            self._options = opts
            cpu.set_blas_threads(opts.intra_op_num_threads)
            parallel.set_threads(opts.intra_op_num_threads)
        apply_initializers(model, self._options)
        apply_free_dims(model, self._options, path_or_bytes)
        name = model.graph.name or "model"
        if model.path:
            name = os.path.splitext(os.path.basename(model.path))[0]
        self.model_name = name
        self._inputs = [_node_arg(v) for v in model.graph.inputs]
        self._outputs = [_node_arg(v) for v in model.graph.outputs]
        self._input_specs = [InputSpec.of(a.name, a.type, a.shape) for a in self._inputs]
        # (name, dtype, rank, fixed dims) per input when all are tensors of known type and rank:
        # run()'s fast path; anything else falls through to the full check and its messages.
        self._fast_check: list[tuple[str, Any, int, tuple]] = []
        for v in model.graph.inputs:
            t = v.type
            if t is None or t.kind != "tensor" or t.shape is None or t.dtype is None:
                self._fast_check = []
                break
            fixed = tuple((i, d) for i, d in enumerate(t.shape) if isinstance(d, int) and d >= 0)
            self._fast_check.append((v.name, t.dtype, len(t.shape), fixed))
        graph = optimize(
            model.graph,
            model.opsets,
            int(self._options.graph_optimization_level),
            fusion=self._options.enable_fusion,
            quantize=self._options.enable_quantization,
            precision=precision if self._device_kind is None else "fp32",
        )
        graph.lint()
        if self._options.optimized_model_filepath:
            save_optimized(model, graph, self._options)  # before weights take packed layouts
        from ..passes import pack_weights  # bf16: every GEMM weight; fp32: the slow-layout ones

        if self._device_kind is None:  # packed weights are oneDNN's (CPU) layout
            pack_weights.run(graph, model.opsets, precision)
        self._profiler = None
        self._profiling_start_ns = 0
        if self._options.enable_profiling:
            self._profiler = Profiler(self._options.profile_file_prefix)
            self._profiling_start_ns = time.time_ns()
        if self._device_kind is not None:
            self._compiled = self._place_on_device(graph, model.opsets, name, precision)
        elif self._options.execution_mode == ExecutionMode.ORT_PARALLEL:
            from .scheduler import ParallelGraph  # on demand: keeps it out of cold start

            self._compiled = ParallelGraph(
                graph, model.opsets, model_name=name, profiler=self._profiler,
                threads=self._options.inter_op_num_threads,
            )  # fmt: skip
        else:
            self._compiled = CompiledGraph(
                graph, model.opsets, model_name=name, profiler=self._profiler
            )
        self._output_index = {n: i for i, n in enumerate(self._compiled.output_names)}
        self._lock = threading.Lock()
        self._variant: Any = None  # overridable initializers fed: see ort_session.py
        self._variant_lock = threading.Lock()
        self.run_count = 0
        log.info(
            "session for model '%s': providers %s, %d nodes after optimization level %d",
            name, self._providers, len(graph.nodes), int(self._options.graph_optimization_level),
            extra={"logid": self._options.logid},
        )  # fmt: skip

    # -- onnxruntime-compatible surface ------------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_overridable_initializers(self) -> list[NodeArg]:
        """Initializers a feed may replace (graph inputs with an initializer, IR version >= 4)."""
        return [_node_arg(v) for v in self._model.initializer_inputs]

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def get_session_options(self) -> SessionOptions:
        return self._options

    def get_modelmeta(self) -> ModelMetadata:
        m = self._model
        return ModelMetadata(
            producer_name=m.producer_name,
            graph_name=m.graph.name,
            domain=m.domain,
            description=m.doc,
            graph_description=m.graph.doc,
            version=m.model_version,
            custom_metadata_map=dict(m.metadata),
        )

    def run(
        self,
        output_names: Iterable[str] | None,
        input_feed: Mapping[str, Any],
        run_options: Any = None,
    ) -> list[Any]:
        """Run the model; returns the requested outputs in the order asked (all of them, in graph
        order, when ``output_names`` is None or empty, as onnxruntime does). ``run_options``: a
        ``RunOptions``; one with ``terminate`` set refuses to run (ExecutionError)."""
        if run_options is not None:
            if run_options.terminate:
                raise ExecutionError(
                    f"model '{self.model_name}': Exiting due to terminate flag being set to true "
                    "(RunOptions.terminate); clear it to run"
                )
            if run_options._adapters:  # LoRA parameters become feeds
                input_feed = self._with_adapters(input_feed, run_options._adapters)
        try:
            inputs = self._prepare(input_feed)
        except Overridden as o:  # a feed replaces an initializer: the variant session runs it
            return self._run_overridden(output_names, o.feed, run_options)
        outs = self._compiled.run(inputs)
        self.run_count += 1  # a racy counter is fine: it is statistics only
        if not output_names:
            return outs
        picked = []
        for name in output_names:
            if name not in self._output_index:
                raise InputError(
                    f"model '{self.model_name}' has no output '{name}'; outputs are: "
                    f"{', '.join(self._output_index)}"
                )
            picked.append(outs[self._output_index[name]])
        return picked

    def end_profiling(self) -> str:
        """Write the profile as a Chrome trace JSON and return its path ('' if not profiling)."""
        if self._profiler is None:
            return ""
        return self._profiler.write()

    def profile_summary(self) -> list[dict[str, Any]]:
        """Time per op type so far (needs ``enable_profiling``); slowest first."""
        return self._profiler.summary() if self._profiler is not None else []

    def execution_plan(self, input_feed: Mapping[str, Any]) -> str:
        """The execution plan specialised to these inputs' shapes and dtypes, as text: one line
        per node with its kernel, lifetime and output buffer, then planned vs naive peak bytes
        (runs the model on the feeds; what ``ziggurat inspect --plan`` prints)."""
        compiled = getattr(self._compiled, "_sequential", self._compiled)
        spec = compiled.signature_plan(self._prepare(input_feed))
        return compiled.plan.text(spec)

    # -- validation --------------------------------------------------------------------------
    def _prepare(self, feed: Mapping[str, Any]) -> list[Any]:
        fast = self._fast_check
        if fast and type(feed) is dict and len(feed) == len(fast):
            values = self._fast_values(feed, fast)
            if values is not None:
                return values
        # The one validation the server shares (runtime/validate.py): same checks, same words.
        return check_feeds(self.model_name, self._input_specs, self._normalize_feed(feed))

    @staticmethod
    def _fast_values(feed: dict, fast: list) -> list[Any] | None:
        """The feeds in input order if every one is an ndarray of the declared dtype, rank and
        fixed dims (the common case, checked with as little Python as possible), else None."""
        values = []
        for name, dt, rank, fixed in fast:
            v = feed.get(name)
            if type(v) is not np.ndarray or v.dtype != dt or v.ndim != rank:
                return None
            shape = v.shape
            for i, d in fixed:
                if shape[i] != d:
                    return None
            values.append(v)
        return values

    def _pick_providers(self, providers: Sequence[Any] | None) -> list[str]:
        from .placement import resolve_providers  # runtime/placement.py: order, warnings

        self.close()  # set_providers re-runs __init__: the old placement's memory goes first
        picked, self._device_kind = resolve_providers(providers or _PROVIDERS)
        self._provider_args = providers  # (name, options) pairs: gpu_mem_limit for the pool
        return picked

    # -- device placement (runtime/placement.py, runtime/device_run.py) ----------------------
    def _session_precision(self) -> str:
        """check_precision for the CPU; on a device: 'fp32', or 'fp16' where it supports it."""
        if self._device_kind is None:
            return check_precision(self._options.precision)
        from .placement import device_precision

        return device_precision(self._device_kind, self._options.precision)

    def _place_on_device(self, graph: ir.Graph, opsets: dict, name: str, precision: str) -> Any:
        from ..backends import device
        from .device_run import DeviceGraph
        from .placement import provider_options

        opts = provider_options(self._provider_args, self._providers[0])
        limit = int(opts["gpu_mem_limit"]) if opts.get("gpu_mem_limit") else None
        backend = device.select(self._device_kind, limit_bytes=limit)
        if self._profiler is not None:
            self._profiler.provider = "CPUExecutionProvider"  # placed nodes name their own
        return DeviceGraph(
            graph, opsets, backend, model_name=name, precision=precision, profiler=self._profiler
        )

    def placement(self, input_feed: Mapping[str, Any] | None = None) -> Any:
        """Where each node runs (``runtime.placement.Placement``: ``report()``, ``text()``):
        for ``input_feed``'s signature (run once if new), else the last run's; None on the CPU
        provider (every node runs there)."""
        compiled = self._compiled
        if not hasattr(compiled, "placement_for"):
            return None
        if input_feed is not None:
            return compiled.placement_for(self._prepare(input_feed))
        return compiled.placement

    def device_memory(self) -> dict[str, Any] | None:
        """This session's device pool statistics plus its own outstanding bytes (None: CPU)."""
        compiled = self._compiled
        if not hasattr(compiled, "backend"):
            return None
        stats = compiled.backend.pool.stats()
        mine = compiled.backend.pool.outstanding(compiled.owner)
        stats["session_bytes"] = sum(b.nbytes for b in mine)
        return stats

    def close(self) -> None:
        """Release the session's device memory (a no-op on the CPU); the session cannot run
        afterwards. Called by ``__del__`` too."""
        compiled = getattr(self, "_compiled", None)
        if compiled is not None and hasattr(compiled, "close") and not compiled.closed:
            compiled.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the pool may be gone already
            pass
