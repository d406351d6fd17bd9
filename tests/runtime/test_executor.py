"""The code-generating executor, on graphs built directly in IR with test-only kernels."""

from __future__ import annotations

import numpy as np
import pytest

import ziggurat as zg
from ziggurat import ir
from ziggurat.ops.registry import kernel
from ziggurat.runtime import CompiledGraph

D = "test.ziggurat"  # a private domain, so these kernels never clash with real ops


@kernel("AddT", domain=D)
def AddT(a, b, /):
    return (a + b,)


@kernel("ScaleT", domain=D)
def ScaleT(x, /, *, factor=2.0):
    return (x * x.dtype.type(factor),)


@kernel("ScaleT", since=5, domain=D)
def ScaleT5(x, /, *, factor=3.0):
    return (x * x.dtype.type(factor),)


@kernel("SplitT", domain=D)
def SplitT(x, /, *, n_outputs):
    return tuple(np.array_split(x, n_outputs))


@kernel("IfT", domain=D)
def IfT(cond, /, *, then_branch, else_branch):
    return tuple(then_branch() if bool(cond) else else_branch())


@kernel("OptT", domain=D)
def OptT(a, b=None, /):
    return (a if b is None else a - b,)


@kernel("FailT", domain=D)
def FailT(x, /):
    raise ValueError("boom")


def _vi(name, shape=None, elem=ir.dtypes.FLOAT):
    return ir.ValueInfo(name, ir.Type("tensor", elem, shape))


def _model(nodes, inputs, outputs, inits=None, opset=1):
    g = ir.Graph(nodes=nodes, inputs=inputs, outputs=outputs, initializers=inits or {}, name="t")
    return ir.Model(g, opsets={"": 17, D: opset})


def test_straight_line_with_initializer_and_versions():
    nodes = [
        ir.Node("AddT", ["x", "w"], ["s"], domain=D),
        ir.Node("ScaleT", ["s"], ["y"], domain=D),
    ]
    w = np.arange(3, dtype=np.float32)
    m = _model(nodes, [_vi("x", [3])], [_vi("y")], {"w": w}, opset=1)
    x = np.ones(3, np.float32)
    sess = zg.InferenceSession(m)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], (x + w) * 2)
    # opset 5 picks the since=5 version (default factor 3)
    sess5 = zg.InferenceSession(_model(nodes, [_vi("x", [3])], [_vi("y")], {"w": w}, opset=7))
    np.testing.assert_array_equal(sess5.run(None, {"x": x})[0], (x + w) * 3)


def test_attributes_bound_and_n_outputs():
    nodes = [
        ir.Node("ScaleT", ["x"], ["y"], attrs={"factor": 0.5}, domain=D),
        ir.Node("SplitT", ["y"], ["a", "", "c"], domain=D),
    ]
    m = _model(nodes, [_vi("x", [6])], [_vi("a"), _vi("c")])
    a, c = zg.InferenceSession(m).run(None, {"x": np.arange(6, dtype=np.float32)})
    np.testing.assert_array_equal(a, [0, 0.5])
    np.testing.assert_array_equal(c, [2, 2.5])


def test_omitted_optional_input_is_none():
    nodes = [
        ir.Node("OptT", ["x", ""], ["y"], domain=D),
        ir.Node("OptT", ["y", "x"], ["z"], domain=D),
    ]
    m = _model(nodes, [_vi("x", [2])], [_vi("y"), _vi("z")])
    y, z = zg.InferenceSession(m).run(None, {"x": np.ones(2, np.float32)})
    np.testing.assert_array_equal(y, [1, 1])
    np.testing.assert_array_equal(z, [0, 0])


def test_subgraph_reads_outer_scope():
    then_g = ir.Graph(nodes=[ir.Node("AddT", ["x", "x"], ["t"], domain=D)], outputs=[_vi("t")])
    else_g = ir.Graph(nodes=[ir.Node("ScaleT", ["x"], ["e"], domain=D)], outputs=[_vi("e")])
    nodes = [
        ir.Node("IfT", ["c"], ["y"], attrs={"then_branch": then_g, "else_branch": else_g}, domain=D)
    ]
    m = _model(nodes, [_vi("c", [], ir.dtypes.BOOL), _vi("x", [2])], [_vi("y")])
    sess = zg.InferenceSession(m)
    x = np.array([1, 2], np.float32)
    np.testing.assert_array_equal(sess.run(None, {"c": np.array(True), "x": x})[0], x + x)
    np.testing.assert_array_equal(sess.run(None, {"c": np.array(False), "x": x})[0], x * 2)


def test_kernel_failure_names_node_and_op():
    nodes = [ir.Node("FailT", ["x"], ["y"], name="the_node", domain=D)]
    sess = zg.InferenceSession(_model(nodes, [_vi("x", [1])], [_vi("y")]))
    with pytest.raises(zg.ExecutionError, match=r"node 'the_node' \(FailT, opset 1\).*boom"):
        sess.run(None, {"x": np.ones(1, np.float32)})


def test_unsupported_ops_are_all_listed():
    nodes = [
        ir.Node("Nope1", ["x"], ["a"], name="n1", domain=D),
        ir.Node("Nope2", ["a"], ["y"], name="n2", domain="com.example"),
    ]
    m = _model(nodes, [_vi("x", [1])], [_vi("y")])
    m.opsets["com.example"] = 1
    with pytest.raises(zg.UnsupportedOpError) as info:
        zg.InferenceSession(m)
    assert "n1" in str(info.value) and "n2" in str(info.value)
    assert {op for _, _, op, _ in info.value.missing} == {"Nope1", "Nope2"}


def test_intermediates_are_freed_after_last_use():
    nodes = [
        ir.Node("ScaleT", ["x"], ["a"], domain=D),
        ir.Node("ScaleT", ["a"], ["b"], domain=D),
        ir.Node("ScaleT", ["b"], ["y"], domain=D),
    ]
    g = _model(nodes, [_vi("x", [1])], [_vi("y")]).graph
    cg = CompiledGraph(g, {"": 17, D: 1})
    assert "del" in cg.source
    assert cg.run([np.ones(1, np.float32)])[0][0] == 8


def test_debug_env_traces_each_node_with_shapes(tmp_path):
    """ZIGGURAT_DEBUG=2 prints one line per node with output dtype, shape and value stats."""
    import os
    import subprocess
    import sys

    from tests.models import builders

    path = tmp_path / "mlp.onnx"
    path.write_bytes(builders.mlp().SerializeToString())
    code = (
        "import numpy as np, ziggurat as zg\n"
        f"s = zg.InferenceSession({str(path)!r})\n"
        "s.run(None, {'x': np.ones((2, 784), np.float32)})\n"
    )
    env = dict(os.environ, ZIGGURAT_DEBUG="2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("[ziggurat]")]
    assert len(lines) == 3  # Dense(+ReLU), Dense, Softmax after fusion
    assert "Softmax" in lines[-1] and "float32[2, 10]" in lines[-1] and "mean=0.1" in lines[-1]
