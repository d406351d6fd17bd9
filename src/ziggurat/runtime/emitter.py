"""Renders a ``Plan`` as straight-line Python: one function for the whole graph (sequential), or
one per chain for the parallel scheduler. Both share the per-step code below.

Every value lives in a local variable and is ``del``-ed right after its last reader, so numpy
frees buffers as early as the plan allows; the code has no per-node dispatch, dict lookups or
loops. Kernels are bound once into the code's namespace as ``k{step}`` (attributes through
``functools.partial``); constants as ``c{i}``, a signature's folded values as ``f{i}``, its
planned buffers as ``B{i}`` (unpacked from the buffer set the run checked out).

Options: ``profiler`` (timing around each call), ``trace`` (the ``ZIGGURAT_DEBUG`` hook after each
step), ``record`` (a ``Recording`` after each step, see specialize.py), ``spec`` (a
``SignaturePlan``: only its kept steps, direct calls, ``out=`` buffers). ``lines`` maps each
generated line to its step, which is how errors name the failing node.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ir
from .plan import Plan, Step


class Program:
    """Generated source with its namespace, file name and line -> step map."""

    def __init__(self, source: str, ns: dict[str, Any], filename: str, lines: dict[int, int]):
        self.source = source
        self.ns = ns
        self.filename = filename
        self.lines = lines
        exec(compile(source, filename, "exec"), ns)  # noqa: S102 - our own generated code


class Emitter:
    """Binds a plan's kernels and constants once; renders functions over its steps."""

    def __init__(
        self,
        plan: Plan,
        *,
        subgraph: Callable[[ir.Graph, set[str]], Any],
        bound_graph: type,
        profiler: Any = None,
        trace: Callable | None = None,
        tag: str = "",
    ):
        self.plan = plan
        self.profiler = profiler
        self.trace = trace
        self.tag = tag
        self.ns: dict[str, Any] = {"BoundGraph": bound_graph, "__trace": trace}
        if profiler is not None:
            self.ns["__perf"] = time.perf_counter_ns
            self.ns["__prof"] = profiler.record
        self.const_ident: dict[str, str] = {}
        for i, (name, value) in enumerate(plan.constants.items()):
            self.const_ident[name] = f"c{i}"
            self.ns[f"c{i}"] = value
        visible = plan.graph.defined_names() | set(plan.outer)  # what subgraphs may read
        self.subgraphs: dict[int, dict[str, list[tuple[str, list[str]]]]] = {}
        for step in plan.steps:
            kname = f"k{step.index}"
            fn = step.kdef.fn
            self.ns[kname] = functools.partial(fn, **step.kwargs) if step.kwargs else fn
            for key, value in step.graphs.items():
                bound = []
                for j, sub in enumerate(value if isinstance(value, list) else [value]):
                    gname = f"g{step.index}_{key}_{j}"
                    self.ns[gname] = subgraph(sub, visible)
                    bound.append((gname, sorted(sub.free_names())))
                self.subgraphs.setdefault(step.index, {})[key] = bound
        self.count = 0

    # -- whole-graph function --------------------------------------------------------------------
    def sequential(self, spec: Any = None, record: bool = False) -> Program:
        """``_run(__inputs, __outer, __bufs=()) -> list`` over the plan (or ``spec``'s kept steps,
        with its buffer set as ``__bufs``); with ``record``, ``_run(__inputs, __outer, __recorder)``
        calls ``__recorder(step, outputs, reads)`` after each step."""
        plan = self.plan
        ns = dict(self.ns)
        fn = _Function(self, ns, spec)
        ns["__no_outer"] = {}
        params = "__outer, __recorder" if record else "__outer=__no_outer, __bufs=()"
        fn.lines.append(f"def _run(__inputs, {params}):")
        for i, name in enumerate(plan.inputs):
            fn.var[name] = f"x{i}"
        if plan.inputs:
            fn.lines.append(f"    {', '.join(fn.var[n] for n in plan.inputs)}, = __inputs")
        if spec is not None and spec.buffers:
            fn.lines.append(f"    {', '.join(f'B{i}' for i in range(len(spec.buffers)))}, = __bufs")
        steps = spec.kept if spec is not None else plan.steps
        last_use = spec.last_use if spec is not None else plan.last_use
        for step in steps:
            fn.step(step, last_use, record=record)
        outs = []
        for name in plan.outputs:
            ident = fn.read(name, None)
            outs.append(f"{ident}.copy()" if ident[0] in "cf" else ident)
        fn.lines.append(f"    return [{', '.join(outs)}]")
        return self._program(fn, ns, "plan" if spec is None else "signature")

    # -- one function per chain ------------------------------------------------------------------
    def chains(
        self, chains: list[list[int]], shared: set[str], refs: set[str], spec: Any = None
    ) -> Program:
        """``_chain{c}(__env, __outer, __release)`` per chain: values other chains read, and the
        graph outputs, go to ``__env``; values read from ``__env`` whose last reader in this
        chain is done are ``__release``-d (``refs``: the names counted per reading chain)."""
        ns = dict(self.ns)
        lines: list[str] = []
        line_map: dict[int, int] = {}
        steps = self.plan.steps
        for c, nodes in enumerate(chains):
            fn = _Function(self, ns, spec, env=True, shared=shared, refs=refs)
            fn.buffers = False  # planned buffers assume the sequential order
            fn.own = {o for idx in nodes for o in steps[idx].outputs}
            fn.lines.append(f"def _chain{c}(__env, __outer, __release):")
            last_use = {n: idx for idx in nodes for n in steps[idx].reads}
            for idx in nodes:
                fn.step(steps[idx], last_use)
            if len(fn.lines) == 1:
                fn.lines.append("    pass")
            for line, idx in fn.line_map.items():
                line_map[line + len(lines)] = idx
            lines.extend(fn.lines)
        fn = _Function(self, ns, None)
        fn.lines, fn.line_map = lines, line_map
        return self._program(fn, ns, "parallel")

    def _program(self, fn: _Function, ns: dict[str, Any], kind: str) -> Program:
        self.count += 1
        name = f"<ziggurat:{self.plan.model_name}:{self.plan.graph.name}:{kind}:{self.tag}{self.count}>"
        return Program("\n".join(fn.lines) + "\n", ns, name, fn.line_map)


class _Function:
    """The state of one generated function: identifiers of values, lines, line -> step."""

    def __init__(self, em: Emitter, ns: dict, spec: Any, *, env=False, shared=(), refs=()):
        self.em = em
        self.ns = ns
        self.spec = spec
        self.env = env  # a chain: values from other chains come from __env
        self.shared = shared
        self.refs = refs
        self.own: set[str] = set()
        self.buffers = True  # pass planned out= buffers (sequential code only)
        self.var: dict[str, str] = {}
        self.lines: list[str] = []
        self.line_map: dict[int, int] = {}
        self.idx = -1

    def emit(self, text: str) -> None:
        self.lines.append(text)
        self.line_map[len(self.lines)] = self.idx

    def read(self, name: str, step: Step | None) -> str:
        if name in self.var:
            return self.var[name]
        spec = self.spec
        if spec is not None and name in spec.folded:
            ident = f"f{len(self.ns)}"
            self.ns[ident] = spec.folded[name]
            self.var[name] = ident
            return ident
        if name in self.em.const_ident:
            return self.em.const_ident[name]
        plan = self.em.plan
        if self.env and (name in plan.producer or name in plan.inputs):
            ident = self.var[name] = f"e{len(self.var)}"
            self.emit(f"    {ident} = __env[{name!r}]")
            return ident
        if name in plan.outer:
            ident = self.var[name] = f"o{len(self.var)}"
            self.emit(f"    {ident} = __outer[{name!r}]")
            return ident
        raise AssertionError(f"plan {plan.model_name!r}: '{name}' read before defined")

    def call(self, step: Step) -> str:
        """The source of step's call, returning its outputs as a tuple (or one value: ``[0]``
        is then appended by the caller unless the call is direct)."""
        node = step.node
        names = list(node.inputs)
        while names and not names[-1]:  # trailing omitted inputs: kernels see their defaults
            names.pop()
        args = [self.read(n, step) if n else "None" for n in names]
        for key, bound in self.em.subgraphs.get(step.index, {}).items():
            exprs = []
            for gname, free in bound:
                outer = ", ".join(f"{n!r}: {self.read(n, step)}" for n in free)
                exprs.append(f"BoundGraph({gname}, {{{outer}}})")
            one = not isinstance(step.graphs[key], list)
            args.append(f"{key}={exprs[0] if one else '[' + ', '.join(exprs) + ']'}")
        spec = self.spec
        if spec is not None:
            out = spec.out.get(step.outputs[0]) if step.outputs and self.buffers else None
            fast = spec.fast.get(step.index)
            if fast is not None and fast[0] == "ufunc":
                uname = f"__np_{fast[1]}"
                self.ns[uname] = getattr(np, fast[1])
                extra = [repr(a) for a in fast[2]]
                if out is not None:
                    extra.append(f"out=B{out}")
                return f"{uname}({', '.join(args + extra)})"
            if fast is not None and fast[0] == "expr":  # runtime/direct.py
                self.ns.update(fast[2])
                return fast[1].format(*args)
            if fast is not None:  # reshape
                return f"{args[0]}.reshape({tuple(int(d) for d in fast[1])!r})"
            if out is not None:
                args.append(f"out=B{out}")
        return f"k{step.index}({', '.join(args)})"

    def step(self, step: Step, last_use: dict[str, int], record: bool = False) -> None:
        self.idx = idx = step.index
        node = step.node
        fast = self.spec.fast.get(idx) if self.spec is not None else None
        if fast is not None and fast[0] == "split":  # runtime/direct.py: one view per output
            source = self.read(node.inputs[0], step)
            views = [t.format(source) for t in fast[1]]
        else:
            call = self.call(step)
        outs = []
        for j, out in enumerate(node.outputs):
            if out:
                self.var[out] = f"v{len(self.var)}"
                outs.append((j, out, self.var[out]))
        if self.em.profiler is not None:
            self.emit("    __p0 = __perf()")
        if fast is not None and fast[0] == "split":
            for (_, _, ident), view in zip(outs, views):
                self.emit(f"    {ident} = {view}")
        elif fast is not None:
            self.emit(f"    {outs[0][2]} = {call}")
        elif len(node.outputs) == 1 and outs:
            self.emit(f"    {outs[0][2]} = {call}[0]")
        elif outs:
            self.emit(f"    __t = {call}")
            for j, _, ident in outs:
                self.emit(f"    {ident} = __t[{j}]")
            self.emit("    del __t")
        else:
            self.emit(f"    {call}")
        if self.em.profiler is not None:
            self.emit(f"    __prof({node.label!r}, {node.op_type!r}, __p0)")
        if self.em.trace is not None:
            traced = ", ".join(f"({o!r}, {ident})" for _, o, ident in outs)
            self.emit(f"    __trace({idx}, [{traced}])")
        if record:
            reads = "".join(f"{self.read(n, step)}, " for n in step.reads)
            self.emit(
                f"    __recorder({idx}, ({''.join(i + ', ' for _, _, i in outs)}), ({reads}))"
            )
        if self.env:
            for _, out, ident in outs:
                if out in self.shared:
                    self.emit(f"    __env[{out!r}] = {ident}")
        self._free(step, last_use, outs)

    def _free(self, step: Step, last_use: dict[str, int], outs: list) -> None:
        """``del`` locals after their last reader here; a chain also releases the values other
        chains handed it, so the last reader drops them (memory stays as sequential)."""
        keep = self.em.plan.outputs
        done = [n for n in step.reads if last_use.get(n) == step.index and n in self.var]
        done += [o for _, o, _ in outs if o not in last_use]
        dead = [self.var[n] for n in done if n not in keep and self.var[n][0] in "xve"]
        if dead:
            self.emit(f"    del {', '.join(dead)}")
        if self.env:
            handed = tuple(
                n for n in done if n not in self.own and n in self.refs and n not in keep
            )
            if handed:
                self.emit(f"    __release({handed!r})")
