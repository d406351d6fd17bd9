"""The model data sets shipped in the onnx package: simple, pytorch-converted and pytorch-operator
(the 9 'light' zoo models are in test_light_zoo.py)."""

from __future__ import annotations

import glob
import os
import warnings

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
