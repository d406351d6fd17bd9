"""Loader fuzzing: whatever bytes arrive, loading a model and building a session on it raises a
``ZigguratError`` or succeeds — never another exception, never a hang, never an allocation far
beyond the size limit.

Inputs: real models shipped with onnx (mutated byte-wise), truncated and random bytes, and models
built to be hostile — absurd dims (2^62 elements), huge attribute counts, cyclic graphs, duplicate
and dangling names, deep subgraph nesting, external data past the end of its file.

Each property runs ``ZIGGURAT_FUZZ_EXAMPLES`` examples (default 25: the whole file takes a few
seconds); set it higher for a long run, e.g. ``ZIGGURAT_FUZZ_EXAMPLES=2000``. Default runs are
derandomized (the same cases on every machine); long runs explore new ones. With
``ZIGGURAT_FUZZ_REPORT=FILE`` the outcome counts (by error type) are written to FILE as JSON.
"""

from __future__ import annotations

import collections
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import ziggurat as zg
from ziggurat.errors import ExecutionError, ZigguratError
from ziggurat.formats.onnx import load_model

EXAMPLES = int(os.environ.get("ZIGGURAT_FUZZ_EXAMPLES", "25"))
LONG = "ZIGGURAT_FUZZ_EXAMPLES" in os.environ  # long runs also trace memory on the slow cases
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # pytest-timeout bounds each test instead (a hang fails, a slow box does not)
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMIT = 1 << 20  # max_size_bytes for every fuzzed load: 1 MiB, like a small max_model_size_mb
# Peak allocation (numpy's included: it reports to tracemalloc) allowed while loading and compiling
# a file of at most LIMIT bytes. Compilation may fold constants a small file describes (light_vgg19
# is 9 KB of ConstantOfShape weights): at most MAX_FOLDED_TOTAL (256 MiB) kept, one 64 MiB result
# in flight, and a transposed copy of folded Dense weights; anything near 2^62 elements is far beyond.
PEAK_BYTES = 640 << 20
DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
OUTCOMES: collections.Counter[str] = collections.Counter()


def _seed_files() -> list[Path]:
    light = sorted((DATA / "light").glob("light_*.onnx"))
    simple = sorted((DATA / "simple").glob("*/model.onnx"))
    return [p for p in light + simple if p.stat().st_size <= 64 << 10]


SEED_FILES = _seed_files()
SEEDS = [p.read_bytes() for p in SEED_FILES]


def check(data: bytes | str, session: bool = True, trace: bool = True) -> str:
    """Load ``data`` (bytes or a path) and, if that works, build a session; return the outcome
    ("ok" or the ZigguratError's class name). Any other exception fails the calling test, and so
    does a peak allocation over PEAK_BYTES (measured unless ``trace`` is off: it is slow)."""
    if trace:
        tracemalloc.start()
    try:
        load_model(data, max_size_bytes=LIMIT)
        if session:
            zg.InferenceSession(data, max_size_bytes=LIMIT)
        outcome = "ok"
    except ZigguratError as e:
        outcome = type(e).__name__
        assert str(e), "an error without a message"
    finally:
        _, peak = tracemalloc.get_traced_memory()  # (0, 0) when not tracing
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"loading allocated {peak:,} bytes at its peak"
    OUTCOMES[outcome] += 1
    return outcome


@pytest.fixture(autouse=True)
def _report(request):
    """With ZIGGURAT_FUZZ_REPORT, add this test's outcome counts to that JSON file."""
    OUTCOMES.clear()
    yield
    out = os.environ.get("ZIGGURAT_FUZZ_REPORT")
    if out:
        report = json.loads(Path(out).read_text()) if Path(out).exists() else {}
        counts = report.setdefault(request.node.name, {})
        for k, v in OUTCOMES.items():
            counts[k] = counts.get(k, 0) + v
        Path(out).write_text(json.dumps(report, indent=1, sort_keys=True))


def test_seeds_load():
    assert len(SEEDS) >= 10, "onnx's shipped light/simple models are missing"
    # Memory is traced on one seed by default (tracing makes compiling 3x slower): light_vgg19,
    # 9 KB of ConstantOfShape weights, the largest folding of them all.
    for path, data in zip(SEED_FILES, SEEDS, strict=True):
        assert check(data, trace=LONG or "vgg19" in path.name) == "ok", path.name


# ------------------------------------------------------------------------------ byte-level fuzzing
EDIT = st.tuples(
    st.sampled_from(["set", "insert", "delete", "varint"]),
    st.floats(0, 1, exclude_max=True),
    st.integers(0, 255),
)


def _edit(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, where, value in edits:
        if not buf:
            break
        i = int(where * len(buf))
        if kind == "set":
            buf[i] = value
        elif kind == "insert":
            buf[i:i] = bytes([value])
        elif kind == "delete":
            del buf[i]
        else:  # a long varint where a length or a dim may sit: sizes up to 2^63
            buf[i : i + 1] = bytes([0xFF] * (value % 9 + 1) + [0x7F])
    return bytes(buf)


@FUZZ
@given(seed=st.integers(0, 10**6), edits=st.lists(EDIT, min_size=1, max_size=8))
def test_mutated_real_models(seed, edits):
    check(_edit(SEEDS[seed % len(SEEDS)], edits))


@FUZZ
@given(seed=st.integers(0, 10**6), cut=st.floats(0, 1, exclude_max=True))
def test_truncated_real_models(seed, cut):
    data = SEEDS[seed % len(SEEDS)]
    check(data[: int(cut * len(data))] or b"\0")


@FUZZ
@given(data=st.binary(min_size=1, max_size=4096))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(prefix=st.sampled_from([b"\x08\x07", b"\x3a", b"\x3a\xff\xff\xff\xff\x0f"]),
       data=st.binary(max_size=512))  # fmt: skip
def test_random_bytes_after_a_model_header(prefix, data):
    check(prefix + data)  # ir_version, a graph field, a graph claiming 4 GiB


# ------------------------------------------------------------------------------ hostile models
def _model(nodes, inputs, outputs, inits=(), sparse=(), opset=17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits), sparse_initializer=list(sparse))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, shape=(2,), et=TP.FLOAT):
    return helper.make_tensor_value_info(name, et, list(shape) if shape is not None else None)


DIM = st.one_of(
    st.integers(0, 4),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**64 - 1]),
)


@FUZZ
@given(dims=st.lists(DIM, min_size=1, max_size=4), nbytes=st.integers(0, 64),
       where=st.sampled_from(["initializer", "sparse", "attribute", "input", "ConstantOfShape",
                              "Expand", "Tile", "Range"]))  # fmt: skip
def test_absurd_dims(dims, nbytes, where):
    dims_i64 = [d if d < 2**63 else d - 2**64 for d in dims]  # 2^64-1 arrives as -1
    t = onnx.TensorProto(name="w", data_type=TP.FLOAT, dims=dims_i64, raw_data=b"\1" * nbytes)
    out = [_vi("y", None)]
    if where == "initializer":
        m = _model([helper.make_node("Identity", ["w"], ["y"])], [], out, [t])
    elif where == "sparse":
        vals = numpy_helper.from_array(np.ones(1, np.float32), "w")
        idx = numpy_helper.from_array(np.zeros(1, np.int64), "w_idx")
        sp = helper.make_sparse_tensor(vals, idx, dims_i64)
        m = _model([helper.make_node("Identity", ["w"], ["y"])], [], out, sparse=[sp])
    elif where == "attribute":
        m = _model([helper.make_node("Constant", [], ["y"], value=t)], [], out)
    elif where == "input":
        m = _model([helper.make_node("Identity", ["x"], ["y"])], [_vi("x", dims_i64)], out)
    else:  # a tiny file asking constant folding for a huge tensor (of ones: no lazy zero pages)
        s = numpy_helper.from_array(np.array(dims_i64, np.int64), "s")
        one = numpy_helper.from_array(np.ones([1] * len(dims), np.float32), "one")
        if where == "ConstantOfShape":
            fill = helper.make_tensor("v", TP.FLOAT, [1], [1.0])
            node = helper.make_node("ConstantOfShape", ["s"], ["y"], value=fill)
        elif where == "Range":
            s = numpy_helper.from_array(
                np.array(min(float(dims[0]) * max(dims), 3e38), np.float32), "s"
            )
            one = numpy_helper.from_array(np.array(0.5, np.float32), "one")
            node = helper.make_node("Range", ["one", "s", "one"], ["y"])
        else:
            node = helper.make_node(where, ["one", "s"], ["y"])
        m = _model([node], [], out, [s, one])
    check(m.SerializeToString())


@pytest.mark.parametrize(("kind", "n"), [("attrs", 20_000), ("ints", 100_000), ("nodes", 20_000)])
def test_huge_attribute_counts(kind, n):
    node = helper.make_node("Relu", ["x"], ["y"])
    nodes = [node]
    if kind == "attrs":  # 20,000 attributes on one node (~300 KB)
        node.attribute.extend(helper.make_attribute(f"a{i}", i) for i in range(n))
    elif kind == "ints":  # one attribute of 100,000 ints (~380 KB)
        node.attribute.append(helper.make_attribute("ints", list(range(n))))
    else:  # 20,000 nodes, all dead
        nodes += [helper.make_node("Relu", ["x"], [f"u{i}"]) for i in range(n)]
    assert check(_model(nodes, [_vi("x")], [_vi("y")]).SerializeToString(), trace=False) == "ok"


def test_many_constants_of_64_mib_stay_bounded(value=1.0):  # ones: every page is touched
    """40 ConstantOfShape nodes of 64 MiB each (2.5 GiB) in a file of a few KB: compilation folds
    no more than MAX_FOLDED_TOTAL of them (the rest are computed at run time)."""
    shape = numpy_helper.from_array(np.array([16 << 20], np.int64), "s")
    fill = helper.make_tensor("v", TP.FLOAT, [1], [value])
    nodes = [helper.make_node("ConstantOfShape", ["s"], [f"c{i}"], value=fill) for i in range(40)]
    nodes.append(helper.make_node("Sum", [f"c{i}" for i in range(40)], ["y"]))
    assert check(_model(nodes, [], [_vi("y", None)], [shape]).SerializeToString()) == "ok"


OPS = st.sampled_from(["Relu", "Neg", "Add", "Identity"])


@FUZZ
@given(data=st.data(), n=st.integers(1, 12))
def test_cyclic_duplicate_and_dangling_graphs(data, n):
    """A random chain of nodes, then one corruption: a cycle, a name defined twice, a name used
    but never defined, an empty or duplicated graph input/output."""
    names = ["x"]
    nodes = []
    for i in range(n):
        op = data.draw(OPS)
        ins = [data.draw(st.sampled_from(names)) for _ in range(2 if op == "Add" else 1)]
        nodes.append(helper.make_node(op, ins, [f"v{i}"], name=f"n{i}"))
        names.append(f"v{i}")
    inputs, outputs, inits = [_vi("x")], [_vi(names[-1])], []
    bug = data.draw(st.sampled_from(
        ["cycle", "self_loop", "dup_output", "dangling", "dup_input", "dup_graph_output",
         "init_shadows_input", "undefined_output", "empty_name", "dup_node_name"]
    ))  # fmt: skip
    k = data.draw(st.integers(0, n - 1))
    if bug == "cycle":
        nodes[k].input[0] = names[-1]  # an early node reads the last value
    elif bug == "self_loop":
        nodes[k].input[0] = nodes[k].output[0]
    elif bug == "dup_output":
        nodes[k].output[0] = names[max(k, 1) - 1] if k else "x"
    elif bug == "dangling":
        nodes[k].input[0] = "nowhere"
    elif bug == "dup_input":
        inputs.append(_vi("x"))
    elif bug == "dup_graph_output":
        outputs.append(_vi(names[-1]))
    elif bug == "init_shadows_input":
        inits.append(numpy_helper.from_array(np.ones(3, np.float32), "x"))
    elif bug == "undefined_output":
        outputs.append(_vi("never_made"))
    elif bug == "empty_name":
        nodes[k].output[0] = ""
    else:
        nodes[-1].name = nodes[0].name
    check(_model(nodes, inputs, outputs, inits).SerializeToString())


# Deep nesting is hand-encoded: the protobuf runtime itself refuses to build messages nested
# deeper than about 32 levels. Field numbers are onnx.proto's.
def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _graph_attr(name: str, graph: bytes) -> bytes:  # AttributeProto: name=1, type=20, g=6
    return _ld(1, name.encode()) + _varint(20 << 3) + _varint(5) + _ld(6, graph)


def _model_bytes(graph: bytes) -> bytes:  # ModelProto: ir_version=1, graph=7, opset_import=8
    return _varint(1 << 3) + _varint(8) + _ld(8, _varint(2 << 3) + _varint(17)) + _ld(7, graph)


def _nested_if(depth: int) -> bytes:
    """``depth`` Ifs, each then-branch holding the next (else-branches are leaves)."""

    def leaf(d: int) -> bytes:
        g = helper.make_graph([helper.make_node("Identity", ["x"], [f"y{d}"])], f"l{d}", [],
                              [_vi(f"y{d}")])  # fmt: skip
        return g.SerializeToString()

    body = leaf(0)
    for d in range(1, depth + 1):
        out = "y" if d == depth else f"y{d}"
        node = (_ld(1, b"c") + _ld(2, out.encode()) + _ld(4, b"If")
                + _ld(5, _graph_attr("then_branch", body)) + _ld(5, _graph_attr("else_branch", leaf(d))))  # fmt: skip
        if d == depth:
            top = helper.make_graph([], "g", [_vi("x"), _vi("c", [], TP.BOOL)], [_vi("y")])
            return _model_bytes(_ld(1, node) + top.SerializeToString())
        body = _ld(1, node) + _ld(2, f"b{d}".encode()) + _ld(12, _vi(out).SerializeToString())
    raise AssertionError("depth must be >= 1")


def _nested_type(depth: int) -> bytes:
    """A graph input whose type is a sequence of sequences ... of a tensor, ``depth`` deep."""
    t = helper.make_tensor_type_proto(TP.FLOAT, [2]).SerializeToString()
    for _ in range(depth):
        t = _ld(4, _ld(1, t))  # TypeProto.sequence_type=4 -> Sequence.elem_type=1
    x = _ld(1, b"x") + _ld(2, t)  # ValueInfoProto: name=1, type=2
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [], [])
    return _model_bytes(g.SerializeToString() + _ld(11, x) + _ld(12, x.replace(b"x", b"y", 1)))


@pytest.mark.parametrize("depth", [1, 8, 63, 64, 200])
@pytest.mark.parametrize("make", [_nested_if, _nested_type], ids=["if", "sequence_type"])
def test_deep_nesting(make, depth):
    # MAX_DEPTH (64) levels below the top graph load and compile; one more is refused.
    assert check(make(depth), trace=LONG) == ("ok" if depth < 64 else "ModelLoadError")


EXTERNAL = st.fixed_dictionaries(
    {
        "location": st.sampled_from(["w.bin", "missing.bin", ".", "sub", "../w.bin", "/etc/hostname",
                                     "w.bin\0x", ""]),
        "offset": st.sampled_from(["0", "4", "63", "64", "65", "4096", str(2**63), "-1", "x", ""]),
        "length": st.sampled_from([None, "0", "8", "64", "65", str(2**62), "-8", "1e3"]),
    }
)  # fmt: skip


@FUZZ
@given(entries=EXTERNAL, count=st.sampled_from([0, 2, 16, 17, 2**40]))
def test_external_data_offsets(tmp_path_factory, entries, count):
    folder = tmp_path_factory.mktemp("ext")
    (folder / "w.bin").write_bytes(bytes(range(64)))
    (folder / "sub").mkdir()
    t = onnx.TensorProto(name="w", data_type=TP.FLOAT, dims=[count])
    t.data_location = TP.EXTERNAL
    for key, value in entries.items():
        if value is not None:
            t.external_data.add(key=key, value=value)
    m = _model([helper.make_node("Identity", ["w"], ["y"])], [], [_vi("y", None)], [t])
    path = folder / "m.onnx"
    path.write_bytes(m.SerializeToString())
    check(str(path))


# ------------------------------------------------------------------------------ regressions
def test_sparse_initializer_counts_densified_against_the_limit():
    """Found by test_absurd_dims: 100 bytes of sparse tensor densified into 4 TiB (calloc)."""
    vals = numpy_helper.from_array(np.ones(1, np.float32), "w")
    idx = numpy_helper.from_array(np.zeros(1, np.int64), "w_idx")
    sp = helper.make_sparse_tensor(vals, idx, [2**40])
    m = _model([helper.make_node("Identity", ["w"], ["y"])], [], [_vi("y", None)], sparse=[sp])
    with pytest.raises(zg.ModelLoadError, match="densified"):
        load_model(m.SerializeToString(), max_size_bytes=LIMIT)


def test_tile_to_an_empty_result_does_not_build_huge_axes():
    """Found by test_absurd_dims: Tile with repeats [0, 2^62] hung in numpy.tile."""
    from ziggurat.ops.shape import Tile

    (y,) = Tile(np.ones((2, 3), np.float32), np.array([0, 2**40], np.int64))
    assert y.shape == (0, 3 * 2**40) and y.dtype == np.float32
    # ... and repeats [2^31, -1] made numpy build 8 GB along the first axis before refusing the -1.
    with pytest.raises(ExecutionError, match="repeats must be >= 0"):
        Tile(np.ones((1, 1), np.float32), np.array([2**31, -1], np.int64))
