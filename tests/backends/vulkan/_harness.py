"""Running one device kernel against the CPU kernel of the same op (``ziggurat.ops`` registry),
with tolerances derived from the computation."""

from __future__ import annotations

import numpy as np

from ziggurat.backends.kernels import HOST_INPUTS
from ziggurat.ops import registry

EPS = float(np.finfo(np.float32).eps)  # 2^-23


def cpu(op, inputs, attrs=None, domain="", opset=17):
    kdef = registry.lookup(op, domain, opset)
    assert kdef is not None, f"no CPU kernel {domain}::{op} at opset {opset}"
    kwargs = dict(attrs or {})
    if "n_outputs" in kdef.wants:
        kwargs.setdefault("n_outputs", 1)
    if "opset" in kdef.wants:
        kwargs["opset"] = opset
    return [np.asarray(y) for y in kdef.fn(*inputs, **kwargs)]


def dev(be, op, inputs, attrs=None, domain="", opset=17, n_outputs=None):
    """The device kernel's outputs, read back; checks ``supports`` accepts the inputs first and
    releases every device tensor it made."""
    entry = be.kernel(op, domain, opset)
    assert entry is not None, f"no Vulkan kernel {domain}::{op} at opset {opset}"
    host = HOST_INPUTS.get(op, ()) if not domain else ()
    attrs = dict(attrs or {})
    if n_outputs is not None:
        attrs["n_outputs"] = n_outputs
    specs = [None if x is None else (np.shape(x), np.asarray(x).dtype) for x in inputs]
    if entry.supports is not None:
        why = entry.supports(specs, attrs)
        assert why is None, f"{op} refused: {why}"
    made = [
        None if x is None else (np.asarray(x) if i in host else be.to_device(np.asarray(x)))
        for i, x in enumerate(inputs)
    ]
    try:
        outs = entry.fn(be, made, attrs)
        try:
            return [None if o is None else be.to_host(o) for o in outs]
        finally:
            for o in outs:
                if o is not None:
                    be.release(o)
    finally:
        for i, m in enumerate(made):
            if m is not None and i not in host:
                be.release(m)


def refuses(be, op, specs, attrs=None, domain="", opset=17) -> str | None:
    entry = be.kernel(op, domain, opset)
    return entry.supports(specs, dict(attrs or {}))


def ulp(x) -> np.ndarray:
    """float32 spacing at |x| (never below the smallest normal's)."""
    return np.spacing(np.maximum(np.abs(np.asarray(x, np.float32)), np.finfo(np.float32).tiny))


def assert_within(got, want, tol, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = ~(err <= tol) & ~(np.isnan(got) & np.isnan(want)) & ~(got == want)
    assert not bad.any(), (
        f"{what}: {bad.sum()} of {bad.size} beyond tolerance; worst |err| "
        f"{err[bad].max():.3g} vs tol {np.broadcast_to(tol, err.shape)[bad].min():.3g}"
    )


def rand(rng, *shape, lo=-3.0, hi=3.0):
    return rng.uniform(lo, hi, shape).astype(np.float32)
