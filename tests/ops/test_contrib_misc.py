"""com.microsoft Trilu, GridSample, Inverse and CDist against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from ._contrib import assert_close, check, f32_tol, run_both


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, -1, 2])
def test_trilu(upper, k):
    rng = np.random.default_rng(0)
    ins = [("x", rng.standard_normal((2, 4, 5)).astype(np.float32))]
    if k is not None:
        ins.append(("k", np.array(k, np.int64)))
    check("Trilu", ins, 1, {"upper": upper})


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample(mode, padding_mode, align_corners):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, (1, 3, 4, 2)).astype(np.float32)
    attrs = {"mode": mode, "padding_mode": padding_mode, "align_corners": align_corners}
    check("GridSample", [("x", x), ("g", grid)], 1, attrs, n_terms=16)


def test_inverse():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 4, 4)) + 4 * np.eye(4)).astype(np.float32)
    ref, got = run_both("Inverse", [("x", x)])
    # the error of an inverse scales with the condition number
    cond = np.linalg.cond(x.astype(np.float64)).max()
    assert_close(got[0], ref[0], f32_tol(ref[0], 4) * cond, "Inverse")


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_cdist(metric):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal((4, 7)).astype(np.float32)
    b[0] = a[0]  # a zero distance: the clamped |a|^2 + |b|^2 - 2ab must not go negative
    ref, got = run_both("CDist", [("a", a), ("b", b)], 1, {"metric": metric})
    # |a|^2 + |b|^2 - 2 a.b cancels: the error is relative to the squared norms, not the result
    scale = float((a * a).sum(1).max() + (b * b).sum(1).max())
    tol = 16 * np.finfo(np.float32).eps * scale * 7
    if metric == "euclidean":
        tol = np.sqrt(tol)  # sqrt(d + e) - sqrt(d) <= sqrt(e)
    assert_close(got[0], ref[0], tol, "CDist")


@pytest.mark.parametrize("axis", [0, 2, -1])
def test_expand_dims(axis):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    check("ExpandDims", [("x", x), ("a", np.array(axis, np.int32))])


@pytest.mark.parametrize("dtype", [np.int64, np.float32])
@pytest.mark.parametrize("with_delta", [False, True])
def test_range(dtype, with_delta):
    ins = [("s", np.array(2, dtype)), ("l", np.array(11, dtype))]
    if with_delta:
        ins.append(("d", np.array(3, dtype)))
    check("Range", ins)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(mode):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ins = [("x", x), ("p", np.array([1, 0, 0, 2], np.int64))]
    if mode == "constant":
        ins.append(("v", np.array([1.5], np.float32)))
    check("Pad", ins, 1, {"mode": mode})


def test_unique_first_occurrence_order():
    x = np.array([3, 1, 3, 2, 1, 7], np.float32)
    check("Unique", [("x", x)], 3, out_types=[np.float32, np.int64, np.int64])
