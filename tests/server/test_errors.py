"""server/errors.py: the status of each Ziggurat error, and paths redacted from messages."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ziggurat import errors as zerr
from ziggurat.server.errors import HTTPError, Redactor, status_for


@pytest.mark.parametrize(
    "exc, status",
    [
        (zerr.InputError("x"), 400),
        (zerr.ModelLoadError("x"), 400),
        (zerr.ExternalDataError("x"), 400),
        (zerr.UnsupportedOpError("x"), 400),
        (zerr.GraphError("x"), 400),
        (zerr.ConfigError("x"), 400),
        (zerr.ExecutionError("x"), 500),  # feeds were validated: a kernel raising is a fault
        (HTTPError(413, "x"), 413),
        (RuntimeError("x"), 500),
    ],
)
def test_status_for(exc, status):
    assert status_for(exc) == status


def test_redactor_cuts_known_prefixes(tmp_path):
    repo = tmp_path / "models"
    r = Redactor([repo])
    assert r(f"{repo}/corrupt.onnx is not ONNX") == "corrupt.onnx is not ONNX"
    assert r(f"read {repo}") == "read <server path>"
    assert str(Path.home()) not in r(f"no file {Path.home()}/x.onnx")
    assert sys.prefix not in r(f"{sys.prefix}/lib/python3/site-packages/x.py")
    assert os.getcwd() not in r(f"{os.getcwd()}/src/ziggurat/x.py")
    assert r("/v2/models/{model}/infer") == "/v2/models/{model}/infer"  # routes are not paths
