"""The parallel scheduler: same results as the sequential executor, branches that really overlap,
located errors, concurrent runs, and values freed after their last reader."""

from __future__ import annotations

import gc
import os
import threading
import tracemalloc
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ziggurat
from ziggurat import ir
from ziggurat.errors import ExecutionError
from ziggurat.formats.onnx import load_model
from ziggurat.ops.registry import kernel
from ziggurat.passes import optimize
from ziggurat.runtime import CompiledGraph, scheduler
from ziggurat.runtime.scheduler import ParallelGraph, partition

D = "test.scheduler"  # a private domain for test-only kernels
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")

_made: list[weakref.ref] = []


@kernel("MakeT", domain=D)
def MakeT(x, /):
    y = x * np.float32(2)
    _made.append(weakref.ref(y))
    return (y,)


@kernel("AliveT", domain=D)
def AliveT(a, b, /):
    # Runs after every reader of MakeT's output: the scheduler must have dropped that value by now.
    gc.collect()
    return (np.array([r() is not None for r in _made]),)


@kernel("FailIfNegT", domain=D)
def FailIfNegT(x, /):
    if x.sum() < 0:
        raise ValueError("negative input")
    return (x + np.float32(1),)


_meet = threading.Barrier(2)


@kernel("MeetT", domain=D)
def MeetT(x, /):
    # Returns only once two MeetT nodes are running at the same moment (or breaks after 10 s).
    _meet.wait(timeout=10)
    return (x + np.float32(0),)


def _vi(name, shape=None, elem=ir.dtypes.FLOAT):
    return ir.ValueInfo(name, ir.Type("tensor", elem, shape))


def _graph(nodes, inputs, outputs, inits=None):
    return ir.Graph(nodes=nodes, inputs=inputs, outputs=outputs, initializers=inits or {}, name="t")


OPSETS = {"": 17, D: 1}


def _both(graph, opsets=OPSETS, **kw):
    return CompiledGraph(graph, opsets, **kw), ParallelGraph(graph, opsets, threads=2, **kw)


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def _branches(width=3, depth=2, size=8):
    """x -> ``width`` branches of ``depth`` MatMul+Relu -> Sum; one branch's head is an output too."""
    rng = np.random.default_rng(0)
    nodes, inits, heads = [], {}, []
    for b in range(width):
        prev = "x"
        for d in range(depth):
            w = f"w{b}_{d}"
            inits[w] = (rng.standard_normal((size, size)) / size).astype(np.float32)
            nodes.append(ir.Node("MatMul", [prev, w], [f"m{b}_{d}"], name=f"mm{b}_{d}"))
            nodes.append(ir.Node("Relu", [f"m{b}_{d}"], [f"r{b}_{d}"], name=f"relu{b}_{d}"))
            prev = f"r{b}_{d}"
        heads.append(prev)
    nodes.append(ir.Node("Sum", heads, ["y"], name="sum"))
    return _graph(nodes, [_vi("x", [size, size])], [_vi("y"), _vi(heads[0])], inits)


def test_partition_keeps_residual_paths_in_one_chain():
    nodes = [
        ir.Node("Relu", ["x"], ["a"]),
        ir.Node("Neg", ["a"], ["b"]),
        ir.Node("Abs", ["b"], ["c"]),
        ir.Node("Add", ["a", "c"], ["y"]),  # a -> Add is implied by a -> b -> c -> Add
    ]
    chains, succ = partition(_graph(nodes, [_vi("x")], [_vi("y")]))
    assert chains == [[0, 1, 2, 3]] and succ == [[]]
    diamond = [
        ir.Node("Relu", ["x"], ["a"]),
        ir.Node("Neg", ["a"], ["b"]),
        ir.Node("Abs", ["a"], ["c"]),
        ir.Node("Add", ["b", "c"], ["y"]),
    ]
    chains, succ = partition(_graph(diamond, [_vi("x")], [_vi("y")]))
    assert chains == [[0], [1], [2], [3]] and succ == [[1, 2], [3], [3], []]


def test_straight_line_graph_uses_the_sequential_code():
    nodes = [ir.Node("Relu", ["x"], ["a"]), ir.Node("Neg", ["a"], ["y"])]
    seq, par = _both(_graph(nodes, [_vi("x", [3])], [_vi("y")]))
    assert not par.parallel
    x = np.array([-1, 0, 2], np.float32)
    _assert_same(seq.run([x]), par.run([x]))


@pytest.mark.parametrize("hand_off", [False, True])
def test_branches_match_sequential_and_outputs_are_kept(hand_off, monkeypatch):
    if hand_off:
        monkeypatch.setattr(scheduler, "INLINE_NS", 0)
    seq, par = _both(_branches())
    assert par.parallel
    x = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    for _ in range(3):  # the pool is reused across runs
        _assert_same(seq.run([x]), par.run([x]))


def test_light_inception_v1_matches_sequential():
    model = load_model(os.path.join(LIGHT, "light_inception_v1.onnx"))
    graph = optimize(model.graph, model.opsets)
    seq, par = _both(graph, model.opsets)
    assert par.parallel and len(par._chains) > 10  # its inception blocks have 4 branches each
    shape = [d for d in graph.inputs[0].type.shape]
    n = int(np.prod(shape))
    x = (np.arange(n, dtype=np.float32) / n).reshape(shape)
    _assert_same(seq.run([x]), par.run([x]))


def _peak_traced(graph, inputs):
    tracemalloc.start()
    try:
        graph.run(inputs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_stays_as_sequential(always_hand_off):
    """A run of diamonds (x -> Neg, Abs -> Add -> ...): every value crosses chains, so a value
    kept past its last reader would pile up (10 diamonds: 30 arrays of 1 MB)."""
    nodes, v = [], "x"
    for k in range(10):
        nodes += [
            ir.Node("Neg", [v], [f"b{k}"]),
            ir.Node("Abs", [v], [f"c{k}"]),
            ir.Node("Add", [f"b{k}", f"c{k}"], [f"v{k}"]),
        ]
        v = f"v{k}"
    seq, par = _both(_graph(nodes, [_vi("x", [1 << 18])], [_vi(v)]))
    x = np.ones(1 << 18, np.float32)
    peaks = [_peak_traced(seq, [x]), _peak_traced(par, [x])]
    assert peaks[1] < 1.5 * peaks[0], f"peak traced memory (sequential, parallel): {peaks}"


def _control_flow_model() -> bytes:
    """Two branches feed an If and a Loop whose bodies read the branches' values from outer scope."""
    f = TensorProto.FLOAT
    then_g = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", f, None)],
    )  # fmt: skip
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["a", "b"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", f, None)],
    )  # fmt: skip
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "a"], ["acc_out"]),
            helper.make_node("Mul", ["acc_out", "b"], ["scan_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", f, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", f, None),
            helper.make_tensor_value_info("scan_out", f, None),
        ],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["a0"]),
        helper.make_node("Exp", ["a0"], ["a"]),
        helper.make_node("Neg", ["x"], ["b0"]),
        helper.make_node("Sigmoid", ["b0"], ["b"]),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["r_if"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["n", "", "x"], ["r_loop", "r_scan"], body=body),
        helper.make_node("Add", ["r_if", "r_loop"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "cf", [helper.make_tensor_value_info("x", f, [4])],
        [helper.make_tensor_value_info(n, f, None) for n in ("y", "r_scan", "a")],
        [
            onnx.numpy_helper.from_array(np.array(0, np.float32), "zero"),
            onnx.numpy_helper.from_array(np.array(3, np.int64), "n"),
        ],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return m.SerializeToString()


def test_if_and_loop_read_outer_scope_values_from_other_branches():
    model = load_model(_control_flow_model())
    seq, par = _both(model.graph, model.opsets)
    assert par.parallel
    for x in ([1, -2, 3, 0.5], [-1, -2, -3, 0.5]):  # both If branches
        x = np.array(x, np.float32)
        _assert_same(seq.run([x]), par.run([x]))


def _failing_graph():
    nodes = [
        ir.Node("Relu", ["x"], ["a"], name="relu"),
        ir.Node("FailIfNegT", ["x"], ["b"], name="the_bad_one", domain=D),
        ir.Node("Add", ["a", "b"], ["y"], name="add"),
    ]
    return _graph(nodes, [_vi("x", [2])], [_vi("y")])


def test_errors_are_located_like_the_sequential_executor(always_hand_off):
    seq, par = _both(_failing_graph(), model_name="m")
    assert par.parallel
    bad = np.array([-1, -2], np.float32)
    with pytest.raises(ExecutionError) as want:
        seq.run([bad])
    with pytest.raises(ExecutionError) as got:
        par.run([bad])
    assert str(got.value) == str(want.value)
    assert "node 'the_bad_one' (FailIfNegT, opset 1)" in str(got.value)
    assert "negative input" in str(got.value)
    assert got.value.node.name == "the_bad_one"
    good = np.array([1, 2], np.float32)  # the pool survives a failed run
    _assert_same(seq.run([good]), par.run([good]))


@pytest.fixture
def always_hand_off(monkeypatch):
    """Treat every chain as heavy, so tiny test graphs go through the pool hand-offs."""
    monkeypatch.setattr(scheduler, "INLINE_NS", 0)


class _TickClock:
    """Stands in for the scheduler's ``time`` module: every reading is 1 µs after the last, so
    each chain is timed at 1 µs (cheap: under INLINE_NS) whatever the machine's speed."""

    def __init__(self):
        self.now = 0

    def perf_counter_ns(self) -> int:
        self.now += 1_000
        return self.now


def test_cheap_chains_stay_with_the_thread_that_made_them_ready(monkeypatch):
    monkeypatch.setattr(scheduler, "time", _TickClock())
    par = ParallelGraph(_branches(width=4), OPSETS, threads=2)
    handed, sequential = [], []

    class InlinePool:  # counts hand-offs and serves them at once, in this thread
        def submit(self, graph, run):
            handed.append(run)
            graph._take(run)

    class Sequential:  # counts runs that skip the scheduler
        def __init__(self, graph):
            self.graph = graph

        def run(self, inputs, outer):
            sequential.append(1)
            return self.graph.run(inputs, outer)

    par._pool = InlinePool()
    par._sequential = Sequential(par._sequential)
    x = np.ones((8, 8), np.float32)
    n = len(par._chains)
    par._cost, par._heavy = [scheduler.INLINE_NS] * n, n  # all heavy: 3 of 4 branches handed off
    par.run([x])
    assert len(handed) == 3 and not sequential
    handed.clear()
    par._cost, par._heavy = [0, 0, 0, scheduler.INLINE_NS, 0], 2  # one thread does everything
    par.run([x])
    assert not handed and not sequential
    assert par._heavy == 0  # recomputed from this run's timings (1 µs a chain on the tick clock)
    par._runs = 0
    _assert_same(par.run([x]), CompiledGraph(par.graph, OPSETS).run([x]))
    assert sequential == [1]  # at most one heavy chain: the sequential code, no bookkeeping
    par._runs = scheduler.REMEASURE_EVERY - 1
    par.run([x])
    assert sequential == [1]  # ... except every REMEASURE_EVERY-th run, which re-times chains


def test_concurrent_runs_keep_their_own_state(always_hand_off):
    seq, par = _both(_branches(width=4, depth=2, size=16))
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((16, 16)).astype(np.float32) for _ in range(6)]
    want = [seq.run([x]) for x in xs]
    start = threading.Barrier(len(xs))

    def worker(i):
        start.wait(timeout=60)  # all threads run at once
        for _ in range(15):
            got = par.run([xs[i]])
            assert len(got) == len(want[i]), f"thread {i}: {len(got)} outputs"
            for a, b in zip(got, want[i], strict=True):
                np.testing.assert_array_equal(a, b, err_msg=f"thread {i}")

    # Futures carry each worker's exception (a wrong result or a failed run) to this thread.
    with ThreadPoolExecutor(len(xs)) as pool:
        futures = [pool.submit(worker, i) for i in range(len(xs))]
        for f in futures:
            f.result(timeout=60)


def test_values_are_freed_after_their_last_reader():
    _made.clear()
    nodes = [
        ir.Node("MakeT", ["x"], ["m"], domain=D),
        ir.Node("Neg", ["m"], ["p"]),  # two chains read m ...
        ir.Node("Abs", ["m"], ["q"]),
        ir.Node("AliveT", ["p", "q"], ["alive"], domain=D),  # ... and both are done here
    ]
    g = _graph(nodes, [_vi("x", [1000])], [_vi("alive", elem=ir.dtypes.BOOL)])
    par = ParallelGraph(g, OPSETS, threads=2)
    assert par.parallel
    (alive,) = par.run([np.ones(1000, np.float32)])
    assert alive.tolist() == [False]


def test_independent_branches_run_at_the_same_time(always_hand_off):
    """Each branch holds a barrier that opens only when both are inside it: the run finishes
    only if the two branches really ran at once, on two threads (no timing involved)."""
    nodes = [
        ir.Node("MeetT", ["x"], ["a"], domain=D),
        ir.Node("MeetT", ["x"], ["b"], domain=D),
        ir.Node("Add", ["a", "b"], ["y"]),
    ]
    par = ParallelGraph(_graph(nodes, [_vi("x", [4])], [_vi("y")]), OPSETS, threads=2)
    assert par.parallel
    _meet.reset()
    for _ in range(3):  # the pool thread is reused across runs
        (y,) = par.run([np.ones(4, np.float32)])
        np.testing.assert_array_equal(y, np.full(4, 2, np.float32))


def test_threads_default_and_single_thread():
    g = _branches()
    assert ParallelGraph(g, OPSETS).threads >= 1
    one = ParallelGraph(g, OPSETS, threads=1)
    assert not one.parallel  # one thread: nothing to overlap, the sequential code
    x = np.ones((8, 8), np.float32)
    _assert_same(CompiledGraph(g, OPSETS).run([x]), one.run([x]))
    assert ziggurat.runtime.scheduler.default_threads() >= 1


@pytest.mark.parametrize("seed", range(12))
def test_random_dags_match_sequential(seed, always_hand_off):
    """Random DAGs of unary and binary ops, with fan-out, fan-in, residual edges, graph outputs
    read by later nodes, and an input returned as an output."""
    rng = np.random.default_rng(seed)
    names, nodes = ["x", "w"], []
    for i in range(int(rng.integers(5, 25))):
        if rng.random() < 0.5:
            op, ins = str(rng.choice(["Neg", "Abs", "Relu", "Sigmoid"])), [str(rng.choice(names))]
        else:
            op, ins = str(rng.choice(["Add", "Mul", "Sub"])), list(rng.choice(names, 2))
        nodes.append(ir.Node(op, [str(n) for n in ins], [f"n{i}"], name=f"node{i}"))
        names.append(f"n{i}")
    outs = sorted({str(n) for n in rng.choice(names[2:], 3)}) + ["x"]
    w = {"w": np.linspace(-1, 1, 5, dtype=np.float32)}
    g = _graph(nodes, [_vi("x", [5])], [_vi(n) for n in outs], w)
    seq, par = _both(g)
    x = rng.standard_normal(5).astype(np.float32)
    for _ in range(3):
        _assert_same(seq.run([x]), par.run([x]))
