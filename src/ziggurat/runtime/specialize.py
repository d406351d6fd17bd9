"""Per input-shape signature: shape folding, direct numpy calls and the memory plan.

A signature is the shapes and dtypes of a run's inputs (all numpy arrays). The first runs of a
signature go through the generic code with a recorder after each step (``Recording``): it keeps
each value's shape and dtype, which outputs share memory with what their step read (views), and
the values ``Plan.static_values`` says depend on the input shapes only. Two recordings that
agree make a ``SignaturePlan``:

- *folding*: steps whose outputs are all signature-static values are dropped; readers get the
  recorded values as constants (bert-tiny's Shape/Gather/Unsqueeze/Concat chains);
- *direct calls*: an op with a ``ufunc`` trait on float arrays of one dtype calls the numpy ufunc,
  a ``reshape`` op calls ``x.reshape(recorded shape)``;
- *memory plan*: outputs written by ufuncs or by kernels taking ``out`` get offsets in one arena,
  assigned by liveness (best fit; a block is free again after the last reader of every value that
  may alias it), in place over a dying input of the same shape and dtype for elementwise ops.
  Values that reach a graph output are never planned: they belong to the caller.
"""

from __future__ import annotations

import numpy as np

from .direct import direct_call, split_call
from .plan import Plan, Step

ALIGN = 64  # arena offsets are cache-line aligned
FOLD_MAX_BYTES = 1 << 22  # larger signature-static values are computed, not kept per signature
# Folded values kept per signature, at most (in step order): constant-only subgraphs that the
# optimizer left (e.g. weight transposes) must not be copied per signature without bound.
FOLD_BUDGET_BYTES = 1 << 24


def signature_of(inputs: list) -> tuple | None:
    """The specialisation key of a run's inputs, or None when one is not a numpy array."""
    sig = []
    for x in inputs:
        if type(x) is not np.ndarray:
            return None
        sig.append((x.shape, x.dtype))
    return tuple(sig)


class Recording:
    """What one generic run of a plan showed: see the module docstring."""

    def __init__(self, plan: Plan, value_static: set[str]):
        self.plan = plan
        self.value_static = value_static
        self.meta: dict[str, tuple[tuple[int, ...], np.dtype] | None] = {}
        self.fresh: set[str] = set()  # outputs sharing no memory with their step's reads
        self.aliases: list[tuple[str, str]] = []  # (output, read) that may share memory
        self.values: dict[str, np.ndarray] = {}
        self.captured_bytes = 0

    def start(self, inputs: list) -> None:
        for name, x in zip(self.plan.inputs, inputs):
            self.meta[name] = _meta(x)
        for name, x in self.plan.constants.items():
            self.meta[name] = _meta(x)

    def __call__(self, idx: int, outs: tuple, reads: tuple) -> None:
        """Called by recording code after step ``idx`` with its outputs and what it read."""
        step = self.plan.steps[idx]
        for name, value in zip(step.outputs, outs):
            self.meta[name] = _meta(value)
            if name in self.value_static and self.meta[name] is not None:
                size = value.nbytes
                if size <= FOLD_MAX_BYTES and self.captured_bytes + size <= FOLD_BUDGET_BYTES:
                    self.captured_bytes += size  # a numpy scalar (np.generic) is immutable:
                    self.values[name] = value.copy() if type(value) is np.ndarray else value
            shared = [
                r
                for r, rv in zip(step.reads, reads)
                if step.graphs or type(value) is not np.ndarray or _may_alias(value, rv)
            ]
            self.aliases.extend((name, r) for r in shared)
            if not shared:
                self.fresh.add(name)

    def agrees(self, other: Recording) -> bool:
        """Whether two runs of one signature saw the same shapes and static values."""
        if self.meta != other.meta or self.values.keys() != other.values.keys():
            return False
        return all(_same(v, other.values[k]) for k, v in self.values.items())


def _meta(x) -> tuple[tuple[int, ...], np.dtype] | None:
    return (x.shape, x.dtype) if isinstance(x, (np.ndarray, np.generic)) else None


def _may_alias(a: np.ndarray, b) -> bool:
    """Whether ``a`` may share memory with the read ``b``; a container read (a sequence, a map)
    may hold any array, e.g. SequenceAt returns one of its elements as is."""
    if isinstance(b, np.ndarray):
        return np.may_share_memory(a, b)
    return not (b is None or isinstance(b, (np.generic, int, float, bool, str, bytes)))


def _same(a, b) -> bool:
    if type(a) is not type(b) or a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


class SignaturePlan:
    """The specialised plan of one signature: folded constants, kept steps, direct calls and the
    arena layout. ``buffers`` lists ``(offset, shape, dtype)`` per planned buffer; ``out`` maps a
    planned value to its buffer's index; ``inplace`` a value to the input whose buffer it reuses."""

    def __init__(self, plan: Plan, signature: tuple, rec: Recording, shape_static: set[str]):
        self.plan = plan
        self.signature = signature
        self.meta = rec.meta
        self.folded: dict[str, np.ndarray] = {}
        self.kept: list[Step] = []
        # step -> ("ufunc", name, args) | ("reshape", shape) | ("expr", template, names) |
        # ("split", templates): see direct.py for the last two
        self.fast: dict[int, tuple] = {}
        self.out: dict[str, int] = {}
        self.inplace: dict[str, str] = {}
        self.buffers: list[tuple[int, tuple[int, ...], np.dtype]] = []
        self.arena_bytes = 0
        self._fold(rec)
        self._kept_index = {s.index for s in self.kept}
        self.last_use = self._last_use()
        self._direct_calls(shape_static)
        self._memory(rec, shape_static)
        self.naive_bytes, self.refcount_peak, self.planned_peak = self._peaks(rec)

    # -- folding and direct calls ----------------------------------------------------------------
    def _fold(self, rec: Recording) -> None:
        for step in self.plan.steps:
            outs = step.outputs
            if outs and all(o in rec.values for o in outs):
                for o in outs:
                    self.folded[o] = rec.values[o]
            else:
                self.kept.append(step)
        needed = {n for s in self.kept for n in s.reads} | set(self.plan.outputs)
        self.folded = {k: v for k, v in self.folded.items() if k in needed}

    def _last_use(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for step in self.kept:
            for name in step.reads:
                last[name] = step.index
        return last

    def _direct_calls(self, shape_static: set[str]) -> None:
        meta = self.meta
        for step in self.kept:
            traits = step.kdef.traits
            node = step.node
            if len(step.outputs) != 1 or len(node.outputs) != 1 or step.graphs:
                continue
            out = meta.get(step.outputs[0])
            ins = [meta.get(n) if n else None for n in node.inputs]
            if out is None or any(m is None for m in ins) or not ins:
                continue
            if traits.ufunc and not step.kwargs and out[1].kind == "f" and len(out[0]):
                if all(m[1] == out[1] for m in ins):  # type: ignore[index]
                    self.fast[step.index] = ("ufunc", traits.ufunc, traits.ufunc_args)
            elif traits.reshape and step.outputs[0] in shape_static:  # the shape is baked in
                self.fast[step.index] = ("reshape", out[0])
            elif not node.domain:
                fast = direct_call(step, ins, out, shape_static)
                if fast is not None:
                    self.fast[step.index] = fast
        for step in self.kept:  # Split: several outputs, each a view of its input's slice
            if not step.node.domain and step.node.op_type == "Split" and not step.graphs:
                fast = split_call(step, meta, shape_static)
                if fast is not None:
                    self.fast[step.index] = fast

    # -- memory plan -----------------------------------------------------------------------------
    def _memory(self, rec: Recording, shape_static: set[str]) -> None:
        root = _classes(rec.aliases)
        members: dict[str, list[str]] = {}
        for name in rec.meta:
            members.setdefault(root(name), []).append(name)
        outputs = set(self.plan.outputs)
        end: dict[str, int] = {}  # alias class -> last step reading any member
        for r, names in members.items():
            if any(n in outputs for n in names):
                end[r] = 1 << 60  # reaches the caller: never planned, never reused
            else:
                last = max(self.last_use.get(n, self.plan.producer.get(n, -1)) for n in names)
                end[r] = last
        arena = _Arena()
        blocks: dict[str, tuple[int, int]] = {}  # alias class -> its block
        expiring: dict[int, list[str]] = {}  # step -> classes whose block frees after it
        for step in self.kept:
            for name in self._plannable(step, rec, shape_static, end, root):
                shape, dtype = self.meta[name]  # type: ignore[misc]
                nbytes = int(np.prod(shape)) * dtype.itemsize
                victim = self._inplace_victim(step, name, end, root, blocks)
                if victim is not None:
                    block = blocks.pop(root(victim))
                    self.inplace[name] = victim
                    offset = block[0]
                    for lst in expiring.values():
                        if root(victim) in lst:
                            lst.remove(root(victim))
                else:
                    offset = arena.take(nbytes)
                    block = (offset, nbytes)
                blocks[root(name)] = block
                expiring.setdefault(end[root(name)], []).append(root(name))
                self.out[name] = len(self.buffers)
                self.buffers.append((offset, shape, dtype))
            for r in expiring.pop(step.index, ()):
                arena.give(*blocks.pop(r))
        self.arena_bytes = arena.high

    def _plannable(self, step: Step, rec: Recording, shape_static, end, root) -> list[str]:
        fast = self.fast.get(step.index)
        if fast is not None and fast[0] != "ufunc":  # a view or numpy's own new array
            return []
        if fast is None and "out" not in step.kdef.wants:
            return []
        name = step.outputs[0] if step.outputs else None
        if name is None or name != step.node.outputs[0]:
            return []
        m = self.meta.get(name)
        if m is None or not m[0] or name not in shape_static or name not in rec.fresh:
            return []
        if end[root(name)] >= 1 << 60 or int(np.prod(m[0])) == 0:
            return []
        return [name]

    def _inplace_victim(self, step: Step, name: str, end, root, blocks) -> str | None:
        if not step.kdef.traits.inplace or self.fast.get(step.index, ("",))[0] != "ufunc":
            return None
        for r in step.node.inputs:
            if r in self.out and root(r) in blocks and end[root(r)] == step.index:
                if self.meta[r] == self.meta[name]:
                    return r
        return None

    def _peaks(self, rec: Recording) -> tuple[int, int, int]:
        """(naive, refcount, planned) peak bytes of the values the steps produce: every value
        in its own buffer; freed after its last reader (the generic code's ``del``); and the
        arena plus the kernel-allocated values alive at once."""
        sizes = {}
        for step in self.plan.steps:
            for o in step.outputs:
                m = self.meta.get(o)
                if m is not None and o in rec.fresh:
                    sizes[o] = int(np.prod(m[0])) * m[1].itemsize
        naive = sum(sizes.values())
        refcount = _live_peak(self.plan.steps, sizes, self.plan.last_use, self.plan.outputs)
        unplanned = {k: v for k, v in sizes.items() if k not in self.out and k not in self.folded}
        live = _live_peak(self.kept, unplanned, self.last_use, self.plan.outputs)
        return naive, refcount, self.arena_bytes + live

    # -- text ------------------------------------------------------------------------------------
    def describe_signature(self) -> str:
        return ", ".join(
            f"{n} {dt}{list(shape)}" for n, (shape, dt) in zip(self.plan.inputs, self.signature)
        )

    def buffer_text(self, step: Step) -> str:
        """How a step's output is produced under this signature (for ``Plan.text``)."""
        if step.index not in self._kept_index:
            return "folded"
        parts = []
        fast = self.fast.get(step.index)
        if fast is not None:
            parts.append(_FAST_TEXT[fast[0]](fast))
        for o in step.outputs:
            if o in self.inplace:
                parts.append(f"in place of %{self.inplace[o]}")
            elif o in self.out:
                off, shape, dt = self.buffers[self.out[o]]
                parts.append(f"out=arena[{off}:{off + int(np.prod(shape)) * dt.itemsize}]")
        return ", ".join(parts) or "kernel allocates"

    def summary(self) -> str:
        mb = 1 / (1 << 20)
        return (
            f"  # {len(self.kept)} of {len(self.plan.steps)} steps run ({len(self.folded)} "
            f"folded constants), {len(self.fast)} direct calls, {len(self.out)} planned outputs "
            f"({len(self.inplace)} in place)\n"
            f"  # peak bytes: naive {self.naive_bytes} ({self.naive_bytes * mb:.2f} MiB), "
            f"refcount {self.refcount_peak} ({self.refcount_peak * mb:.2f} MiB), planned "
            f"{self.planned_peak} ({self.planned_peak * mb:.2f} MiB; arena {self.arena_bytes})"
        )

    def new_buffers(self) -> tuple:
        """A fresh set of the planned buffers: views into one new arena (one per concurrent run)."""
        arena = np.empty(max(self.arena_bytes, 1), np.uint8)
        return tuple(
            arena[off : off + int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape)
            for off, shape, dt in self.buffers
        )


_FAST_TEXT = {
    "ufunc": lambda f: f"np.{f[1]}",
    "reshape": lambda f: "x.reshape",
    "expr": lambda f: f[1].format("x", "y", "z"),
    "split": lambda f: "views " + ", ".join(t.format("x") for t in f[1]),
}


def _classes(pairs: list[tuple[str, str]]):
    """Union-find over aliasing pairs; returns ``root(name)``."""
    parent: dict[str, str] = {}

    def root(n: str) -> str:
        while parent.get(n, n) != n:
            parent[n] = parent.get(parent[n], parent[n])
            n = parent[n]
        return n

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
    return root


def _live_peak(steps: list[Step], sizes: dict[str, int], last_use: dict, outputs: list) -> int:
    keep = set(outputs)
    live = peak = 0
    frees: dict[int, int] = {}
    for step in steps:
        for o in step.outputs:
            if o in sizes:
                live += sizes[o]
                if o not in keep:
                    end = last_use.get(o, step.index)
                    frees[end] = frees.get(end, 0) + sizes[o]
        peak = max(peak, live)
        live -= frees.pop(step.index, 0)
    return peak


class _Arena:
    """Best-fit offsets in one block; freed ranges coalesce. ``high``: the bytes it needs."""

    def __init__(self):
        self.top = self.high = 0
        self.free: list[tuple[int, int]] = []  # (offset, size), sorted by offset

    def take(self, nbytes: int) -> int:
        size = -(-nbytes // ALIGN) * ALIGN
        best = None
        for i, (_, sz) in enumerate(self.free):
            if sz >= size and (best is None or sz < self.free[best][1]):
                best = i
        if best is None:
            off, self.top = self.top, self.top + size
            self.high = max(self.high, self.top)
            return off
        off, sz = self.free[best]
        if sz == size:
            del self.free[best]
        else:
            self.free[best] = (off + size, sz - size)
        return off

    def give(self, offset: int, nbytes: int) -> None:
        size = -(-nbytes // ALIGN) * ALIGN
        merged: list[tuple[int, int]] = []
        for off, sz in sorted([*self.free, (offset, size)]):
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1] = (merged[-1][0], merged[-1][1] + sz)
            else:
                merged.append((off, sz))
        if merged and merged[-1][0] + merged[-1][1] == self.top:  # the top block: lower the top
            self.top = merged.pop()[0]
        self.free = merged
