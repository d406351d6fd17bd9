"""Sequence* and Optional* ops.

A sequence is a Python list of arrays and an empty optional is None. Kernels never mutate an input
list (the same list may feed other nodes): they build a new one.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel


def _int(v, what: str) -> int:
    """A Python int from a 0-d or one-element tensor (``position``, ``split``...)."""
    host = v.get() if hasattr(v, "get") else v  # CuPy -> host
    a = np.asarray(host)
    if a.size != 1:
        raise ExecutionError(f"{what} must be a scalar, got a tensor of shape {a.shape}")
    return int(a.reshape(-1)[0])


def _position(seq: list, position, *, insert: bool, op: str) -> int:
    """Resolve a possibly negative ``position`` into a list index, checking its range."""
    n = len(seq)
    p = _int(position, f"{op} position")
    hi = n if insert else n - 1
    if not -n <= p <= hi:
        raise ExecutionError(
            f"{op}: position {p} is out of range for a sequence of length {n}; expected [{-n}, {hi}]"
        )
    return p + n if p < 0 else p


@kernel("SequenceConstruct", since=11)
def SequenceConstruct(*inputs):
    """A sequence holding ``inputs`` in order."""
    return (list(inputs),)


@kernel("SequenceEmpty", since=11)
def SequenceEmpty(*, dtype=1):
    """An empty sequence (``dtype`` only types it; a Python list needs no element type)."""
    return ([],)


@kernel("SequenceLength", since=11)
def SequenceLength(input_sequence, /):
    """The number of tensors in the sequence, as an int64 scalar."""
    return (np.array(len(input_sequence), dtype=np.int64),)


@kernel("SequenceAt", since=11)
def SequenceAt(input_sequence, position, /):
    """The tensor at ``position`` (negative counts from the back)."""
    return (input_sequence[_position(input_sequence, position, insert=False, op="SequenceAt")],)


@kernel("SequenceInsert", since=11)
def SequenceInsert(input_sequence, tensor, position=None, /):
    """A new sequence with ``tensor`` inserted before ``position`` (default: appended)."""
    out = list(input_sequence)
    if position is None:
        out.append(tensor)
    else:
        out.insert(_position(out, position, insert=True, op="SequenceInsert"), tensor)
    return (out,)


@kernel("SequenceErase", since=11)
def SequenceErase(input_sequence, position=None, /):
    """A new sequence without the tensor at ``position`` (default: the last one)."""
    out = list(input_sequence)
    if not out:
        raise ExecutionError("SequenceErase: cannot erase from an empty sequence")
    idx = (
        len(out) - 1
        if position is None
        else _position(out, position, insert=False, op="SequenceErase")
    )
    del out[idx]
    return (out,)


@kernel("SplitToSequence", since=11)
def SplitToSequence(input, split=None, /, *, axis=0, keepdims=1):
    """Split ``input`` along ``axis`` into a sequence.

    No ``split``: pieces of size 1 (squeezed when ``keepdims`` is 0). A scalar ``split``: pieces of
    that size, the last possibly shorter. A 1-D ``split``: pieces of those sizes.
    """
    rank = input.ndim
    if not -rank <= axis < rank:
        raise ExecutionError(f"SplitToSequence: axis {axis} is out of range for rank {rank}")
    axis %= rank
    dim = input.shape[axis]
    lead = (slice(None),) * axis
    if split is None:
        if keepdims:
            return ([input[(*lead, slice(i, i + 1))] for i in range(dim)],)
        return (
            [input[(*lead, i, Ellipsis)] for i in range(dim)],
        )  # Ellipsis: 0-d arrays, not scalars
    host = np.asarray(split.get() if hasattr(split, "get") else split).astype(np.int64)
    if host.ndim == 0:
        step = int(host)
        if step <= 0:
            raise ExecutionError(f"SplitToSequence: a scalar split must be positive, got {step}")
        sizes = [step] * (dim // step) + ([dim % step] if dim % step else [])
    else:
        sizes = [int(s) for s in host]
        if sum(sizes) != dim or any(s < 0 for s in sizes):
            raise ExecutionError(
                f"SplitToSequence: split sizes {sizes} must be non-negative and sum to the axis length {dim}"
            )
    bounds = np.cumsum([0, *sizes]).tolist()
    return ([input[(*lead, slice(lo, hi))] for lo, hi in zip(bounds[:-1], bounds[1:])],)


@kernel("ConcatFromSequence", since=11)
def ConcatFromSequence(input_sequence, /, *, axis, new_axis=0):
    """Concatenate the sequence's tensors along ``axis`` (or stack them on a new axis if ``new_axis``)."""
    if not input_sequence:
        raise ExecutionError(
            "ConcatFromSequence: the input sequence is empty; there is nothing to concatenate"
        )
    xp = xp_of(*input_sequence)
    rank = input_sequence[0].ndim + (1 if new_axis else 0)
    if not -rank <= axis < rank:
        raise ExecutionError(
            f"ConcatFromSequence: axis {axis} is out of range; expected [{-rank}, {rank - 1}] (new_axis={new_axis})"
        )
    if new_axis:
        return (xp.stack(input_sequence, axis=axis % rank),)
    return (xp.concatenate(input_sequence, axis=axis % rank),)


@kernel("SequenceMap", since=17)
def SequenceMap(input_sequence, /, *additional_inputs, body, n_outputs=1):
    """Apply ``body`` to each element; sequence inputs are zipped, tensor inputs passed every time.

    Returns one sequence per body output.
    """
    n = len(input_sequence)
    for k, extra in enumerate(additional_inputs):
        if isinstance(extra, list) and len(extra) != n:
            raise ExecutionError(
                f"SequenceMap: additional input {k + 1} is a sequence of length {len(extra)}, "
                f"but the input sequence has length {n}; sequences must have equal lengths"
            )
    outputs: list[list] = [[] for _ in range(n_outputs)]
    for i in range(n):
        args = [input_sequence[i]] + [e[i] if isinstance(e, list) else e for e in additional_inputs]
        for seq, value in zip(outputs, body(*args)):
            seq.append(value)
    return tuple(outputs)


@kernel("Optional", since=15)
def Optional(input=None, /, *, type=None):
    """An optional holding ``input``, or an empty optional (None) when the input is omitted."""
    return (input,)


@kernel("OptionalGetElement", since=15)
def OptionalGetElement(input, /):
    """The optional's value (a plain tensor or sequence passes through, as opset 18 allows)."""
    if input is None:
        raise ExecutionError(
            "OptionalGetElement: the optional is empty; check OptionalHasElement first"
        )
    return (input,)


@kernel("OptionalHasElement", since=15)
def OptionalHasElement(input=None, /):
    """True (bool scalar) unless the input is omitted or an empty optional."""
    sample = input[0] if isinstance(input, list) and input else input
    xp = xp_of(sample)
    return (xp.asarray(input is not None, dtype=np.bool_),)
