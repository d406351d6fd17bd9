"""The ONNX node conformance cases of every op the Vulkan backend has a kernel for, run through a
session placed on the device and compared with ONNX's expected outputs at each case's own
tolerance. A case whose node the backend's ``supports`` refuses (float64, int8, 3-D pooling...)
runs on the CPU instead: it is skipped here with that reason (the CPU suite covers it)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ziggurat as zg
from tests.conformance.excludes import BF16_TOLERANCE, NODE_EXCLUDES, RANDOM_CASES
from tests.conformance.runner import _to_numpy, compare, node_cases


def _claimed() -> list[str]:
    """Single-node ai.onnx cases whose op has a Vulkan kernel at the case's opset (importing the
    kernel tables needs no device)."""
    from ziggurat.backends.vulkan import kernel_table

    table = kernel_table()

    out = []
    for name, case in sorted(node_cases().items()):
        if name in NODE_EXCLUDES or name in RANDOM_CASES or name in BF16_TOLERANCE:
            continue
        nodes = case.model.graph.node
        if len(nodes) != 1 or nodes[0].domain not in ("", "ai.onnx"):
            continue
        opset = {o.domain: o.version for o in case.model.opset_import}.get("", 0)
        if table.lookup(nodes[0].op_type, "", opset) is not None:
            out.append(name)
    return out


@pytest.mark.parametrize("name", _claimed())
def test_node_case_on_the_device(be, name):
    case = node_cases()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sess = zg.InferenceSession(
            case.model.SerializeToString(), providers=["WebGpuExecutionProvider"]
        )
    names = [a.name for a in sess.get_inputs()]
    try:
        refused = None
        for k, (inputs, expected) in enumerate(case.data_sets):
            feeds = dict(zip(names, [_to_numpy(x) for x in inputs], strict=True))
            with np.errstate(all="ignore"):
                outs = sess.run(None, feeds)
            step = sess.placement().steps[0]
            if step.where != "device":
                refused = step.reason or "shape arithmetic, computed on the host"
            assert len(outs) == len(expected)
            for i, (e, a) in enumerate(zip(expected, outs, strict=True)):
                compare(_to_numpy(e), a, case.rtol, case.atol, f"data set {k}, output {i}")
    finally:
        sess.close()
    if refused:
        pytest.skip(f"on the CPU: {refused}")
