"""Readers for the ONNX messages above TensorProto: Model, Graph, Node, Attribute, Type, ValueInfo,
FunctionProto. Each takes the loader ``Context`` and the byte range of one message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ModelLoadError
from ...ir import Graph, Model, Node, Type, ValueInfo
from . import schema as S
from .functions import AttrRef, Function
from .tensors import read_sparse, read_tensor
from .wire import FIXED32, LEN, VARINT, fixed32_float, iter_fields, signed, text, varints_list

if TYPE_CHECKING:
    from .loader import Context

MAX_DEPTH = 64  # nested graphs/types; deeper files are hostile or broken, not models


def _depth_check(depth: int, what: str) -> None:
    if depth > MAX_DEPTH:
        raise ModelLoadError(
            f"{what}s are nested more than {MAX_DEPTH} levels deep; the file is corrupt or hostile"
        )


def _domain(d: str) -> str:
    return "" if d == "ai.onnx" else d


def read_model(ctx: Context) -> Model:
    """Decode a ModelProto spanning the whole buffer."""
    buf = ctx.buf
    m = Model(graph=Graph())
    graph_range = None
    functions: list[Function] = []
    opsets: dict[str, int] = {}
    for num, wt, x, y in iter_fields(buf, 0, len(buf)):
        if num == S.MODEL_GRAPH and wt == LEN:
            graph_range = (x, y)
        elif num == S.MODEL_IR_VERSION and wt == VARINT:
            m.ir_version = signed(x)
        elif num == S.MODEL_OPSET_IMPORT and wt == LEN:
            domain, version = read_opset(buf, x, y)
            opsets[domain] = version
        elif num == S.MODEL_PRODUCER_NAME and wt == LEN:
            m.producer_name = text(buf, x, y)
        elif num == S.MODEL_PRODUCER_VERSION and wt == LEN:
            m.producer_version = text(buf, x, y)
        elif num == S.MODEL_DOMAIN and wt == LEN:
            m.domain = text(buf, x, y)
        elif num == S.MODEL_MODEL_VERSION and wt == VARINT:
            m.model_version = signed(x)
        elif num == S.MODEL_DOC_STRING and wt == LEN:
            m.doc = text(buf, x, y)
        elif num == S.MODEL_METADATA_PROPS and wt == LEN:
            key, value = read_entry(buf, x, y)
            m.metadata[key] = value
        elif num == S.MODEL_FUNCTIONS and wt == LEN:
            functions.append(read_function(ctx, x, y))
        elif num in (S.MODEL_GRAPH, S.MODEL_OPSET_IMPORT, S.MODEL_IR_VERSION):
            raise ModelLoadError(f"ModelProto field {num} has the wrong wire type {wt}")
    if graph_range is None:
        raise ModelLoadError(
            "it holds no graph (ModelProto.graph is missing); it is not an ONNX model, or is empty"
        )
    m.opsets = opsets
    m.graph = read_graph(ctx, *graph_range, depth=0)
    if m.ir_version >= 4:
        m.initializer_inputs = ctx.initializer_inputs
    if functions:
        from .functions import inline_functions

        inline_functions(m, functions, ctx.overloads)
    return m


def read_opset(buf: Any, a: int, b: int) -> tuple[str, int]:
    domain, version = "", 0
    for num, wt, x, y in iter_fields(buf, a, b):
        if num == S.OPSET_DOMAIN and wt == LEN:
            domain = text(buf, x, y)
        elif num == S.OPSET_VERSION and wt == VARINT:
            version = signed(x)
    return _domain(domain), version


def read_entry(buf: Any, a: int, b: int) -> tuple[str, str]:
    key = value = ""
    for num, wt, x, y in iter_fields(buf, a, b):
        if num == S.ENTRY_KEY and wt == LEN:
            key = text(buf, x, y)
        elif num == S.ENTRY_VALUE and wt == LEN:
            value = text(buf, x, y)
    return key, value


def read_graph(ctx: Context, a: int, b: int, depth: int) -> Graph:
    """Decode a GraphProto; sparse initializers are densified into ``initializers``."""
    _depth_check(depth, "graph")
    buf = ctx.buf
    g = Graph()
    name = ""
    nodes = g.nodes
    inits = g.initializers
    inputs: list[ValueInfo] = []
    for num, wt, x, y in iter_fields(buf, a, b):
        if wt != LEN:
            continue
        if num == S.GRAPH_NODE:
            nodes.append(read_node(ctx, x, y, depth))
        elif num == S.GRAPH_INITIALIZER:
            key, arr = read_tensor(ctx, x, y, "initializer")
            inits[key] = arr
        elif num == S.GRAPH_INPUT:
            inputs.append(read_value_info(ctx, x, y, depth))
        elif num == S.GRAPH_OUTPUT:
            g.outputs.append(read_value_info(ctx, x, y, depth))
        elif num == S.GRAPH_VALUE_INFO:
            vi = read_value_info(ctx, x, y, depth)
            g.value_info[vi.name] = vi
        elif num == S.GRAPH_SPARSE_INITIALIZER:
            key, sparse = read_sparse(ctx, x, y, "sparse initializer")
            ctx.densifying(f"sparse initializer '{key}'", sparse.dims, sparse.values.itemsize)
            inits[key] = sparse.to_dense()
        elif num == S.GRAPH_NAME:
            name = text(buf, x, y)
        elif num == S.GRAPH_DOC_STRING:
            g.doc = text(buf, x, y)
    if name:
        g.name = name
    # Old IR versions list every initializer as a graph input too; those are constants, not feeds.
    g.inputs = [v for v in inputs if v.name not in inits] if inits else inputs
    if depth == 0 and inits:  # from IR 4 on, onnxruntime lets a feed override them
        ctx.initializer_inputs = [v for v in inputs if v.name in inits]
    return g


def read_node(ctx: Context, a: int, b: int, depth: int) -> Node:
    buf = ctx.buf
    inputs: list[str] = []
    outputs: list[str] = []
    attrs: dict[str, Any] = {}
    op_type = name = domain = overload = ""
    for num, wt, x, y in iter_fields(buf, a, b):
        if wt != LEN:
            continue
        if num == S.NODE_INPUT:
            inputs.append(text(buf, x, y))
        elif num == S.NODE_OUTPUT:
            outputs.append(text(buf, x, y))
        elif num == S.NODE_OP_TYPE:
            op_type = text(buf, x, y)
        elif num == S.NODE_ATTRIBUTE:
            key, value = read_attribute(ctx, x, y, depth)
            if isinstance(value, AttrRef) and not ctx.in_function:
                continue  # a reference outside a function body has nothing to refer to
            attrs[key] = value
        elif num == S.NODE_NAME:
            name = text(buf, x, y)
        elif num == S.NODE_DOMAIN:
            domain = _domain(text(buf, x, y))
        elif num == S.NODE_OVERLOAD:
            overload = text(buf, x, y)
    node = Node(op_type, inputs, outputs, attrs, name, domain)
    if overload:
        ctx.overloads[id(node)] = (node, overload)  # keeps node alive: ids stay unique
    return node


def _undecoded(raw: Any) -> str | bytes:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError:
        return bytes(raw)


def read_attribute(ctx: Context, a: int, b: int, depth: int) -> tuple[str, Any]:
    """Decode an AttributeProto to (name, Python value); see the module docs of ``loader``."""
    buf = ctx.buf
    name = ""
    atype = 0
    ref = None
    single: dict[int, Any] = {}  # field number -> value or (start, end)
    lists: dict[int, list[Any]] = {}
    for num, wt, x, y in iter_fields(buf, a, b):
        if num == S.ATTR_NAME and wt == LEN:
            name = text(buf, x, y)
        elif num == S.ATTR_TYPE and wt == VARINT:
            atype = x
        elif num == S.ATTR_I and wt == VARINT:
            single[num] = signed(x)
        elif num == S.ATTR_F and wt == FIXED32:
            single[num] = fixed32_float(buf, x)
        elif num == S.ATTR_INTS:
            out = lists.setdefault(num, [])
            if wt == VARINT:
                out.append(signed(x))
            elif wt == LEN:
                out.extend(signed(v) for v in varints_list(buf, x, y))
        elif num == S.ATTR_FLOATS:
            out = lists.setdefault(num, [])
            if wt == FIXED32:
                out.append(fixed32_float(buf, x))
            elif wt == LEN:
                if (y - x) % 4:
                    raise ModelLoadError(f"attribute '{name}': packed floats are {y - x} bytes")
                out.extend(np.frombuffer(buf, "<f4", (y - x) // 4, x).tolist())
        elif num == S.ATTR_REF_ATTR_NAME and wt == LEN:
            ref = text(buf, x, y)
        elif wt == LEN and num in _SINGLE_LEN:
            single[num] = (x, y)
        elif wt == LEN and num in _LIST_LEN:
            lists.setdefault(num, []).append((x, y))
    if ref is not None:
        return name, AttrRef(ref)
    if atype == S.AT_UNDEFINED:
        atype = _infer_type(single, lists)
    return name, _attr_value(ctx, name, atype, single, lists, depth)


_SINGLE_LEN = {S.ATTR_S, S.ATTR_T, S.ATTR_G, S.ATTR_TP, S.ATTR_SPARSE_TENSOR}
_LIST_LEN = {
    S.ATTR_STRINGS,
    S.ATTR_TENSORS,
    S.ATTR_GRAPHS,
    S.ATTR_TYPE_PROTOS,
    S.ATTR_SPARSE_TENSORS,
}
# For old files without AttributeProto.type: which field being set implies which type.
_FIELD_TYPE = [
    (S.ATTR_F, S.AT_FLOAT), (S.ATTR_I, S.AT_INT), (S.ATTR_S, S.AT_STRING),
    (S.ATTR_T, S.AT_TENSOR), (S.ATTR_G, S.AT_GRAPH), (S.ATTR_SPARSE_TENSOR, S.AT_SPARSE_TENSOR),
    (S.ATTR_TP, S.AT_TYPE_PROTO), (S.ATTR_FLOATS, S.AT_FLOATS), (S.ATTR_INTS, S.AT_INTS),
    (S.ATTR_STRINGS, S.AT_STRINGS), (S.ATTR_TENSORS, S.AT_TENSORS), (S.ATTR_GRAPHS, S.AT_GRAPHS),
    (S.ATTR_SPARSE_TENSORS, S.AT_SPARSE_TENSORS), (S.ATTR_TYPE_PROTOS, S.AT_TYPE_PROTOS),
]  # fmt: skip


def _infer_type(single: dict[int, Any], lists: dict[int, list[Any]]) -> int:
    for num, atype in _FIELD_TYPE:
        if num in single or lists.get(num):
            return atype
    return S.AT_INTS if S.ATTR_INTS in lists else S.AT_UNDEFINED


def _attr_value(ctx: Context, name: str, atype: int, single: dict, lists: dict, depth: int) -> Any:
    buf = ctx.buf
    what = f"attribute '{name}'"
    if atype == S.AT_INT:
        return single.get(S.ATTR_I, 0)
    if atype == S.AT_FLOAT:
        return single.get(S.ATTR_F, 0.0)
    if atype == S.AT_INTS:
        return lists.get(S.ATTR_INTS, [])
    if atype == S.AT_FLOATS:
        return lists.get(S.ATTR_FLOATS, [])
    if atype == S.AT_STRING:
        x, y = single.get(S.ATTR_S, (0, 0))
        return _undecoded(buf[x:y])
    if atype == S.AT_STRINGS:
        return [_undecoded(buf[x:y]) for x, y in lists.get(S.ATTR_STRINGS, [])]
    if atype == S.AT_TENSOR:
        return _one(single, S.ATTR_T, what, lambda x, y: read_tensor(ctx, x, y, what)[1])
    if atype == S.AT_TENSORS:
        return [read_tensor(ctx, x, y, what)[1] for x, y in lists.get(S.ATTR_TENSORS, [])]
    if atype == S.AT_GRAPH:
        return _one(single, S.ATTR_G, what, lambda x, y: read_graph(ctx, x, y, depth + 1))
    if atype == S.AT_GRAPHS:
        return [read_graph(ctx, x, y, depth + 1) for x, y in lists.get(S.ATTR_GRAPHS, [])]
    if atype == S.AT_SPARSE_TENSOR:
        return _one(
            single, S.ATTR_SPARSE_TENSOR, what, lambda x, y: read_sparse(ctx, x, y, what)[1]
        )
    if atype == S.AT_SPARSE_TENSORS:
        return [read_sparse(ctx, x, y, what)[1] for x, y in lists.get(S.ATTR_SPARSE_TENSORS, [])]
    if atype == S.AT_TYPE_PROTO:
        return _one(single, S.ATTR_TP, what, lambda x, y: read_type(ctx, x, y, depth + 1))
    if atype == S.AT_TYPE_PROTOS:
        return [read_type(ctx, x, y, depth + 1) for x, y in lists.get(S.ATTR_TYPE_PROTOS, [])]
    if atype == S.AT_UNDEFINED:
        return []  # no type and no value: only an empty list serializes like this
    raise ModelLoadError(f"{what} has unknown AttributeProto.type {atype}")


def _one(single: dict, num: int, what: str, decode: Any) -> Any:
    if num not in single:
        raise ModelLoadError(f"{what} declares a tensor/graph/type value but carries none")
    return decode(*single[num])


def read_value_info(ctx: Context, a: int, b: int, depth: int) -> ValueInfo:
    buf = ctx.buf
    vi = ValueInfo("")
    for num, wt, x, y in iter_fields(buf, a, b):
        if wt != LEN:
            continue
        if num == S.VI_NAME:
            vi.name = text(buf, x, y)
        elif num == S.VI_TYPE:
            vi.type = read_type(ctx, x, y, depth + 1)
        elif num == S.VI_DOC_STRING:
            vi.doc = text(buf, x, y)
    return vi


def read_type(ctx: Context, a: int, b: int, depth: int) -> Type | None:
    """Decode a TypeProto; None when it carries no type (unknown)."""
    _depth_check(depth, "type")
    buf = ctx.buf
    for num, wt, x, y in iter_fields(buf, a, b):
        if wt != LEN:
            continue
        if num == S.TYPE_TENSOR or num == S.TYPE_SPARSE_TENSOR:
            elem, shape = _tensor_type(buf, x, y)
            return Type("tensor" if num == S.TYPE_TENSOR else "sparse_tensor", elem, shape)
        if num == S.TYPE_SEQUENCE or num == S.TYPE_OPTIONAL:
            elem_t = None
            for n2, w2, x2, y2 in iter_fields(buf, x, y):
                if n2 == S.SEQUENCE_ELEM_TYPE and w2 == LEN:
                    elem_t = read_type(ctx, x2, y2, depth + 1)
            return Type("sequence" if num == S.TYPE_SEQUENCE else "optional", elem=elem_t)
        if num == S.TYPE_MAP:
            key, value = 0, None
            for n2, w2, x2, y2 in iter_fields(buf, x, y):
                if n2 == S.MAP_KEY_TYPE and w2 == VARINT:
                    key = signed(x2)
                elif n2 == S.MAP_VALUE_TYPE and w2 == LEN:
                    value = read_type(ctx, x2, y2, depth + 1)
            return Type("map", elem_type=key, elem=value)
        if num == S.TYPE_OPAQUE:
            return Type("opaque")
    return None


def _tensor_type(buf: Any, a: int, b: int) -> tuple[int, tuple | None]:
    elem = 0
    shape = None
    for num, wt, x, y in iter_fields(buf, a, b):
        if num == S.TENSOR_TYPE_ELEM_TYPE and wt == VARINT:
            elem = signed(x)
        elif num == S.TENSOR_TYPE_SHAPE and wt == LEN:
            dims = []
            for n2, w2, x2, y2 in iter_fields(buf, x, y):
                if n2 == S.SHAPE_DIM and w2 == LEN:
                    dims.append(_dim(buf, x2, y2))
            shape = tuple(dims)
    return elem, shape


def _dim(buf: Any, a: int, b: int) -> int | str | None:
    dim: int | str | None = None
    for num, wt, x, y in iter_fields(buf, a, b):
        if num == S.DIM_VALUE and wt == VARINT:
            dim = signed(x)
        elif num == S.DIM_PARAM and wt == LEN:
            dim = text(buf, x, y) or None
    return dim


def read_function(ctx: Context, a: int, b: int) -> Function:
    """Decode a model-local FunctionProto. Body attributes that refer to the caller's attributes
    (``ref_attr_name``) become ``AttrRef`` values, resolved when ``functions.py`` inlines a call."""
    fn = Function()
    ctx.in_function = True
    try:
        _read_function_fields(ctx, fn, a, b)
    finally:
        ctx.in_function = False
    return fn


def _read_function_fields(ctx: Context, fn: Function, a: int, b: int) -> None:
    buf = ctx.buf
    for num, wt, x, y in iter_fields(buf, a, b):
        if wt != LEN:
            continue
        if num == S.FUNC_NODE:
            fn.nodes.append(read_node(ctx, x, y, 1))
        elif num == S.FUNC_NAME:
            fn.name = text(buf, x, y)
        elif num == S.FUNC_DOMAIN:
            fn.domain = _domain(text(buf, x, y))
        elif num == S.FUNC_OVERLOAD:
            fn.overload = text(buf, x, y)
        elif num == S.FUNC_INPUT:
            fn.inputs.append(text(buf, x, y))
        elif num == S.FUNC_OUTPUT:
            fn.outputs.append(text(buf, x, y))
        elif num == S.FUNC_ATTRIBUTE:
            fn.attr_names.append(text(buf, x, y))
        elif num == S.FUNC_ATTRIBUTE_PROTO:
            key, value = read_attribute(ctx, x, y, 1)
            fn.attr_defaults[key] = value
        elif num == S.FUNC_OPSET_IMPORT:
            domain, version = read_opset(buf, x, y)
            fn.opsets[domain] = version
