"""RNN/GRU/LSTM behaviour the conformance suite does not pin, checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ziggurat.errors import ExecutionError
from ziggurat.ops import rnn as K

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
N_OUT = {"RNN": 2, "GRU": 2, "LSTM": 3}
INPUT_NAMES = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]


def _ort(op, args, attrs, opset=14):
    """Run one node in onnxruntime; ``args`` are positional inputs (None = omitted)."""
    names = [n if a is not None else "" for n, a in zip(INPUT_NAMES, args)]
    while names and not names[-1]:
        names.pop()
    outs = ["Y", "Y_h", "Y_c"][: N_OUT[op]]
    node = helper.make_node(op, names, outs, **attrs)
    g_in = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in zip(INPUT_NAMES, args)
        if a is not None
    ]
    g_out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs]
    model = helper.make_model(
        helper.make_graph([node], "g", g_in, g_out), opset_imports=[helper.make_opsetid("", opset)]
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: a for n, a in zip(INPUT_NAMES, args) if a is not None}
    return sess.run(None, feeds)


def _inputs(op, rng, *, T=5, N=3, I=4, H=6, dirs=1, lens=None, init=True, peep=False):
    G = GATES[op]
    f = np.float32
    X = rng.standard_normal((T, N, I)).astype(f)
    W = (rng.standard_normal((dirs, G * H, I)) * 0.5).astype(f)
    R = (rng.standard_normal((dirs, G * H, H)) * 0.5).astype(f)
    B = (rng.standard_normal((dirs, 2 * G * H)) * 0.2).astype(f)
    seq = None if lens is None else np.array(lens, dtype=np.int32)
    h0 = rng.standard_normal((dirs, N, H)).astype(f) if init else None
    args = [X, W, R, B, seq, h0]
    if op == "LSTM":
        args.append(rng.standard_normal((dirs, N, H)).astype(f) if init else None)
        args.append((rng.standard_normal((dirs, 3 * H)) * 0.3).astype(f) if peep else None)
    return args


def _check(op, args, attrs, rtol=1e-4, atol=1e-5):
    expected = _ort(op, args, attrs)
    got = getattr(K, op)(*args, **attrs)
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_sequence_lens_match_onnxruntime(op, direction):
    rng = np.random.default_rng(0)
    dirs = 2 if direction == "bidirectional" else 1
    args = _inputs(op, rng, dirs=dirs, lens=[5, 2, 3], peep=True)
    _check(op, args, {"hidden_size": 6, "direction": direction})


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset(lbr):
    rng = np.random.default_rng(1)
    args = _inputs("GRU", rng, dirs=2, lens=[4, 5, 1])
    _check(
        "GRU", args, {"hidden_size": 6, "direction": "bidirectional", "linear_before_reset": lbr}
    )


def test_lstm_clip_input_forget_peepholes():
    rng = np.random.default_rng(2)
    args = _inputs("LSTM", rng, peep=True)
    args[0] *= 4  # push pre-activations past the clip
    _check("LSTM", args, {"hidden_size": 6, "clip": 0.7, "input_forget": 1})


@pytest.mark.parametrize(
    "acts, alpha, beta",
    [
        (["Relu"], None, None),
        (["LeakyRelu"], [0.3], None),
        (["HardSigmoid"], [0.25], [0.4]),
        (["ScaledTanh"], [1.5], [0.7]),
        (["Softsign"], None, None),
        (["Elu"], [0.9], None),
        (["Softplus"], None, None),
        (["Affine"], [0.5], [0.1]),
        (["ThresholdedRelu"], [0.2], None),
    ],
)
def test_rnn_custom_activations(acts, alpha, beta):
    rng = np.random.default_rng(3)
    args = _inputs("RNN", rng)
    attrs = {"hidden_size": 6, "activations": acts}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    _check("RNN", args, attrs)


def test_lstm_custom_activations_bidirectional():
    rng = np.random.default_rng(4)
    args = _inputs("LSTM", rng, dirs=2)
    acts = ["HardSigmoid", "Tanh", "Softsign", "Sigmoid", "LeakyRelu", "Tanh"]
    attrs = {"hidden_size": 6, "direction": "bidirectional", "activations": acts,
             "activation_alpha": [0.2, 0.05], "activation_beta": [0.5]}  # fmt: skip
    _check("LSTM", args, attrs)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_layout_1_is_batch_major_layout_0(op):
    rng = np.random.default_rng(5)
    args = _inputs(op, rng, dirs=2, lens=[5, 3, 4])
    attrs = {"hidden_size": 6, "direction": "bidirectional"}
    ref = getattr(K, op)(*args, **attrs)
    swapped = list(args)
    swapped[0] = np.swapaxes(args[0], 0, 1).copy()
    for i in (5, 6):  # initial_h, initial_c
        if i < len(args) and args[i] is not None:
            swapped[i] = np.swapaxes(args[i], 0, 1).copy()
    got = getattr(K, op)(*swapped, layout=1, **attrs)
    np.testing.assert_allclose(got[0], np.transpose(ref[0], (2, 0, 1, 3)), rtol=1e-6)
    for g, r in zip(got[1:], ref[1:], strict=True):
        np.testing.assert_allclose(g, np.swapaxes(r, 0, 1), rtol=1e-6)


def test_padded_steps_are_zero_and_state_is_last_valid():
    rng = np.random.default_rng(6)
    args = _inputs("GRU", rng, lens=[5, 2, 0])
    Y, Y_h = K.GRU(*args, hidden_size=6)
    assert np.all(Y[2:, 0, 1] == 0) and np.all(Y[:, 0, 2] == 0)
    np.testing.assert_array_equal(Y_h[0, 1], Y[1, 0, 1])
    np.testing.assert_array_equal(Y_h[0, 2], args[5][0, 2])  # zero length keeps initial_h


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_output_dtype_follows_input(dtype):
    rng = np.random.default_rng(7)
    args = [
        a if a is None else a.astype(dtype) if a.dtype == np.float32 else a
        for a in _inputs("LSTM", rng)
    ]
    outs = K.LSTM(*args, hidden_size=6)
    assert all(o.dtype == dtype for o in outs)


def test_bad_activation_names_are_reported():
    rng = np.random.default_rng(8)
    args = _inputs("RNN", rng)
    with pytest.raises(ExecutionError, match="unknown activation"):
        K.RNN(*args, activations=["Swish"])
    with pytest.raises(ExecutionError, match="direction"):
        K.RNN(*args, direction="sideways")
