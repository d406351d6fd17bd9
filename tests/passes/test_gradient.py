"""The Gradient pass: the onnx data-set models, and each vector-Jacobian rule checked against
central finite differences in float64 on seeded random inputs.

Each check builds ``y = f(xs) * W`` (W random, so the seed of ones becomes a non-uniform weighting),
expands ``Gradient(xs, y)`` with the pass, and compares with ``(L(x + eps) - L(x - eps)) / 2eps``
per element, where ``L = sum(f(xs) * W)`` is evaluated by a forward-only session.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

import ziggurat as zg
from ziggurat.errors import UnsupportedOpError
from ziggurat.formats.onnx import load_model
from ziggurat.passes import gradient

TRAINING = "ai.onnx.preview.training"
DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "simple")


def _session(proto: onnx.ModelProto, level: int | None = None) -> zg.InferenceSession:
    model = load_model(proto.SerializeToString())
    gradient.run(model.graph, model.opsets)
    model.graph.lint()
    assert not any(n.op_type == "Gradient" for n in model.graph.nodes)
    opts = zg.SessionOptions()
    if level is not None:
        opts.graph_optimization_level = level
    return zg.InferenceSession(model, sess_options=opts)


def _vi(name: str, arr: np.ndarray | None = None, elem: int = TensorProto.DOUBLE):
    if arr is not None:
        elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
    return helper.make_tensor_value_info(name, elem, None)


def _proto(nodes, feeds, consts, outputs, opset) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [_vi(k, v) for k, v in feeds.items()],
        [_vi(o) for o in outputs],
        [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()],
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(TRAINING, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def check_grad(nodes, xs: dict, consts=None, *, opset=17, eps=1e-6, rtol=1e-5, atol=1e-7):
    """Gradient of sum(f * W) w.r.t. every entry of ``xs`` against finite differences; ``f`` is
    the output named "f" of ``nodes``."""
    consts = dict(consts or {})
    rng = np.random.default_rng(1)
    f = _session(_proto(nodes, xs, consts, ["f"], opset)).run(None, xs)[0]
    consts["W"] = rng.standard_normal(np.shape(f)).astype(f.dtype)
    fwd_nodes = [*nodes, helper.make_node("Mul", ["f", "W"], ["y"])]
    fwd = _session(_proto(fwd_nodes, xs, consts, ["y"], opset))
    names = list(xs)
    grad_node = helper.make_node(
        "Gradient", names, [f"d_{n}" for n in names], domain=TRAINING, xs=names, y="y"
    )
    outs = ["y"] + [f"d_{n}" for n in names]
    got = _session(_proto([*fwd_nodes, grad_node], xs, consts, outs, opset)).run(None, xs)

    def loss(feeds) -> float:
        return float(np.sum(fwd.run(None, feeds)[0], dtype=np.float64))

    for name, g in zip(names, got[1:], strict=True):
        x = xs[name]
        assert g.dtype == x.dtype and g.shape == x.shape, (name, g.dtype, g.shape)
        num = np.zeros(x.shape, dtype=np.float64)
        for i in np.ndindex(x.shape):  # a few dozen elements: fine for a test
            hi, lo = x.copy(), x.copy()
            hi[i] += eps
            lo[i] -= eps
            num[i] = (loss({**xs, name: hi}) - loss({**xs, name: lo})) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=rtol, atol=atol, err_msg=f"d/d{name}")


def _rand(*shape, away=None, positive=False, seed=0):
    """Seeded normal values; ``away``: at least this far from 0 (a kink or a domain edge),
    ``positive``: also made positive."""
    x = np.random.default_rng(seed + len(shape)).standard_normal(shape)
    if away is not None:
        x = np.sign(x) * (np.abs(x) + away)
    return np.abs(x) if positive else x


N = helper.make_node

# -- the onnx package's data sets ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_gradient_of_add", "test_gradient_of_add_and_mul"])
def test_onnx_data_sets(name):
    folder = os.path.join(DATA, name)
    sess = _session(onnx.load(os.path.join(folder, "model.onnx")))
    for ds in sorted(glob.glob(os.path.join(folder, "test_data_set_*"))):
        ins = [
            onnx.numpy_helper.to_array(onnx.load_tensor(p))
            for p in sorted(glob.glob(f"{ds}/input_*.pb"))
        ]
        outs = [
            onnx.numpy_helper.to_array(onnx.load_tensor(p))
            for p in sorted(glob.glob(f"{ds}/output_*.pb"))
        ]
        got = sess.run(None, dict(zip([a.name for a in sess.get_inputs()], ins)))
        for e, g in zip(outs, got, strict=True):
            assert g.dtype == e.dtype and g.shape == e.shape
            np.testing.assert_allclose(g, e, rtol=1e-6)


# -- one op at a time ---------------------------------------------------------------------------

BINARY_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), ())]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("sa,sb", BINARY_SHAPES)
def test_broadcasting_binary(op, sa, sb):
    b = _rand(*sb, away=0.5, seed=3) if op == "Div" else _rand(*sb, seed=3)
    check_grad([N(op, ["a", "b"], ["f"])], {"a": _rand(*sa), "b": np.asarray(b)})


@pytest.mark.parametrize(
    "op,away,attrs",
    [
        ("Neg", None, {}),
        ("Identity", None, {}),
        ("Relu", 0.1, {}),
        ("LeakyRelu", 0.1, {"alpha": 0.2}),
        ("Sigmoid", None, {}),
        ("Tanh", None, {}),
        ("Exp", None, {}),
        ("Log", 0.5, {}),
        ("Sqrt", 0.5, {}),
        ("Abs", 0.1, {}),
    ],
)
def test_unary(op, away, attrs):
    positive = op in ("Log", "Sqrt")
    check_grad([N(op, ["x"], ["f"], **attrs)], {"x": _rand(3, 5, away=away, positive=positive)})


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((3, 4), (4, 5)),
        ((2, 3, 4), (4, 5)),
        ((2, 1, 3, 4), (3, 4, 2)),
        ((4,), (4, 5)),
        ((2, 3, 4), (4,)),
        ((4,), (4,)),
    ],
)
def test_matmul(sa, sb):
    check_grad([N("MatMul", ["a", "b"], ["f"])], {"a": _rand(*sa), "b": _rand(*sb, seed=5)})


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [(5,), (3, 1), (3, 5), None])
def test_gemm(trans_a, trans_b, c_shape):
    xs = {
        "a": _rand(*((4, 3) if trans_a else (3, 4))),
        "b": _rand(*((5, 4) if trans_b else (4, 5)), seed=2),
    }
    ins = ["a", "b"]
    if c_shape is not None:
        xs["c"] = _rand(*c_shape, seed=4)
        ins.append("c")
    node = N("Gemm", ins, ["f"], alpha=0.7, beta=1.3, transA=trans_a, transB=trans_b)
    check_grad([node], xs)


def test_pow_base_and_exponent_tensors():
    check_grad(
        [N("Pow", ["a", "b"], ["f"])],
        {"a": _rand(3, 4, away=0.5, positive=True), "b": _rand(4, seed=7)},
    )


def test_pow_negative_base_integer_exponent_and_constant_exponents():
    xs = {"a": _rand(3, 4, away=0.2)}  # negative bases too
    check_grad([N("Pow", ["a", "e"], ["f"])], xs, {"e": np.array(3, dtype=np.int64)})
    check_grad([N("Pow", ["a", "e"], ["f"])], xs, {"e": np.array([2.0, -1.0, 3.0, 0.0])})
    check_grad(
        [N("Pow", ["a", "e"], ["f"])],
        {"a": _rand(3, 4, away=0.5, positive=True)},
        {"e": np.array(-0.5)},
    )


def test_pow_exponent_gradient_is_zero_where_base_is_zero_and_result_is_zero():
    a, b = np.array([0.0, 2.0]), np.array([2.0, 3.0])
    nodes = [
        N("Pow", ["a", "b"], ["y"]),
        N("Gradient", ["a", "b"], ["da", "db"], domain=TRAINING, xs=["a", "b"], y="y"),
    ]
    da, db = _session(_proto(nodes, {"a": a, "b": b}, {}, ["da", "db"], 17)).run(
        None, {"a": a, "b": b}
    )
    np.testing.assert_allclose(da, [0.0, 12.0])
    np.testing.assert_allclose(db, [0.0, 8.0 * np.log(2.0)])


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize("axes,keepdims", [([1], 0), ([0, -1], 1), (None, 0), (None, 1)])
def test_reduce_axes_as_input(op, axes, keepdims):
    opset = 13 if op == "ReduceSum" else 18
    consts, ins = {}, ["x"]
    if axes is not None:
        consts["axes"] = np.array(axes, dtype=np.int64)
        ins.append("axes")
    check_grad([N(op, ins, ["f"], keepdims=keepdims)], {"x": _rand(2, 3, 4)}, consts, opset=opset)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
def test_reduce_axes_as_attribute_opset_11(op):
    check_grad([N(op, ["x"], ["f"], axes=[0, 2], keepdims=0)], {"x": _rand(2, 3, 4)}, opset=11)


def test_reduce_sum_noop_with_empty_axes_is_identity():
    check_grad([N("ReduceSum", ["x"], ["f"], noop_with_empty_axes=1)], {"x": _rand(2, 3)}, opset=13)


def test_shape_ops():
    x = {"x": _rand(2, 3, 4)}
    check_grad([N("Reshape", ["x", "s"], ["f"])], x, {"s": np.array([4, -1], dtype=np.int64)})
    check_grad([N("Flatten", ["x"], ["f"], axis=2)], x)
    check_grad(
        [N("Unsqueeze", ["x", "ax"], ["u"]), N("Squeeze", ["u", "ax"], ["f"])],
        x,
        {"ax": np.array([1], dtype=np.int64)},
    )
    check_grad([N("Transpose", ["x"], ["f"], perm=[1, 2, 0])], x)
    check_grad([N("Transpose", ["x"], ["f"])], x)
    check_grad(
        [N("Expand", ["x", "s"], ["f"])],
        {"x": _rand(3, 1)},
        {"s": np.array([2, 3, 4], dtype=np.int64)},
    )


def test_reshape_through_a_shape_computed_from_x_is_not_differentiated_on_the_shape_path():
    nodes = [N("Shape", ["x"], ["s"]), N("Reshape", ["x", "s"], ["r"]), N("Tanh", ["r"], ["f"])]
    check_grad(nodes, {"x": _rand(3, 4)})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(13, None), (13, 1), (11, 1), (11, None)])
def test_softmax(op, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    check_grad([N(op, ["x"], ["f"], **attrs)], {"x": _rand(2, 3, 4)}, opset=opset)


def test_cast_float_to_float_keeps_the_input_dtype():
    nodes = [
        N("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
        N("Cast", ["c"], ["f"], to=TensorProto.DOUBLE),
    ]
    check_grad(nodes, {"x": _rand(3, 4)}, eps=1e-3, rtol=1e-3, atol=1e-4)


def test_where_sum_and_several_paths():
    cond = np.array([[True, False, True, False]] * 3)
    check_grad(
        [N("Where", ["c", "a", "b"], ["f"])], {"a": _rand(3, 4), "b": _rand(4, seed=9)}, {"c": cond}
    )
    check_grad([N("Sum", ["a", "b", "a"], ["f"])], {"a": _rand(3, 4), "b": _rand(4, seed=9)})
    nodes = [
        N("Mul", ["x", "x"], ["sq"]),
        N("Tanh", ["x"], ["t"]),
        N("Add", ["sq", "t"], ["s"]),
        N("Mul", ["s", "x"], ["f"]),
    ]
    check_grad(nodes, {"x": _rand(3, 4)})


def test_small_mlp_with_softmax_cross_entropy():
    rng = np.random.default_rng(3)
    labels = np.eye(3)[rng.integers(0, 3, size=4)]
    consts = {
        "X": rng.standard_normal((4, 5)),
        "labels": labels,
        "axes": np.array([1], dtype=np.int64),
    }
    xs = {
        "W1": _rand(5, 6, seed=1),
        "b1": _rand(6, seed=2),
        "W2": _rand(6, 3, seed=3),
        "b2": _rand(3, seed=4),
    }
    nodes = [
        N("MatMul", ["X", "W1"], ["h0"]),
        N("Add", ["h0", "b1"], ["h1"]),
        N("Relu", ["h1"], ["h"]),
        N("Gemm", ["h", "W2", "b2"], ["logits"]),
        N("Softmax", ["logits"], ["p"], axis=1),
        N("Log", ["p"], ["logp"]),
        N("Mul", ["logp", "labels"], ["picked"]),
        N("ReduceSum", ["picked", "axes"], ["ll"], keepdims=0),
        N("Neg", ["ll"], ["nll"]),
        N("ReduceMean", ["nll"], ["f"], keepdims=0),
    ]
    check_grad(nodes, xs, consts)


# -- Gradient semantics -------------------------------------------------------------------------


def _grad_model(nodes, feeds, outputs, opset=17, consts=None):
    return _session(_proto(nodes, feeds, consts or {}, outputs, opset))


def test_scalar_y_non_scalar_y_and_unreached_x():
    x, u = _rand(2, 3), _rand(2, seed=4)
    nodes = [
        N("Tanh", ["x"], ["t"]),
        N("Gradient", ["x", "u"], ["dx", "du"], domain=TRAINING, xs=["x", "u"], y="t"),
    ]
    dx, du = _grad_model(nodes, {"x": x, "u": u}, ["dx", "du"]).run(None, {"x": x, "u": u})
    np.testing.assert_allclose(dx, 1 - np.tanh(x) ** 2)  # d sum(tanh(x)) / dx
    np.testing.assert_array_equal(du, np.zeros_like(u))


def test_omitted_output_zs_and_float32():
    w, x = _rand(3, 2).astype(np.float32), _rand(4, 3, seed=2).astype(np.float32)
    nodes = [
        N("MatMul", ["x", "w"], ["y"]),
        N("Gradient", ["w", "x"], ["dw", ""], domain=TRAINING, xs=["w", "x"], y="y"),
        N("Gradient", ["w", "x"], ["dw_only"], domain=TRAINING, xs=["w"], zs=["x"], y="y"),
    ]
    dw, dw_only = _grad_model(nodes, {"w": w, "x": x}, ["dw", "dw_only"]).run(
        None, {"w": w, "x": x}
    )
    expected = x.T @ np.ones((4, 2), np.float32)
    assert dw.dtype == np.float32
    np.testing.assert_allclose(dw, expected, rtol=1e-6)
    np.testing.assert_allclose(dw_only, expected, rtol=1e-6)


def test_gradient_at_a_substituted_value_recomputes_the_forward_region():
    w, h1 = _rand(3, 4), _rand(3, 4, seed=6)
    nodes = [
        N("Mul", ["w", "w"], ["h"]),
        N("Tanh", ["h"], ["t"]),
        N("Mul", ["t", "t"], ["y"]),
        N("Gradient", ["h1"], ["dh"], domain=TRAINING, xs=["h"], y="y"),
    ]
    y, dh = _grad_model(nodes, {"w": w, "h1": h1}, ["y", "dh"]).run(None, {"w": w, "h1": h1})
    t = np.tanh(h1)  # d(tanh(h)²)/dh at h = h1, not at h = w*w
    np.testing.assert_allclose(dh, 2 * t * (1 - t * t))
    np.testing.assert_allclose(y, np.tanh(w * w) ** 2)


def test_second_order():
    x = _rand(5)
    nodes = [
        N("Mul", ["x", "x"], ["sq"]),
        N("Mul", ["sq", "x"], ["y"]),
        N("Gradient", ["x"], ["dy"], domain=TRAINING, xs=["x"], y="y"),
        N("Gradient", ["x"], ["d2y"], domain=TRAINING, xs=["x"], y="dy"),
    ]
    dy, d2y = _grad_model(nodes, {"x": x}, ["dy", "d2y"]).run(None, {"x": x})
    np.testing.assert_allclose(dy, 3 * x**2)
    np.testing.assert_allclose(d2y, 6 * x)


@pytest.mark.parametrize("level", [0, 1, 99])
def test_every_optimization_level(level):
    x = _rand(2, 3)
    nodes = [N("Exp", ["x"], ["y"]), N("Gradient", ["x"], ["dx"], domain=TRAINING, xs=["x"], y="y")]
    (dx,) = _session(_proto(nodes, {"x": x}, {}, ["dx"], 17), level).run(None, {"x": x})
    np.testing.assert_allclose(dx, np.exp(x))


def test_unsupported_op_names_the_op_and_node():
    nodes = [
        N("Erf", ["x"], ["e"], name="my_erf"),
        N("Gradient", ["x"], ["dx"], domain=TRAINING, xs=["x"], y="e", name="g"),
    ]
    with pytest.raises(UnsupportedOpError, match=r"gradient through Erf \(node 'my_erf'\)"):
        _grad_model(nodes, {"x": _rand(2)}, ["dx"])


def test_bad_gradient_node_is_a_graph_error():
    nodes = [
        N("Exp", ["x"], ["y"]),
        N("Gradient", ["x"], ["dx"], domain=TRAINING, xs=["x"], y="nope"),
    ]
    with pytest.raises(zg.GraphError, match="'nope'"):
        _grad_model(nodes, {"x": _rand(2)}, ["dx"])
