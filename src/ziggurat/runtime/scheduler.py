"""Parallel execution of independent graph branches (onnxruntime's ``ExecutionMode.ORT_PARALLEL``).

At compile time the graph is cut into *chains*: maximal runs of nodes where each node's only
dependency is the previous node and the previous node's only dependent is it. Dependencies are taken
after a transitive reduction, so a residual shortcut (``x -> conv -> conv -> add(x, .)``) does not
split a chain: that ``x -> add`` edge is implied by the path through the convs. Each chain compiles to
straight-line Python like ``CompiledGraph`` (locals, ``del`` after last use); values that cross
chains go through a per-run dict and are dropped when their last consuming chain has read them.

At run time a dependency-counting dataflow scheduler runs the chain DAG: the calling thread runs
ready chains itself, and whoever finishes a chain continues inline with a successor it made ready and
hands other heavy ones to a persistent pool of ``threads - 1`` workers (the caller is the other
thread). numpy and BLAS release the GIL inside their loops, so branches really overlap. Chains are
timed as they run: one faster than a hand-off (``INLINE_NS``) stays with the thread that made it
ready, and while at most one chain is heavy, runs take the sequential code with no bookkeeping at
all (re-timed every ``REMEASURE_EVERY`` runs). A graph without parallel branches is one chain and
always runs as the sequential executor does.

BLAS is multithreaded itself: with inter-op threads, limit it (``intra_op_num_threads``) to about
cores / inter-op threads, or concurrent matrix products oversubscribe the cores.

Subgraphs (If/Loop/Scan bodies) are compiled with the sequential ``CompiledGraph`` and bound to their
outer-scope values as in ``executor.py``.
"""

from __future__ import annotations

import heapq
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import ir
from .executor import MAX_SIGNATURES, CompiledGraph
from .specialize import signature_of

# A chain measured faster than this runs in the thread that made it ready: handing it to another
# thread (queue, wake-up, lock) costs tens of microseconds. Unmeasured chains count as heavy.
INLINE_NS = 50_000
REMEASURE_EVERY = 64
_UNKNOWN = 1 << 62


def default_threads() -> int:
    """The inter-op thread count that ``threads=0`` means: one per available core."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# -- the worker pool -----------------------------------------------------------------------------
class _Pool:
    """Persistent daemon workers taking ``(graph, run)`` hand-offs from one queue."""

    def __init__(self, workers: int):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(workers):
            t = threading.Thread(target=self._work, name=f"zg-inter-op-{i}", daemon=True)
            t.start()

    def submit(self, graph: ParallelGraph, run: _Run) -> None:
        self._queue.put((graph, run))

    def _work(self) -> None:
        while True:
            graph, run = self._queue.get()
            graph._take(run)
            del graph, run  # do not keep the last run's values alive while idle


# One pool per size, shared by every session: many sessions must not mean many idle threads.
_pools: dict[int, _Pool] = {}
_pools_lock = threading.Lock()


def _get_pool(workers: int) -> _Pool:
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = _Pool(workers)
        return pool


_pools_generation = 0  # bumped in a forked child: graphs then fetch a new pool


def _forget_pools() -> None:
    # A forked child (e.g. a pre-fork server worker) has none of the parent's threads.
    global _pools_lock, _pools_generation
    _pools.clear()
    _pools_lock = threading.Lock()
    _pools_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


# -- partitioning --------------------------------------------------------------------------------
def partition(graph: ir.Graph) -> tuple[list[list[int]], list[list[int]]]:
    """Cut ``graph`` (topologically sorted) into chains of node indices.

    Returns ``(chains, successors)``: chains in topological order, each a list of node indices in
    execution order, and for each chain the chains that must wait for it.
    """
    producer: dict[str, int] = {}
    preds: list[set[int]] = []
    for i, node in enumerate(graph.nodes):
        reads = {n for n in node.inputs if n}
        for sub in node.subgraphs():
            reads |= sub.free_names()
        preds.append({producer[n] for n in reads if n in producer})
        for o in node.outputs:
            if o:
                producer[o] = i
    n = len(preds)
    succs: list[list[int]] = [[] for _ in range(n)]
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)

    # Transitive reduction with reachability bitsets (Python ints), in reverse topological order:
    # a successor is redundant if an earlier successor already reaches it. A node's bitset is
    # dropped once its first predecessor is done, so only a frontier of them is alive at a time.
    first_pred = [min(ps, default=-1) for ps in preds]
    reach = [0] * n
    rsuccs: list[list[int]] = [[] for _ in range(n)]
    rpreds: list[list[int]] = [[] for _ in range(n)]
    for i in range(n - 1, -1, -1):
        acc = 0
        for s in sorted(succs[i]):
            if not (acc >> s) & 1:
                rsuccs[i].append(s)
                rpreds[s].append(i)
            acc |= reach[s] | (1 << s)
            if first_pred[s] == i:
                reach[s] = 0
        reach[i] = acc

    chain_of = [0] * n
    chains: list[list[int]] = []
    for i in range(n):
        ps = rpreds[i]
        if len(ps) == 1 and len(rsuccs[ps[0]]) == 1:
            chain_of[i] = chain_of[ps[0]]
            chains[chain_of[i]].append(i)
        else:
            chain_of[i] = len(chains)
            chains.append([i])
    successors = [sorted({chain_of[s] for s in rsuccs[c[-1]]}) for c in chains]
    return chains, successors


class _Variant:
    """One rendering of the chains: generic, or one signature's (``spec``)."""

    __slots__ = ("fns", "refs", "outputs", "spec")

    def __init__(self, fns: list[Callable], refs: dict[str, int], outputs: list):
        self.fns = fns
        self.refs = refs  # name -> chains that read it from the run's dict
        self.outputs = outputs  # ("env" | "outer", name) or ("const", array)
        self.spec: Any = None


# -- per-run state -------------------------------------------------------------------------------
class _Run:
    """Everything one ``run`` call owns, so concurrent calls never share state."""

    __slots__ = (
        "fns", "env", "outer", "refs", "waiting", "ready", "lock", "wake", "sleeping", "left", "busy",
        "error",
    )  # fmt: skip

    def __init__(
        self, graph: ParallelGraph, variant: _Variant, env: dict[str, Any], outer: dict[str, Any]
    ):
        self.fns = variant.fns  # the chains' functions (generic or this signature's)
        self.env = env  # values crossing chains, by name
        self.outer = outer
        self.refs = variant.refs.copy()  # name -> consuming chains that have not read it yet
        self.waiting = graph._n_deps.copy()  # chain -> unfinished predecessor chains
        self.ready: list[int] = []  # heap of chains nobody has started yet
        self.lock = threading.Lock()  # guards everything here but env's reads and writes
        # The caller sleeps on ``wake`` (held while nobody signalled); a Condition costs more.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.sleeping = False
        self.left = len(graph._chains)  # chains not finished
        self.busy = 0  # threads working on this run right now
        self.error: BaseException | None = None

    def signal(self) -> None:
        """Wake the caller if it sleeps (call with ``lock`` held)."""
        if self.sleeping:
            self.sleeping = False
            self.wake.release()

    def release(self, names: tuple[str, ...]) -> None:
        """A chain has read ``names`` for the last time: drop each after its last reader."""
        with self.lock:
            refs = self.refs
            for name in names:
                left = refs[name] - 1
                if left:
                    refs[name] = left
                else:
                    del refs[name]
                    del self.env[name]


class ParallelGraph(CompiledGraph):
    """A graph whose independent branches run concurrently on ``threads`` threads (0: all cores).

    Same interface as ``CompiledGraph``: ``run(inputs: list, outer: dict | None) -> list``,
    ``input_names``, ``output_names``, ``graph``; errors are the same located ``ExecutionError``.
    ``run`` may be called from several threads at once.
    """

    def __init__(
        self,
        graph: ir.Graph,
        opsets: dict[str, int],
        *,
        outer: set[str] = frozenset(),  # type: ignore[assignment]
        model_name: str = "model",
        profiler: Any = None,
        threads: int = 0,
    ):
        self.threads = threads if threads > 0 else default_threads()
        self._chains: list[list[int]] = []
        super().__init__(graph, opsets, outer=outer, model_name=model_name, profiler=profiler)

    @property
    def parallel(self) -> bool:
        """Whether the graph has parallel branches to schedule (False: runs are sequential)."""
        return len(self._chains) > 1

    # -- compilation -------------------------------------------------------------------------
    def _compile(self) -> Callable[[list, dict], list]:
        chains, successors = partition(self.graph)
        if len(chains) <= 1 or self.threads <= 1:
            return super()._compile()  # nothing to overlap: the sequential code, unchanged
        self._chains = chains
        self._successors = successors
        self._n_deps = [0] * len(chains)
        for succ in successors:
            for s in succ:
                self._n_deps[s] += 1
        self._roots = [c for c, n in enumerate(self._n_deps) if n == 0]
        self._cost = [_UNKNOWN] * len(chains)  # ns per chain, learnt while running
        self._heavy = len(chains)  # chains costing more than a hand-off
        self._runs = 0
        self._sequential = CompiledGraph(
            self.graph, self.opsets, outer=self._outer_names, model_name=self.model_name,
            profiler=self.profiler,
        )  # fmt: skip
        self._pool = _get_pool(self.threads - 1)
        self._pool_generation = _pools_generation
        self._specialize = False  # runs go through the chains, or self._sequential
        self._recorder = self._sequential  # whose signature plans the chains follow
        self._generic = self._generate()
        self._variants: dict[tuple, _Variant] = {}
        return self._run

    def _generate(self, spec: Any = None) -> _Variant:
        """Render one function per chain with the plan's emitter (emitter.py); with a signature
        plan, its kept steps with folded constants and direct calls (its planned buffers are
        for sequential runs only: concurrent chains would break its liveness order)."""
        plan = self.plan
        steps = spec.kept if spec is not None else plan.steps
        folded = spec.folded if spec is not None else {}
        inputs = set(plan.inputs)
        chain_of = {idx: c for c, nodes in enumerate(self._chains) for idx in nodes}
        produced = {o: s.index for s in steps for o in s.outputs}
        readers: dict[str, set[int]] = {}  # name -> chains reading it
        for step in steps:
            for n in step.reads:
                readers.setdefault(n, set()).add(chain_of[step.index])
        keep = set(self.output_names)
        # Values handed between chains (or out of run): node outputs read by another chain, and the
        # graph outputs. Each consuming chain releases its reference after its last read.
        shared = {n for n, cs in readers.items() if n in produced and cs - {chain_of[produced[n]]}}
        shared |= keep & set(produced)
        refs = {
            n: len(cs - ({chain_of[produced[n]]} if n in produced else set()))
            for n, cs in readers.items()
            if (n in shared or (n in inputs and n not in plan.constants)) and n not in keep
        }
        kept = {s.index for s in steps}
        chains = [[i for i in nodes if i in kept] for nodes in self._chains]
        program = self._emitter.chains(chains, shared, set(refs), spec)
        if spec is None:
            self.source = program.source
        self._register(program)
        outputs: list[tuple[str, Any]] = []  # (where it lives, name or constant)
        for n in self.output_names:
            if n in folded or n in plan.constants:
                outputs.append(("const", folded[n] if n in folded else plan.constants[n]))
            else:
                outputs.append(("env" if n in inputs or n in produced else "outer", n))
        fns = [program.ns[f"_chain{c}"] for c in range(len(chains))]
        return _Variant(fns, refs, outputs)

    def _variant(self, inputs: list[Any]) -> _Variant:
        """The chains for ``inputs``' signature: specialised once the sequential code has a
        signature plan for it (recorded in runs that took the sequential code: at most one
        heavy chain), else generic."""
        recorder = self._recorder
        sig = signature_of(inputs) if recorder._specialize else None
        entry = recorder._specs.get(sig) if sig is not None else None
        if entry is None or entry.spec is None:
            return self._generic
        variant = self._variants.get(sig)
        if variant is None or variant.spec is not entry.spec:
            variant = self._generate(entry.spec)
            variant.spec = entry.spec
            if len(self._variants) >= MAX_SIGNATURES:
                self._variants.pop(next(iter(self._variants)))
            self._variants[sig] = variant
        return variant

    # -- execution ---------------------------------------------------------------------------
    def _run(self, inputs: list[Any], outer: dict[str, Any]) -> list[Any]:
        if len(inputs) != len(self.input_names):
            raise ValueError(
                f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                f"got {len(inputs)}"
            )
        self._runs += 1  # racy, but only paces the re-measuring below
        if self._heavy <= 1 and self._runs % REMEASURE_EVERY:
            # At most one chain costs more than a hand-off: nothing would run on another thread,
            # so skip the bookkeeping. Every REMEASURE_EVERY-th run re-times the chains in case
            # the work changed (e.g. larger inputs).
            return self._sequential.run(inputs, outer)
        if self._pool_generation != _pools_generation:  # forked since: the old pool's threads
            self._pool = _get_pool(self.threads - 1)  # are gone (the caller would still finish
            self._pool_generation = _pools_generation  # the run alone, just not in parallel)
        variant = self._variant(inputs)
        run = _Run(self, variant, dict(zip(self.input_names, inputs)), outer)
        run.busy = 1
        try:
            self._drive(run, self._roots)
            self._help(run)
        except BaseException as exc:  # e.g. KeyboardInterrupt while waiting: stop the workers too
            with run.lock:
                if run.error is None:
                    run.error = exc
            raise
        env, outer = run.env, run.outer
        outs = [
            n.copy() if kind == "const" else (env if kind == "env" else outer)[n]
            for kind, n in variant.outputs
        ]
        env.clear()  # pool hand-offs still queued must not pin values
        self._heavy = sum(c >= INLINE_NS for c in self._cost)
        return outs

    def _help(self, run: _Run) -> None:
        """The caller's part: run this run's ready chains until all are done or one failed."""
        while True:
            chain = -1
            with run.lock:
                if run.error is not None:
                    if run.busy == 0:  # in-flight chains have stopped: report the failure
                        run.env.clear()  # pool hand-offs still queued must not pin values
                        raise run.error
                elif run.left == 0:
                    return
                elif run.ready:
                    chain = heapq.heappop(run.ready)
                    run.busy += 1
                if chain < 0:
                    run.sleeping = True
            if chain < 0:
                run.wake.acquire()  # until signal(); returns at once if it came meanwhile
            else:
                self._drive(run, [chain])

    def _take(self, run: _Run) -> None:
        """A pool worker's turn: start one of ``run``'s ready chains, if any is left."""
        with run.lock:
            if not run.ready or run.error is not None:
                return
            chain = heapq.heappop(run.ready)
            run.busy += 1
        self._drive(run, [chain])

    def _drive(self, run: _Run, new: list[int]) -> None:
        """Run the ready chains ``new`` and, in turn, the chains they make ready.

        This thread keeps the cheap chains (a hand-off costs more than they do) and one heavy
        chain; other heavy chains go to the run's ready heap and the pool. Cheap chains run first
        so that the heavy chains they unblock are handed off early. The caller counted this
        thread in ``run.busy``; it is uncounted when the thread leaves.
        """
        fns, successors, cost, pool = run.fns, self._successors, self._cost, self._pool
        todo: list[int] = []  # this thread's chains, a stack
        heavy = -1  # the heavy chain in todo, if any
        chain = -1
        while True:
            queued = 0
            with run.lock:
                if chain >= 0:
                    run.left -= 1
                if run.error is not None:  # a chain failed: drop what this thread had claimed
                    todo.clear()
                    new = []
                elif chain >= 0:
                    new = []
                    for s in successors[chain]:
                        run.waiting[s] -= 1
                        if run.waiting[s] == 0:
                            new.append(s)
                for c in new:
                    if cost[c] < INLINE_NS:
                        todo.append(c)
                    elif heavy < 0:
                        heavy = c
                        todo.insert(0, c)
                    else:
                        heapq.heappush(run.ready, c)
                        queued += 1
                if not todo:
                    run.busy -= 1
                if queued or not todo:
                    run.signal()  # the caller may be waiting for work or for the end
            for _ in range(queued):
                pool.submit(self, run)
            if not todo:
                return
            chain = todo.pop()
            if chain == heavy:
                heavy = -1
            t0 = time.perf_counter_ns()
            try:
                fns[chain](run.env, run.outer, run.release)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of run()
                with run.lock:
                    if run.error is None:
                        run.error = exc
                    run.busy -= 1
                    run.signal()
                return
            # A running estimate; races between concurrent runs only blur it.
            took = time.perf_counter_ns() - t0
            cost[chain] = took if cost[chain] == _UNKNOWN else (3 * cost[chain] + took) >> 2
