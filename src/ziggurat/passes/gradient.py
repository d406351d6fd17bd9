"""Expand ``ai.onnx.preview.training::Gradient`` nodes into reverse-mode backward subgraphs.

A Gradient node names tensors of its graph: ``xs`` (differentiate with respect to these), ``zs``
(other independent inputs) and ``y``; its inputs are the values of ``xs`` then ``zs`` at which the
gradient is taken. Its outputs are dy/dx for each x, with y seeded by ones (the gradient of
``sum(y)``). This pass replaces each such node with ordinary nodes:

1. the forward region: the nodes ``y`` depends on, walking back no further than ``xs``/``zs``;
2. a recomputation of the part of that region that reads a substituted input (when an input of the
   Gradient node is not the tensor its ``xs``/``zs`` entry names); otherwise the forward values are
   reused as they are;
3. the backward nodes, made by one vector-Jacobian rule per forward op, in reverse order, summing
   the contributions of several paths and undoing broadcasting with ``ziggurat::ReduceToShape``.

Only tensors reached from ``xs`` through differentiable inputs get gradients, so integer side
paths (``Shape`` feeding ``Reshape``, comparisons, casts to integers) are not differentiated. A
gradient that must flow through an op without a rule raises ``UnsupportedOpError``. Helper kernels
of the ``ziggurat`` domain live in ``ops/autodiff.py``. Run before constant folding, at every
optimization level: the runtime has no kernel for Gradient itself.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import ir
from ..errors import GraphError, UnsupportedOpError
from ..ir import dtypes
from ._match import FUSED_DOMAIN

TRAINING_DOMAIN = "ai.onnx.preview.training"
ZIG = FUSED_DOMAIN  # helper kernels: ops/autodiff.py

# Ops whose outputs carry no gradient (integer/boolean results, constants, piecewise-constant
# functions whose slope is zero almost everywhere).
NON_DIFFERENTIABLE = frozenset(
    "Shape Size ConstantOfShape EyeLike Equal Less LessOrEqual Greater GreaterOrEqual And Or Xor "
    "Not IsNaN IsInf Sign Floor Ceil Round ArgMax ArgMin NonZero RandomNormalLike RandomUniformLike "
    "Bernoulli Multinomial".split()
)
_ZIG_NON_DIFFERENTIABLE = frozenset({"OnesLike", "ZerosLike"})


def run(graph: ir.Graph, opsets: dict[str, int]) -> ir.Graph:
    """Replace every Gradient node of ``graph`` (and of its subgraphs) by its backward subgraph,
    in place; registers the ``ziggurat`` domain in ``opsets`` when it adds helper nodes."""
    if _has_gradient(graph):
        taken = _all_names(graph)
        _run(graph, opsets, taken)
        opsets.setdefault(ZIG, 1)
    return graph


def _is_gradient(node: ir.Node) -> bool:
    return node.op_type == "Gradient" and node.domain == TRAINING_DOMAIN


def _has_gradient(graph: ir.Graph) -> bool:
    return any(_is_gradient(n) or any(_has_gradient(g) for g in n.subgraphs()) for n in graph.nodes)


def _all_names(graph: ir.Graph) -> set[str]:
    names = graph.defined_names() | {o.name for o in graph.outputs}
    for n in graph.nodes:
        names.update(n.inputs)
        names.add(n.name)
        for g in n.subgraphs():
            names |= _all_names(g)
    return names


def _run(graph: ir.Graph, opsets: dict[str, int], taken: set[str]) -> None:
    for n in graph.nodes:
        for g in n.subgraphs():
            if _has_gradient(g):
                _run(g, opsets, taken)
    opset = opsets.get("", 0) or opsets.get("ai.onnx", 0)
    # One at a time, in dependency order, so a Gradient of another Gradient's output
    # (higher-order derivatives) sees the first one already expanded into ordinary ops.
    while True:
        graph.toposort()
        node = next((n for n in graph.nodes if _is_gradient(n)), None)
        if node is None:
            return
        new_nodes = _Expansion(graph, node, opset, taken).build()
        i = next(k for k, n in enumerate(graph.nodes) if n is node)
        graph.nodes[i : i + 1] = new_nodes


def _deps(node: ir.Node) -> list[str]:
    """Every name a node reads, including outer-scope names of its subgraphs."""
    names = [i for i in node.inputs if i]
    for g in node.subgraphs():
        names.extend(sorted(g.free_names()))
    return names


def _is_float_type(elem_type: int) -> bool:
    name = dtypes.name(elem_type)
    return name == "double" or "float" in name


class _Expansion:
    """Builds the nodes replacing one Gradient node."""

    def __init__(self, graph: ir.Graph, node: ir.Node, opset: int, taken: set[str]):
        self.graph, self.node, self.opset, self.taken = graph, node, opset, taken
        self.nodes: list[ir.Node] = []
        self.prefix = f"{node.label}/grad/"
        self.counter = 0
        self.fwd_map: dict[str, str] = {}
        attrs = node.attrs
        self.xs = list(attrs.get("xs") or [])
        self.zs = list(attrs.get("zs") or [])
        self.y = attrs.get("y")
        self._check()

    def _check(self) -> None:
        where = f"Gradient node '{self.node.label}'"
        if not self.xs or not isinstance(self.y, str) or not self.y:
            raise GraphError(
                f"{where} needs attributes 'xs' (a list of tensor names) and 'y' (a name)"
            )
        if len(self.node.inputs) != len(self.xs) + len(self.zs):
            raise GraphError(
                f"{where} has {len(self.node.inputs)} inputs, expected len(xs) + len(zs) = "
                f"{len(self.xs) + len(self.zs)}: one value for each name in 'xs' then 'zs'"
            )
        if len(self.node.outputs) > len(self.xs):
            raise GraphError(
                f"{where} has {len(self.node.outputs)} outputs but only {len(self.xs)} names in 'xs'"
            )
        if "" in self.node.inputs:
            raise GraphError(f"{where}: every input is required (the value of each x and z)")
        if self.y in self.node.outputs:
            raise GraphError(f"{where}: 'y' ({self.y}) is one of the node's own outputs")

    # -- naming and emitting ------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        while True:
            self.counter += 1
            name = f"{self.prefix}{hint}_{self.counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def emit(self, op_type: str, *inputs: str, domain: str = "", **attrs) -> str:
        out = self.fresh(op_type)
        self.nodes.append(ir.Node(op_type, list(inputs), [out], attrs, name=out, domain=domain))
        return out

    def fwd(self, name: str) -> str:
        """Where the forward value of ``name`` lives at the point the gradient is taken."""
        return self.fwd_map.get(name, name)

    # -- the expansion -------------------------------------------------------------------------
    def build(self) -> list[ir.Node]:
        region = self._region()
        self._recompute(region)
        diff = self._reachable(region)
        grads: dict[str, list[str]] = {}
        if self.y in diff:
            grads[self.y] = [self.emit("OnesLike", self.fwd(self.y), domain=ZIG)]
        for n in reversed(region):
            dys = [self._total(grads, o) if o in grads else None for o in n.outputs]
            if all(d is None for d in dys):
                continue
            for i, g in self._apply_rule(n, dys, diff).items():
                grads.setdefault(n.inputs[i], []).append(g)
        for x, out in zip(self.xs, self.node.outputs):
            if not out:
                continue
            g = (
                self._total(grads, x)
                if x in grads
                else self.emit("ZerosLike", self.fwd(x), domain=ZIG)
            )
            self.nodes.append(ir.Node("Identity", [g], [out], name=f"{self.prefix}{out}"))
        return self.nodes

    def _region(self) -> list[ir.Node]:
        """The nodes ``y`` depends on, stopping at ``xs`` and ``zs``, in graph (topological) order."""
        producers = {o: n for n in self.graph.nodes if n is not self.node for o in n.outputs if o}
        known = self.graph.defined_names() - set(self.node.outputs)
        if self.y not in known and self.y not in self.graph.free_names():
            raise GraphError(
                f"Gradient node '{self.node.label}': 'y' names '{self.y}', which no input, "
                "initializer or node output of the graph defines"
            )
        leaves = set(self.xs) | set(self.zs)
        picked: set[int] = set()
        stack = [self.y]
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or name in leaves or name not in producers:
                continue
            seen.add(name)
            n = producers[name]
            if id(n) not in picked:
                picked.add(id(n))
                stack.extend(_deps(n))
        return [n for n in self.graph.nodes if id(n) in picked]

    def _recompute(self, region: list[ir.Node]) -> None:
        """Clone the part of the region that reads a substituted x/z value (step 2)."""
        for name, value in zip(self.xs + self.zs, self.node.inputs):
            if value != name:
                self.fwd_map[name] = value
        if not self.fwd_map:
            return
        for n in region:
            if not any(d in self.fwd_map for d in _deps(n)):
                continue
            if n.subgraphs():
                raise UnsupportedOpError(
                    f"Gradient node '{self.node.label}' takes the gradient at values other than "
                    f"the tensors 'xs'/'zs' name, which needs recomputing node '{n.label}' "
                    f"({n.op_type}); recomputing nodes with subgraphs is not supported. Pass the "
                    "named tensors themselves as the Gradient node's inputs."
                )
            outs = [self.fresh(f"recompute_{o}") if o else "" for o in n.outputs]
            ins = [self.fwd(i) if i else "" for i in n.inputs]
            self.nodes.append(
                ir.Node(n.op_type, ins, outs, dict(n.attrs), name=outs[0], domain=n.domain)
            )
            self.fwd_map.update((o, new) for o, new in zip(n.outputs, outs) if o)

    def _reachable(self, region: list[ir.Node]) -> set[str]:
        """Tensors reached from ``xs`` through differentiable inputs."""
        diff = set(self.xs)
        for n in region:
            idx = _diff_inputs(n)
            names = _deps(n) if idx is None else [n.inputs[i] for i in idx if i < len(n.inputs)]
            if any(name in diff for name in names):
                diff.update(o for o in n.outputs if o)
        return diff

    def _total(self, grads: dict[str, list[str]], name: str) -> str:
        """The sum of the gradient contributions to ``name`` (one Add per extra path)."""
        parts = grads[name]
        total = parts[0]
        for p in parts[1:]:
            total = self.emit("Add", total, p)
        grads[name] = [total]
        return total

    def _apply_rule(self, n: ir.Node, dys: list[str | None], diff: set[str]) -> dict[int, str]:
        entry = _RULES.get((n.domain if n.domain != "ai.onnx" else "", n.op_type))
        if entry is None:
            op = f"{n.domain}::{n.op_type}" if n.domain else n.op_type
            raise UnsupportedOpError(
                f"Gradient node '{self.node.label}': gradient through {op} (node '{n.label}') is "
                f"not supported. Supported ops: {', '.join(sorted(o for d, o in _RULES if not d))}.",
                [(n.label, n.domain, n.op_type, self.opset)],
            )
        rule, _ = entry
        if dys[0] is None:
            return {}  # every rule differentiates the first output only
        ctx = _Ctx(self, n, diff)
        return {i: g for i, g in rule(ctx, dys[0]).items() if g is not None}


class _Ctx:
    """What a vector-Jacobian rule sees of one forward node."""

    def __init__(self, exp: _Expansion, node: ir.Node, diff: set[str]):
        self.exp, self.node, self.diff, self.opset = exp, node, diff, exp.opset

    def x(self, i: int) -> str:
        return self.exp.fwd(self.node.inputs[i])

    def y(self) -> str:
        return self.exp.fwd(self.node.outputs[0])

    def needs(self, i: int) -> bool:
        return i < len(self.node.inputs) and self.node.inputs[i] in self.diff

    def attr(self, name: str, default):
        return self.node.attrs.get(name, default)

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        return self.exp.emit(op_type, *inputs, **attrs)

    def zig(self, op_type: str, *inputs: str, **attrs) -> str:
        return self.exp.emit(op_type, *inputs, domain=ZIG, **attrs)

    def unbroadcast(self, g: str, i: int) -> str:
        return self.zig("ReduceToShape", g, self.x(i))


Rule = Callable[[_Ctx, str], dict[int, str]]
_RULES: dict[tuple[str, str], tuple[Rule, tuple[int, ...] | None]] = {}


def _rule(*ops: str, inputs: tuple[int, ...] | None = None, domain: str = "") -> Callable:
    """Register a vector-Jacobian rule; ``inputs``: the differentiable inputs (None: all)."""

    def register(fn: Rule) -> Rule:
        for op in ops:
            _RULES[(domain, op)] = (fn, inputs)
        return fn

    return register


def _diff_inputs(n: ir.Node) -> tuple[int, ...] | None:
    """Indices of ``n``'s differentiable inputs; None when unknown (then every input counts)."""
    domain = "" if n.domain == "ai.onnx" else n.domain
    if (domain == "" and n.op_type in NON_DIFFERENTIABLE) or (
        domain == ZIG and n.op_type in _ZIG_NON_DIFFERENTIABLE
    ):
        return ()
    if domain == "" and n.op_type == "Cast" and not _is_float_type(int(n.attrs.get("to", 0))):
        return ()  # a cast to an integer type cuts the gradient
    entry = _RULES.get((domain, n.op_type))
    return None if entry is None else entry[1]


# -- vector-Jacobian rules: (ctx, dy) -> {input index: gradient name} -----------------------------


@_rule("Identity", "Dropout", inputs=(0,))
def _identity(c: _Ctx, dy: str) -> dict[int, str]:
    if c.node.op_type == "Dropout" and len(c.node.inputs) > 2 and c.node.inputs[2]:
        raise UnsupportedOpError(
            f"gradient through Dropout (node '{c.node.label}') with a training_mode input is not "
            "supported; only inference-mode Dropout (the identity) is"
        )
    return {0: dy}


@_rule("Add", "Sum")
def _add(c: _Ctx, dy: str) -> dict[int, str]:
    return {i: c.unbroadcast(dy, i) for i in range(len(c.node.inputs)) if c.needs(i)}


@_rule("Expand", inputs=(0,))
def _expand(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.unbroadcast(dy, 0)}


@_rule("Sub")
def _sub(c: _Ctx, dy: str) -> dict[int, str]:
    out = {0: c.unbroadcast(dy, 0)} if c.needs(0) else {}
    if c.needs(1):
        out[1] = c.unbroadcast(c.op("Neg", dy), 1)
    return out


@_rule("Mul")
def _mul(c: _Ctx, dy: str) -> dict[int, str]:
    return {i: c.unbroadcast(c.op("Mul", dy, c.x(1 - i)), i) for i in (0, 1) if c.needs(i)}


@_rule("Div")
def _div(c: _Ctx, dy: str) -> dict[int, str]:
    q = c.op("Div", dy, c.x(1))
    out = {0: c.unbroadcast(q, 0)} if c.needs(0) else {}
    if c.needs(1):  # d(a/b)/db = -(a/b)/b
        out[1] = c.unbroadcast(c.op("Neg", c.op("Mul", q, c.y())), 1)
    return out


@_rule("Neg")
def _neg(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.op("Neg", dy)}


@_rule("Abs")
def _abs(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.op("Mul", dy, c.op("Sign", c.x(0)))}


@_rule("Exp")
def _exp(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.op("Mul", dy, c.y())}


@_rule("Log")
def _log(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.op("Div", dy, c.x(0))}


@_rule("Sqrt")
def _sqrt(c: _Ctx, dy: str) -> dict[int, str]:
    y = c.y()
    return {0: c.op("Div", dy, c.op("Add", y, y))}


@_rule("Pow")
def _pow(c: _Ctx, dy: str) -> dict[int, str]:
    args = (dy, c.x(0), c.x(1), c.y())
    return {i: c.unbroadcast(c.zig("PowGrad", *args, wrt=i), i) for i in (0, 1) if c.needs(i)}


@_rule("Relu")
def _relu(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.zig("ReluGrad", dy, c.x(0))}


@_rule("LeakyRelu")
def _leaky_relu(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.zig("LeakyReluGrad", dy, c.x(0), alpha=float(c.attr("alpha", 0.01)))}


@_rule("Sigmoid")
def _sigmoid(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.zig("SigmoidGrad", dy, c.y())}


@_rule("Tanh")
def _tanh(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.zig("TanhGrad", dy, c.y())}


@_rule("Softmax", "LogSoftmax")
def _softmax(c: _Ctx, dy: str) -> dict[int, str]:
    legacy = int(c.opset < 13)  # before opset 13 the input was flattened to 2-D at axis
    axis = int(c.attr("axis", 1 if legacy else -1))
    return {0: c.zig(f"{c.node.op_type}Grad", dy, c.y(), axis=axis, legacy=legacy)}


@_rule("MatMul")
def _matmul(c: _Ctx, dy: str) -> dict[int, str]:
    return {i: c.zig("MatMulGrad", dy, c.x(0), c.x(1), wrt=i) for i in (0, 1) if c.needs(i)}


@_rule("Gemm")
def _gemm(c: _Ctx, dy: str) -> dict[int, str]:
    """Y = alpha * A' B' + beta * C with A' = A or Aᵀ (transA), B' likewise; A and B are 2-D."""
    ta, tb = int(c.attr("transA", 0)), int(c.attr("transB", 0))
    alpha, beta = float(c.attr("alpha", 1.0)), float(c.attr("beta", 1.0))

    def t(name: str) -> str:
        return c.op("Transpose", name, perm=[1, 0])

    def scaled(g: str, s: float) -> str:
        return g if s == 1.0 else c.zig("Scale", g, alpha=s)

    a, b, out = c.x(0), c.x(1), {}
    if c.needs(0):  # dA' = dY B'ᵀ; when transA, dA = dA'ᵀ = B' dYᵀ
        if ta:
            out[0] = scaled(c.op("MatMul", t(b) if tb else b, t(dy)), alpha)
        else:
            out[0] = scaled(c.op("MatMul", dy, b if tb else t(b)), alpha)
    if c.needs(1):  # dB' = A'ᵀ dY; when transB, dB = dB'ᵀ = dYᵀ A'
        if tb:
            out[1] = scaled(c.op("MatMul", t(dy), t(a) if ta else a), alpha)
        else:
            out[1] = scaled(c.op("MatMul", a if ta else t(a), dy), alpha)
    if c.needs(2):
        out[2] = c.unbroadcast(scaled(dy, beta), 2)
    return out


@_rule("ReduceSum", "ReduceMean", inputs=(0,))
def _reduce(c: _Ctx, dy: str) -> dict[int, str]:
    attrs = {
        k: c.node.attrs[k]
        for k in ("axes", "keepdims", "noop_with_empty_axes")
        if k in c.node.attrs
    }
    axes = [c.x(1)] if len(c.node.inputs) > 1 and c.node.inputs[1] else []
    mean = int(c.node.op_type == "ReduceMean")
    return {0: c.zig("ReduceGrad", dy, c.x(0), *axes, mean=mean, **attrs)}


@_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze", inputs=(0,))
def _reshape(c: _Ctx, dy: str) -> dict[int, str]:
    # allowzero: a 0 in x's shape is a real 0, not "copy this dimension" (opset 14+)
    attrs = {"allowzero": 1} if c.opset >= 14 else {}
    return {0: c.op("Reshape", dy, c.op("Shape", c.x(0)), **attrs)}


@_rule("Transpose")
def _transpose(c: _Ctx, dy: str) -> dict[int, str]:
    perm = c.attr("perm", None)
    if perm is None:  # reversing the axes is its own inverse
        return {0: c.op("Transpose", dy)}
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[int(p)] = i
    return {0: c.op("Transpose", dy, perm=inverse)}


@_rule("Cast", "CastLike", inputs=(0,))
def _cast(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.zig("CastLike", dy, c.x(0))}


@_rule("Where", inputs=(1, 2))
def _where(c: _Ctx, dy: str) -> dict[int, str]:
    zeros = c.zig("ZerosLike", dy)
    out = {}
    if c.needs(1):
        out[1] = c.unbroadcast(c.op("Where", c.x(0), dy, zeros), 1)
    if c.needs(2):
        out[2] = c.unbroadcast(c.op("Where", c.x(0), zeros, dy), 2)
    return out


# Rules for the helper ops themselves, so a Gradient of a gradient (second order) can go through
# the backward graph of a first one where it only used these.
@_rule("ReduceToShape", inputs=(0,), domain=ZIG)
def _reduce_to_shape(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.op("Expand", dy, c.op("Shape", c.x(0)))}


@_rule("Scale", inputs=(0,), domain=ZIG)
def _scale(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.zig("Scale", dy, alpha=float(c.attr("alpha", 1.0)))}


@_rule("CastLike", inputs=(0,), domain=ZIG)
def _zig_cast(c: _Ctx, dy: str) -> dict[int, str]:
    return {0: c.zig("CastLike", dy, c.x(0))}
