"""server/model.py: a loaded model's checks and its memory estimate."""

from __future__ import annotations

import numpy as np
import pytest

from tests.server import models
from ziggurat.errors import InputError
from ziggurat.server.model import LoadedModel, ziggurat_session


@pytest.fixture
def linear(tmp_path):
    path = models.linear(tmp_path / "linear.onnx")
    m = LoadedModel("linear", 1, path, ziggurat_session(str(path), {}), {})
    yield m
    m.executor.shutdown(wait=False)


def test_estimate_binds_output_dims_to_the_inputs(linear):
    x = np.zeros((1000, 4), np.float32)  # y: [batch, 3] FP32, label: [batch] INT64
    assert linear.estimate_bytes({"x": x}, ["y", "label"]) == x.nbytes + 1000 * 3 * 4 + 1000 * 8
    assert linear.estimate_bytes({"x": x}, ["label"]) == x.nbytes + 1000 * 8


def test_check_feeds_uses_the_shared_validation(linear):
    feeds = linear.check_feeds({"x": np.zeros((2, 4), np.float32)})
    assert list(feeds) == ["x"]
    with pytest.raises(InputError, match=r"model 'linear': input 'x' expects dim 1 = 4"):
        linear.check_feeds({"x": np.zeros((2, 5), np.float32)})
    assert linear.batch_axis and [s.name for s in linear.outputs] == ["y", "label"]
