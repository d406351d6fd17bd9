"""If/Loop/Scan against the subgraph contract, with plain Python callables as bodies."""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.ir import Type, dtypes
from ziggurat.ops.control import If, Loop, Scan, Scan_8


def test_if_returns_the_chosen_branch_outputs_of_any_kind():
    seq = [np.ones(2, np.float32)]
    (out,) = If(np.array(True), then_branch=lambda: [seq], else_branch=lambda: [None])
    assert out is seq
    (out,) = If(np.array([False]), then_branch=lambda: [seq], else_branch=lambda: [None])
    assert out is None


def test_if_rejects_a_multi_element_cond():
    with pytest.raises(Exception, match="one-element"):
        If(np.array([True, False]), then_branch=lambda: [], else_branch=lambda: [])


def _counting_body(stop_after=None):
    """Carries a running sum of iteration numbers; scans out i*i; cond false after ``stop_after``."""

    def body(i, cond, acc):
        assert i.dtype == np.int64 and i.shape == () and cond.dtype == np.bool_
        keep = np.array(True if stop_after is None else int(i) + 1 < stop_after)
        return [keep, acc + i.astype(np.float32), (i * i).astype(np.float32)]

    return body


def test_loop_trip_count_only_ignores_cond_output():
    acc, squares = Loop(
        np.array(4, np.int64), None, np.float32(0), body=_counting_body(stop_after=1)
    )
    assert float(acc) == 6.0
    np.testing.assert_array_equal(squares, np.array([0, 1, 4, 9], np.float32))


def test_loop_cond_only_is_a_while_loop():
    acc, squares = Loop(None, np.array(True), np.float32(0), body=_counting_body(stop_after=3))
    assert float(acc) == 3.0 and squares.shape == (3,)


def test_loop_both_given_stops_at_first_limit():
    acc, squares = Loop(
        np.array(10, np.int64), np.array(True), np.float32(0), body=_counting_body(stop_after=2)
    )
    assert squares.shape == (2,)
    acc, squares = Loop(
        np.array(2, np.int64), np.array(True), np.float32(0), body=_counting_body(stop_after=9)
    )
    assert squares.shape == (2,)


def test_loop_with_neither_limit_still_ends_on_cond():
    acc, squares = Loop(None, None, np.float32(0), body=_counting_body(stop_after=5))
    assert squares.shape == (5,)


def test_loop_false_cond_runs_zero_times_and_keeps_initial_values():
    init = [np.ones(3, np.float32)]

    def body(i, cond, seq):
        return [cond, seq + [np.zeros(1)], np.zeros((2, 3), np.int32)]

    body.output_types = [
        Type(elem_type=dtypes.BOOL, shape=()),
        Type(kind="sequence", elem=Type(elem_type=dtypes.FLOAT)),
        Type(elem_type=dtypes.INT32, shape=(2, 3)),
    ]
    seq, scan = Loop(np.array(3, np.int64), np.array(False), init, body=body)
    assert seq is init
    assert scan.shape == (0, 2, 3) and scan.dtype == np.int32


def test_loop_carries_sequences_and_optionals():
    def body(i, cond, opt):
        base = [] if opt is None else opt
        return [cond, base + [np.full((int(i) + 1,), float(i), np.float32)]]

    (seq,) = Loop(np.array(3, np.int64), None, None, body=body)
    assert [s.shape for s in seq] == [(1,), (2,), (3,)]


def _sum_body(state, x):
    new = state + x
    return [new, new * 2]


def test_scan9_axes_and_directions():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    state, out = Scan(
        np.zeros(3, np.float32), x, body=_sum_body, num_scan_inputs=1, scan_input_axes=[1]
    )
    np.testing.assert_array_equal(state, x.sum(axis=1))
    assert out.shape == (4, 3)
    np.testing.assert_array_equal(out, 2 * np.cumsum(x, axis=1).T)

    state, out = Scan(
        np.zeros(3, np.float32),
        x,
        body=_sum_body,
        num_scan_inputs=1,
        scan_input_axes=[-1],
        scan_input_directions=[1],
        scan_output_axes=[1],
        scan_output_directions=[1],
    )
    # Input read backward and output prepended: output[:, t] is 2 * (sum of x[:, t:]).
    expected = 2 * np.cumsum(x[:, ::-1], axis=1)[:, ::-1]
    np.testing.assert_array_equal(out, expected)


def test_scan9_scalar_elements_are_arrays():
    seen = []

    def body(state, x):
        seen.append(type(x))
        return [state + x]

    (state,) = Scan(
        np.array(0.0, np.float32), np.arange(3, dtype=np.float32), body=body, num_scan_inputs=1
    )
    assert float(state) == 3.0 and set(seen) == {np.ndarray}


def test_scan9_rejects_mismatched_lengths():
    with pytest.raises(Exception, match="different lengths"):
        Scan(np.zeros(1), np.zeros(2), np.zeros(3), body=_sum_body, num_scan_inputs=2)


def test_scan8_batches_and_pads_short_sequences():
    x = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    init = np.zeros((2, 2), np.float32)
    state, out = Scan_8(np.array([3, 1], np.int32), init, x, body=_sum_body, num_scan_inputs=1)
    np.testing.assert_array_equal(state, [x[0].sum(axis=0), x[1, 0]])
    assert out.shape == (2, 3, 2)
    np.testing.assert_array_equal(out[1, 1:], 0)
    np.testing.assert_array_equal(out[1, 0], 2 * x[1, 0])


def test_scan8_reverse_direction():
    x = np.arange(3, dtype=np.float32).reshape(1, 3, 1)
    state, out = Scan_8(
        None, np.zeros((1, 1), np.float32), x, body=_sum_body, num_scan_inputs=1, directions=[1]
    )
    np.testing.assert_array_equal(out[0, :, 0], [4, 6, 6])
