"""The model data sets shipped in the onnx package: simple, pytorch-converted, pytorch-operator,
and the 9 'light' zoo models (resnet50, densenet121, inception, ...)."""

from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx.backend.test.loader import load_model_tests

from .excludes import DATA_EXCLUDES
from .runner import run_model_case

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def _read_pb(path: str):
    with open(path, "rb") as f:
        raw = f.read()
    t = onnx.TensorProto()
    t.ParseFromString(raw)
    return onnx.numpy_helper.to_array(t)


def _dir_cases(kind: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in load_model_tests(kind=kind) if c.model_dir]


def _params(kind: str):
    out = []
    for case in _dir_cases(kind):
        marks = []
        if case.name in DATA_EXCLUDES:
            # skipped, not strict-xfailed: whether they match depends on the GEMM's rounding (§6)
            marks = [pytest.mark.skip(reason=DATA_EXCLUDES[case.name])]
        out.append(pytest.param(case, id=f"{kind}/{case.name}", marks=marks))
    return out


@pytest.mark.parametrize(
    "case", _params("simple") + _params("pytorch-converted") + _params("pytorch-operator")
)
def test_data_set(case):
    sets = []
    for ds in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set_*"))):
        n_in = len(glob.glob(os.path.join(ds, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(ds, "output_*.pb")))
        ins = [_read_pb(os.path.join(ds, f"input_{i}.pb")) for i in range(n_in)]
        outs = [_read_pb(os.path.join(ds, f"output_{i}.pb")) for i in range(n_out)]
        sets.append((ins, outs))
    assert sets, f"no test data under {case.model_dir}"
    with open(os.path.join(case.model_dir, "model.onnx"), "rb") as f:
        run_model_case(f.read(), sets, case.rtol, case.atol)


LIGHT = sorted(glob.glob(os.path.join(DATA, "light", "light_*.onnx")))


def _light_params():
    out = []
    for p in LIGHT:
        name = os.path.basename(p)[:-5]
        marks = []
        if name in DATA_EXCLUDES:
            # skipped, not strict-xfailed: whether they match depends on the GEMM's rounding (§6)
            marks = [pytest.mark.skip(reason=DATA_EXCLUDES[name])]
        out.append(pytest.param(p, id=name[6:], marks=marks))
    return out


def _light_feeds(sess):
    feeds = {}
    for arg in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        n = int(np.prod(shape))
        feeds[arg.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


@pytest.mark.parametrize("path", _light_params())
def test_light_zoo_model(path):
    """Input as the onnx runner makes it (arange / n), expected output shipped beside the model."""
    import ziggurat as zg

    sess = zg.InferenceSession(path)
    feeds = _light_feeds(sess)
    expected = _read_pb(path[:-5] + "_output_0.pb")
    out = sess.run(None, feeds)[0]
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))


def test_light_squeezenet_logits():
    """squeezenet's logits (the GlobalAveragePool before its softmax) against onnxruntime."""
    import onnxruntime as ort

    import ziggurat as zg

    path = os.path.join(DATA, "light", "light_squeezenet.onnx")
    model = onnx.load(path)
    softmax = model.graph.node[-1]
    assert softmax.op_type == "Softmax"
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(softmax.input[0]))
    data = model.SerializeToString()
    sess = zg.InferenceSession(data)
    feeds = _light_feeds(sess)
    (got,) = sess.run(None, feeds)
    (ref,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
