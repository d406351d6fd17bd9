"""Fuse the float epilogue of onnxruntime's dynamically quantized MatMuls into ``ziggurat::QDense``.

``onnxruntime.quantization.quantize_dynamic`` writes each MatMul with a constant weight as::

    DynamicQuantizeLinear(x) -> (qx, sx, zx)          (one per activation, shared by its MatMuls)
    MatMulInteger(qx, Wq, zx, Wzp) -> Cast(to=float) -> Mul(., Mul(sx, Wscale)) [-> Add(., bias)]

and the float GELU after BERT's FFN up-projection stays as it was (``fuse_gelu`` makes it one
``ziggurat::Gelu``). This pass replaces MatMulInteger ... Add [... Gelu/Relu] by one
``QDense(qx, Wq, sx, Wscale, zx, Wzp, bias, activation=...)`` (onnxruntime's own optimizer makes
a ``MatMulIntegerToFloat`` of the same chain), whose kernel (``ops/quant.py``) computes the
integer product, the scales, the bias and the activation in one oneDNN int8 matmul where the CPU
has VNNI/AMX: no int32 and float32 intermediates, four passes over the output fewer. The
DynamicQuantizeLinear nodes stay, so Q, K and V still share one quantized activation.

Every intermediate must be read by this chain only, the weight must be a constant 2-D int8 or
uint8 matrix and the weight's scale a constant; otherwise nothing is fused.

``fuse_dynamic`` runs last (after ``fuse_qkv`` merged the QDense nodes sharing an activation,
and after ``quantize_weights``): a DynamicQuantizeLinear whose three outputs are read by one
QDense only becomes part of it, ``DynamicQDense(x, W, Wscale, Wzp, bias, activation=...)``
(onnxruntime's ``DynamicQuantizeMatMul`` plus the activation): the same values, one plan step and
three intermediate values fewer per GEMM (BERT-base: 49 steps a run).
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ._match import FUSED_DOMAIN, Index, other_input

_ONNX = ("", "ai.onnx")
_ACTIVATIONS = {("", "Relu"): "relu", (FUSED_DOMAIN, "Gelu"): "gelu"}
_FLOAT = 1  # TensorProto.FLOAT


def run(graph: ir.Graph) -> ir.Graph:
    """Fuse every matching chain in ``graph`` in place; returns ``graph``."""
    idx = Index(graph)
    replace: dict[int, ir.Node] = {}
    drop: set[int] = set()
    for mm in graph.nodes:
        if mm.op_type != "MatMulInteger" or mm.domain not in _ONNX:
            continue
        found = _match(idx, mm)
        if found is None:
            continue
        chain, inputs, activation = found
        last = chain[-1]
        replace[id(last)] = ir.Node(
            "QDense", inputs, [last.outputs[0]], {"activation": activation},
            name=f"{mm.label}/qdense", domain=FUSED_DOMAIN,
        )  # fmt: skip
        drop.update(id(n) for n in chain[:-1])
    if replace:
        graph.nodes = [replace.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return graph


def _match(idx: Index, mm: ir.Node):
    """([nodes of the chain, in order], QDense inputs, activation) or None."""
    ins = list(mm.inputs) + [""] * (4 - len(mm.inputs))
    qa, w_name, a_zp, w_zp = ins[:4]
    w = idx.const(w_name)
    if w is None or w.ndim != 2 or w.dtype not in (np.int8, np.uint8):
        return None
    if w_zp and idx.const(w_zp) is None:
        return None
    cast = idx.only_use(mm.outputs[0])
    if cast is None or cast.op_type != "Cast" or cast.domain not in _ONNX:
        return None
    if cast.attrs.get("to") != _FLOAT:
        return None
    mul = idx.only_use(cast.outputs[0])
    if mul is None or mul.op_type != "Mul" or mul.domain not in _ONNX:
        return None
    scales = _scales(idx, other_input(mul, cast.outputs[0]), w.shape[1])
    if scales is None:
        return None
    a_scale, w_scale = scales
    chain, out, bias = [mm, cast, mul], mul.outputs[0], ""
    add = idx.only_use(out)
    if add is not None and add.op_type == "Add" and add.domain in _ONNX:
        b_name = other_input(add, out)
        b = idx.const(b_name) if b_name else None
        if b is not None and b.dtype == np.float32 and b.shape in ((w.shape[1],), (1, w.shape[1])):
            chain.append(add)
            out, bias = add.outputs[0], b_name
    activation = ""
    if bias:  # the activation follows the bias (without one, the Add keeps its own order)
        act = idx.only_use(out)
        if act is not None and (act.domain, act.op_type) in _ACTIVATIONS and len(act.inputs) == 1:
            chain.append(act)
            activation = _ACTIVATIONS[(act.domain, act.op_type)]
    return chain, [qa, w_name, a_scale, w_scale, a_zp, w_zp, bias], activation


def _scales(idx: Index, name: str | None, n: int):
    """(activation scale, constant weight scale) for the multiplier ``name`` = Mul(sx, Wscale),
    the weight's scale a scalar or one per output column; None otherwise."""
    if not name:
        return None
    prod = idx.made_by(name, "Mul")
    if prod is None or len(prod.inputs) != 2:
        return None
    p, q = prod.inputs
    if idx.const(p) is not None and idx.const(q) is None:
        p, q = q, p
    ws = idx.const(q)
    if ws is None or idx.const(p) is not None or ws.dtype != np.float32 or ws.size not in (1, n):
        return None
    if ws.size == n and n > 1 and ws.shape not in ((n,), (1, n)):
        return None
    return p, q


def fuse_dynamic(graph: ir.Graph) -> ir.Graph:
    """Fold each DynamicQuantizeLinear read by exactly one QDense (its three outputs as the
    QDense's activation, scale and zero point) into a ``DynamicQDense``; in place, returns
    ``graph``."""
    idx = Index(graph)
    replace: dict[int, ir.Node] = {}
    drop: set[int] = set()
    for dq in graph.nodes:
        if dq.op_type != "DynamicQuantizeLinear" or dq.domain not in _ONNX:
            continue
        users = [idx.only_use(o) for o in dq.outputs]
        q = users[0]
        if len(dq.outputs) != 3 or q is None or any(u is not q for u in users):
            continue
        if q.op_type != "QDense" or q.domain != FUSED_DOMAIN or id(q) in replace:
            continue
        ins = list(q.inputs) + [""] * (7 - len(q.inputs))
        if (ins[0], ins[2], ins[4]) != tuple(dq.outputs):
            continue
        w_zp = ins[5]
        if w_zp and (z := idx.const(w_zp)) is not None and not np.any(z):
            w_zp = ""  # all zeros: the kernel's fast path needs no zero point
        replace[id(q)] = ir.Node(
            "DynamicQDense", [dq.inputs[0], ins[1], ins[3], w_zp, ins[6]], list(q.outputs),
            {"activation": q.attrs.get("activation", "")},
            name=f"{q.label}/dynamic", domain=FUSED_DOMAIN,
        )  # fmt: skip
        drop.add(id(dq))
    if replace:
        graph.nodes = [replace.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return graph
