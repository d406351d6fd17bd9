"""Data movement is exact: views share the block, copies move bits."""

from __future__ import annotations

import numpy as np
import pytest

from ._harness import cpu, dev

RNG = np.random.default_rng(19)


def _same(be, op, inputs, attrs=None, opset=17):
    got = dev(be, op, inputs, attrs, opset=opset)
    want = cpu(op, inputs, attrs, opset=opset)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (op, g.shape, w.shape)
        np.testing.assert_array_equal(g, w)


X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
I = np.arange(24, dtype=np.int64).reshape(2, 3, 4) - 12


@pytest.mark.parametrize("x", [X, I, X > 10])
def test_views_and_copies_on_every_carried_dtype(be, x):
    _same(be, "Reshape", [x, np.array([0, -1], np.int64)])
    _same(be, "Flatten", [x], {"axis": 2})
    _same(be, "Unsqueeze", [x, np.array([0, -1], np.int64)])
    _same(be, "Squeeze", [x[:1], np.array([0], np.int64)])
    _same(be, "Transpose", [x], {"perm": [2, 0, 1]})
    _same(be, "Expand", [x[:, :1], np.array([2, 3, 4], np.int64)])
    _same(be, "Concat", [x, x[:, :2]], {"axis": 1})


def test_reshape_is_a_view(be):
    t = be.to_device(X)
    entry = be.kernel("Reshape", "", 17)
    (v,) = entry.fn(be, [t, np.array([6, 4], np.int64)], {})
    assert v.block is t.block
    be.release(t)
    np.testing.assert_array_equal(be.to_host(v), X.reshape(6, 4))
    be.release(v)


@pytest.mark.parametrize(
    "starts,ends,axes,steps",
    [([0, 1], [2, 3], [0, 2], [1, 1]), ([-1], [-4], [2], [-1]), ([2, 0], [0, 9], [1, 2], [-2, 3]),
     ([1], [2**62], [0], [1])],
)  # fmt: skip
def test_slice(be, starts, ends, axes, steps):
    args = [np.array(v, np.int64) for v in (starts, ends, axes, steps)]
    _same(be, "Slice", [X, *args], opset=13)


def test_split_and_gather(be):
    _same(be, "Split", [X, np.array([1, 2], np.int64)], {"axis": 1}, opset=13)
    idx = np.array([[2, -1], [0, 1]], np.int64)
    for axis in (0, 1, 2, -1):
        _same(be, "Gather", [X, idx % 2 if axis == 0 else idx], {"axis": axis}, opset=13)
    emb = RNG.standard_normal((50, 8)).astype(np.float32)
    _same(be, "Gather", [emb, np.array([[3, 49, 0]], np.int64)], {"axis": 0}, opset=13)


def test_host_known_tensors(be):
    _same(be, "Shape", [X], opset=15)
    _same(be, "Size", [X], opset=13)
    _same(
        be,
        "ConstantOfShape",
        [np.array([2, 3], np.int64)],
        {"value": np.array([7], np.int64)},
        opset=9,
    )
    _same(
        be, "Range", [np.array(1, np.int64), np.array(9, np.int64), np.array(3, np.int64)], opset=11
    )


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
@pytest.mark.parametrize("x", [X, I])
def test_pad_modes_and_crops(be, mode, x):
    pads = np.array([1, 0, 2, 0, 2, -1], np.int64)  # begins then ends; a negative end crops
    value = np.array(2.5 if x.dtype == np.float32 else 7, x.dtype)
    _same(be, "Pad", [x, pads, value], {"mode": mode}, opset=19)
    axes = np.array([-1], np.int64)
    _same(be, "Pad", [x, np.array([3, 2], np.int64), value, axes], {"mode": mode}, opset=19)


def test_tile(be):
    _same(be, "Tile", [X, np.array([2, 1, 3], np.int64)], opset=13)
    _same(be, "Tile", [X > 5, np.array([1, 2, 1], np.int64)], opset=13)
