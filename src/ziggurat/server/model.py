"""A loaded model version: its session, metadata, input checks, scheduler and statistics.

``SessionFactory`` is the seam between the server and the engine: ``factory(path, settings)``
returns an object with ``get_inputs()``, ``get_outputs()`` and ``run(names, feeds)`` (the
onnxruntime-compatible surface). The default builds a ``ziggurat.InferenceSession``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ziggurat.runtime.validate import ONNX_TO_V2, InputSpec, check_feeds, dtype_of
from ziggurat.server.batching import BatchReport, Scheduler
from ziggurat.server.codecs import RequestedOutput
from ziggurat.server.errors import bad_request

SessionFactory = Callable[[str, dict[str, Any]], Any]

_OPT_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}


def ziggurat_session(path: str, settings: dict[str, Any]) -> Any:
    """The default SessionFactory: a ``ziggurat.InferenceSession`` configured from ``settings``."""
    import ziggurat as zg

    opts = zg.SessionOptions()
    opts.graph_optimization_level = zg.GraphOptimizationLevel(
        _OPT_LEVELS[settings.get("graph_optimization_level", "all")]
    )
    opts.intra_op_num_threads = settings.get("cpu_threads") or 0
    opts.inter_op_num_threads = settings.get("inter_op_threads") or 0
    opts.enable_fusion = settings.get("enable_fusion", True)
    opts.enable_quantization = settings.get("enable_quantization", False)
    opts.precision = settings.get("precision", "fp32")
    providers = _providers_for(settings)
    return zg.InferenceSession(
        path,
        sess_options=opts,
        providers=providers,
        max_size_bytes=settings.get("max_size_bytes"),
    )


def _providers_for(settings: dict[str, Any]) -> list[Any]:
    """The provider list of a model's ``device`` setting. auto: CUDA when ``enable_gpu`` and a
    CUDA GPU is present (Vulkan is never picked by itself: on a machine with only Mesa's software
    driver it would be far slower than the CPU, and probing it costs ~1 s of start-up); gpu: CUDA,
    else Vulkan; cuda / vulkan: that device, falling back to the CPU with a warning. The device
    pool's limit is ``gpu_memory_mb``."""
    from ..backends import device as devices
    from ..runtime.placement import provider_for

    device = settings.get("device", "auto")
    limit = {"gpu_mem_limit": int(settings.get("gpu_memory_mb", 2048)) << 20}
    if device == "cpu" or (device == "auto" and not settings.get("enable_gpu", True)):
        return ["CPUExecutionProvider"]
    if device == "auto":
        kinds = ["cuda"] if devices.available("cuda") else []
    elif device == "gpu":
        kinds = ["cuda", "vulkan"]
    else:
        kinds = [device]
    return [(provider_for(k), limit) for k in kinds] + ["CPUExecutionProvider"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # V2 datatype; "" when the model's type is not a plain tensor
    shape: tuple[int | None, ...] | None  # None entries: dynamic dims; None: rank unknown
    onnx_type: str

    @classmethod
    def of(cls, arg: Any) -> TensorSpec:
        shape = None
        if arg.shape is not None:
            shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
        return cls(arg.name, ONNX_TO_V2.get(arg.type, ""), shape, arg.type)

    def v2(self) -> dict[str, Any]:
        shape = [-1 if d is None else d for d in self.shape] if self.shape is not None else [-1]
        return {"name": self.name, "datatype": self.datatype or self.onnx_type, "shape": shape}


@dataclass
class ModelStats:
    """Counters and a window of recent latencies for /api/v1/stats and /v2/.../stats."""

    success: int = 0
    failure: int = 0
    success_ns: int = 0
    failure_ns: int = 0
    queue_ns: int = 0
    compute_ns: int = 0
    executions: int = 0
    inferences: int = 0  # rows run
    last_inference_ms: int = 0
    batches: dict[int, list[int]] = field(default_factory=dict)  # rows -> [count, compute ns]
    recent_ms: deque = field(default_factory=lambda: deque(maxlen=2048))

    def record(self, ok: bool, seconds: float) -> None:
        ns = int(seconds * 1e9)
        if ok:
            self.success += 1
            self.success_ns += ns
        else:
            self.failure += 1
            self.failure_ns += ns
        self.recent_ms.append(seconds * 1e3)
        self.last_inference_ms = int(time.time() * 1000)

    def record_batch(self, rep: BatchReport) -> None:
        self.executions += 1
        self.inferences += rep.rows
        self.compute_ns += int(rep.compute_s * 1e9)
        self.queue_ns += int(sum(rep.queue_s) * 1e9)
        b = self.batches.setdefault(rep.rows, [0, 0])
        b[0] += 1
        b[1] += int(rep.compute_s * 1e9)

    def percentiles(self) -> dict[str, float | None]:
        if not self.recent_ms:
            return {"p50_ms": None, "p90_ms": None, "p99_ms": None}
        p = np.percentile(np.fromiter(self.recent_ms, float), [50, 90, 99])
        return {"p50_ms": round(p[0], 3), "p90_ms": round(p[1], 3), "p99_ms": round(p[2], 3)}


class LoadedModel:
    """One ready model version. Thread pool and scheduler are its own; ``close`` drains them."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        session: Any,
        settings: dict[str, Any],
        *,
        size_bytes: int = 0,
        on_batch: Callable[[LoadedModel, BatchReport], None] | None = None,
    ):
        self.name = name
        self.version = version
        self.path = path
        self.session = session
        self.settings = settings
        self.size_bytes = size_bytes
        self.loaded_at = time.time()
        self.last_used = time.monotonic()
        self.in_flight = 0
        self.stats = ModelStats()
        self.inputs = [TensorSpec.of(a) for a in session.get_inputs()]
        self.outputs = [TensorSpec.of(a) for a in session.get_outputs()]
        self._specs = [InputSpec.of(a.name, a.type, a.shape) for a in session.get_inputs()]
        # For the memory estimate: output name -> (bytes per element x its fixed dims, its
        # named dims), and where each named dim can be read off an input: (name, input, axis).
        self._out_sizes: dict[str, tuple[int, tuple]] = {}
        for a in session.get_outputs():
            dt = dtype_of(a.type)
            fixed = dt.itemsize if dt is not None and dt.kind != "O" else 8
            syms = []
            for d in a.shape or ():
                if isinstance(d, int) and d >= 0:
                    fixed *= d
                elif isinstance(d, str):
                    syms.append(d)
            self._out_sizes[a.name] = (fixed, tuple(syms))
        self._symbols: list[tuple[str, str, int]] = []
        for spec in self._specs:
            for axis, d in enumerate(spec.shape or ()):
                if isinstance(d, str) and all(d != s for s, _, _ in self._symbols):
                    self._symbols.append((d, spec.name, axis))
        self._output_names = [s.name for s in self.outputs]
        self.batch_axis = self._has_batch_axis()
        concurrency = settings.get("concurrency") or 1
        self.executor = ThreadPoolExecutor(concurrency, thread_name_prefix=f"zg-{name}")
        self._on_batch = on_batch
        self.scheduler = Scheduler(
            session.run,
            self.executor,
            max_batch_size=settings.get("max_batch_size") or 0,
            max_queue_delay_us=settings.get("max_queue_delay_us") or 0,
            max_queue_size=settings.get("max_queue_size") or 1024,
            concurrency=concurrency,
            batch_axis=self.batch_axis,
            on_batch=self._batch_done,
            name=name,
            inline_run_us=settings.get("inline_run_us") or 0,
        )

    def _has_batch_axis(self) -> bool:
        """Every input and output is a tensor of rank >= 1 whose first dim is dynamic."""
        for spec in (*self.inputs, *self.outputs):
            if not spec.datatype or spec.shape is None or not spec.shape:
                return False
            if spec.shape[0] is not None:
                return False
        return bool(self.inputs)

    def _batch_done(self, rep: BatchReport) -> None:
        self.stats.record_batch(rep)
        if self._on_batch is not None:
            self._on_batch(self, rep)

    @property
    def max_batch_size(self) -> int:
        return self.scheduler.max_batch_size if self.scheduler.dynamic else 0

    # -- request checks ----------------------------------------------------------------------
    def check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The shared validation (runtime/validate.py): 400 for unknown or missing inputs,
        wrong datatype, rank or fixed dimension, in the words InferenceSession.run uses."""
        values = check_feeds(self.name, self._specs, feeds)
        return {s.name: v for s, v in zip(self._specs, values) if v is not None}

    def estimate_bytes(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> int:
        """Bytes of the feeds plus the requested outputs at these feeds' shapes.

        Output dims named like an input's dims (``batch``, ``seq``) take the request's sizes;
        fixed dims count as declared; dims nothing determines count as 1. A lower bound (the
        run's intermediates come on top), which is enough to refuse a request whose outputs
        alone would not fit before it runs: a small input can ask for a huge output.
        """
        total = 0
        for arr in feeds.values():
            total += arr.nbytes if arr.dtype.kind != "O" else arr.size * 64
        sizes = {sym: feeds[name].shape[axis] for sym, name, axis in self._symbols if name in feeds}
        for name in outputs:
            per_fixed, syms = self._out_sizes.get(name, (0, ()))
            count = per_fixed
            for sym in syms:
                count *= sizes.get(sym, 1)
            total += count
        return int(total)

    def resolve_outputs(self, requested: list[RequestedOutput] | None) -> list[RequestedOutput]:
        """The outputs to return: the requested ones (400 if unknown) or all of them."""
        if not requested:
            return [RequestedOutput(n) for n in self._output_names]
        seen = set()
        for r in requested:
            if r.name not in self._output_names:
                raise bad_request(
                    f"model {self.name!r} has no output {r.name!r}; its outputs are "
                    f"{', '.join(self._output_names)}"
                )
            if r.name in seen:
                raise bad_request(f"output {r.name!r} is requested twice")
            seen.add(r.name)
        return requested

    # -- running -----------------------------------------------------------------------------
    async def infer(
        self, feeds: dict[str, np.ndarray], names: list[str], group: object | None = None
    ) -> list[np.ndarray]:
        """Run through the scheduler; records latency and success/failure."""
        self.in_flight += 1
        self.last_used = time.monotonic()
        t0 = time.perf_counter()
        ok = False
        try:
            outs = await self.scheduler.submit(feeds, names, group)
            ok = True
            return outs
        finally:
            self.in_flight -= 1
            self.stats.record(ok, time.perf_counter() - t0)

    async def close(self, timeout_s: float | None = 30.0) -> None:
        """Finish queued and running requests (bounded), then release the threads."""
        await self.scheduler.drain(timeout_s)
        self.executor.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.session, "close", None)  # device memory back to the pool now
        if close is not None and self.scheduler.pending == 0:
            close()

    # -- descriptions ------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """The V2 model metadata object."""
        return {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": "onnx",
            "inputs": [s.v2() for s in self.inputs],
            "outputs": [s.v2() for s in self.outputs],
        }

    def triton_config(self) -> dict[str, Any]:
        """A Triton-style model configuration (what tritonclient's get_model_config shows)."""

        def dims(spec: TensorSpec) -> list[int]:
            shape = spec.v2()["shape"]
            return shape[1:] if self.max_batch_size else shape

        def io(spec: TensorSpec) -> dict[str, Any]:
            return {
                "name": spec.name,
                "data_type": "TYPE_" + (spec.datatype or "STRING").replace("BYTES", "STRING"),
                "dims": dims(spec),
            }

        cfg: dict[str, Any] = {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "backend": "ziggurat",
            "max_batch_size": self.max_batch_size,
            "input": [io(s) for s in self.inputs],
            "output": [io(s) for s in self.outputs],
            "instance_group": [
                {"count": self.settings.get("concurrency") or 1, "kind": "KIND_CPU"}
            ],
        }
        if self.max_batch_size:
            cfg["dynamic_batching"] = {
                "max_queue_delay_microseconds": self.settings.get("max_queue_delay_us") or 0
            }
        return cfg

    def summary(self) -> dict[str, Any]:
        """/api/v1/models entry for this version."""
        s = self.stats
        return {
            "name": self.name,
            "version": str(self.version),
            "state": "READY",
            "inputs": [sp.v2() for sp in self.inputs],
            "outputs": [sp.v2() for sp in self.outputs],
            "memory_bytes": self.size_bytes,
            "loaded_at": self.loaded_at,
            "batching": {
                "batch_axis": self.scheduler.batch_axis,
                "max_batch_size": self.max_batch_size,
                "max_queue_delay_us": self.settings.get("max_queue_delay_us") or 0,
            },
            "stats": {
                "requests": s.success + s.failure,
                "failures": s.failure,
                "in_flight": self.in_flight,
                **s.percentiles(),
            },
        }


async def idle_wait(model: LoadedModel, timeout_s: float) -> None:
    """Wait until no request is in flight on ``model`` (bounded)."""
    end = time.monotonic() + timeout_s
    while model.in_flight and time.monotonic() < end:
        await asyncio.sleep(0.01)
