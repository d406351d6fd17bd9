"""MatMul / Gemm / Einsum / MatMulInteger / Det against onnxruntime and numpy on seeded random inputs."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from tests.ops.test_conv import run_ort
from ziggurat.ops.matmul import Det, Einsum, Gemm, MatMul, MatMulInteger

SHAPES = [
    ((4, 5), (5, 3)),
    ((2, 3, 4), (4, 6)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((4,), (4, 3)),
    ((2, 3, 4), (4,)),
    ((4,), (4,)),
    ((1, 128, 64), (64, 96)),
]


@pytest.mark.parametrize("sa,sb", SHAPES)
def test_matmul_matches_onnxruntime(sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
    y = MatMul(a, b)[0]
    ref = run_ort("MatMul", [a, b])
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "dtype",
    [
        np.int8,
        np.uint8,
        np.int16,
        np.int32,
        np.int64,
        np.uint32,
        np.uint64,
        np.float16,
        np.float64,
        ml_dtypes.bfloat16,
    ],
)
def test_matmul_keeps_dtype(dtype):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, (2, 3, 4)).astype(dtype)
    b = rng.integers(0, 5, (4, 5)).astype(dtype)
    y = MatMul(a, b)[0]
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y.astype(np.float64), a.astype(np.float64) @ b.astype(np.float64))


def test_matmul_rejects_mismatched_inner_dims():
    with pytest.raises(Exception, match="inner dimensions"):
        MatMul(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32))


@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("cshape", [None, (), (1,), (5,), (3, 1), (3, 5)])
def test_gemm_matches_onnxruntime(ta, tb, cshape):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 3) if ta else (3, 4)).astype(np.float32)
    b = rng.standard_normal((5, 4) if tb else (4, 5)).astype(np.float32)
    c = None if cshape is None else rng.standard_normal(cshape).astype(np.float32)
    attrs = dict(transA=ta, transB=tb, alpha=0.5, beta=2.0)
    y = Gemm(a, b, c, **attrs)[0]
    ref = run_ort("Gemm", [a, b, c], **attrs)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.float64])
def test_gemm_keeps_dtype(dtype):
    a = np.arange(6).reshape(2, 3).astype(dtype)
    c = np.array([1, 2], dtype)
    y = Gemm(a, a, c, transB=1)[0]
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(
        y.astype(np.float64), a.astype(np.float64) @ a.T.astype(np.float64) + c
    )


@pytest.mark.parametrize(
    "eq,shapes",
    [
        ("ij,jk->ik", [(3, 4), (4, 5)]),
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
        ("...ij,...jk", [(2, 3, 4), (2, 4, 5)]),
        ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)]),
        ("ii->i", [(4, 4)]),
        ("ij->", [(3, 4)]),
        ("bA , Ac -> bc", [(2, 3), (3, 4)]),
        ("bhqd,bhkd->bhqk", [(1, 4, 16, 8), (1, 4, 16, 8)]),
    ],
)
def test_einsum_matches_onnxruntime(eq, shapes):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    y = Einsum(*xs, equation=eq)[0]
    ref = run_ort("Einsum", xs, equation=eq)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_einsum_integer_and_half():
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert Einsum(a, a, equation="ij,ij->i")[0].dtype == np.int64
    h = a.astype(np.float16)
    np.testing.assert_array_equal(Einsum(h, equation="ij->ji")[0], h.T)


def test_matmulinteger_zero_points_are_exact():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 255, (2, 5, 7), dtype=np.uint8)
    b = rng.integers(-128, 127, (7, 3), dtype=np.int8)
    cases = [
        (None, None),
        (np.array(12, np.uint8), np.array(-3, np.int8)),
        (np.array(1, np.uint8), np.array([1, 2, -3], np.int8)),
    ]
    for za, zb in cases:
        y = MatMulInteger(a, b, za, zb)[0]
        assert y.dtype == np.int32
        exact = (a.astype(np.int64) - (0 if za is None else za.astype(np.int64))) @ (
            b.astype(np.int64) - (0 if zb is None else zb.astype(np.int64))
        )
        np.testing.assert_array_equal(y, exact)
        # onnxruntime's u8 x s8 AVX2 kernel saturates pairwise int16 sums, so compare it on small values.
        small = a // 2
        np.testing.assert_array_equal(
            MatMulInteger(small, b, za, zb)[0], run_ort("MatMulInteger", [small, b, za, zb])
        )


def test_det_matches_numpy():
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = Det(x)[0]
    assert y.dtype == np.float32 and y.shape == (2, 3)
    np.testing.assert_allclose(y, np.linalg.det(x.astype(np.float64)), rtol=1e-4, atol=1e-5)
    y2 = Det(x[0, 0])[0]
    assert isinstance(y2, np.ndarray) and y2.shape == ()
    assert Det(x.astype(np.float16))[0].dtype == np.float16
