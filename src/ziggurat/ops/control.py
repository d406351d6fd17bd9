"""Control flow with subgraphs: If, Loop, Scan.

A GRAPH attribute arrives as a callable ``body(*inputs) -> list of outputs`` with the outer scope
already bound, so these kernels only drive iteration and stitch per-iteration values together.
Values may be tensors, sequences (lists) or empty optionals (None); only scan outputs must be
tensors, since they are stacked.

When a loop runs zero times its scan outputs have no element to take a shape or dtype from. If the
body callable carries ``output_types`` (a list of ``ziggurat.ir.Type``, one per body output), the
empty outputs get that dtype and known trailing dims; otherwise they are float32 of shape (0,).
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel


def _truth(value, what: str) -> bool:
    """A Python bool from a one-element tensor (If's cond, Loop's cond)."""
    if value is None or not hasattr(value, "size") or value.size != 1:
        shape = getattr(value, "shape", type(value).__name__)
        raise ExecutionError(f"{what} must be a one-element tensor, got {shape}")
    return bool(value.reshape(-1)[0])


def _empty_scan_output(body, index: int, leading: int = 0):
    """A zero-length scan output for body output ``index`` (see the module docstring)."""
    types = getattr(body, "output_types", None)
    dtype, tail = np.dtype(np.float32), ()
    if types is not None and index < len(types):
        t = types[index]
        if getattr(t, "dtype", None) is not None:
            dtype = t.dtype
        shape = getattr(t, "shape", None)
        if shape is not None and all(isinstance(d, (int, np.integer)) for d in shape):
            tail = tuple(int(d) for d in shape)
    lead = (leading,) if leading else ()
    return np.empty((*lead, 0, *tail), dtype=dtype)


def _stack(values: list, what: str, axis: int = 0):
    if any(not hasattr(v, "shape") for v in values):
        raise ExecutionError(
            f"{what}: scan outputs must be tensors to be stacked, got a sequence or optional"
        )
    try:
        return xp_of(*values).stack(values, axis=axis)
    except ValueError as exc:
        shapes = sorted({tuple(v.shape) for v in values})
        raise ExecutionError(
            f"{what}: scan output shapes differ between iterations ({shapes}): {exc}"
        ) from None


@kernel("If", since=1)
def If(cond, /, *, then_branch, else_branch):
    """Run ``then_branch`` if ``cond`` is true, else ``else_branch``; return that branch's outputs."""
    branch = then_branch if _truth(cond, "If: cond") else else_branch
    return tuple(branch())


@kernel("Loop", since=1)
def Loop(M=None, cond=None, /, *v_initial, body):
    """Run ``body`` while the trip count and the condition allow; return (*v_final, *scan_outputs).

    ``body(iteration_num, cond, *carried) -> [cond, *carried, *scan_elements]``; scan elements are
    stacked along a new axis 0. With neither M nor cond given, the body's cond output still ends
    the loop (the spec's literal reading would be an endless loop).
    """
    trip_count = None if M is None else int(M.reshape(-1)[0])
    keep_going = True if cond is None else _truth(cond, "Loop: cond")
    honor_cond = cond is not None or M is None
    n_carried = len(v_initial)
    carried = list(v_initial)
    scans: list[list] | None = None
    i = 0
    xp = xp_of(M, cond, *v_initial)  # iteration_num and cond live where the loop's data lives
    while (trip_count is None or i < trip_count) and keep_going:
        outs = body(xp.asarray(i, dtype=np.int64), xp.asarray(keep_going, dtype=np.bool_), *carried)
        if len(outs) < 1 + n_carried:
            raise ExecutionError(
                f"Loop: the body returned {len(outs)} outputs, expected at least 1 + {n_carried} "
                "(cond, then the loop-carried values)"
            )
        if honor_cond:
            keep_going = _truth(outs[0], "Loop: the body's cond output")
        carried = list(outs[1 : 1 + n_carried])
        if scans is None:
            scans = [[] for _ in outs[1 + n_carried :]]
        for acc, value in zip(scans, outs[1 + n_carried :]):
            acc.append(value)
        i += 1
    if scans is None:  # zero iterations: the body never said how many scan outputs it has
        n_scan = len(getattr(body, "output_types", ()) or ()) - 1 - n_carried
        stacked = [_empty_scan_output(body, 1 + n_carried + k) for k in range(max(n_scan, 0))]
    else:
        stacked = [_stack(acc, "Loop") for acc in scans]
    return (*carried, *stacked)


def _check_axis(axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        raise ExecutionError(
            f"Scan: {what} {axis} is out of range for rank {rank}; expected [{-rank}, {rank - 1}]"
        )
    return axis % rank


def _scan_loop(
    body, states: list, scan_inputs: list, in_axes: list[int], in_reverse: list[bool], length: int
):
    """Run the body ``length`` times; return the final states and the per-iteration scan elements."""
    n_state = len(states)
    collected: list[list] | None = None
    for t in range(length):
        elems = [
            # The trailing Ellipsis keeps a 0-d array (plain indexing of a 1-D array gives a scalar).
            x[(slice(None),) * ax + ((length - 1 - t) if rev else t, Ellipsis)]
            for x, ax, rev in zip(scan_inputs, in_axes, in_reverse)
        ]
        outs = body(*states, *elems)
        if len(outs) < n_state:
            raise ExecutionError(
                f"Scan: the body returned {len(outs)} outputs, expected at least {n_state} states"
            )
        states = list(outs[:n_state])
        if collected is None:
            collected = [[] for _ in outs[n_state:]]
        for acc, value in zip(collected, outs[n_state:]):
            acc.append(value)
    return states, collected


@kernel("Scan", since=9)
def Scan(
    *inputs,
    body,
    num_scan_inputs,
    scan_input_axes=None,
    scan_input_directions=None,
    scan_output_axes=None,
    scan_output_directions=None,
):
    """Iterate ``body`` over slices of the scan inputs; return (*final_states, *scan_outputs)."""
    n_state = len(inputs) - num_scan_inputs
    if n_state < 0:
        raise ExecutionError(
            f"Scan: num_scan_inputs={num_scan_inputs} but only {len(inputs)} inputs were given"
        )
    states, scan_inputs = list(inputs[:n_state]), list(inputs[n_state:])
    in_axes = [
        _check_axis(a, x.ndim, "scan_input_axes")
        for a, x in zip(scan_input_axes or [0] * num_scan_inputs, scan_inputs)
    ]
    in_reverse = [bool(d) for d in (scan_input_directions or [0] * num_scan_inputs)]
    lengths = {x.shape[ax] for x, ax in zip(scan_inputs, in_axes)}
    if len(lengths) > 1:
        raise ExecutionError(
            f"Scan: scan inputs have different lengths along their scan axes: {sorted(lengths)}"
        )
    length = lengths.pop() if lengths else 0
    states, collected = _scan_loop(body, states, scan_inputs, in_axes, in_reverse, length)
    if collected is None:
        n_out = len(getattr(body, "output_types", ()) or ()) - n_state
        return (*states, *[_empty_scan_output(body, n_state + k) for k in range(max(n_out, 0))])
    outputs = []
    for k, acc in enumerate(collected):
        if scan_output_directions and scan_output_directions[k]:
            acc = acc[::-1]  # prepending each element == appending then reversing
        axis = scan_output_axes[k] if scan_output_axes else 0
        outputs.append(_stack(acc, "Scan", _check_axis(axis, acc[0].ndim + 1, "scan_output_axes")))
    return (*states, *outputs)


@kernel("Scan", since=8)
def Scan_8(sequence_lens, /, *inputs, body, num_scan_inputs, directions=None):
    """Opset-8 Scan: axis 0 of every input is a batch axis, the scan axis is 1.

    Each batch item is scanned separately for ``sequence_lens[b]`` steps (default: the full length);
    scan outputs shorter than the maximum length are zero-padded.
    """
    n_state = len(inputs) - num_scan_inputs
    if n_state < 0:
        raise ExecutionError(
            f"Scan: num_scan_inputs={num_scan_inputs} but only {len(inputs)} inputs were given"
        )
    states, scan_inputs = list(inputs[:n_state]), list(inputs[n_state:])
    if not scan_inputs:
        raise ExecutionError(
            "Scan (opset 8): at least one scan input is needed to know the batch size"
        )
    batch, max_len = scan_inputs[0].shape[0], scan_inputs[0].shape[1]
    if sequence_lens is None:
        seq_lens = [max_len] * batch
    else:
        host = sequence_lens.get() if hasattr(sequence_lens, "get") else sequence_lens
        seq_lens = [int(n) for n in np.asarray(host).reshape(-1)]
    reverse = [bool(d) for d in (directions or [0] * num_scan_inputs)]
    final: list[list] = []
    outs_per_batch: list[list] = []
    for b in range(batch):
        n = seq_lens[b]
        if not 0 <= n <= max_len:
            raise ExecutionError(f"Scan: sequence_lens[{b}] = {n} is outside [0, {max_len}]")
        b_states, collected = _scan_loop(
            body,
            [s[b, ...] for s in states],
            [x[b, :n] for x in scan_inputs],
            [0] * num_scan_inputs,
            reverse,
            n,
        )
        final.append(b_states)
        outs_per_batch.append(collected or [])
    out_states = [_stack([f[k] for f in final], "Scan") for k in range(n_state)]
    n_out = max((len(c) for c in outs_per_batch), default=0)
    scan_outputs = []
    for k in range(n_out):
        sample = next(c[k][0] for c in outs_per_batch if c)
        xp = xp_of(sample)
        out = xp.zeros((batch, max_len, *sample.shape), dtype=sample.dtype)
        for b, c in enumerate(outs_per_batch):
            if c:
                out[b, : len(c[k])] = _stack(c[k], "Scan")
        scan_outputs.append(out)
    return (*out_states, *scan_outputs)
