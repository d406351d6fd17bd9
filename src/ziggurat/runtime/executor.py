"""Compiles an ``ir.Graph`` into straight-line Python calling one kernel per node.

``CompiledGraph`` builds the graph's ``Plan`` (plan.py: bound kernels, lifetimes) and renders it
with the ``Emitter`` (emitter.py): every value is a local ``del``-ed after its last use, with no
per-node dispatch, dict lookups or loops, which is what makes small models cheap to run.

Runs are specialised per input-shape signature (specialize.py): a signature's first run takes the
generic code, the next two add a recorder; if they agree, the signature gets its own code, with the
shape subgraphs folded to constants, direct numpy calls, and planned output buffers. The last
``MAX_SIGNATURES`` signatures are kept (least recently used out). Each run checks a buffer set out
of the signature's free list, so concurrent runs never share planned buffers. ``ZIGGURAT_PLAN=0``
turns specialisation off (the generic code only).

Subgraphs (If/Loop/Scan bodies) compile to their own ``CompiledGraph`` (never specialised: their
shapes change per iteration); the parent passes the outer-scope values they read as a dict and the
kernel receives a bound callable.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from .. import ir
from ..errors import ExecutionError, ZigguratError
from .emitter import Emitter, Program
from .plan import Plan
from .specialize import Recording, SignaturePlan, signature_of

_DEBUG = int(os.environ.get("ZIGGURAT_DEBUG", "0") or 0)
# ZIGGURAT_PLAN=0: generic code only; =eager: specialise on a signature's first run, without a
# confirming second recording, and run the new code at once (tests the specialised path on every
# case of a suite that runs each model once, e.g. conformance).
_PLAN_MODE = os.environ.get("ZIGGURAT_PLAN", "1")
_SPECIALIZE = _PLAN_MODE != "0"
MAX_SIGNATURES = 8  # specialised signatures kept per graph
_SEEN = 256  # signatures counted (a first run only counts: it takes the generic code)
_PENDING = 16  # signatures recorded once, waiting for a second recording to confirm it
_PENDING_BYTES = 1 << 25  # and the folded values those recordings hold, at most
_FREE_SETS = 4  # idle buffer sets kept per signature (more concurrent runs allocate, then drop)
_NO_OUTER: dict[str, Any] = {}


class BoundGraph:
    """A subgraph with its outer-scope values bound: call it with the subgraph's inputs."""

    __slots__ = ("_graph", "_outer")

    def __init__(self, graph: CompiledGraph, outer: dict[str, Any]):
        self._graph = graph
        self._outer = outer

    def __call__(self, *inputs: Any) -> list[Any]:
        return self._graph.run(list(inputs), self._outer)

    @property
    def output_types(self) -> list[ir.Type | None]:
        """Declared types of the subgraph's outputs (for zero-iteration Loop/Scan results)."""
        return [v.type for v in self._graph.graph.outputs]

    @property
    def input_types(self) -> list[ir.Type | None]:
        return [v.type for v in self._graph.graph.inputs]


class _Specialized:
    """One signature's code and its idle buffer sets."""

    __slots__ = ("spec", "fn", "free", "last", "filename", "run")

    def __init__(self, spec: SignaturePlan | None, fn: Callable, filename: str = ""):
        self.spec = spec
        self.fn = fn
        self.free: list[tuple] = []
        self.last = 0
        self.filename = filename
        # Without planned buffers the generated function is called directly (one frame less).
        self.run = self._checked_out if spec is not None and spec.buffers else fn

    def _checked_out(self, inputs: list) -> list:
        spec = self.spec
        free = self.free
        try:
            bufs = free.pop()  # atomic: no two runs get the same set
        except IndexError:
            bufs = spec.new_buffers()  # type: ignore[union-attr]
        try:
            return self.fn(inputs, _NO_OUTER, bufs)
        finally:
            if len(free) < _FREE_SETS:
                free.append(bufs)


class CompiledGraph:
    """A graph compiled to a Python function ``run(inputs: list, outer: dict) -> list``."""

    def __init__(
        self,
        graph: ir.Graph,
        opsets: dict[str, int],
        *,
        outer: set[str] = frozenset(),  # type: ignore[assignment]
        model_name: str = "model",
        profiler: Any = None,
        specialize: bool | None = None,
    ):
        self.graph = graph
        self.profiler = profiler
        self.opsets = opsets
        self.model_name = model_name
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self._outer_names = outer
        self.plan = Plan.build(graph, opsets, model_name=model_name, outer=outer)
        self._nodes = [s.node for s in self.plan.steps]
        self._programs: dict[str, dict[int, int]] = {}  # file name -> line -> step
        self._emitter = Emitter(
            self.plan, subgraph=self._subgraph, bound_graph=BoundGraph, profiler=profiler,
            trace=self._trace if _DEBUG else None, tag=f"{id(self):x}:",
        )  # fmt: skip
        if specialize is None:  # by default only where a signature plan can change something
            specialize = _SPECIALIZE and not outer and self.plan.specializable()
        self._specialize = specialize and not outer
        self._specs: dict[tuple, _Specialized] = {}
        self._pending: dict[tuple, Recording] = {}
        self._seen: dict[tuple, int] = {}  # signature -> runs so far, oldest first
        self._spec_lock = threading.Lock()
        self._clock = itertools.count()  # orders signatures by last use
        self._static: tuple[set[str], set[str]] | None = None
        self._record_fn: Callable | None = None
        self.source = ""
        self._fn = self._compile()

    # -- compilation -------------------------------------------------------------------------
    def _subgraph(self, graph: ir.Graph, visible: set[str]) -> CompiledGraph:
        return CompiledGraph(
            graph, self.opsets, outer=visible, model_name=self.model_name, profiler=self.profiler
        )

    def _register(self, program: Program) -> Callable:
        self._programs[program.filename] = program.lines
        return program.ns.get("_run")  # type: ignore[return-value]

    def _compile(self) -> Callable[..., list]:
        program = self._emitter.sequential()
        self.source = program.source
        return self._register(program)

    # -- execution ---------------------------------------------------------------------------
    def run(self, inputs: list[Any], outer: dict[str, Any] | None = None) -> list[Any]:
        """Run the graph on positional inputs (graph input order); returns outputs in order."""
        try:
            if self._specialize:
                try:  # inline (not signature_of): this is most of a small model's overhead
                    sig = tuple([(x.shape, x.dtype) for x in inputs])
                except AttributeError:  # a sequence, None...: the generic code
                    sig = None
                if sig is not None:
                    entry = self._specs.get(sig)
                    if entry is not None:
                        entry.last = next(self._clock)
                        return entry.run(inputs)
                    return self._miss(sig, inputs)
            return self._fn(inputs, outer or _NO_OUTER)
        except ZigguratError as exc:
            if getattr(exc, "_ziggurat_located", False):
                raise
            raise self._locate(exc) from exc
        except Exception as exc:  # a kernel failed: name the node, op and opset
            raise self._locate(exc) from exc

    # -- specialisation ----------------------------------------------------------------------
    def _record(self, inputs: list[Any]) -> tuple[list[Any], Recording]:
        """One run of the generic code with a recorder after each step."""
        if self._static is None or self._record_fn is None:
            self._static = self.plan.static_values()
            self._record_fn = self._register(self._emitter.sequential(record=True))
        rec = Recording(self.plan, self._static[0])
        rec.start(inputs)
        return self._record_fn(inputs, _NO_OUTER, rec), rec

    def _miss(self, sig: tuple, inputs: list[Any]) -> list[Any]:
        """A run of a signature without specialised code. Its first run takes the generic code
        (a signature seen once costs nothing extra: a server may see many), the next two record;
        when both recordings agree, the signature's code is compiled (evicting the least
        recently used beyond MAX_SIGNATURES)."""
        eager = _PLAN_MODE == "eager"
        if not self._note_seen(sig) and not eager:
            return self._fn(inputs, _NO_OUTER)
        outs, rec = self._record(inputs)
        with self._spec_lock:
            if sig in self._specs:
                return outs
            first = self._pending.pop(sig, None) if not eager else rec
            if first is None:
                self._pending[sig] = rec
                while len(self._pending) > _PENDING or (
                    sum(r.captured_bytes for r in self._pending.values()) > _PENDING_BYTES
                ):
                    self._pending.pop(next(iter(self._pending)))
                return outs
            if first.agrees(rec):
                spec = SignaturePlan(self.plan, sig, rec, self._static[1])  # type: ignore[index]
                program = self._emitter.sequential(spec)
                entry = _Specialized(spec, self._register(program), program.filename)
            else:  # input values changed a "static" value: this signature stays generic
                entry = _Specialized(None, self._fn)
            if len(self._specs) >= MAX_SIGNATURES:
                old = min(self._specs, key=lambda k: self._specs[k].last)
                self._programs.pop(self._specs.pop(old).filename, None)
            entry.last = next(self._clock)
            self._specs[sig] = entry
            self._seen.pop(sig, None)
        return entry.run(inputs) if eager else outs

    def _note_seen(self, sig: tuple) -> int:
        """Count a run of ``sig``; returns the runs counted before this one."""
        with self._spec_lock:
            seen = self._seen.pop(sig, 0)
            if len(self._seen) >= _SEEN:
                self._seen.pop(next(iter(self._seen)))
            self._seen[sig] = seen + 1  # most recent last
        return seen

    def signature_plan(self, inputs: list[Any]) -> SignaturePlan:
        """The specialised plan of ``inputs``' signature (for ``inspect --plan`` and tests):
        runs the inputs as many times as needed to specialise; raises ExecutionError if the
        inputs are not all numpy arrays or the signature cannot be specialised."""
        sig = signature_of(inputs)
        if sig is None:
            raise ExecutionError(
                f"model '{self.model_name}': a signature plan needs numpy arrays as inputs"
            )
        if not self._specialize:  # nothing to fold (or ZIGGURAT_PLAN=0): plan only for the text
            _, first = self._record(inputs)
            _, rec = self._record(inputs)
            if first.agrees(rec):
                return SignaturePlan(self.plan, sig, rec, self._static[1])  # type: ignore[index]
            raise ExecutionError(
                f"model '{self.model_name}': signature {sig} cannot be specialised: two runs "
                "disagreed on a value the plan assumed static"
            )
        for _ in range(4):
            entry = self._specs.get(sig)
            if entry is not None:
                break
            self.run(inputs)
        entry = self._specs.get(sig)
        if entry is None or entry.spec is None:
            raise ExecutionError(
                f"model '{self.model_name}': signature {sig} was not specialised (two runs "
                "disagreed on a value the plan assumed static, or ZIGGURAT_PLAN=0)"
            )
        return entry.spec

    def _locate(self, exc: BaseException) -> ZigguratError:
        tb = exc.__traceback__
        idx = None
        while tb is not None:
            lines = self._programs.get(tb.tb_frame.f_code.co_filename)
            if lines is not None:
                idx = lines.get(tb.tb_lineno)
            tb = tb.tb_next
        if idx is None:
            err = ExecutionError(f"model '{self.model_name}': {type(exc).__name__}: {exc}")
        else:
            node = self._nodes[idx]
            opset = self.plan.steps[idx].opset  # as resolved (implicit domains too)
            err = ExecutionError(
                f"model '{self.model_name}': node '{node.label}' ({node.op_type}, opset {opset}) "
                f"failed: {type(exc).__name__}: {exc}"
            )
            err.node = node  # type: ignore[attr-defined]
        err._ziggurat_located = True  # type: ignore[attr-defined]
        return err

    def _trace(self, idx: int, outputs: list[tuple[str, Any]]) -> None:
        node = self._nodes[idx]
        parts = []
        for name, value in outputs:
            desc = _describe(value) if _DEBUG >= 2 else ""
            parts.append(f"%{name}{desc}")
        with _TRACE_LOCK:
            print(f"[ziggurat] {node.op_type} {node.label} -> {', '.join(parts)}", file=sys.stderr)


_TRACE_LOCK = threading.Lock()


def _describe(value: Any) -> str:
    import numpy as np

    if isinstance(value, np.ndarray):
        stats = ""
        if value.size and value.dtype.kind in "fiu":
            v = value.astype(np.float64)
            stats = f" min={v.min():.4g} max={v.max():.4g} mean={v.mean():.4g}"
        return f": {value.dtype}{list(value.shape)}{stats}"
    if isinstance(value, list):
        return f": sequence[{len(value)}]"
    return f": {type(value).__name__}"
