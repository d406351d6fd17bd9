"""Structural comparison of a Ziggurat ``ir.Model`` with the ModelProto the onnx package parses.

Used by the loader tests: the onnx package is the reference reader, so agreeing with it on every
model of its own test data is the main correctness proof of Ziggurat's protobuf reader.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ziggurat.ir import Graph, Model, SparseTensor, Type


def _dom(d: str) -> str:
    return "" if d == "ai.onnx" else d


def assert_same_array(actual: np.ndarray, expected: np.ndarray, where: str) -> None:
    assert isinstance(actual, np.ndarray), f"{where}: got {type(actual).__name__}"
    assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
    if expected.dtype == object:
        exp = [v.decode("utf-8") if isinstance(v, bytes) else v for v in expected.reshape(-1)]
        assert actual.reshape(-1).tolist() == exp, f"{where}: strings differ"
    else:
        assert actual.tobytes() == expected.tobytes(), f"{where}: values differ (bitwise)"


def assert_same_type(actual: Type | None, tp: onnx.TypeProto, where: str) -> None:
    which = tp.WhichOneof("value")
    if which is None:
        assert actual is None, f"{where}: expected no type, got {actual}"
        return
    assert actual is not None, f"{where}: type missing (expected {which})"
    if which in ("tensor_type", "sparse_tensor_type"):
        t = getattr(tp, which)
        kind = "tensor" if which == "tensor_type" else "sparse_tensor"
        assert actual.kind == kind, f"{where}: kind {actual.kind} != {kind}"
        assert actual.elem_type == t.elem_type, f"{where}: elem_type {actual.elem_type}"
        if not t.HasField("shape"):
            assert actual.shape is None, f"{where}: shape {actual.shape}, expected unknown rank"
        else:
            dims = []
            for d in t.shape.dim:
                w = d.WhichOneof("value")
                dims.append(d.dim_value if w == "dim_value" else (d.dim_param or None))
            assert actual.shape == tuple(dims), f"{where}: shape {actual.shape} != {tuple(dims)}"
    elif which in ("sequence_type", "optional_type"):
        assert actual.kind == which.split("_")[0], f"{where}: kind {actual.kind}"
        inner = getattr(tp, which)
        if inner.HasField("elem_type"):
            assert_same_type(actual.elem, inner.elem_type, where + ".elem")
    elif which == "map_type":
        assert actual.kind == "map" and actual.elem_type == tp.map_type.key_type, where
        assert_same_type(actual.elem, tp.map_type.value_type, where + ".value")
    else:
        assert actual.kind == "opaque", where


def assert_same_value_info(actual, vi: onnx.ValueInfoProto, where: str) -> None:
    assert actual.name == vi.name, f"{where}: name {actual.name!r} != {vi.name!r}"
    if vi.HasField("type"):
        assert_same_type(actual.type, vi.type, f"{where} '{vi.name}'")
    else:
        assert actual.type is None, where


def assert_same_attr(actual, attr: onnx.AttributeProto, where: str) -> None:
    A = onnx.AttributeProto
    t = attr.type
    if t == A.TENSOR:
        assert_same_array(actual, numpy_helper.to_array(attr.t), where)
    elif t == A.TENSORS:
        assert len(actual) == len(attr.tensors), where
        for a, e in zip(actual, attr.tensors):
            assert_same_array(a, numpy_helper.to_array(e), where)
    elif t == A.GRAPH:
        assert_same_graph(actual, attr.g, where)
    elif t == A.GRAPHS:
        assert len(actual) == len(attr.graphs), where
        for a, e in zip(actual, attr.graphs):
            assert_same_graph(a, e, where)
    elif t == A.SPARSE_TENSOR:
        assert_same_sparse(actual, attr.sparse_tensor, where)
    elif t == A.SPARSE_TENSORS:
        for a, e in zip(actual, attr.sparse_tensors, strict=True):
            assert_same_sparse(a, e, where)
    elif t == A.TYPE_PROTO:
        assert_same_type(actual, attr.tp, where)
    elif t == A.TYPE_PROTOS:
        for a, e in zip(actual, attr.type_protos, strict=True):
            assert_same_type(a, e, where)
    else:
        exp = helper.get_attribute_value(attr)
        if t == A.STRING:
            exp = exp.decode("utf-8")
        elif t == A.STRINGS:
            exp = [s.decode("utf-8") for s in exp]
        elif t == A.FLOATS:
            exp = [float(np.float32(v)) for v in exp]
        assert actual == exp and type(actual) is type(exp), f"{where}: {actual!r} != {exp!r}"


def assert_same_sparse(actual: SparseTensor, sp: onnx.SparseTensorProto, where: str) -> None:
    assert isinstance(actual, SparseTensor), where
    assert_same_array(actual.values, numpy_helper.to_array(sp.values).reshape(-1), where)
    assert_same_array(actual.indices, numpy_helper.to_array(sp.indices), where)
    assert actual.dims == tuple(sp.dims), where


def assert_same_graph(g: Graph, gp: onnx.GraphProto, where: str = "graph") -> None:
    assert g.name == (gp.name or "graph"), f"{where}: name {g.name!r} != {gp.name!r}"
    inits = {t.name: t for t in gp.initializer}
    sparse = {s.values.name: s for s in gp.sparse_initializer}
    assert set(g.initializers) == set(inits) | set(sparse), f"{where}: initializer names differ"
    for name, t in inits.items():
        assert_same_array(g.initializers[name], numpy_helper.to_array(t), f"{where} init {name}")
    for name, s in sparse.items():
        dense = np.zeros(tuple(s.dims), helper.tensor_dtype_to_np_dtype(s.values.data_type))
        idx = numpy_helper.to_array(s.indices)
        vals = numpy_helper.to_array(s.values)
        if idx.ndim == 2:
            dense[tuple(idx.T)] = vals
        else:
            dense.reshape(-1)[idx] = vals
        assert_same_array(g.initializers[name], dense, f"{where} sparse init {name}")
    feeds = [v for v in gp.input if v.name not in inits and v.name not in sparse]
    assert len(g.inputs) == len(feeds), f"{where}: {len(g.inputs)} inputs, expected {len(feeds)}"
    for a, e in zip(g.inputs, feeds):
        assert_same_value_info(a, e, f"{where} input")
    assert len(g.outputs) == len(gp.output), f"{where}: output count"
    for a, e in zip(g.outputs, gp.output):
        assert_same_value_info(a, e, f"{where} output")
    vis = {v.name: v for v in gp.value_info}
    assert set(g.value_info) == set(vis), f"{where}: value_info names"
    for name, v in vis.items():
        assert_same_value_info(g.value_info[name], v, f"{where} value_info")
    assert len(g.nodes) == len(gp.node), f"{where}: {len(g.nodes)} nodes != {len(gp.node)}"
    for i, (n, np_) in enumerate(zip(g.nodes, gp.node)):
        at = f"{where} node {i} ({np_.op_type})"
        assert n.op_type == np_.op_type and n.name == np_.name, at
        assert n.domain == _dom(np_.domain), f"{at}: domain {n.domain!r}"
        assert n.inputs == list(np_.input), f"{at}: inputs {n.inputs}"
        assert n.outputs == list(np_.output), f"{at}: outputs {n.outputs}"
        assert set(n.attrs) == {a.name for a in np_.attribute}, f"{at}: attribute names"
        for a in np_.attribute:
            assert_same_attr(n.attrs[a.name], a, f"{at} attr {a.name}")


def assert_same_model(m: Model, mp: onnx.ModelProto) -> None:
    assert m.ir_version == mp.ir_version
    assert m.opsets == {_dom(o.domain): o.version for o in mp.opset_import}, m.opsets
    assert (m.producer_name, m.producer_version) == (mp.producer_name, mp.producer_version)
    assert (m.domain, m.model_version, m.doc) == (mp.domain, mp.model_version, mp.doc_string)
    assert m.metadata == {p.key: p.value for p in mp.metadata_props}
    assert_same_graph(m.graph, mp.graph)
