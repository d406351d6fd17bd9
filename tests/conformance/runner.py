"""Runs ONNX backend conformance cases through Ziggurat and compares with ONNX's expected outputs.

Command line (for development)::

    python tests/conformance/runner.py REGEX [REGEX ...]   # PASS/FAIL per matching node case

The pytest suite (test_node_suite.py, test_data_suite.py) uses the same functions.
"""

from __future__ import annotations

import functools
import re
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import ziggurat as zg  # noqa: E402


@functools.cache
def node_cases() -> dict:
    """All node cases of the installed onnx package, by name (built in memory, ~5 s)."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c.name: c for c in load_model_tests(kind="node")}


def compare(expected, actual, rtol: float, atol: float, where: str = "output") -> None:
    """Raise AssertionError if ``actual`` differs from ``expected`` (values, dtype, structure)."""
    if expected is None:
        assert actual is None, f"{where}: expected an empty optional, got {type(actual).__name__}"
        return
    if isinstance(expected, list):
        assert isinstance(actual, list), (
            f"{where}: expected a sequence, got {type(actual).__name__}"
        )
        assert len(expected) == len(actual), (
            f"{where}: sequence length {len(actual)}, expected {len(expected)}"
        )
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            compare(e, a, rtol, atol, f"{where}[{i}]")
        return
    expected = np.asarray(expected)
    assert isinstance(actual, np.ndarray), f"{where}: expected ndarray, got {type(actual).__name__}"
    assert actual.dtype == expected.dtype, (
        f"{where}: dtype {actual.dtype}, expected {expected.dtype}"
    )
    assert actual.shape == expected.shape, (
        f"{where}: shape {actual.shape}, expected {expected.shape}"
    )
    if expected.dtype == object:
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif (
        expected.dtype.kind in "fc" or expected.dtype.kind == "V" or "float" in str(expected.dtype)
    ):
        e = expected if expected.dtype.kind in "fc" else expected.astype(np.float32)
        a = actual if actual.dtype.kind in "fc" else actual.astype(np.float32)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=where)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=where)


def _to_numpy(value):
    """Data sets sometimes hold TensorProto objects; turn them into arrays."""
    if type(value).__name__ == "TensorProto":
        import onnx.numpy_helper

        return onnx.numpy_helper.to_array(value)
    return value


def run_model_case(model_bytes: bytes, data_sets, rtol: float, atol: float) -> None:
    """Load ``model_bytes`` into a session and check every (inputs, outputs) data set."""
    sess = zg.InferenceSession(model_bytes)
    names = [a.name for a in sess.get_inputs()]
    for k, (inputs, expected) in enumerate(data_sets):
        inputs = [_to_numpy(x) for x in inputs]
        expected = [_to_numpy(x) for x in expected]
        feeds = dict(zip(names, inputs))
        with np.errstate(all="ignore"):
            outs = sess.run(None, feeds)
        assert len(outs) == len(expected), f"{len(outs)} outputs, expected {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, outs, strict=True)):
            compare(e, a, rtol, atol, f"data set {k}, output {i}")


# bfloat16's unit roundoff: half its spacing at 1.0 (eps = 2**-7; 8 significand bits).
BF16_U = 2.0**-8


def bf16_tolerance(data_sets) -> tuple[float, float]:
    """(rtol, atol) for a bfloat16 Attention case whose expected outputs were rounded to bfloat16
    after every step. Y = softmax(QK'/s)·V is a convex combination of V's rows, so an error of
    relative size u in the scores, the softmax (exp, sum, divide) or the weighted sum moves Y by at
    most u·max|V| per rounded step; the reference rounds 4 such steps, and the final rounding of
    the output adds u·|Y| (rtol). max|V| is taken as max|Y| (V is uniform in the generated cases).
    Measured: at most 2 ulps (7.8e-3) off, against an atol of about 1.3e-2 here."""
    scale = max(
        float(np.abs(np.asarray(_to_numpy(e), dtype=np.float32)).max(initial=0.0))
        for _, expected in data_sets
        for e in expected
    )
    return BF16_U, 4 * BF16_U * scale


def run_node_case(name: str, bf16: bool = False) -> None:
    """Run one node case; ``bf16`` compares at :func:`bf16_tolerance` instead of the case's own."""
    case = node_cases()[name]
    rtol, atol = bf16_tolerance(case.data_sets) if bf16 else (case.rtol, case.atol)
    run_model_case(case.model.SerializeToString(), case.data_sets, rtol, atol)


def main(argv: list[str]) -> int:
    pats = [re.compile(p) for p in argv] or [re.compile(".")]
    names = [n for n in node_cases() if any(p.search(n) for p in pats)]
    passed = 0
    failed: list[str] = []
    t0 = time.perf_counter()
    for name in names:
        try:
            run_node_case(name, bf16=name in _bf16_cases())
        except Exception as exc:  # report and go on
            first = f"{type(exc).__name__}: {exc}".strip().splitlines()
            msg = " | ".join(first[:6])
            if not isinstance(exc, (AssertionError, zg.ZigguratError)):
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                msg += f"  [{Path(tb.filename).name}:{tb.lineno}]"
            print(f"FAIL {name}: {msg[:600]}")
            failed.append(name)
        else:
            passed += 1
            print(f"PASS {name}")
    dt = time.perf_counter() - t0
    print(f"{passed} passed, {len(names) - passed} failed ({dt:.1f} s)")
    unexpected = [n for n in failed if n not in _excluded()]
    if unexpected:
        print(f"{len(unexpected)} failure(s) not in tests/conformance/excludes.py: {unexpected}")
    return 1 if unexpected else 0


def _excluded() -> dict[str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from excludes import NODE_EXCLUDES

    return NODE_EXCLUDES


def _bf16_cases() -> dict[str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from excludes import BF16_TOLERANCE

    return BF16_TOLERANCE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
