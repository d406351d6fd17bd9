"""The ONNX node conformance suite (1,884 cases with onnx 1.23), built in memory by the onnx package."""

from __future__ import annotations

import pytest

from .excludes import BF16_TOLERANCE, NODE_EXCLUDES, RANDOM_CASES
from .runner import node_cases, run_node_case


def _params():
    out = []
    for name in sorted(node_cases()):
        marks = []
        if name in RANDOM_CASES:
            marks = [pytest.mark.skip(reason=RANDOM_CASES[name])]
        elif name in NODE_EXCLUDES:
            marks = [pytest.mark.xfail(reason=NODE_EXCLUDES[name], strict=True)]
        out.append(pytest.param(name, id=name, marks=marks))
    return out


@pytest.mark.parametrize("name", _params())
def test_node_case(name):
    run_node_case(name, bf16=name in BF16_TOLERANCE)


def test_suite_size_and_exclusions_are_known():
    """The suite is the one the figures in README were measured on, and excludes name real cases."""
    names = set(node_cases())
    assert len(names) == 1884
    assert not set(NODE_EXCLUDES) - names, "excludes name cases that do not exist"
    assert not set(BF16_TOLERANCE) - names, "bf16 tolerance names cases that do not exist"
