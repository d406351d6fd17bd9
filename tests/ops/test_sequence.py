"""Sequence*/Optional* behaviour beyond the conformance cases: no input mutation, ranges, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.ops import sequence as S


def _seq(n):
    return [np.full((2,), i, np.float32) for i in range(n)]


def test_insert_and_erase_never_mutate_the_input():
    seq = _seq(3)
    (inserted,) = S.SequenceInsert(seq, np.zeros(2, np.float32), np.array(-1))
    (erased,) = S.SequenceErase(seq, np.array(0, np.int32))
    assert len(seq) == 3
    assert [float(t[0]) for t in inserted] == [0, 1, 0, 2]
    assert [float(t[0]) for t in erased] == [1, 2]
    (erased_last,) = S.SequenceErase(seq)
    assert len(erased_last) == 2 and float(erased_last[-1][0]) == 1


def test_insert_at_length_appends_and_beyond_is_an_error():
    seq = _seq(2)
    (out,) = S.SequenceInsert(seq, np.ones(2, np.float32), np.array(2))
    assert len(out) == 3
    with pytest.raises(Exception, match="out of range"):
        S.SequenceInsert(seq, np.ones(2, np.float32), np.array(3))


def test_sequence_at_negative_and_out_of_range():
    seq = _seq(3)
    (t,) = S.SequenceAt(seq, np.array(-1, np.int64))
    assert t is seq[2]
    with pytest.raises(Exception, match="out of range"):
        S.SequenceAt(seq, np.array(3, np.int64))


def test_length_and_empty():
    (n,) = S.SequenceLength(_seq(4))
    assert n.dtype == np.int64 and n.shape == () and int(n) == 4
    (empty,) = S.SequenceEmpty(dtype=7)
    assert empty == []
    (construct,) = S.SequenceConstruct(*_seq(2))
    assert isinstance(construct, list) and len(construct) == 2


def test_split_to_sequence_variants():
    x = np.arange(10, dtype=np.int32).reshape(5, 2)
    (pieces,) = S.SplitToSequence(x, np.array(2, np.int64))
    assert [p.shape for p in pieces] == [(2, 2), (2, 2), (1, 2)]
    (pieces,) = S.SplitToSequence(x, np.array([1, 4], np.int64))
    assert [p.shape for p in pieces] == [(1, 2), (4, 2)]
    (pieces,) = S.SplitToSequence(x, axis=-1, keepdims=0)
    assert [p.shape for p in pieces] == [(5,), (5,)]
    np.testing.assert_array_equal(pieces[1], x[:, 1])
    (pieces,) = S.SplitToSequence(np.arange(3, dtype=np.float32), keepdims=0)
    assert all(isinstance(p, np.ndarray) and p.shape == () for p in pieces)
    with pytest.raises(Exception, match="sum to"):
        S.SplitToSequence(x, np.array([1, 1], np.int64))


def test_concat_from_sequence_axis_and_new_axis():
    seq = [np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)]
    (c,) = S.ConcatFromSequence(seq, axis=-1)
    assert c.shape == (2, 6)
    (s,) = S.ConcatFromSequence(seq, axis=-1, new_axis=1)
    assert s.shape == (2, 3, 2)
    np.testing.assert_array_equal(s[..., 1], 1)
    with pytest.raises(Exception, match="empty"):
        S.ConcatFromSequence([], axis=0)


def test_sequence_map_zips_sequences_and_broadcasts_tensors():
    seq = _seq(3)
    other = [np.full((2,), 10 * i, np.float32) for i in range(3)]
    bias = np.float32(100)

    def body(a, b, c):
        return [a + b + c, np.array(a.shape, np.int64)]

    sums, shapes = S.SequenceMap(seq, other, bias, body=body, n_outputs=2)
    assert [float(t[0]) for t in sums] == [100, 111, 122]
    assert all(sh.tolist() == [2] for sh in shapes)
    assert len(seq) == 3


def test_sequence_map_empty_and_length_mismatch():
    assert S.SequenceMap([], body=lambda a: [a], n_outputs=2) == ([], [])
    with pytest.raises(Exception, match="equal lengths"):
        S.SequenceMap(_seq(2), _seq(3), body=lambda a, b: [a])


def test_optional_ops():
    (none,) = S.Optional(type=None)
    assert none is None
    x = np.ones(2, np.float32)
    (opt,) = S.Optional(x)
    assert opt is x
    (has,) = S.OptionalHasElement(opt)
    assert has.dtype == np.bool_ and has.shape == () and bool(has)
    assert not bool(S.OptionalHasElement(None)[0])
    assert not bool(S.OptionalHasElement()[0])
    assert bool(S.OptionalHasElement([])[0])  # an empty sequence is still an element
    assert S.OptionalGetElement(opt)[0] is x
    with pytest.raises(Exception, match="empty"):
        S.OptionalGetElement(None)
