"""The execution plan: what a compiled graph runs, made explicit and printable.

A ``Plan`` is built once per graph: each node's resolved kernel (op, opset, ``KernelDef``, bound
attributes), the value names, and each value's lifetime (the step defining it, the last step
reading it). ``runtime/emitter.py`` renders a plan as Python (one chain, or several for the
parallel scheduler); ``runtime/specialize.py`` derives, per input-shape signature, a
``SignaturePlan``: shape subgraphs folded to constants, direct numpy calls, and a memory plan.

The plan names no device beyond its ``device`` field: a GPU backend places the same plan on its
device. Step indices are the graph's node order (topological), and are what ``ExecutionError``,
the profiler and ``ZIGGURAT_DEBUG`` traces refer to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ir
from ..errors import GraphError, UnsupportedOpError
from ..ops import registry

# Ops whose output shapes depend on the *values* of some inputs (by input position): their
# outputs have signature-static shapes only when those inputs are signature-static values.
SHAPE_FROM_VALUES: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4),
    "ConstantOfShape": (0,), "Range": (0, 1, 2), "Unsqueeze": (1,), "Squeeze": (1,),
    "Pad": (1, 2, 3), "Resize": (1, 2, 3), "Upsample": (1,), "TopK": (1,), "Split": (1,),
    "OneHot": (1,), "CenterCropPad": (1,), "Col2Im": (1, 2), "MaxUnpool": (2,), "DFT": (1, 2),
    "STFT": (1, 2, 3), "BlackmanWindow": (0,), "HannWindow": (0,), "HammingWindow": (0,),
    "MelWeightMatrix": (0, 1, 2), "AffineGrid": (1,),
    **{f"Reduce{r}": (1,) for r in (
        "Sum", "Mean", "Max", "Min", "Prod", "L1", "L2", "LogSum", "LogSumExp", "SumSquare",
    )},
}  # fmt: skip
# Ops whose output shapes depend on input data, or that are not tensors: never signature-static.
DATA_SHAPED = frozenset(
    "NonZero Unique NonMaxSuppression Compress StringSplit StringNormalizer ImageDecoder "
    "SequenceAt SequenceConstruct SequenceEmpty SequenceInsert SequenceErase SequenceLength "
    "ConcatFromSequence SplitToSequence SequenceMap Optional OptionalGetElement "
    "OptionalHasElement ZipMap".split()
)
# Ops whose results differ between runs on the same inputs: never folded to constants.
RANDOM = frozenset(
    "RandomNormal RandomUniform RandomNormalLike RandomUniformLike Multinomial Bernoulli "
    "Dropout".split()
)
# Domains a model may use without importing them, at the version onnxruntime assumes: its
# transformers optimizer writes com.microsoft nodes without adding the opset import.
_IMPLICIT_OPSETS = {"com.microsoft": 1}


@dataclass
class Step:
    """One node with its kernel bound: ``kdef.fn(*inputs, **kwargs, <graph attrs>)``."""

    index: int
    node: ir.Node
    kdef: registry.KernelDef
    opset: int
    kwargs: dict[str, Any]  # bound attributes and reserved parameters, graph attributes excluded
    graphs: dict[str, Any]  # attribute -> ir.Graph or list of them (If/Loop/Scan bodies)
    reads: list[str]  # distinct names read: inputs, then the subgraphs' free names

    @property
    def op(self) -> str:
        node = self.node
        return f"{node.domain}::{node.op_type}" if node.domain else node.op_type

    @property
    def outputs(self) -> list[str]:
        return [o for o in self.node.outputs if o]


@dataclass
class Plan:
    """A graph's steps, values and lifetimes; see the module docstring."""

    graph: ir.Graph
    opsets: dict[str, int]
    model_name: str = "model"
    device: str = "cpu"
    outer: frozenset[str] = frozenset()  # names a subgraph plan reads from its enclosing scope
    steps: list[Step] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)  # initializers no input shadows
    producer: dict[str, int] = field(default_factory=dict)  # value -> defining step
    last_use: dict[str, int] = field(default_factory=dict)  # value -> last reading step

    @classmethod
    def build(
        cls,
        graph: ir.Graph,
        opsets: dict[str, int],
        *,
        model_name: str = "model",
        outer: frozenset[str] | set[str] = frozenset(),
        device: str = "cpu",
    ) -> Plan:
        """Resolve and bind every node's kernel; raises UnsupportedOpError listing all nodes
        without one, GraphError for a missing required attribute or an undefined name."""
        plan = cls(graph, dict(opsets), model_name, device, frozenset(outer))
        plan.inputs = [v.name for v in graph.inputs]
        plan.outputs = [v.name for v in graph.outputs]
        shadowed = set(plan.inputs)
        plan.constants = {n: v for n, v in graph.initializers.items() if n not in shadowed}
        plan.steps = plan._bind(plan._resolve())
        plan._lifetimes()
        return plan

    def _resolve(self) -> list[tuple[ir.Node, registry.KernelDef]]:
        missing: list[tuple[str, str, str, int]] = []
        resolved = []
        for node in self.graph.nodes:
            opset = self.opsets.get(node.domain, _IMPLICIT_OPSETS.get(node.domain, 0))
            kdef = registry.lookup(node.op_type, node.domain, opset) if opset else None
            if kdef is None:
                missing.append((node.label, node.domain or "ai.onnx", node.op_type, opset))
            resolved.append((node, kdef))
        if missing:
            lines = "\n".join(
                f"  node '{n}': {d}::{op} (opset {v or 'not imported'})" for n, d, op, v in missing
            )
            raise UnsupportedOpError(
                f"model '{self.model_name}' uses {len(missing)} node(s) Ziggurat has no kernel "
                f"for:\n{lines}\nRun `ziggurat inspect MODEL` for the full list; re-export the "
                "model with supported ops or a supported opset.",
                missing,
            )
        return resolved  # type: ignore[return-value]

    def _bind(self, resolved: list[tuple[ir.Node, registry.KernelDef]]) -> list[Step]:
        steps = []
        for idx, (node, kdef) in enumerate(resolved):
            opset = self.opsets.get(node.domain, _IMPLICIT_OPSETS.get(node.domain, 0))
            missing = kdef.missing(node.attrs)
            if missing:
                raise GraphError(
                    f"model '{self.model_name}': node '{node.label}' ({node.op_type}, opset "
                    f"{opset}) lacks required attribute '{missing[0]}'"
                )
            kwargs = kdef.kwargs(node.attrs, len(node.outputs), opset)
            graphs = {}
            for key, value in list(kwargs.items()):
                subs = value if isinstance(value, list) else [value]
                if any(isinstance(s, ir.Graph) for s in subs):
                    graphs[key] = kwargs.pop(key)
            reads = [n for n in node.inputs if n]
            for sub in node.subgraphs():
                reads.extend(sorted(sub.free_names()))
            steps.append(Step(idx, node, kdef, opset, kwargs, graphs, list(dict.fromkeys(reads))))
        return steps

    def _lifetimes(self) -> None:
        defined = set(self.inputs) | set(self.constants) | set(self.outer)
        for step in self.steps:
            for name in step.reads:
                if name not in defined:
                    node = step.node
                    raise GraphError(
                        f"model '{self.model_name}': node '{node.label}' ({node.op_type}) reads "
                        f"'{name}', which no input, initializer or earlier node defines"
                    )
                self.last_use[name] = step.index
            for o in step.outputs:
                self.producer[o] = step.index
                defined.add(o)
        for name in self.outputs:
            if name not in defined:
                raise GraphError(
                    f"model '{self.model_name}': graph output '{name}' is not defined by any "
                    "input, initializer or node"
                )

    def lifetime(self, name: str) -> tuple[int, int]:
        """(defining step, last reading step) of a value: -1 for inputs and constants; the
        step count for a graph output (it outlives the run); its own step if nobody reads it."""
        first = self.producer.get(name, -1)
        if name in self.outputs:
            return first, len(self.steps)
        return first, self.last_use.get(name, first)

    # -- signature-independent analysis ----------------------------------------------------------
    def static_values(self) -> tuple[set[str], set[str]]:
        """``(value_static, shape_static)``: the values whose *contents*, and those whose *shapes*,
        are determined by the input shapes and dtypes alone (all inputs tensors).

        Shape/Size of a shape-static value is value-static; a deterministic node without
        subgraphs whose inputs are all value-static is value-static (the shape arithmetic of
        exported transformers). A node's outputs are shape-static when its inputs are, except
        that the inputs ``SHAPE_FROM_VALUES`` names must be value-static, and ``DATA_SHAPED``
        ops never are. The specialiser checks this on two recorded runs before trusting it.
        """
        value = set(self.constants)
        shape = set(self.inputs) | set(self.constants)
        for step in self.steps:
            node = step.node
            ins = [n for n in node.inputs if n]
            if step.graphs or node.op_type in DATA_SHAPED:
                continue
            if node.op_type in ("Shape", "Size") and not node.domain and ins[0] in shape:
                value.update(step.outputs)
            elif node.op_type not in RANDOM and all(n in value for n in ins):
                value.update(step.outputs)
            by_value = SHAPE_FROM_VALUES.get(node.op_type, ()) if not node.domain else ()
            ok = all(
                (n in value) if i in by_value else (n in shape)
                for i, n in enumerate(node.inputs)
                if n
            )
            if ok or all(o in value for o in step.outputs):
                shape.update(step.outputs)
        return value, shape

    def specializable(self) -> bool:
        """Whether a signature plan could differ from the generic code: some step folds
        (its outputs are all value-static), calls a ufunc, reshapes or runs another direct
        numpy expression (runtime/direct.py), or takes ``out``.
        (The tiny MLP has none: its runs skip the signature lookup.)"""
        from .direct import DIRECT_OPS  # (direct.py imports this module)

        value, _ = self.static_values()
        for step in self.steps:
            traits = step.kdef.traits
            if traits.ufunc or traits.reshape or "out" in step.kdef.wants:
                return True
            if not step.node.domain and step.node.op_type in DIRECT_OPS:
                return True
            if step.outputs and all(o in value for o in step.outputs):
                return True
        return False

    # -- text form -------------------------------------------------------------------------------
    def __str__(self) -> str:
        return self.text()

    def text(self, spec: Any = None) -> str:
        """torch.fx-style listing, one line per step; with a ``SignaturePlan``, each output's
        shape, dtype and buffer (folded / ufunc / planned offset / in-place / kernel-allocated)."""
        head = f"plan {self.model_name!r} on {self.device}: {len(self.steps)} steps"
        lines = [head if spec is None else f"{head}, signature {spec.describe_signature()}"]
        for name in self.inputs:
            lines.append(
                f"  %{name} = input{_meta(spec, name)}  # live -1..{self.lifetime(name)[1]}"
            )
        for step in self.steps:
            lines.append("  " + self._step_line(step, spec))
        lines.append(f"  return {', '.join('%' + n for n in self.outputs)}")
        if spec is not None:
            lines.append(spec.summary())
        return "\n".join(lines)

    def _step_line(self, step: Step, spec: Any) -> str:
        node = step.node
        outs = ", ".join(f"%{o}" if o else "_" for o in node.outputs)
        args = ", ".join(f"%{i}" if i else "_" for i in node.inputs)
        attrs = {**step.kwargs, **{k: "<graph>" for k in step.graphs}}
        shown = ", ".join(f"{k}={_short(v)}" for k, v in sorted(attrs.items()))
        k = step.kdef
        where = f"{k.module}.{k.fn.__name__}@{k.since}"
        first = step.outputs[0] if step.outputs else None
        life = f"live {step.index}..{self.lifetime(first)[1]}" if first else "no outputs"
        text = f"{outs} = {step.op}[opset {step.opset}]({args}{'; ' + shown if shown else ''})"
        buf = spec.buffer_text(step) if spec is not None else ""
        meta = _meta(spec, first) if first else ""
        return f"{text}{meta}  # {where}, {life}{', ' + buf if buf else ''}"


def _meta(spec: Any, name: str) -> str:
    if spec is None:
        return ""
    m = spec.meta.get(name)
    return f" : {m[1]}{list(m[0])}" if m is not None else ""


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"tensor({v.dtype},{list(v.shape)})" if v.size > 8 else repr(v.tolist())
    if isinstance(v, list) and len(v) > 8:
        return f"[{', '.join(map(str, v[:8]))}, ...]"
    return repr(v)
