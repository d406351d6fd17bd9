"""Tensor ops (ops/tensor.py, ops/indexing.py): attribute forms, edge cases the conformance suite
does not pin, and onnxruntime parity on seeded random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.errors import ExecutionError
from ziggurat.ir import SparseTensor
from ziggurat.ops import indexing as I
from ziggurat.ops import matmul as M
from ziggurat.ops import reduce as R
from ziggurat.ops import sort as SO
from ziggurat.ops import tensor as T

from .test_shape import i64, ort_run

rng = np.random.default_rng(1)


# -- Constant / ConstantOfShape / Range / EyeLike --------------------------------------------------


def test_constant_attribute_forms():
    assert T.Constant(value_float=1.5)[0].dtype == np.float32
    (y,) = T.Constant(value_floats=[1.0, 2.0])
    assert y.dtype == np.float32 and y.shape == (2,)
    (y,) = T.Constant(value_int=3)
    assert y.dtype == np.int64 and y.shape == ()
    assert T.Constant(value_ints=[])[0].shape == (0,)
    (s,) = T.Constant(value_strings=["a", "bc"])
    assert s.dtype == object and s.tolist() == ["a", "bc"]
    assert T.Constant(value_string="x")[0].shape == ()
    with pytest.raises(ExecutionError, match="no value attribute"):
        T.Constant()


class _Sparse:  # any object with values/indices/dims will do
    def __init__(self, values, indices, dims):
        self.values, self.indices, self.dims = values, indices, dims


@pytest.mark.parametrize("cls", [SparseTensor, _Sparse])
def test_constant_sparse_value_linear_and_coordinate_indices(cls):
    vals = np.array([1.0, 2.0], np.float32)
    (y,) = T.Constant(sparse_value=cls(vals, i64(1, 5), (2, 3)))
    np.testing.assert_array_equal(y, [[0, 1, 0], [0, 0, 2]])
    (y,) = T.Constant(sparse_value=cls(vals, np.array([[0, 1], [1, 2]]), (2, 3)))
    np.testing.assert_array_equal(y, [[0, 1, 0], [0, 0, 2]])


def test_constant_of_shape():
    (y,) = T.ConstantOfShape(i64(2, 3))
    assert y.dtype == np.float32 and y.shape == (2, 3) and not y.any()
    (y,) = T.ConstantOfShape(i64(), value=np.array([7], np.int32))
    assert y.dtype == np.int32 and y.shape == () and y == 7


@pytest.mark.parametrize(
    "start,limit,delta",
    [(0, 10, 3), (10, -4, -3), (5, 5, 1), (5, 1, 1), (0.0, 1.0, 0.1), (1.0, -2.5, -0.75)],
)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_range_matches_onnxruntime(start, limit, delta, dtype):
    if np.dtype(dtype).kind == "i" and isinstance(delta, float):
        pytest.skip("float steps only for float dtypes")
    args = [np.array(v, dtype) for v in (start, limit, delta)]
    (y,) = T.Range(*args)
    (expected,) = ort_run("Range", args, opset=11)
    assert y.dtype == expected.dtype
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_eyelike_offsets_and_dtype():
    x = np.zeros((3, 5), np.int32)
    (y,) = T.EyeLike(x, k=-1)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, np.eye(3, 5, -1))
    assert T.EyeLike(x, dtype=9)[0].dtype == np.bool_


# -- OneHot / Trilu / CumSum / CumProd -------------------------------------------------------------


def test_onehot_matches_onnxruntime():
    idx = rng.integers(-6, 6, size=(3, 4)).astype(np.int64)
    depth = np.array(5, np.int64)
    vals = np.array([-1, 2], np.int64)
    for axis in (-1, 0, 1):
        (y,) = T.OneHot(idx, depth, vals, axis=axis)
        np.testing.assert_array_equal(
            y, ort_run("OneHot", [idx, depth, vals], {"axis": axis}, opset=11)[0]
        )
        assert y.dtype == np.int64


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [-2, 0, 3])
def test_trilu_batched(upper, k):
    x = rng.integers(1, 9, size=(2, 3, 4, 5)).astype(np.int64)
    (y,) = M.Trilu(x, np.array(k, np.int64), upper=upper)
    np.testing.assert_array_equal(
        y, ort_run("Trilu", [x, np.array(k, np.int64)], {"upper": upper}, opset=14)[0]
    )


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_cumsum_matches_onnxruntime(exclusive, reverse, dtype):
    x = rng.integers(-5, 5, size=(3, 4, 5)).astype(dtype)
    axis = np.array(1, np.int32)
    attrs = {"exclusive": exclusive, "reverse": reverse}
    (y,) = R.CumSum(x, axis, **attrs)
    assert y.dtype == x.dtype
    np.testing.assert_allclose(y, ort_run("CumSum", [x, axis], attrs, opset=14)[0])


def test_cumprod_exclusive_reverse():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    (y,) = R.CumProd(x, np.array(-1), exclusive=1, reverse=1)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, [[6, 3, 1], [30, 6, 1]])
    assert R.CumProd(np.zeros((2, 0)), np.array(1))[0].shape == (2, 0)


# -- TopK / Unique / NonZero / Compress ------------------------------------------------------------


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_topk_ties_match_onnxruntime(largest, dtype):
    x = rng.integers(0, 6, size=(4, 50)).astype(dtype)  # many ties
    k = i64(7)
    vals, idx = SO.TopK(x, k, axis=1, largest=largest)
    e_vals, e_idx = ort_run("TopK", [x, k], {"axis": 1, "largest": largest}, opset=11, n_outputs=2)
    np.testing.assert_array_equal(vals, e_vals)
    np.testing.assert_array_equal(idx, e_idx)
    assert vals.dtype == x.dtype and idx.dtype == np.int64


def test_topk_attribute_form_and_bad_k():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0], np.float32)
    vals, idx = SO.TopK_1(x, k=2)
    assert vals.tolist() == [5.0, 4.0] and idx.tolist() == [4, 2]
    with pytest.raises(ExecutionError, match="out of range"):
        SO.TopK(x, i64(6))


@pytest.mark.parametrize("sorted_", [0, 1])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_unique_matches_onnxruntime(sorted_, axis):
    x = rng.integers(0, 3, size=(6, 2)).astype(np.float32)
    attrs = {"sorted": sorted_} | ({} if axis is None else {"axis": axis})
    got = SO.Unique(x, sorted=sorted_, axis=axis)
    expected = ort_run("Unique", [x], attrs, opset=11, n_outputs=4)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
        assert g.dtype == e.dtype


def test_unique_strings_and_empty():
    x = np.array(["b", "a", "b"], dtype=object)
    y, first, inverse, counts = SO.Unique(x)
    assert y.tolist() == ["a", "b"] and first.tolist() == [1, 0]
    assert inverse.tolist() == [1, 0, 1] and counts.tolist() == [1, 2]
    y, *rest = SO.Unique(np.zeros(0, np.float32))
    assert y.shape == (0,) and all(r.shape == (0,) for r in rest)


def test_nonzero_shapes():
    (y,) = T.NonZero(np.array([[0, 2], [3, 0]]))
    assert y.dtype == np.int64 and y.tolist() == [[0, 1], [1, 0]]
    assert T.NonZero(np.array(5.0))[0].shape == (1, 1)  # as onnxruntime
    assert T.NonZero(np.zeros((2, 3)))[0].shape == (2, 0)


def test_compress_short_condition_and_flatten():
    x = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(I.Compress(x, np.array([False, True]), axis=1)[0], x[:, 1:2])
    np.testing.assert_array_equal(I.Compress(x, np.array([1, 0, 1], bool))[0], [0, 2])
    with pytest.raises(ExecutionError, match="condition has 5"):
        I.Compress(x, np.ones(5, bool), axis=0)


# -- Gather / Scatter ------------------------------------------------------------------------------


def test_gather_negative_and_out_of_range():
    x = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(I.Gather(x, np.array([[-1, 0]]), axis=1)[0], x[:, [[3, 0]]])
    assert I.Gather(x, np.array(-3))[0].tolist() == [0, 1, 2, 3]
    with pytest.raises(ExecutionError, match="Gather"):
        I.Gather(x, np.array([3]))


def test_gather_elements_smaller_indices():
    x = rng.standard_normal((4, 5)).astype(np.float32)
    idx = np.array([[0, -1], [3, 2], [1, 1]], np.int64)
    (y,) = I.GatherElements(x, idx, axis=1)
    np.testing.assert_array_equal(y, ort_run("GatherElements", [x, idx], {"axis": 1}, opset=13)[0])


@pytest.mark.parametrize("batch_dims", [0, 1, 2])
def test_gathernd_matches_onnxruntime(batch_dims):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    k = 4 - batch_dims - 1
    lead = x.shape[:batch_dims]
    idx = np.stack(
        [rng.integers(-d, d, size=(*lead, 3)) for d in x.shape[batch_dims : batch_dims + k]], -1
    )
    (y,) = I.GatherND(x, idx, batch_dims=batch_dims)
    np.testing.assert_array_equal(
        y, ort_run("GatherND", [x, idx], {"batch_dims": batch_dims}, opset=13)[0]
    )


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_duplicates_match_onnxruntime(reduction):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    idx = rng.integers(-6, 6, size=(3, 5)).astype(np.int64)
    if reduction == "none":  # with repeats the result is undefined; use a permutation
        idx = np.tile(rng.permutation(6)[:5], (3, 1)).astype(np.int64)
    upd = rng.standard_normal((3, 5)).astype(np.float32)
    attrs = {"axis": 1, "reduction": reduction}
    (y,) = I.ScatterElements(x, idx, upd, **attrs)
    np.testing.assert_allclose(
        y, ort_run("ScatterElements", [x, idx, upd], attrs, opset=18)[0], rtol=1e-6
    )
    assert not np.shares_memory(y, x)


@pytest.mark.parametrize("reduction", ["add", "mul", "max", "min"])
def test_scatternd_duplicates_match_onnxruntime(reduction):
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    idx = np.array([[[0, 1], [3, -2]], [[0, 1], [-4, 2]]], np.int64)
    upd = rng.standard_normal((2, 2, 2)).astype(np.float32)
    (y,) = I.ScatterND(x, idx, upd, reduction=reduction)
    expected = ort_run("ScatterND", [x, idx, upd], {"reduction": reduction}, opset=18)[0]
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_scatter_deprecated_alias():
    x = np.zeros((2, 3), np.int32)
    (y,) = I.Scatter(x, np.array([[2, 0]]), np.array([[5, 6]], np.int32), axis=1)
    assert y.tolist() == [[6, 0, 5], [0, 0, 0]]
