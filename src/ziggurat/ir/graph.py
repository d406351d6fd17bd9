"""The IR: Model, Graph, Node, ValueInfo and Type.

Values are wired by name, as in ONNX: a node lists the names it reads and writes, and "" marks an
omitted optional input or output. Names are unique within a graph and its subgraphs may read names
of enclosing graphs (outer scope), which ``free_names`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import dtypes

Dim = int | str | None  # fixed size, symbolic name, or unknown


@dataclass(frozen=True)
class Type:
    """An ONNX type: tensor (elem_type, shape), sequence/optional of ``elem``, map, sparse tensor."""

    kind: str = "tensor"  # tensor | sequence | optional | map | sparse_tensor
    elem_type: int = dtypes.UNDEFINED  # tensor/sparse element type, or map key type
    shape: tuple[Dim, ...] | None = None  # None: rank unknown
    elem: Type | None = None  # element type of sequence/optional, value type of map

    def __str__(self) -> str:
        if self.kind in ("tensor", "sparse_tensor"):
            prefix = "tensor" if self.kind == "tensor" else "sparse_tensor"
            return f"{prefix}({dtypes.name(self.elem_type)})"
        if self.kind == "map":
            return f"map({dtypes.name(self.elem_type)},{self.elem})"
        return f"{self.kind}({self.elem})"

    @property
    def dtype(self) -> np.dtype | None:
        """numpy dtype for a tensor type, else None."""
        if self.kind in ("tensor", "sparse_tensor") and dtypes.is_known(self.elem_type):
            return dtypes.to_numpy(self.elem_type)
        return None


@dataclass
class SparseTensor:
    """A COO sparse tensor: ``values`` (NNZ,), ``indices`` (NNZ,) linear or (NNZ, rank), ``dims``."""

    values: np.ndarray
    indices: np.ndarray
    dims: tuple[int, ...]

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.dims, dtype=self.values.dtype)
        idx = np.asarray(self.indices, dtype=np.int64)
        if idx.ndim == 2:
            dense[tuple(idx.T)] = self.values
        else:
            dense.reshape(-1)[idx] = self.values
        return dense


@dataclass
class ValueInfo:
    """A named, typed value: a graph input, output or annotated intermediate."""

    name: str
    type: Type | None = None
    doc: str = ""

    def __str__(self) -> str:
        if self.type is None:
            return f"%{self.name}"
        shape = ""
        if self.type.shape is not None:
            shape = "[" + ",".join("?" if d is None else str(d) for d in self.type.shape) + "]"
        return f"%{self.name}: {self.type}{shape}"


@dataclass(eq=False)
class Node:
    """One operator application. ``attrs`` holds Python values (int, float, str, ndarray, Graph, lists)."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""  # "" is ai.onnx

    def subgraphs(self) -> list[Graph]:
        out: list[Graph] = []
        for v in self.attrs.values():
            if isinstance(v, Graph):
                out.append(v)
            elif isinstance(v, list):
                out.extend(g for g in v if isinstance(g, Graph))
        return out

    @property
    def label(self) -> str:
        """How errors name this node: its name, else its first output."""
        return self.name or (self.outputs[0] if self.outputs else "<unnamed>")

    def __str__(self) -> str:
        outs = ", ".join(f"%{o}" if o else "_" for o in self.outputs)
        ins = ", ".join(f"%{i}" if i else "_" for i in self.inputs)
        op = f"{self.domain}::{self.op_type}" if self.domain else self.op_type
        attrs = ""
        if self.attrs:
            attrs = "<" + ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.attrs.items())) + ">"
        return f"{outs} = {op}{attrs}({ins})"


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"tensor({v.dtype},{list(v.shape)})"
    if isinstance(v, Graph):
        return f"graph({v.name})"
    if isinstance(v, list) and len(v) > 8:
        return f"[{', '.join(map(str, v[:8]))}, ...]"
    return repr(v)


@dataclass(eq=False)
class Graph:
    """A computation graph. ``initializers`` are constant tensors by name."""

    nodes: list[Node] = field(default_factory=list)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    initializers: dict[str, Any] = field(default_factory=dict)
    value_info: dict[str, ValueInfo] = field(default_factory=dict)
    name: str = "graph"
    doc: str = ""

    def defined_names(self) -> set[str]:
        """Names this graph defines itself (inputs, initializers, node outputs)."""
        names = {v.name for v in self.inputs} | set(self.initializers)
        for n in self.nodes:
            names.update(o for o in n.outputs if o)
        return names

    def free_names(self) -> set[str]:
        """Names read here (or in nested subgraphs) but defined in an enclosing scope."""
        defined = self.defined_names()
        used: set[str] = set()
        for n in self.nodes:
            used.update(i for i in n.inputs if i)
            for g in n.subgraphs():
                used |= g.free_names()
        used.update(o.name for o in self.outputs)
        return used - defined

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        """Name -> nodes reading it directly or from inside one of their subgraphs."""
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            names = {i for i in n.inputs if i}
            for g in n.subgraphs():
                names |= g.free_names()
            for name in names:
                out.setdefault(name, []).append(n)
        return out

    def toposort(self) -> None:
        """Order nodes so each comes after the producers of what it reads (stable)."""
        from .lint import toposort

        self.nodes = toposort(self)

    def lint(self, outer: set[str] | None = None) -> None:
        """Raise GraphError if the graph is malformed. See ``ir.lint``."""
        from .lint import lint

        lint(self, outer or set())

    def __str__(self) -> str:
        from .text import graph_text

        return graph_text(self)


@dataclass(eq=False)
class Model:
    """A loaded model: the main graph plus what ONNX keeps around it."""

    graph: Graph
    opsets: dict[str, int] = field(default_factory=dict)  # domain ("" = ai.onnx) -> version
    ir_version: int = 0
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    path: str | None = None  # file it came from, if any
    # Main-graph inputs that also have an initializer, in a model of IR version >= 4: onnxruntime's
    # "overridable initializers" (the initializer is the default; a feed may replace it). They are
    # not in ``graph.inputs``: the graph treats them as constants.
    initializer_inputs: list[ValueInfo] = field(default_factory=list)

    def opset(self, domain: str = "") -> int:
        """The opset version imported for ``domain`` ("" is ai.onnx); 0 if not imported."""
        return self.opsets.get("" if domain == "ai.onnx" else domain, 0)

    def __str__(self) -> str:
        ops = ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in sorted(self.opsets.items()))
        return f"model(ir={self.ir_version}, opsets=[{ops}])\n{self.graph}"
