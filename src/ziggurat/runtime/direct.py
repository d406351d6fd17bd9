"""Direct numpy expressions for a few ONNX ops in a signature's plan (see specialize.py).

A kernel call costs a partial-function call, its own checks and dispatch (``xp_of``, attribute
normalisation, ``as_array``): 2-10 us per call where the numpy work itself is a view or a pass
over a few KiB. The small transformers' per-run plans are mostly such steps (bert-tiny: the
heads' Transposes, the Q/K/V Split, the attention mask's Cast/Gather/And/Expand/Where). Once a
signature's recorded shapes and dtypes are known, these ops are exactly one numpy expression:

- ``Transpose``: ``x.transpose(perm)`` (a view, as the kernel's);
- ``Split``: one basic slice per output (views, as the kernel's), bounds from the recorded shapes;
- ``Cast`` between numpy's own bool/int/float types where numpy cannot warn (not float ->
  int/bool, a narrowing float cast or to float16: the kernel silences NaN/overflow warnings
  there): ``x.astype(dtype)``, a new array as the kernel's;
- ``Expand`` to a signature-static shape: ``np.broadcast_to(x, shape).copy()`` (``x.copy()``
  when x has that shape already);
- ``Where`` on a bool condition and two values of the output's dtype: ``np.where(c, x, y)``;
- ``Gather`` with integer indices of rank >= 1: ``np.take(data, indices, axis=axis)``;
- ``And``/``Or``/``Xor``/``Not`` on bool arrays: the numpy logical ufunc.

Each returns what the kernel returns for those inputs (same values, dtype, shape, view or new
array); an error (e.g. an index out of range) still names the node: the executor maps the
generated line to its step. ``ZIGGURAT_PLAN=0`` turns signature plans, and so these, off.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .plan import Step

Meta = tuple[tuple[int, ...], np.dtype]
DIRECT_OPS = frozenset("Transpose Split Cast Expand Where Gather And Or Xor Not".split())
_LOGICAL = {"And": "logical_and", "Or": "logical_or", "Xor": "logical_xor", "Not": "logical_not"}


def _builtin(dt: np.dtype, kinds: str) -> bool:
    return dt.kind in kinds and dt.isbuiltin == 1  # ml_dtypes' types (bfloat16, int4...) are not


def direct_call(step: Step, ins: list, out: Meta, shape_static: set[str]) -> tuple | None:
    """``("expr", template, names)`` for a one-output op of the default domain: ``template``
    formats the argument identifiers ({0}, {1}...) into the expression; ``names`` are the
    namespace entries it uses. None where the op or these recorded inputs are not covered."""
    op = step.node.op_type
    if any(m is None for m in ins) or not out[0]:
        return None  # a rank-0 result could come back as a numpy scalar: the kernel's job
    dts = [m[1] for m in ins]
    if op == "Transpose" and len(ins) == 1:
        perm = step.kwargs.get("perm")
        perm = tuple(range(len(ins[0][0]) - 1, -1, -1)) if perm is None else tuple(perm)
        return ("expr", f"{{0}}.transpose({perm!r})", {})
    if op == "Cast" and len(ins) == 1 and not _cast_changes_semantics(dts[0], out[1]):
        name = f"__dt_{out[1].name}"
        return ("expr", f"{{0}}.astype({name})", {name: out[1]})
    if op == "Expand" and len(ins) == 2 and step.outputs[0] in shape_static:
        if ins[0][0] == out[0]:  # nothing to broadcast: a copy (broadcast_to costs ~3 us more)
            return ("expr", "{0}.copy()", {})
        return ("expr", f"__np_broadcast_to({{0}}, {out[0]!r}).copy()", _np("broadcast_to"))
    if op == "Where" and len(ins) == 3 and dts[0] == np.bool_ and dts[1] == dts[2] == out[1]:
        return ("expr", "__np_where({0}, {1}, {2})", _np("where"))
    if op == "Gather" and len(ins) == 2 and _builtin(dts[1], "iu") and ins[0][0]:
        axis = _axis(step, len(ins[0][0]))
        if axis is None:  # out of range: the kernel's error
            return None
        return ("expr", f"__np_take({{0}}, {{1}}, axis={axis})", _np("take"))
    if op in _LOGICAL and all(dt == np.bool_ for dt in dts) and out[1] == np.bool_:
        fn = _LOGICAL[op]
        args = ", ".join(f"{{{i}}}" for i in range(len(ins)))
        return ("expr", f"__np_{fn}({args})", _np(fn))
    return None


def _axis(step: Step, rank: int) -> int | None:
    axis = int(step.kwargs.get("axis", 0))
    return axis % rank if -rank <= axis < rank else None


def _cast_changes_semantics(src: np.dtype, dst: np.dtype) -> bool:
    """Whether ``x.astype(dst)`` could differ from the Cast kernel, which silences numpy's
    warnings: float -> int/bool (NaN, overflow), a narrowing float cast and anything -> float16
    (overflow to inf) keep the kernel."""
    if not (_builtin(src, "biuf") and _builtin(dst, "biuf")) or dst == np.float16:
        return True
    if src.kind == "f":
        return dst.kind != "f" or dst.itemsize < src.itemsize
    return False


def _np(fn: str) -> dict[str, Any]:
    return {f"__np_{fn}": getattr(np, fn)}


def split_call(step: Step, meta: dict[str, Any], shape_static: set[str]) -> tuple | None:
    """``("split", [template per node output or None])`` for a Split whose recorded output
    shapes are signature-static: each output the basic slice of its input along the axis."""
    node = step.node
    src = meta.get(node.inputs[0]) if node.inputs else None
    if src is None or not src[0] or not step.outputs:
        return None
    if any(o not in shape_static or meta.get(o) is None for o in step.outputs):
        return None
    axis = _axis(step, len(src[0]))
    if axis is None:
        return None
    templates: list[str | None] = []
    lo = 0
    for o in node.outputs:
        if not o:  # an omitted output: nothing to bind (a Split has none in practice)
            return None
        size = meta[o][0][axis]
        index = ", ".join([":"] * axis + [f"{lo}:{lo + size}"])
        templates.append(f"{{0}}[{index}]")
        lo += size
    if lo != src[0][axis]:
        return None
    return ("split", templates)
