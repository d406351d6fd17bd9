"""Runs a ``Plan`` placed on a device backend (``placement.py``), with CPU fallback.

``DeviceGraph`` has ``CompiledGraph``'s surface (``run(inputs) -> outputs``, ``output_names``,
``plan``). Per run it walks the plan's steps: device steps call the backend's kernels on device
tensors, host/CPU steps call the plan's own kernels on numpy arrays. A value lives where it was
made; it is copied only when a step of the other side reads it (a graph input read by a device
step, a device value read by a CPU fallback, a graph output), and each copy is kept for the
value's other readers. At a value's last use (``Plan.last_use``) its device tensor goes back to
the pool, so one run holds only the live values, and the pool's cached blocks serve the next.

Constants are uploaded once, on first device use (converted to float16 with ``precision="fp16"``)
and kept until ``close``. Every block belongs to the session's owner token: ``close`` releases
what is left, and ``pool.outstanding(owner)`` is then empty.

``precision="fp16"``: float32 values entering the device (inputs, constants, CPU results) become
float16, ``Cast`` to float becomes a cast to float16, and float16 graph outputs come back as
float32; the kernels keep float32 statistics (LayerNorm, softmax) and products accumulate in
float32 where the backend's GEMM does (cuBLAS).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

from .. import ir
from ..backends.kernels import HOST_INPUTS
from ..errors import ExecutionError, ZigguratError
from . import device_graphs
from .placement import CPU, DEVICE, HOST, Placement, decide, host_steps
from .plan import Plan

MAX_SIGNATURES = 32  # input signatures remembered per graph (least recently used out)
_FLOAT = 1  # ONNX TensorProto.FLOAT
_FLOAT16 = 10


class DeviceOwner:
    """The owner token of a session's device blocks (not the session: blocks must not keep it
    alive)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"DeviceOwner({self.name!r})"


class DeviceGraph:
    """A graph placed on ``backend``; see the module docstring."""

    def __init__(
        self,
        graph: ir.Graph,
        opsets: dict[str, int],
        backend: Any,
        *,
        model_name: str = "model",
        precision: str = "fp32",
        profiler: Any = None,
        graphs: bool | None = None,
    ):
        self.backend = backend
        self.graphs = device_graphs.ENABLED if graphs is None else graphs
        self._record_lock = threading.Lock()
        self.model_name = model_name
        self.precision = precision
        self.profiler = profiler
        self.owner = DeviceOwner(model_name)
        self.plan = Plan.build(graph, opsets, model_name=model_name, device=str(backend.device))
        self.output_names = list(self.plan.outputs)
        self._host_steps = host_steps(self.plan)
        self._host_reads = self._host_input_positions()
        self._device_consts: dict[str, Any] = {}
        self._sigs: OrderedDict[tuple, _Signature] = OrderedDict()  # least recently used first
        self._last: Placement | None = None
        self._lock = threading.Lock()
        self._subgraphs: dict[tuple[int, str], list[Any]] = {}
        self._attrs = [self._step_attrs(s) for s in self.plan.steps]
        # float16 outputs come back as float32 where the model declares float32 (or nothing)
        self._f32_outputs = {
            v.name for v in graph.outputs if v.type is None or v.type.dtype in (None, np.float32)
        }
        self.closed = False
        # A graph dropped without close() (a session garbage-collected) still frees its blocks.
        weakref.finalize(self, backend.pool.release_owner, self.owner)

    # -- setup -------------------------------------------------------------------------------------
    def _host_input_positions(self) -> list[frozenset[int]]:
        return [
            frozenset(HOST_INPUTS.get(s.node.op_type, ()) if not s.node.domain else ())
            for s in self.plan.steps
        ]

    def _step_attrs(self, step: Any) -> dict[str, Any]:
        attrs = dict(step.kwargs)
        if self.precision == "fp16" and step.node.op_type == "Cast" and attrs.get("to") == _FLOAT:
            attrs["to"] = _FLOAT16  # float32 stays float16 on an fp16 device
        return attrs

    def _subgraph_fns(self, step: Any) -> dict[str, Any]:
        """Bound subgraph callables for a CPU step with If/Loop/Scan bodies."""
        from .executor import CompiledGraph

        visible = self.plan.graph.defined_names() | set(self.plan.outer)
        out = {}
        for key, value in step.graphs.items():
            subs = value if isinstance(value, list) else [value]
            compiled = self._subgraphs.get((step.index, key))
            if compiled is None:
                compiled = [
                    CompiledGraph(s, self.plan.opsets, outer=visible, model_name=self.model_name)
                    for s in subs
                ]
                self._subgraphs[(step.index, key)] = compiled
            out[key] = (compiled, [sorted(s.free_names()) for s in subs], isinstance(value, list))
        return out

    # -- placement ---------------------------------------------------------------------------------
    @property
    def placement(self) -> Placement | None:
        """The placement of the most recent signature (None before the first run)."""
        return self._last

    def placement_for(self, inputs: list[Any]) -> Placement:
        """The placement of ``inputs``' signature (runs them once if it is new)."""
        sig = _signature(inputs)
        if sig not in self._sigs:
            self.run(inputs)
        return self._sigs[sig].placement

    def signature_plan(self, inputs: list[Any]) -> Any:
        raise ExecutionError(
            f"model '{self.model_name}': the execution plan text describes CPU sessions; for a "
            "device session use placement() (ziggurat inspect MODEL --device KIND)"
        )

    # -- execution ---------------------------------------------------------------------------------
    def run(self, inputs: list[Any], outer: dict[str, Any] | None = None) -> list[Any]:
        """Run on host inputs (graph input order); returns host outputs in order."""
        if self.closed:
            raise ExecutionError(f"model '{self.model_name}': the session was closed")
        sig = _signature(inputs)
        state = self._sigs.get(sig)
        if state is not None and self.graphs:
            outs = self._run_recorded(state, inputs)
            if outs is not None:
                self._last = state.placement
                return outs
        run = _Run(self, inputs, state)
        with self.backend.owner_scope(self.owner):
            try:
                outs = run.execute()
            finally:
                run.release_all()
        with self._lock:
            if state is None:
                state = self._sigs.setdefault(sig, _Signature(run.placement, run.shape_values))
                while len(self._sigs) > MAX_SIGNATURES:
                    self._sigs.popitem(last=False)[1].release(self.backend)
            else:
                state.warm = run.frozen is not None
                state.confirm(run.shape_values)
                self._sigs.move_to_end(sig)
        self._last = state.placement
        return outs

    def _run_recorded(self, state: _Signature, inputs: list[Any]) -> list[Any] | None:
        """A run by replaying the signature's recorded device graph (recorded on first need), or
        None where it has none (see device_graphs.py)."""
        with self._record_lock, self.backend.owner_scope(self.owner):
            # One replay at a time: runs share the recorded input and output buffers.
            if state.recorded is None and device_graphs.capturable(self, state, inputs):
                state.recorded = device_graphs.record(self, state, inputs, _Run)
            if state.recorded is None:
                return None
            return device_graphs.replay(self, state.recorded, inputs)

    def device_constant(self, name: str) -> Any:
        t = self._device_consts.get(name)
        if t is None:
            with self._lock:
                t = self._device_consts.get(name)
                if t is None:
                    host = self.to_device_dtype(np.asarray(self.plan.constants[name]))
                    t = self.backend.to_device(host, owner=self.owner)
                    self._device_consts[name] = t
        return t

    def to_device_dtype(self, a: np.ndarray) -> np.ndarray:
        if self.precision == "fp16" and a.dtype == np.float32:
            return a.astype(np.float16)
        return a

    def close(self) -> int:
        """Release every device block this graph still holds; returns the bytes freed."""
        self.closed = True
        self._device_consts.clear()
        for state in self._sigs.values():
            state.recorded = None  # drops the graph and its keep-alive references
        self._sigs.clear()
        return self.backend.pool.release_owner(self.owner)


class _Signature:
    """What one input signature (shapes and dtypes) has learnt: its placement, and the values of
    its shape arithmetic. Those depend on the input shapes alone (``Plan.static_values``); once two
    runs computed the same ones they are frozen and later runs skip the host steps, with device
    copies of them kept (``dev``) instead of uploaded per run. Runs that disagree (a model whose
    "shape arithmetic" reads input values after all) keep computing them."""

    __slots__ = ("placement", "pending", "frozen", "dev", "recorded", "graph_failed", "warm")

    def __init__(self, placement: Placement, values: dict[str, Any] | None):
        self.placement = placement
        self.pending = values
        self.frozen: dict[str, Any] | None = None
        self.dev: dict[str, Any] = {}
        self.recorded: device_graphs.Recorded | None = None  # device_graphs.py
        self.graph_failed = False
        self.warm = False  # a run with the frozen values done: their device copies exist

    def confirm(self, values: dict[str, Any] | None) -> None:
        if self.frozen is not None or self.pending is None:
            return
        if values is not None and _same_values(self.pending, values):
            self.frozen = values
        self.pending = None  # frozen now, or never: one disagreement is enough

    def release(self, backend: Any) -> None:
        for t in self.dev.values():
            backend.release(t)
        self.dev.clear()
        if self.recorded is not None:
            self.recorded.release(backend)
            self.recorded = None


def _same_values(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if not isinstance(x, np.ndarray | np.generic) or not isinstance(y, np.ndarray | np.generic):
            return False  # sequences, maps...: never frozen
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            return False
    return True


def _signature(inputs: list[Any]) -> tuple:
    return tuple(
        (getattr(x, "shape", None), str(getattr(x, "dtype", type(x).__name__))) for x in inputs
    )


def _meta(v: Any) -> Any:
    shape, dtype = getattr(v, "shape", None), getattr(v, "dtype", None)
    if shape is None or dtype is None or isinstance(v, list):
        return None
    return (tuple(shape), np.dtype(dtype))


class _Run:
    """The state of one run: where each value currently is (host, device or both)."""

    def __init__(
        self,
        graph: DeviceGraph,
        inputs: list[Any],
        state: _Signature | None,
        dev_inputs: list[Any] | None = None,
    ):
        self.g = graph
        self.backend = graph.backend
        self.host: dict[str, Any] = dict(zip(graph.plan.inputs, inputs, strict=True))
        self.dev: dict[str, Any] = {}
        # Tensors this run reads but does not own (a recording's input buffers): never released.
        self.pinned: set[str] = set()
        if dev_inputs is not None:
            self.dev.update(zip(graph.plan.inputs, dev_inputs, strict=True))
            self.pinned.update(graph.plan.inputs)
        self.fixed = state.placement if state is not None else None
        self.placement = self.fixed or Placement(graph.backend.provider)
        self.copies = [0, 0]  # uploads, downloads
        self.state = state
        self.frozen = state.frozen if state is not None else None
        if self.frozen:
            self.host.update(self.frozen)
        # The shape arithmetic's values, recorded by a signature's first two runs.
        recording = state is None or state.pending is not None
        self.shape_values: dict[str, Any] | None = {} if recording else None

    # value access, copying across on first need
    def on_host(self, name: str) -> Any:
        if name in self.host:
            return self.host[name]
        if name in self.g.plan.constants:
            return self.g.plan.constants[name]
        t = self.dev[name]
        a = self.backend.to_host(t)
        self.copies[1] += 1
        self.host[name] = a
        return a

    def on_device(self, name: str) -> Any:
        t = self.dev.get(name)
        if t is not None:
            return t
        if name in self.g.plan.constants and name not in self.host:
            return self.g.device_constant(name)
        if self.frozen is not None and name in self.frozen:
            return self._frozen_on_device(name)
        host = self.host[name]
        t = self.backend.to_device(self.g.to_device_dtype(np.asarray(host)))
        self.copies[0] += 1
        self.dev[name] = t
        return t

    def _frozen_on_device(self, name: str) -> Any:
        """A frozen shape value's device copy, uploaded once per signature and kept."""
        cache = self.state.dev  # type: ignore[union-attr]
        t = cache.get(name)
        if t is None:
            fresh = self.backend.to_device(self.g.to_device_dtype(np.asarray(self.frozen[name])))
            t = cache.setdefault(name, fresh)
            if t is not fresh:  # another thread's run uploaded it first
                self.backend.release(fresh)
        self.dev[name] = t
        return t

    def shape_of(self, name: str) -> Any:
        """A zero-byte host stand-in with a device value's shape and dtype (Shape/Size)."""
        if name in self.host or name in self.g.plan.constants:
            return self.on_host(name)
        t = self.dev[name]
        return np.broadcast_to(np.zeros((), dtype=t.dtype), t.shape)

    def meta(self, name: str) -> Any:
        if not name:
            return None
        v = self.dev.get(name)
        if v is None:
            v = self.host[name] if name in self.host else self.g.plan.constants.get(name)
        m = _meta(v)
        if m is not None and self.g.precision == "fp16" and m[1] == np.float32:
            m = (m[0], np.dtype(np.float16))  # what it will be once uploaded
        return m

    # the steps
    def execute(self, device_outputs: bool = False) -> list[Any]:
        """Run every step; returns the graph outputs on the host (or, with ``device_outputs``,
        as device tensors the caller then owns)."""
        g = self.g
        prof = g.profiler
        for step in g.plan.steps:
            attrs = g._attrs[step.index]
            if self.fixed is not None:
                place = self.fixed.steps[step.index]
            else:
                metas = [self.meta(n) for n in step.node.inputs]
                place = decide(step, self.backend, metas, step.index in g._host_steps, attrs)
                self.placement.steps.append(place)
            if place.where == HOST and self.frozen is not None:
                self._free_after(step)  # its values are in self.host already
                continue
            start = time.perf_counter_ns() if prof is not None else 0
            try:
                if place.where == DEVICE:
                    self._device_step(step, place, attrs)
                else:
                    self._cpu_step(step, place, attrs)
            except ZigguratError:
                raise
            except Exception as exc:
                node = step.node
                raise ExecutionError(
                    f"model '{g.model_name}': node '{node.label}' ({node.op_type}, opset "
                    f"{step.opset}) failed on {'the device' if place.where == DEVICE else 'the CPU'}"
                    f": {type(exc).__name__}: {exc}"
                ) from exc
            if prof is not None:
                prof.record(step.node.label, step.node.op_type, start)
                if place.where == DEVICE:
                    prof.providers[step.node.label] = self.placement.provider
            self._free_after(step)
        if device_outputs:
            outs = [self.on_device(n) for n in g.plan.outputs]
            for n in g.plan.outputs:
                self.dev.pop(n, None)  # the caller's now
            return outs
        outs = [self._output(n) for n in g.plan.outputs]
        if self.fixed is None:
            self.placement.uploads, self.placement.downloads = self.copies
        return outs

    def _device_step(self, step: Any, place: Any, attrs: dict[str, Any]) -> None:
        host_pos = self.g._host_reads[step.index]
        args = [
            None if not n else (self.on_host(n) if i in host_pos else self.on_device(n))
            for i, n in enumerate(step.node.inputs)
        ]
        results = place.entry.fn(self.backend, args, attrs)
        self._store(step, results, self.dev)

    def _cpu_step(self, step: Any, place: Any, attrs: dict[str, Any]) -> None:
        shape_only = place.where == HOST and step.node.op_type in ("Shape", "Size")
        args = [
            None if not n else (self.shape_of(n) if shape_only else self.on_host(n))
            for n in step.node.inputs
        ]
        while args and args[-1] is None:  # trailing omitted optionals: the kernel's defaults
            args.pop()
        kwargs = dict(attrs)
        for key, (compiled, free, is_list) in self.g._subgraph_fns(step).items():
            from .executor import BoundGraph

            bound = [
                BoundGraph(c, {n: self.on_host(n) for n in names})
                for c, names in zip(compiled, free, strict=True)
            ]
            kwargs[key] = bound if is_list else bound[0]
        results = step.kdef.fn(*args, **kwargs)
        self._store(step, results, self.host)
        if place.where == HOST and self.shape_values is not None:
            for name in step.outputs:
                self.shape_values[name] = self.host.get(name)

    def _store(self, step: Any, results: Any, where: dict[str, Any]) -> None:
        results = list(results)
        names = step.node.outputs
        if len(results) < len([n for n in names if n]):
            raise ExecutionError(
                f"model '{self.g.model_name}': node '{step.node.label}' ({step.op}) gave "
                f"{len(results)} outputs, the graph expects {len(names)}"
            )
        for name, value in zip(names, results, strict=False):
            if name:
                where[name] = value
            elif where is self.dev and value is not None:
                self.backend.release(value)  # an output nobody reads (e.g. LayerNorm's Mean)

    def _free_after(self, step: Any) -> None:
        plan = self.g.plan
        outputs = plan.outputs
        for name in step.reads:
            if plan.last_use.get(name) == step.index and name not in outputs:
                self._drop(name)
        for name in step.outputs:  # never read and not a graph output
            if name not in plan.last_use and name not in outputs:
                self._drop(name)

    def _drop(self, name: str) -> None:
        t = self.dev.pop(name, None)
        self.host.pop(name, None)
        if t is None or name in self.pinned:
            return
        if self.state is None or self.state.dev.get(name) is not t:
            self.backend.release(t)  # (a frozen value's kept copy stays for the next run)

    def _output(self, name: str) -> Any:
        a = self.on_host(name)
        f16 = getattr(a, "dtype", None) == np.float16
        if self.g.precision == "fp16" and f16 and name in self.g._f32_outputs:
            a = a.astype(np.float32)  # fp16 is the device's working precision, not the model's
        elif isinstance(a, np.ndarray) and (
            name in self.g.plan.constants or (self.frozen is not None and name in self.frozen)
        ):
            a = a.copy()  # shared with later runs: the caller gets its own
        return a

    def release_all(self) -> None:
        for name in list(self.dev):
            self._drop(name)


__all__ = ["CPU", "DEVICE", "HOST", "DeviceGraph", "DeviceOwner"]
