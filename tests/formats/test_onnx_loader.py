"""ziggurat.formats.onnx.load_model agrees with the onnx package on every model we can find.

The onnx package is the reference reader: each test loads the same bytes with both and compares the
structure field by field (``onnx_compare``), arrays bitwise.
"""

from __future__ import annotations

import glob
import importlib
import os
import warnings

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from ziggurat.formats.onnx import load_model
from ziggurat.ir import SparseTensor, Type, dtypes

from .onnx_compare import assert_same_model

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
FILES = sorted(
    glob.glob(os.path.join(DATA, "*", "**", "*.onnx"), recursive=True)
    + glob.glob(os.path.join(DATA, "light", "*.onnx"))
)
FILES = sorted(set(f for f in FILES if "/node/" not in f))


def _model(nodes, inputs, outputs, inits=(), opset=21, **kw) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], **kw)


def _roundtrip(mp: onnx.ModelProto):
    m = load_model(mp.SerializeToString())
    assert_same_model(m, mp)
    return m


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, DATA))
def test_backend_data_models_match_onnx(path):
    m = load_model(path)
    assert m.path == path
    assert_same_model(m, onnx.load(path))


# Generator modules of the node conformance cases with the widest variety of what the reader must
# handle (subgraphs, sequence/optional/map types, sparse and string attributes, every dtype).
_NODE_MODULES = [
    "loop", "if_", "scan", "constant", "cast", "castlike", "dequantizelinear", "quantizelinear",
    "optionalgetelement", "optionalhaselement", "sequenceinsert", "sequence_map", "identity",
    "stringnormalizer", "string_split", "layernormalization", "reshape", "bitcast", "split",
]  # fmt: skip


def _node_cases():
    import onnx.backend.test.case.node as node_pkg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _NODE_MODULES:
            importlib.import_module(f"onnx.backend.test.case.node.{name}")
    return list(node_pkg._NodeTestCases)


def test_node_conformance_models_match_onnx():
    cases = _node_cases()
    assert len(cases) > 150
    for case in cases:
        try:
            _roundtrip(case.model)
        except AssertionError as e:
            raise AssertionError(f"{case.name}: {e}") from None


def test_sources_path_bytes_bytearray_memoryview(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    mp = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TP.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TP.FLOAT, ["n", 4])],
        [numpy_helper.from_array(w, "w")],
    )
    data = mp.SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    for src in (str(path), path, data, bytearray(data), memoryview(data)):
        m = load_model(src)
        assert_same_model(m, mp)
        arr = m.graph.initializers["w"]
        np.testing.assert_array_equal(arr, w)
        assert not arr.flags.writeable
    assert load_model(path).path == str(path)
    assert load_model(data).path is None


def test_all_dtypes_raw_and_typed_round_trip():
    rng = np.random.default_rng(0)
    inits = []
    for et in range(1, 29):
        dt = dtypes.to_numpy(et)
        if et == dtypes.STRING:
            arr = np.array([["a", "bé"], ["", "ünïcode"]], dtype=object)
        elif et == dtypes.BOOL:
            arr = rng.random((2, 3)) > 0.5
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            arr = rng.integers(info.min, info.max, (2, 3), endpoint=True, dtype=dt)
        elif dt.kind == "c":
            arr = (rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))).astype(dt)
        else:  # float kinds incl. ml_dtypes ones and the sub-byte integer types
            try:
                info = ml_dtypes.iinfo(dt)
                arr = rng.integers(int(info.min), int(info.max) + 1, (2, 3)).astype(dt)
            except ValueError:
                arr = rng.uniform(-2, 2, (2, 3)).astype(np.float32).astype(dt)
        for n in (7, 5, 1):  # odd lengths exercise the padding of packed sub-byte types
            flat = np.resize(arr.reshape(-1), n)
            raw = numpy_helper.from_array(flat, f"raw_{et}_{n}")
            inits.append(raw)
            assert raw.HasField("raw_data") or et == dtypes.STRING
            if et != dtypes.STRING:
                typed = helper.make_tensor(f"typed_{et}_{n}", et, [n], flat, raw=False)
                assert not typed.HasField("raw_data")
                inits.append(typed)
        inits.append(numpy_helper.from_array(np.zeros((0, 3), dt), f"empty_{et}"))
        if et != dtypes.STRING:
            inits.append(numpy_helper.from_array(np.asarray(arr.reshape(-1)[0]), f"scalar_{et}"))
    mp = _model([], [], [helper.make_tensor_value_info("x", TP.FLOAT, [])], inits)
    m = _roundtrip(mp)
    assert m.graph.initializers["scalar_1"].shape == ()
    assert m.graph.initializers["raw_22_7"].dtype == ml_dtypes.int4
    s = m.graph.initializers["raw_8_7"]
    assert s.dtype == object and isinstance(s[0], str)


def test_large_tensors_of_several_dtypes_from_a_file(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "f64": rng.standard_normal(1 << 17),
        "i64": rng.integers(-(2**62), 2**62, 1 << 17),
        "bf16": rng.standard_normal(1 << 19).astype(ml_dtypes.bfloat16),
        "c128": rng.standard_normal(1 << 16) + 1j,
        "i4": rng.integers(-8, 8, (3 << 20) + 1).astype(ml_dtypes.int4),
        "u8": rng.integers(0, 255, 3 << 20, dtype=np.uint8),
    }
    inits = [numpy_helper.from_array(a, k) for k, a in arrays.items()]
    mp = _model([], [], [helper.make_tensor_value_info("x", TP.FLOAT, [])], inits)
    for pad in range(3):  # shift every offset so both the view and the copy paths run
        mp.doc_string = "x" * pad
        path = tmp_path / f"m{pad}.onnx"
        path.write_bytes(mp.SerializeToString())
        assert_same_model(load_model(path), mp)


def test_complex_typed_fields():
    z = np.array([1 + 2j, -3.5 - 4j], np.complex64)
    t64 = helper.make_tensor("c64", TP.COMPLEX64, [2], z, raw=False)
    t128 = helper.make_tensor("c128", TP.COMPLEX128, [2], z.astype(np.complex128), raw=False)
    assert list(t64.float_data) == [1, 2, -3.5, -4]
    m = _roundtrip(_model([], [], [], [t64, t128]))
    np.testing.assert_array_equal(m.graph.initializers["c64"], z)


def test_every_attribute_kind():
    sub = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])],
        "body",
        [helper.make_tensor_value_info("a", TP.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TP.FLOAT, [1])],
    )
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.float32([1.5, 2.5]), "sv"),
        numpy_helper.from_array(np.int64([1, 4]), "si"),
        [2, 3],
    )
    seq_t = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TP.INT64, ["n", 2]))
    node = helper.make_node(
        "Custom",
        ["x"],
        ["y"],
        domain="my.domain",
        name="custom0",
        i=-5,
        big=2**62,
        f=0.1,
        s="héllo",
        t=numpy_helper.from_array(np.arange(6, dtype=np.int32).reshape(2, 3), "t"),
        g=sub,
        ints=[1, -2, 3],
        floats=[0.5, -1e30],
        strings=["a", "b"],
        tensors=[numpy_helper.from_array(np.float64([1.0]), "t1")],
        graphs=[sub, sub],
        sp=sparse,
        sps=[sparse],
        tp=seq_t,
        tps=[helper.make_optional_type_proto(helper.make_tensor_type_proto(TP.FLOAT, None))],
    )
    node.attribute.append(
        helper.make_attribute("empty_ints", [], attr_type=onnx.AttributeProto.INTS)
    )
    node.attribute.append(helper.make_attribute("raw_bytes", b"\xff\xfe"))
    mp = _model([node], [helper.make_tensor_value_info("x", TP.FLOAT, [1])], [])
    mp.graph.output.append(helper.make_tensor_value_info("y", TP.FLOAT, [1]))
    mp.opset_import.append(helper.make_opsetid("my.domain", 1))
    m = load_model(mp.SerializeToString())
    a = m.graph.nodes[0].attrs
    assert m.graph.nodes[0].domain == "my.domain" and m.graph.nodes[0].name == "custom0"
    assert a["i"] == -5 and a["big"] == 2**62
    assert a["f"] == float(np.float32(0.1)) and isinstance(a["f"], float)
    assert a["s"] == "héllo" and a["raw_bytes"] == b"\xff\xfe"
    assert a["ints"] == [1, -2, 3] and a["floats"] == [0.5, float(np.float32(-1e30))]
    assert a["strings"] == ["a", "b"] and a["empty_ints"] == []
    assert a["t"].dtype == np.int32 and a["t"].shape == (2, 3)
    assert a["g"].nodes[0].op_type == "Identity" and len(a["graphs"]) == 2
    assert isinstance(a["sp"], SparseTensor) and a["sp"].dims == (2, 3)
    np.testing.assert_array_equal(a["sp"].to_dense(), [[0, 1.5, 0], [0, 2.5, 0]])
    assert a["tp"] == Type("sequence", elem=Type("tensor", TP.INT64, ("n", 2)))
    assert a["tps"] == [Type("optional", elem=Type("tensor", TP.FLOAT, None))]


def test_attribute_without_type_field_is_inferred():
    node = helper.make_node(
        "Foo", [], ["y"], i=3, f=2.0, s="x", ints=[1, 2], t=numpy_helper.from_array(np.int64([7]))
    )
    for attr in node.attribute:
        attr.ClearField("type")  # very old writers did not set AttributeProto.type
    mp = _model([node], [], [helper.make_tensor_value_info("y", TP.FLOAT, None)])
    a = load_model(mp.SerializeToString()).graph.nodes[0].attrs
    assert a["i"] == 3 and a["f"] == 2.0 and a["s"] == "x" and a["ints"] == [1, 2]
    assert a["t"].tolist() == [7]


def test_types_and_shapes():
    vi = helper.make_tensor_value_info
    inputs = [
        vi("fixed", TP.FLOAT, [1, 3, 224, 224]),
        vi("sym", TP.INT64, ["batch", None, 0]),
        vi("scalar", TP.DOUBLE, []),
        vi("unranked", TP.BOOL, None),
        helper.make_value_info(
            "seq", helper.make_sequence_type_proto(helper.make_tensor_type_proto(TP.FLOAT, ["n"]))
        ),
        helper.make_value_info(
            "opt", helper.make_optional_type_proto(helper.make_tensor_type_proto(TP.UINT8, [2]))
        ),
        helper.make_value_info(
            "map",
            helper.make_map_type_proto(TP.STRING, helper.make_tensor_type_proto(TP.FLOAT, [])),
        ),
        helper.make_value_info("sparse", helper.make_sparse_tensor_type_proto(TP.FLOAT, [4, 4])),
        onnx.ValueInfoProto(name="untyped"),
    ]
    mp = _model([], inputs, [vi("fixed", TP.FLOAT, [1, 3, 224, 224])])
    mp.graph.value_info.append(vi("inner", TP.FLOAT16, ["a", "b"]))
    m = _roundtrip(mp)
    t = {v.name: v.type for v in m.graph.inputs}
    assert t["sym"].shape == ("batch", None, 0)
    assert t["scalar"].shape == () and t["unranked"].shape is None
    assert str(t["seq"]) == "sequence(tensor(float))" and t["map"].kind == "map"
    assert t["map"].elem_type == TP.STRING and t["sparse"].kind == "sparse_tensor"
    assert t["untyped"] is None


def test_initializers_listed_as_inputs_are_not_inputs():
    w = numpy_helper.from_array(np.float32([1, 2]), "w")
    mp = _model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [
            helper.make_tensor_value_info("x", TP.FLOAT, [2]),
            helper.make_tensor_value_info("w", TP.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TP.FLOAT, [2])],
        [w],
        ir_version=3,
    )
    m = _roundtrip(mp)
    assert [v.name for v in m.graph.inputs] == ["x"]
    assert "w" in m.graph.initializers


def test_sparse_initializer_is_densified():
    sp = helper.make_sparse_tensor(
        numpy_helper.from_array(np.int32([5, 6]), "dense_name"),
        numpy_helper.from_array(np.int64([[0, 1], [2, 0]]), "idx"),
        [3, 2],
    )
    mp = _model([], [], [helper.make_tensor_value_info("dense_name", TP.INT32, [3, 2])])
    mp.graph.sparse_initializer.append(sp)
    m = _roundtrip(mp)
    np.testing.assert_array_equal(m.graph.initializers["dense_name"], [[0, 5], [0, 0], [6, 0]])


def test_model_fields_and_domain_normalization():
    mp = _model([], [], [], producer_name="p", producer_version="1.2", doc_string="doc")
    mp.domain = "com.example"
    mp.model_version = 7
    mp.opset_import[0].domain = "ai.onnx"
    mp.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    helper.set_model_props(mp, {"author": "me", "license": "MIT"})
    m = load_model(mp.SerializeToString())
    assert m.opsets == {"": 21, "com.microsoft": 1} and m.opset("ai.onnx") == 21
    assert (m.producer_name, m.producer_version, m.doc) == ("p", "1.2", "doc")
    assert (m.domain, m.model_version) == ("com.example", 7)
    assert m.metadata == {"author": "me", "license": "MIT"}


# ---- hand-encoded protobuf: packed vs unpacked repeated fields, unknown fields --------------------


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(num: int, wt: int) -> bytes:
    return _varint(num << 3 | wt)


def _len(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _varint(len(payload)) + payload


def test_packed_and_unpacked_repeated_fields_and_unknown_fields():
    # TensorProto: dims packed (writers normally don't), float_data unpacked (fixed32 one by one),
    # plus an unknown varint field 99 and an unknown length-delimited field 98.
    floats = np.float32([1.5, -2.0, 3.25, 4.0])
    tensor = _len(1, b"".join(_varint(d) for d in (2, 2)))  # dims, packed
    tensor += _key(2, 0) + _varint(TP.FLOAT)
    tensor += b"".join(_key(4, 5) + f.tobytes() for f in floats)  # float_data, unpacked
    tensor += _len(8, b"w") + _key(99, 0) + _varint(12345) + _len(98, b"junk")
    # int64 tensor with negative values: int64_data packed and one unpacked trailing entry
    i64 = _len(1, _varint(3)) + _key(2, 0) + _varint(TP.INT64)
    i64 += _len(7, _varint(-1) + _varint(2**40)) + _key(7, 0) + _varint(-7) + _len(8, b"i")
    attr_ints = _len(1, b"axes") + _key(20, 0) + _varint(7) + _len(8, _varint(-1) + _varint(300))
    node = _len(1, b"w") + _len(2, b"y") + _len(4, b"Foo") + _len(5, attr_ints)
    out_vi = _len(1, b"y")
    graph = _len(1, node) + _len(2, b"g") + _len(5, tensor) + _len(5, i64) + _len(12, out_vi)
    opset = _len(1, b"") + _key(2, 0) + _varint(13)
    model = _key(1, 0) + _varint(8) + _len(8, opset) + _len(7, graph) + _key(1000, 1) + b"\0" * 8
    m = load_model(model)
    np.testing.assert_array_equal(m.graph.initializers["w"], floats.reshape(2, 2))
    np.testing.assert_array_equal(m.graph.initializers["i"], [-1, 2**40, -7])
    assert m.graph.nodes[0].attrs == {"axes": [-1, 300]}
    assert m.opsets == {"": 13} and m.ir_version == 8
    # and the onnx package agrees with our reading of these bytes
    assert_same_model(m, onnx.load_from_string(model))


def _big_model(pad: int) -> tuple[bytes, int]:
    """A model with one 2 MiB float32 initializer; returns (bytes, offset of its raw data)."""
    w = np.arange(1 << 19, dtype=np.float32)
    mp = _model(
        [helper.make_node("Identity", ["w"], ["y"])], [],
        [helper.make_tensor_value_info("y", TP.FLOAT, [1 << 19])],
        [numpy_helper.from_array(w, "w")], doc_string="x" * pad,
    )  # fmt: skip
    data = mp.SerializeToString()
    return data, data.find(w.tobytes()[:64])


def _backing(arr: np.ndarray):
    """The mmap an array views, or None if it owns (a copy of) its data."""
    import mmap

    while isinstance(arr, np.ndarray) and arr.base is not None:
        arr = arr.base
    if isinstance(arr, memoryview):
        arr = arr.obj
    return arr if isinstance(arr, mmap.mmap) else None


def test_large_aligned_tensors_are_views_on_the_file_and_unaligned_are_copied(tmp_path):
    seen = set()
    for pad in range(8):
        data, off = _big_model(pad)
        path = tmp_path / f"m{pad}.onnx"
        path.write_bytes(data)
        arr = load_model(path).graph.initializers["w"]
        assert arr.flags.aligned and not arr.flags.writeable
        np.testing.assert_array_equal(arr[:5], [0, 1, 2, 3, 4])
        assert arr[-1] == (1 << 19) - 1
        is_view = _backing(arr) is not None
        assert is_view == (off % 4 == 0), (pad, off)
        seen.add(is_view)
    assert seen == {True, False}


def test_small_tensors_are_copied_from_files_but_viewed_from_bytes(tmp_path):
    mp = _model([], [], [], [numpy_helper.from_array(np.arange(16, dtype=np.int64), "s")])
    data = mp.SerializeToString()
    path = tmp_path / "s.onnx"
    path.write_bytes(data)
    assert _backing(load_model(path).graph.initializers["s"]) is None
    from_bytes = load_model(data).graph.initializers["s"]
    assert not from_bytes.flags.writeable and from_bytes.tolist() == list(range(16))
