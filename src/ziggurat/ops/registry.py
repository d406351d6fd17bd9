"""The versioned kernel registry.

A kernel is a module-level function named after its ONNX op. Inputs are positional (an omitted
optional input arrives as ``None``; variadic ops take ``*inputs``), attributes are keyword-only with
the spec's defaults, and it returns a tuple of outputs in ONNX order with the ONNX output dtypes::

    @kernel("LeakyRelu", since=6)
    def LeakyRelu(x, /, *, alpha=0.01):
        return (np.where(x >= 0, x, x * x.dtype.type(alpha)),)

Two keyword-only parameter names are reserved and filled in by the runtime, not from attributes:
``n_outputs`` (how many outputs the node declares) and ``opset`` (the model's version of the
kernel's domain). Graph attributes (If/Loop/Scan bodies) arrive as callables: ``body(*inputs)``
returns the subgraph's outputs as a list, with outer-scope values already bound.

The registry picks, for a model's opset, the kernel with the highest ``since`` not above it.

Opt-in capabilities for the execution plan (``runtime/plan.py``); a kernel without them is called
exactly as above:

- ``out``: a third reserved keyword-only parameter. A kernel that takes it may be passed a planned,
  preallocated C-contiguous array with the output's shape and dtype (or None); it writes its first
  output there and returns it as that output.
- ``Traits`` (``@kernel(..., traits=Traits(...))``, or ``_TRAITS`` below for ops whose several
  versions share them): what the plan may assume about the op's semantics, see ``Traits``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RESERVED = ("n_outputs", "opset", "out")


@dataclass(frozen=True)
class KernelDef:
    op_type: str
    domain: str
    since: int
    fn: Callable[..., tuple]
    attrs: dict[str, Any] = field(default_factory=dict)  # attribute -> default (REQUIRED if none)
    wants: tuple[str, ...] = ()  # reserved parameters the function takes
    own_traits: Traits | None = None  # from the decorator; else the op's entry in _TRAITS

    def kwargs(self, attrs: dict[str, Any], n_outputs: int, opset: int) -> dict[str, Any]:
        """Keyword arguments for a call: the node attributes this kernel takes (others are
        ignored: old exporters leave removed attributes behind) plus the reserved ones.
        Required attributes that are absent are simply missing; see ``missing``."""
        out = {k: v for k, v in attrs.items() if k in self.attrs}
        if "n_outputs" in self.wants:
            out["n_outputs"] = n_outputs
        if "opset" in self.wants:
            out["opset"] = opset
        return out

    @property
    def traits(self) -> Traits:
        """What the execution plan may assume about this kernel (nothing, by default)."""
        if self.own_traits is not None:
            return self.own_traits
        return _TRAITS.get((self.domain, self.op_type), _NO_TRAITS)

    def missing(self, attrs: dict[str, Any]) -> list[str]:
        """Required attributes not in ``attrs``."""
        return [k for k, d in self.attrs.items() if d is REQUIRED and k not in attrs]

    @property
    def module(self) -> str:
        """The kernel's module relative to ``ziggurat.ops`` (``"elementwise"``, ``"ml.trees"``)."""
        return self.fn.__module__.removeprefix("ziggurat.ops.")


@dataclass(frozen=True)
class Traits:
    """Semantics the execution plan may rely on, per op (all off by default).

    ``ufunc``: for plain numpy arrays of one floating dtype (float16/32/64) as inputs, the op is
    exactly ``numpy.<ufunc>(*inputs, *ufunc_args)`` — same values, dtype and warnings — so a plan
    specialised to such inputs may call the ufunc directly, with ``out=`` a planned buffer.
    ``inplace``: elementwise, so that output may overwrite an input of the output's shape and
    dtype whose last use is this node. ``reshape``: output 0 is input 0's elements in row-major
    order, in output 0's shape (Reshape, Flatten, Squeeze, Unsqueeze): a specialised plan calls
    ``x.reshape(shape)`` with the shape it recorded.
    """

    ufunc: str = ""
    ufunc_args: tuple = ()
    inplace: bool = False
    reshape: bool = False


_NO_TRAITS = Traits()
_BINARY = {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Div": "divide"}
# The ONNX ops whose every version shares these traits (the plan takes the ufunc path only for
# nodes without attributes: opset < 7 broadcast/axis forms keep their kernel). Div: for floats its kernel is np.divide
# (integer division truncates, but the ufunc path is only taken for float inputs). Relu:
# np.maximum(x, 0) keeps NaN and gives +0.0 for -0.0 like the kernel. Unary ops whose kernels
# silence floating-point warnings (Exp, Log, Sqrt, Sigmoid...) are left out: the ufunc would warn.
_TRAITS: dict[tuple[str, str], Traits] = {
    **{("", op): Traits(ufunc=name, inplace=True) for op, name in _BINARY.items()},
    ("", "Neg"): Traits(ufunc="negative", inplace=True),
    ("", "Abs"): Traits(ufunc="absolute", inplace=True),
    ("", "Tanh"): Traits(ufunc="tanh", inplace=True),
    ("", "Relu"): Traits(ufunc="maximum", ufunc_args=(0,), inplace=True),
    **{("", op): Traits(reshape=True) for op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze")},
}  # fmt: skip


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
_KERNELS: dict[tuple[str, str], list[KernelDef]] = {}


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def kernel(
    op_type: str, since: int = 1, domain: str = "", traits: Traits | None = None
) -> Callable:
    """Register the decorated function as the kernel of ``op_type`` from opset ``since`` on
    (``traits``: see ``Traits``; a kernel taking ``out`` opts in to planned output buffers)."""

    def register(fn: Callable) -> Callable:
        attrs: dict[str, Any] = {}
        wants: list[str] = []
        # Keyword-only parameters straight from the code object (inspect.signature would do the
        # same, but importing inspect costs ~8 ms of every cold start).
        code = fn.__code__
        first = code.co_argcount  # positional parameters (incl. positional-only) come first
        names = code.co_varnames[first : first + code.co_kwonlyargcount]
        defaults = fn.__kwdefaults__ or {}
        for name in names:
            if name in RESERVED:
                wants.append(name)
            else:
                attrs[name] = defaults.get(name, REQUIRED)
        kdef = KernelDef(op_type, _norm_domain(domain), since, fn, attrs, tuple(wants), traits)
        versions = _KERNELS.setdefault((kdef.domain, op_type), [])
        if any(k.since == since for k in versions):
            raise ValueError(
                f"kernel {domain or 'ai.onnx'}::{op_type} since {since} registered twice"
            )
        versions.append(kdef)
        versions.sort(key=lambda k: k.since)
        return fn

    return register


def lookup(op_type: str, domain: str, opset: int) -> KernelDef | None:
    """The kernel for ``op_type`` at ``opset`` (highest ``since`` <= opset), or None."""
    _load_for(op_type)
    best = _find(op_type, domain, opset)
    if best is None and not _all_loaded:
        _load_all()  # registered in a way the source index cannot see: import everything
        best = _find(op_type, domain, opset)
    return best


def _find(op_type: str, domain: str, opset: int) -> KernelDef | None:
    best = None
    for k in _KERNELS.get((_norm_domain(domain), op_type), ()):
        if k.since <= opset:
            best = k
    return best


def all_kernels() -> list[KernelDef]:
    """Every registered kernel version, sorted by domain, op and version."""
    _load_all()
    return sorted(
        (k for ks in _KERNELS.values() for k in ks), key=lambda k: (k.domain, k.op_type, k.since)
    )


_all_loaded = False


def _load_all() -> None:
    global _all_loaded
    if not _all_loaded:
        from ._index import MODULES

        for module in MODULES:  # importing a module runs its @kernel registrations
            importlib.import_module(f"{__package__}.{module}")
        _all_loaded = True


def _load_for(op_type: str) -> None:
    """Import just the modules that register ``op_type``.

    Importing all ~45 kernel modules costs ~60-80 ms of a server's cold start; a model needs a
    handful. ``_index.py`` (generated by scripts/gen_ops_index.py from the registrations, and
    checked by a test) says which; an op it does not list falls back to importing everything in
    ``lookup``.
    """
    if _all_loaded:
        return
    from ._index import INDEX

    for module in INDEX.get(op_type, ()):
        importlib.import_module(f"{__package__}.{module}")
