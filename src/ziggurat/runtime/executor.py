"""Compiles an ``ir.Graph`` into straight-line Python calling one kernel per node.

The generated function keeps every value in a local variable and ``del``s it right after its last
use, so numpy frees intermediate buffers as early as possible (that is the memory plan: reference
counting does the reuse). A generated function has no per-node dispatch, dict lookups or loops, which
is what makes small models cheap to run (see BENCHMARKS.md, tiny MLP).

Subgraphs (If/Loop/Scan bodies) compile to their own ``CompiledGraph``; the parent passes the
outer-scope values they read as a dict and the kernel receives a bound callable.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import ir
from ..errors import ExecutionError, GraphError, UnsupportedOpError, ZigguratError
from ..ops import registry

_DEBUG = int(os.environ.get("ZIGGURAT_DEBUG", "0") or 0)


def _ident(prefix: str, i: int) -> str:
    return f"{prefix}{i}"


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
    ):
        self.graph = graph
        self.profiler = profiler
        self.opsets = opsets
        self.model_name = model_name
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self._outer_names = outer
        self._nodes: list[ir.Node] = []
        self._line_to_node: dict[int, int] = {}
        self.source = ""
        self._fn = self._compile()

    # -- compilation -------------------------------------------------------------------------
    def _resolve(self) -> list[tuple[ir.Node, registry.KernelDef]]:
        missing: list[tuple[str, str, str, int]] = []
        resolved = []
        for node in self.graph.nodes:
            opset = self.opsets.get(node.domain, 0)
            kdef = registry.lookup(node.op_type, node.domain, opset) if opset else None
            if kdef is None:
                missing.append((node.label, node.domain or "ai.onnx", node.op_type, opset))
            resolved.append((node, kdef))
        if missing:
            lines = "\n".join(
                f"  node '{n}': {d}::{op} (opset {v or 'not imported'})" for n, d, op, v in missing
            )
            raise UnsupportedOpError(
                f"model '{self.model_name}' uses {len(missing)} node(s) Ziggurat has no kernel "
                f"for:\n{lines}\nRun `ziggurat inspect MODEL` for the full list; re-export the "
                "model with supported ops or a supported opset.",
                missing,
            )
        return resolved  # type: ignore[return-value]

    def _bind_attrs(self, node: ir.Node, kdef: registry.KernelDef) -> dict[str, Any]:
        opset = self.opsets.get(node.domain, 0)
        missing = kdef.missing(node.attrs)
        if missing:
            raise GraphError(
                f"model '{self.model_name}': node '{node.label}' ({node.op_type}, opset "
                f"{opset}) lacks required attribute '{missing[0]}'"
            )
        return kdef.kwargs(node.attrs, len(node.outputs), opset)

    def _call_expr(
        self,
        idx: int,
        node: ir.Node,
        kdef: registry.KernelDef,
        ns: dict[str, Any],
        read: Callable[[str], str],
        visible: set[str],
    ) -> str:
        """Bind node ``idx``'s kernel into ``ns`` as ``k{idx}`` (attributes via partial, graph
        attributes compiled and bound to their outer-scope values) and return the call's source;
        ``read(name)`` gives the identifier holding a value. Shared with the parallel scheduler."""
        kname = _ident("k", idx)
        kwargs = self._bind_attrs(node, kdef)
        sub_exprs = []
        for key, value in list(kwargs.items()):
            subs = value if isinstance(value, list) else [value]
            if not any(isinstance(s, ir.Graph) for s in subs):
                continue
            del kwargs[key]
            compiled = []
            for s in subs:
                cg = CompiledGraph(
                    s, self.opsets, outer=visible, model_name=self.model_name,
                    profiler=self.profiler,
                )  # fmt: skip
                gname = f"g{idx}_{key}_{len(compiled)}"
                ns[gname] = cg
                free = sorted(s.free_names())
                outer_dict = "{" + ", ".join(f"{n!r}: {read(n)}" for n in free) + "}"
                compiled.append(f"BoundGraph({gname}, {outer_dict})")
            expr = compiled[0] if not isinstance(value, list) else "[" + ", ".join(compiled) + "]"
            sub_exprs.append(f"{key}={expr}")
        ns[kname] = functools.partial(kdef.fn, **kwargs) if kwargs else kdef.fn
        names = list(node.inputs)
        while names and not names[-1]:  # trailing omitted inputs: kernels see their defaults
            names.pop()
        args = ", ".join(read(n) if n else "None" for n in names)
        return f"{kname}({args}{', ' if args and sub_exprs else ''}{', '.join(sub_exprs)})"

    def _compile(self) -> Callable[[list, dict], list]:
        g = self.graph
        resolved = self._resolve()
        ns: dict[str, Any] = {"BoundGraph": BoundGraph}
        var: dict[str, str] = {}
        lines = ["def _run(__inputs, __outer):"]
        for i, name in enumerate(self.input_names):
            var[name] = _ident("x", i)
        if self.input_names:
            lines.append(f"    {', '.join(var[n] for n in self.input_names)}, = __inputs")
        for i, (name, value) in enumerate(g.initializers.items()):
            if name in var:  # an input shadows its initializer default
                continue
            var[name] = _ident("c", i)
            ns[var[name]] = value

        # Last use of each value (node index), to free buffers early.
        last_use: dict[str, int] = {}
        node_reads: list[list[str]] = []
        for idx, (node, _) in enumerate(resolved):
            reads = [n for n in node.inputs if n]
            for sub in node.subgraphs():
                reads.extend(sorted(sub.free_names()))
            node_reads.append(reads)
            for n in reads:
                last_use[n] = idx
        keep = set(self.output_names)

        prologue: list[str] = []  # reads of outer-scope values

        def read(name: str, node: ir.Node) -> str:
            if name in var:
                return var[name]
            if name in self._outer_names:
                ident = _ident("o", len(prologue))
                prologue.append(f"    {ident} = __outer[{name!r}]")
                var[name] = ident
                return ident
            raise GraphError(
                f"model '{self.model_name}': node '{node.label}' ({node.op_type}) reads '{name}', "
                "which no input, initializer or earlier node defines"
            )

        body: list[tuple[str, int]] = []  # (line, node index)
        for idx, (node, kdef) in enumerate(resolved):
            visible: set[str] = set()
            if node.subgraphs():  # names a subgraph may read from this scope
                visible = set(var) | set(self._outer_names) | g.defined_names()
            call = self._call_expr(idx, node, kdef, ns, lambda n, node=node: read(n, node), visible)
            outs = []
            for j, out in enumerate(node.outputs):
                if out:
                    var[out] = _ident("v", len(var))
                    outs.append((j, var[out]))
            if self.profiler is not None:
                body.append(("    __p0 = __perf()", idx))
            if len(node.outputs) == 1 and outs:
                body.append((f"    {outs[0][1]} = {call}[0]", idx))
            elif outs:
                body.append((f"    __t = {call}", idx))
                for j, ident in outs:
                    body.append((f"    {ident} = __t[{j}]", idx))
            else:
                body.append((f"    {call}", idx))
            if self.profiler is not None:
                body.append((f"    __rec({node.label!r}, {node.op_type!r}, __p0)", idx))
            if _DEBUG:
                traced = ", ".join(f"({o!r}, {var[o]})" for o in node.outputs if o)
                body.append((f"    __trace({idx}, [{traced}])", idx))
            dead = [
                var[n]
                for n in dict.fromkeys(node_reads[idx])
                if last_use.get(n) == idx
                and n not in keep
                and var.get(n, "").startswith(("v", "x"))
            ]
            dead += [var[o] for o in node.outputs if o and o not in last_use and o not in keep]
            if dead:
                body.append((f"    del {', '.join(dead)}", idx))

        out_vars = [read(n, ir.Node("Output", [], [], name=n)) for n in self.output_names]
        # A constant returned as an output is copied so callers cannot mutate the model.
        outs = ", ".join(f"{v}.copy()" if v.startswith("c") else v for v in out_vars)
        lines.extend(prologue)
        for text, idx in body:
            lines.append(text)
            self._line_to_node[len(lines)] = idx
        lines.append(f"    return [{outs}]")
        self.source = "\n".join(lines) + "\n"
        self._nodes = [n for n, _ in resolved]
        ns["__trace"] = self._trace
        if self.profiler is not None:
            ns["__perf"] = time.perf_counter_ns
            ns["__rec"] = self.profiler.record
        filename = f"<ziggurat:{self.model_name}:{g.name}:{id(self):x}>"
        exec(compile(self.source, filename, "exec"), ns)  # noqa: S102 - our own generated code
        self._filename = filename
        return ns["_run"]

    # -- execution ---------------------------------------------------------------------------
    def run(self, inputs: list[Any], outer: dict[str, Any] | None = None) -> list[Any]:
        """Run the graph on positional inputs (graph input order); returns outputs in order."""
        try:
            return self._fn(inputs, outer or {})
        except ZigguratError as exc:
            if getattr(exc, "_ziggurat_located", False):
                raise
            raise self._locate(exc) from exc
        except Exception as exc:  # a kernel failed: name the node, op and opset
            raise self._locate(exc) from exc

    def _locate(self, exc: BaseException) -> ZigguratError:
        tb = exc.__traceback__
        idx = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self._filename:
                idx = self._line_to_node.get(tb.tb_lineno)
            tb = tb.tb_next
        if idx is None:
            err = ExecutionError(f"model '{self.model_name}': {type(exc).__name__}: {exc}")
        else:
            node = self._nodes[idx]
            opset = self.opsets.get(node.domain, 0)
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
