"""Harness for the ``com.microsoft`` kernels: one generated single-node model, run by onnxruntime
and by Ziggurat (through ``InferenceSession``, so the domain lookup is exercised too)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import helper

import ziggurat as zg

MS = "com.microsoft"


def node_model(op, inputs, n_out, attrs=None, domain=MS, opset=17, outputs=None, out_types=None):
    """Bytes of a model with one ``op`` node. ``inputs``: (name, array or None) pairs, None for an
    omitted optional input; ``outputs``: output names ('' for an omitted one), default o0..o{n-1};
    ``out_types``: numpy dtypes of the outputs (default: the first input's)."""
    names = [n if a is not None else "" for n, a in inputs]
    while names and not names[-1]:
        names.pop()
    outs = outputs if outputs is not None else [f"o{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, domain=domain, **(attrs or {}))
    g_in = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in inputs
        if a is not None
    ]
    kept = [o for o in outs if o]
    types = out_types or [inputs[0][1].dtype] * len(kept)
    g_out = [
        helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
        for o, t in zip(kept, types)
    ]
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(helper.make_graph([node], "g", g_in, g_out), opset_imports=imports)
    return model.SerializeToString()


def run_both(op, inputs, n_out=1, attrs=None, **kw):
    """(onnxruntime outputs, Ziggurat outputs) of the one-node model on ``inputs``."""
    model = node_model(op, inputs, n_out, attrs, **kw)
    feeds = {n: a for n, a in inputs if a is not None}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # some kernels' results depend on how it splits work (DESIGN §6)
    ref = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = zg.InferenceSession(model).run(None, feeds)
    return ref, got


def zg_run(op, inputs, n_out=1, attrs=None, **kw):
    """Ziggurat's outputs of the one-node model (for ops onnxruntime runs only on GPUs)."""
    model = node_model(op, inputs, n_out, attrs, **kw)
    return zg.InferenceSession(model).run(None, {n: a for n, a in inputs if a is not None})


def assert_close(got, ref, tol, what=""):
    """Same shape and dtype, and |got - ref| <= tol elementwise (tol: scalar or array)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != onnxruntime's {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != onnxruntime's {ref.dtype}"
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    bad = err > tol
    assert not bad.any(), f"{what}: max error {err.max():.3g} > tolerance ({np.max(tol):.3g})"


def f32_tol(ref, n_terms=1, ulps=8):
    """Tolerance for float32 results that sum ``n_terms`` products: ``ulps`` float32 spacings of
    the result's scale per term (rounding of each addition can differ in order between engines)."""
    scale = max(float(np.max(np.abs(ref))) if np.size(ref) else 0.0, 1.0)
    return ulps * np.float32(np.finfo(np.float32).eps) * scale * max(n_terms, 1)


def check(op, inputs, n_out=1, attrs=None, n_terms=1, ulps=8, compare=True, **kw):
    """Run both engines and compare every float output at ``f32_tol``; exact for integers.
    ``compare=False``: only run them (the caller compares the parts that are specified)."""
    ref, got = run_both(op, inputs, n_out, attrs, **kw)
    if not compare:
        return ref, got
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        tol = f32_tol(r, n_terms, ulps) if np.asarray(r).dtype.kind == "f" else 0
        assert_close(g, r, tol, f"{op} output {i}")
    return ref, got
