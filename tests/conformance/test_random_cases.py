"""The Bernoulli conformance cases, checked for what a random op can promise: the expected output's
shape and dtype, values in {0, 1}, and (on a large input) the mean matching p."""

from __future__ import annotations

import numpy as np
import pytest

import ziggurat as zg

from .runner import node_cases

CASES = sorted(n for n in node_cases() if n.startswith("test_bernoulli"))


@pytest.mark.parametrize("name", CASES)
def test_bernoulli_case_shape_dtype_values(name):
    case = node_cases()[name]
    sess = zg.InferenceSession(case.model.SerializeToString())
    (inputs, expected) = case.data_sets[0]
    (got,) = sess.run(None, dict(zip([a.name for a in sess.get_inputs()], inputs)))
    assert got.dtype == expected[0].dtype and got.shape == expected[0].shape
    assert set(np.unique(got).tolist()) <= {0, 1}


def test_bernoulli_mean_follows_p():
    from ziggurat.ops.random import Bernoulli

    p = np.full(200_000, 0.3, np.float32)
    for seed in (None, 0.0):
        a = Bernoulli(p) if seed is None else Bernoulli(p, seed=seed)
        assert abs(float(a[0].mean()) - 0.3) < 0.01
