"""The execution plan: lifetimes, shape folding, the memory plan and the signature cache."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from ziggurat import ir
from ziggurat.errors import ExecutionError
from ziggurat.ops.registry import kernel
from ziggurat.runtime import executor
from ziggurat.runtime.executor import CompiledGraph
from ziggurat.runtime.plan import Plan
from ziggurat.runtime.profiler import Profiler

D = "test.ziggurat.plan"
OPSETS = {"": 17, D: 1}


@kernel("DoubleT", domain=D)
def DoubleT(x, /, *, out=None):
    """Opts in to planned output buffers by taking ``out``."""
    return (np.multiply(x, x.dtype.type(2), out=out),)


_GATE: dict[str, threading.Barrier | None] = {"barrier": None}


@kernel("GateT", domain=D)
def GateT(x, /, *, out=None):
    """Writes 3x into its planned buffer, then waits for the other runs (see the concurrency test)."""
    y = np.multiply(x, x.dtype.type(3), out=out)
    if _GATE["barrier"] is not None:
        _GATE["barrier"].wait(timeout=30)
    return (y,)


@kernel("PositivesT", domain=D)
def PositivesT(x, /):
    """A data-dependent output shape the static analysis does not know about."""
    return (x[x > 0],)


@kernel("FailOnT", domain=D)
def FailOnT(x, /):
    if (x == 13).any():
        raise ValueError("thirteen")
    return (x + 1,)


def _vi(name, shape=None, elem=ir.dtypes.FLOAT):
    return ir.ValueInfo(name, ir.Type("tensor", elem, shape))


def _graph(nodes, inputs, outputs, inits=None):
    return ir.Graph(nodes=nodes, inputs=inputs, outputs=outputs, initializers=inits or {}, name="t")


def _i64(*v):
    return np.array(v, np.int64)


def _shape_chain_graph():
    """y = Reshape(Relu(x) + 1, [rows * cols]) where the shape comes from Shape/Gather/Mul/
    Unsqueeze arithmetic on x's shape, as exporters write it; z = DoubleT(y)."""
    nodes = [
        ir.Node("Shape", ["x"], ["s"]),
        ir.Node("Gather", ["s", "i0"], ["rows"], {"axis": 0}),
        ir.Node("Gather", ["s", "i1"], ["cols"], {"axis": 0}),
        ir.Node("Mul", ["rows", "cols"], ["n"]),
        ir.Node("Unsqueeze", ["n", "ax0"], ["flat"]),
        ir.Node("Relu", ["x"], ["r"]),
        ir.Node("Add", ["r", "one"], ["a"]),
        ir.Node("Reshape", ["a", "flat"], ["y"]),
        ir.Node("DoubleT", ["y"], ["z"], domain=D),
        ir.Node("Neg", ["z"], ["out"]),
    ]
    inits = {
        "i0": np.array(0, np.int64),  # scalar indices: Gather gives scalars, as exporters do
        "i1": np.array(1, np.int64),
        "ax0": _i64(0),
        "one": np.array(1, np.float32),
    }
    return _graph(nodes, [_vi("x", ["r", "c"])], [_vi("out")], inits)


def _runs(cg, inputs, n=3):
    return [cg.run(list(inputs)) for _ in range(n)]


def test_lifetimes_and_text():
    plan = Plan.build(_shape_chain_graph(), OPSETS)
    assert plan.lifetime("x") == (-1, 5)  # read by Shape (0) and Relu (5)
    assert plan.lifetime("s") == (0, 2)
    assert plan.lifetime("a") == (6, 7)
    assert plan.lifetime("out") == (9, len(plan.steps))  # a graph output outlives the run
    text = str(plan)
    assert len(text.splitlines()) == len(plan.steps) + 3  # header, input, steps, return
    assert "%z = test.ziggurat.plan::DoubleT[opset 1](%y)" in text


def test_shape_subgraph_folds_and_results_match():
    g = _shape_chain_graph()
    planned, generic = CompiledGraph(g, OPSETS), CompiledGraph(g, OPSETS, specialize=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    spec = planned.signature_plan([x])
    kept = [s.node.op_type for s in spec.kept]
    assert kept == ["Relu", "Add", "Reshape", "DoubleT", "Neg"]  # the shape arithmetic is gone
    assert spec.folded["flat"].tolist() == [12]
    for _ in range(3):  # new values, same signature: the specialised code
        x = rng.standard_normal((3, 4)).astype(np.float32)
        np.testing.assert_array_equal(planned.run([x])[0], generic.run([x])[0])
    x = rng.standard_normal((2, 5)).astype(np.float32)  # another signature: generic, then its own
    for out in _runs(planned, [x]):
        np.testing.assert_array_equal(out[0], generic.run([x])[0])
    assert len(planned._specs) == 2


def test_memory_plan_in_place_and_out_buffers():
    g = _shape_chain_graph()
    cg = CompiledGraph(g, OPSETS)
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    spec = cg.signature_plan([x])
    # Relu and Add are ufunc calls; Add overwrites Relu's dying output; DoubleT writes into a
    # planned buffer; Neg's output is the graph output, so the caller's, never planned.
    assert spec.fast[5][:2] == ("ufunc", "maximum") and spec.fast[6][:2] == ("ufunc", "add")
    assert spec.inplace == {"a": "r"}
    assert "z" in spec.out and "out" not in spec.out
    assert spec.planned_peak <= spec.naive_bytes
    want = -2 * (np.maximum(x, 0) + 1).reshape(12)
    np.testing.assert_array_equal(cg.run([x])[0], want)
    assert "in place of %r" in cg.plan.text(spec) and "peak bytes" in cg.plan.text(spec)


def _random_graph(rng):
    """Random DAG over (4, 5) float32 values: unary/binary elementwise ops, out= kernels, and
    reshape round trips (views that alias their input's buffer); several outputs."""
    names, nodes = ["x", "w"], []
    for i in range(int(rng.integers(6, 30))):
        pick = rng.random()
        v = f"n{i}"
        if pick < 0.35:
            op = str(rng.choice(["Neg", "Abs", "Relu", "Tanh", "Sigmoid", "Exp"]))
            nodes.append(ir.Node(op, [str(rng.choice(names))], [v]))
        elif pick < 0.7:
            op = str(rng.choice(["Add", "Mul", "Sub", "Div"]))
            nodes.append(ir.Node(op, [str(n) for n in rng.choice(names, 2)], [v]))
        elif pick < 0.85:
            nodes.append(ir.Node("DoubleT", [str(rng.choice(names))], [v], domain=D))
        else:  # a view of a view of another value
            src = str(rng.choice(names))
            nodes.append(ir.Node("Reshape", [src, "flat"], [f"{v}_f"]))
            nodes.append(ir.Node("Shape", [src], [f"{v}_s"]))
            nodes.append(ir.Node("Reshape", [f"{v}_f", f"{v}_s"], [v]))
        names.append(v)
    outs = sorted({str(n) for n in rng.choice(names[2:], 3)})
    inits = {"w": np.linspace(0.5, 1.5, 20, dtype=np.float32).reshape(4, 5), "flat": _i64(20)}
    return _graph(nodes, [_vi("x", [4, 5])], [_vi(n) for n in outs], inits)


@pytest.mark.parametrize("seed", range(16))
def test_random_dags_match_the_unplanned_path(seed):
    """Buffer reuse never aliases live values: every run of the specialised code equals the
    generic code, and outputs already returned stay intact through later runs."""
    rng = np.random.default_rng(seed)
    g = _random_graph(rng)
    planned, generic = CompiledGraph(g, OPSETS), CompiledGraph(g, OPSETS, specialize=False)
    kept, expected = [], []
    with np.errstate(all="ignore"):
        for _ in range(6):
            x = rng.standard_normal((4, 5)).astype(np.float32)
            kept.append(planned.run([x]))
            expected.append(generic.run([x]))
            for a, b in zip(kept[-1], expected[-1], strict=True):
                np.testing.assert_array_equal(a, b)
    for got, want in zip(kept, expected, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    spec = next(iter(planned._specs.values())).spec
    assert spec is not None and spec.planned_peak <= spec.naive_bytes


def test_concurrent_runs_use_their_own_buffers():
    """Two runs stand inside GateT at once, each having written its planned buffer: were the
    buffer shared, one run would read the other's values."""
    nodes = [
        ir.Node("Neg", ["x"], ["a"]),
        ir.Node("GateT", ["a"], ["b"], domain=D),
        ir.Node("Add", ["b", "x"], ["y"]),
    ]
    cg = CompiledGraph(_graph(nodes, [_vi("x", [64])], [_vi("y")]), OPSETS)
    spec = cg.signature_plan([np.zeros(64, np.float32)])
    assert "b" in spec.out
    results: dict[int, np.ndarray] = {}
    _GATE["barrier"] = threading.Barrier(2)
    try:
        threads = [
            threading.Thread(
                target=lambda k=k: results.setdefault(k, cg.run([np.full(64, k, np.float32)])[0])
            )
            for k in (1, 2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        _GATE["barrier"] = None
    assert results.keys() == {1, 2}
    for k, y in results.items():
        np.testing.assert_array_equal(y, np.full(64, -2 * k, np.float32))  # -3k + k
    assert len(next(iter(cg._specs.values())).free) == 2  # both sets returned for reuse


def test_signature_cache_is_lru_and_needs_two_agreeing_recordings(monkeypatch):
    monkeypatch.setattr(executor, "MAX_SIGNATURES", 2)
    monkeypatch.setattr(executor, "_PLAN_MODE", "1")
    cg = CompiledGraph(_shape_chain_graph(), OPSETS)
    a, b, c = (np.ones(s, np.float32) for s in [(2, 2), (3, 3), (4, 4)])
    cg.run([a])
    assert not cg._pending  # seen once: the generic code, nothing recorded
    cg.run([a])
    assert not cg._specs and len(cg._pending) == 1  # recorded once, not yet specialised
    cg.run([a])
    assert list(cg._specs) == [(((2, 2), np.dtype("float32")),)]
    _runs(cg, [b], 3)
    cg.run([a])  # a is now more recent than b
    _runs(cg, [c], 3)  # evicts b, the least recently used
    assert {k[0][0] for k in cg._specs} == {(2, 2), (4, 4)}


def test_a_value_wrongly_assumed_static_keeps_the_signature_generic(monkeypatch):
    """PositivesT's output shape depends on data; the analysis cannot know it (it is no listed
    op), so Shape of it looks static. Two recordings that disagree keep the generic code."""
    monkeypatch.setattr(executor, "_PLAN_MODE", "1")
    nodes = [
        ir.Node("PositivesT", ["x"], ["p"], domain=D),
        ir.Node("Shape", ["p"], ["s"]),
        ir.Node("ConstantOfShape", ["s"], ["y"], {"value": np.array([7], np.int64)}),
    ]
    cg = CompiledGraph(_graph(nodes, [_vi("x", [4])], [_vi("y")]), OPSETS)
    cg.run([np.array([1, -1, -1, -1], np.float32)])  # the first run only counts
    one = cg.run([np.array([1, -1, -1, -1], np.float32)])[0]
    two = cg.run([np.array([1, 1, 1, -1], np.float32)])[0]
    three = cg.run([np.array([1, 1, -1, -1], np.float32)])[0]
    assert [len(one), len(two), len(three)] == [1, 3, 2]
    assert next(iter(cg._specs.values())).spec is None


def test_errors_in_specialised_code_name_the_node():
    nodes = [ir.Node("Abs", ["x"], ["a"]), ir.Node("FailOnT", ["a"], ["y"], name="f", domain=D)]
    cg = CompiledGraph(_graph(nodes, [_vi("x", [2])], [_vi("y")]), OPSETS)
    cg.signature_plan([np.zeros(2, np.float32)])
    with pytest.raises(ExecutionError, match=r"node 'f' \(FailOnT, opset 1\).*thirteen"):
        cg.run([np.array([1, -13], np.float32)])


def test_profiler_records_the_steps_that_run(tmp_path):
    prof = Profiler()
    cg = CompiledGraph(_shape_chain_graph(), OPSETS, profiler=prof)
    x = np.ones((2, 3), np.float32)
    cg.signature_plan([x])
    prof.events.clear()
    cg.run([x])
    assert [e[1] for e in prof.events] == ["Relu", "Add", "Reshape", "DoubleT", "Neg"]
    events = json.loads(open(prof.write(str(tmp_path))).read())
    assert {e["args"]["provider"] for e in events} == {"CPUExecutionProvider"}


def test_subgraph_returning_a_planned_value_is_not_overwritten():
    """An If branch returns an outer value as is: the If's output aliases it, so the value's
    buffer must outlive the graph output (here: it is never planned)."""
    then_g = _graph([ir.Node("Identity", ["d"], ["t"])], [], [_vi("t")])
    else_g = _graph([ir.Node("Neg", ["d"], ["e"])], [], [_vi("e")])
    nodes = [
        ir.Node("DoubleT", ["x"], ["d"], domain=D),
        ir.Node("If", ["c"], ["y"], {"then_branch": then_g, "else_branch": else_g}),
        ir.Node("Add", ["y", "x"], ["z"]),
    ]
    g = _graph(nodes, [_vi("x", [3]), _vi("c", [], ir.dtypes.BOOL)], [_vi("y"), _vi("z")])
    cg = CompiledGraph(g, OPSETS)
    outs = []
    for k in range(5):
        x = np.full(3, k, np.float32)
        outs.append((k, cg.run([x, np.array(k % 2 == 0)])))
    for k, (y, z) in outs:
        want = np.full(3, 2 * k if k % 2 == 0 else -2 * k, np.float32)
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(z, want + k)


def test_inspect_plan_prints_buffers_and_peaks(tmp_path, capsys):
    from tests.models import builders
    from ziggurat import cli

    path = tmp_path / "block.onnx"
    path.write_bytes(builders.transformer_block().SerializeToString())
    assert cli.main(["inspect", str(path), "--plan", "--dim", "batch=2", "--dim", "seq=5"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("plan 'block' on cpu:") and "[2, 5" in lines[0]
    peaks = lines[-1].split("peak bytes: ")[1]
    naive, planned = (int(peaks.split(f"{k} ")[1].split()[0]) for k in ("naive", "planned"))
    assert 0 < planned <= naive
    assert cli.main(["inspect", str(path), "--plan", "--dim", "batch"]) == 2  # NAME=N expected


def test_folded_values_stay_within_the_budget(monkeypatch):
    """Static values beyond the per-signature budget are computed, not kept as constants."""
    from ziggurat.runtime import specialize

    monkeypatch.setattr(specialize, "FOLD_BUDGET_BYTES", 100)
    nodes = [  # Shape -> ConstantOfShape (a static 4x8 float32 = 128 bytes) -> Add
        ir.Node("Shape", ["x"], ["s"]),
        ir.Node("ConstantOfShape", ["s"], ["k"], {"value": np.array([0.5], np.float32)}),
        ir.Node("Add", ["x", "k"], ["y"]),
    ]
    cg = CompiledGraph(_graph(nodes, [_vi("x", [4, 8])], [_vi("y")]), OPSETS)
    x = np.ones((4, 8), np.float32)
    spec = cg.signature_plan([x])
    assert [s.node.op_type for s in spec.kept] == ["ConstantOfShape", "Add"]  # s (16 B) folded
    np.testing.assert_array_equal(cg.run([x])[0], x + 0.5)


def test_graphs_a_signature_plan_cannot_change_skip_the_lookup():
    nodes = [ir.Node("MatMul", ["x", "w"], ["m"]), ir.Node("Softmax", ["m"], ["y"])]
    w = {"w": np.eye(3, dtype=np.float32)}
    g = _graph(nodes, [_vi("x", [2, 3])], [_vi("y")], w)
    assert not Plan.build(g, OPSETS).specializable()
    cg = CompiledGraph(g, OPSETS)
    for _ in range(3):
        cg.run([np.ones((2, 3), np.float32)])
    assert not cg._specs and not cg._pending
    assert Plan.build(_shape_chain_graph(), OPSETS).specializable()
    # ...yet `inspect --plan` still describes it (nothing folded, no signature code kept)
    text = cg.plan.text(cg.signature_plan([np.ones((2, 3), np.float32)]))
    assert "2 of 2 steps run (0 folded" in text and "MatMul" in text and not cg._specs


def test_an_array_taken_back_out_of_a_sequence_keeps_its_buffer():
    """SequenceAt returns the element itself: the planned buffer of what went into the
    sequence must live as long as what comes out of it."""
    nodes = [
        ir.Node("DoubleT", ["x"], ["d"], domain=D),
        ir.Node("SequenceConstruct", ["d"], ["s"]),
        ir.Node("SequenceAt", ["s", "zero"], ["e"]),
        ir.Node("Neg", ["x"], ["f"]),  # would reuse d's block were e not tracked
        ir.Node("Add", ["e", "f"], ["y"]),
    ]
    g = _graph(nodes, [_vi("x", [8])], [_vi("y")], {"zero": np.array(0, np.int64)})
    cg = CompiledGraph(g, OPSETS)
    x = np.arange(8, dtype=np.float32)
    cg.signature_plan([x])
    np.testing.assert_array_equal(cg.run([x])[0], x)  # 2x - x


def test_a_reshape_to_a_shape_given_as_input_is_not_baked_in():
    """The target shape is a graph input (its values are data): same signature, other shapes."""
    g = _graph(
        [ir.Node("Reshape", ["x", "shape"], ["y"])],
        [_vi("x", [6]), _vi("shape", [2], ir.dtypes.INT64)],
        [_vi("y")],
    )
    cg = CompiledGraph(g, OPSETS)
    x = np.arange(6, dtype=np.float32)
    spec = cg.signature_plan([x, _i64(2, 3)])
    assert not spec.fast
    assert cg.run([x, _i64(3, 2)])[0].shape == (3, 2)


@pytest.mark.parametrize("seed", range(4))
def test_parallel_chains_follow_the_signature_plan(seed, monkeypatch):
    """Branches with shape arithmetic: once the sequential code (which runs while at most one
    chain is heavy) has a signature plan, the chains, all handed to the pool, run its folded,
    direct-call code."""
    from ziggurat.runtime import scheduler

    monkeypatch.setattr(executor, "_PLAN_MODE", "1")
    nodes, heads = [], []
    for b in range(3):
        nodes += [
            ir.Node("Shape", ["x"], [f"s{b}"]),
            ir.Node("Reshape", ["x", "flat"], [f"f{b}"]),
            ir.Node("Mul", [f"f{b}", f"w{b}"], [f"m{b}"]),
            ir.Node("Reshape", [f"m{b}", f"s{b}"], [f"r{b}"]),
            ir.Node("Tanh", [f"r{b}"], [f"t{b}"]),
        ]
        heads.append(f"t{b}")
    nodes.append(ir.Node("Sum", heads, ["y"]))
    rng = np.random.default_rng(seed)
    inits = {f"w{b}": rng.standard_normal(12).astype(np.float32) for b in range(3)}
    inits["flat"] = _i64(12)
    g = _graph(nodes, [_vi("x", [3, 4])], [_vi("y"), _vi("s0")], inits)
    par = scheduler.ParallelGraph(g, OPSETS, threads=2)
    generic = CompiledGraph(g, OPSETS, specialize=False)
    assert par.parallel
    par._sequential.signature_plan([rng.standard_normal((3, 4)).astype(np.float32)])
    par._heavy = len(par._chains)  # every chain heavy: the parallel path, every run
    monkeypatch.setattr(scheduler, "INLINE_NS", 0)  # and handed off
    for _ in range(4):
        x = rng.standard_normal((3, 4)).astype(np.float32)
        for a, b in zip(par.run([x]), generic.run([x]), strict=True):
            np.testing.assert_array_equal(a, b)
    variant = next(iter(par._variants.values()))
    assert variant.spec is not None and "Shape" not in {s.node.op_type for s in variant.spec.kept}
