"""Shared checks of the transformer fusion tests: run the passes with lint after each, and compare a
fused model with its unfused run and with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import ziggurat as zg
from ziggurat.formats.onnx import load_model
from ziggurat.passes import (
    constant_fold,
    dce,
    fuse_attention,
    fuse_dense,
    fuse_gelu,
    fuse_layernorm,
)
from ziggurat.passes._match import FUSED_DOMAIN

LEVELS = (
    zg.GraphOptimizationLevel.ORT_DISABLE_ALL,
    zg.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    zg.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    zg.GraphOptimizationLevel.ORT_ENABLE_ALL,
)


def make_model(nodes, inputs, outputs, inits, opset=17) -> onnx.ModelProto:
    """A model of ``nodes``; ``inputs``/``outputs`` are (name, dtype, shape) triples, ``inits`` a
    dict name -> array."""
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), s)
         for n, t, s in inputs],
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), s)
         for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def fused_ops(model: onnx.ModelProto) -> list[str]:
    """The op types after the fusion passes, linting the graph after every pass."""
    m = load_model(model.SerializeToString())
    g, opsets = m.graph, dict(m.opsets)
    opsets.setdefault(FUSED_DOMAIN, 1)
    steps = (
        lambda graph: constant_fold.run(graph, opsets),
        dce.run,
        fuse_gelu.run,
        dce.run,
        fuse_dense.run,
        fuse_layernorm.run,
        lambda graph: fuse_attention.run(graph, opsets),
        dce.run,
    )
    for step in steps:
        g = step(g) or g
        g.lint()
    return [n.op_type for n in g.nodes]


def run_levels(model: onnx.ModelProto, feeds: dict) -> list[list[np.ndarray]]:
    """Ziggurat's outputs at every optimization level (level 0: no fusion, the op-by-op graph)."""
    data = model.SerializeToString()
    outs = []
    for level in LEVELS:
        opts = zg.SessionOptions(graph_optimization_level=level)
        outs.append(zg.InferenceSession(data, sess_options=opts).run(None, feeds))
    return outs


def run_ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_close_everywhere(model: onnx.ModelProto, feeds: dict, atol: float) -> None:
    """Every optimization level agrees with the unfused run and with onnxruntime within ``atol``
    (each caller derives it from its computation); NaNs must sit in the same places."""
    ref = run_ort(model, feeds)
    levels = run_levels(model, feeds)
    for outs in levels:
        for got, want, base in zip(outs, ref, levels[0], strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            for other in (want, base):
                np.testing.assert_array_equal(np.isnan(got), np.isnan(other))
                ok = ~np.isnan(other)
                np.testing.assert_allclose(got[ok], other[ok], rtol=0, atol=atol)
