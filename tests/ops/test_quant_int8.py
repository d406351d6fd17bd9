"""The int8 execution path: DynamicQuantizeLinear's fast form, oneDNN's u8 x s8 matmul
(``backends/cpu/int8.py``), ``QDense`` and its exact numpy fallback, against onnxruntime.

Integer results are compared exactly; float results within the float32 rounding of the epilogue
(a product and a sum: 2 ulps of the value, plus the bias's spacing), or for GELU within the float32
error of an erf evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from ziggurat.backends.cpu import int8
from ziggurat.ops import quant as Q

from ._contrib import run_both

native = pytest.mark.skipif(
    not int8.native(), reason="oneDNN int8 needs a CPU with AVX512-VNNI, AVX-VNNI or AMX"
)


def _generic_dql(x):
    """DynamicQuantizeLinear written out as onnxruntime's MLAS computes it (float32 throughout)."""
    lo = np.minimum(x.min(), np.float32(0))
    hi = np.maximum(x.max(), np.float32(0))
    scale = np.float32((hi - lo) / np.float32(255))
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    return np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8), scale, np.uint8(zp)


def _inputs():
    rng = np.random.default_rng(11)
    xs = [
        rng.standard_normal((3, 128, 96)).astype(np.float32) * 4,
        np.abs(rng.standard_normal((7, 33))).astype(np.float32),  # zero point 0
        -np.abs(rng.standard_normal((5, 41))).astype(np.float32),  # zero point 255
        rng.standard_normal(1).astype(np.float32),
    ]
    # exact ties of x / scale (k + 0.5) and values at the ends of the range
    t = rng.standard_normal((4, 64)).astype(np.float32)
    t[0, :] = 0
    t[0, :40] = (np.arange(40, dtype=np.float32) - 20 + 0.5) * np.float32(0.125)
    t[1, 0], t[1, 1] = 3e4, -3e4
    xs.append(t)
    return xs


@pytest.mark.parametrize("fast", [True, False], ids=["oneDNN", "numpy"])
def test_dynamic_quantize_fast_path_is_exact(fast, monkeypatch):
    if not fast:
        monkeypatch.setattr(int8, "quantize_u8", lambda *a: None)
    for x in _inputs():
        y, s, zp = Q.dynamic_quantize_u8(x)
        ey, es, ezp = _generic_dql(x)
        assert y.dtype == np.uint8 and s.dtype == np.float32 and zp.dtype == np.uint8
        assert float(s) == float(es) and int(zp) == int(ezp)
        np.testing.assert_array_equal(y, ey)


def test_dynamic_quantize_matches_onnxruntime_on_a_bert_sized_activation():
    x = np.random.default_rng(12).standard_normal((1, 128, 768)).astype(np.float32)
    ref, got = run_both("DynamicQuantizeLinear", [("x", x)], 3, domain="", opset=13,
                        out_types=[np.uint8, np.float32, np.uint8])  # fmt: skip
    for r, g in zip(ref, got):
        assert r.dtype == g.dtype
        np.testing.assert_array_equal(g, r)


def _case(rng, m=96, k=200, n=72, per_column=True):
    qa = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    ws = rng.uniform(1e-3, 1e-2, n if per_column else ()).astype(np.float32)
    return qa, np.uint8(rng.integers(0, 256)), np.float32(0.013), w, ws


def _exact(qa, zp, w):
    return (qa.astype(np.int64) - int(zp)) @ w.astype(np.int64)


def _ulps(v):
    return np.spacing(np.abs(v).astype(np.float32))


@native
@pytest.mark.parametrize("packed", [False, True])
def test_u8s8_matmul_integer_part_is_exact(packed):
    rng = np.random.default_rng(13)
    qa, zp, _, w, _ = _case(rng)
    wk = int8.pack(w) if packed else w
    y = int8.matmul_u8s8(qa, zp, np.float32(1), wk, np.float32(1))
    acc = _exact(qa, zp, w)
    assert np.abs(acc).max() < 2**24  # exactly representable: the float result must equal it
    np.testing.assert_array_equal(y, acc.astype(np.float32))


@native
@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("activation", ["", "relu", "gelu"])
def test_u8s8_matmul_epilogue(per_column, activation):
    rng = np.random.default_rng(14)
    qa, zp, s, w, ws = _case(rng, per_column=per_column)
    b = rng.standard_normal(w.shape[1]).astype(np.float32)
    y = int8.matmul_u8s8(qa.reshape(2, 48, -1), zp, s, int8.pack(w), ws, b, activation)
    assert y.shape == (2, 48, w.shape[1]) and y.dtype == np.float32
    pre = _exact(qa, zp, w).astype(np.float32) * (s * ws) + b
    tol = 2 * _ulps(pre) + _ulps(b)
    if activation == "relu":
        ref = np.maximum(pre, 0)
    elif activation == "gelu":
        from scipy.special import erf

        p64 = pre.astype(np.float64)
        ref = 0.5 * p64 * (1 + erf(p64 / np.sqrt(2)))
        tol = tol + 4 * _ulps(ref) + 1e-6 * np.abs(p64)  # erf evaluated in float32
    else:
        ref = pre
    np.testing.assert_array_less(np.abs(y.reshape(ref.shape) - ref), tol + 1e-30)


def test_pack_keeps_the_bytes():
    if not int8.native():
        pytest.skip("packing needs oneDNN's int8 matmul (VNNI/AMX)")
    w = np.random.default_rng(15).integers(-128, 128, (300, 70)).astype(np.int8)
    p = int8.pack(w)
    assert p.shape == w.shape and p.dtype == np.int8
    np.testing.assert_array_equal(p.unpacked(), w)


@pytest.mark.parametrize("path", ["native", "fallback"])
def test_qdense_matches_onnxruntime_matmul_integer_to_float(path, monkeypatch):
    """QDense is MatMulIntegerToFloat (+ activation): same float result as onnxruntime's
    contrib op, on the oneDNN path and on the exact numpy path."""
    if path == "native" and not int8.native():
        pytest.skip("oneDNN int8 needs VNNI/AMX")
    if path == "fallback":
        monkeypatch.setattr(int8, "native", lambda: False)
    rng = np.random.default_rng(16)
    qa, zp, s, w, ws = _case(rng, m=128, k=768, n=96)
    b = rng.standard_normal(96).astype(np.float32)
    ins = [("a", qa), ("b", w), ("as", np.array(s)), ("bs", ws), ("azp", np.array(zp)),
           ("bzp", None), ("bias", b)]  # fmt: skip
    ref, _ = run_both("MatMulIntegerToFloat", ins, 1, out_types=[np.float32])
    (got,) = Q.QDense(qa, w, np.array(s), ws, np.array(zp), None, b)
    np.testing.assert_array_less(np.abs(got - ref[0]), 2 * _ulps(ref[0]) + _ulps(b) + 1e-30)


def test_qdense_fallback_takes_weight_zero_points():
    """A nonzero weight zero point (uint8 weights) goes the exact numpy way."""
    rng = np.random.default_rng(17)
    qa = rng.integers(0, 256, (5, 40)).astype(np.uint8)
    w = rng.integers(0, 256, (40, 8)).astype(np.uint8)
    wzp = np.uint8(128)
    (got,) = Q.QDense(qa, w, np.array(0.5, np.float32), np.array(0.25, np.float32),
                      np.array(7, np.uint8), np.array(wzp))  # fmt: skip
    acc = (qa.astype(np.int64) - 7) @ (w.astype(np.int64) - 128)
    np.testing.assert_array_equal(got, acc.astype(np.float32) * np.float32(0.125))


def _dynamic_case(rng, x, n=24, per_column=True):
    w = rng.integers(-127, 128, (x.shape[-1], n)).astype(np.int8)
    ws = rng.uniform(1e-3, 1e-2, n if per_column else ()).astype(np.float32)
    return w, ws, rng.standard_normal(n).astype(np.float32)


@pytest.mark.parametrize("path", ["native", "fallback"])
@pytest.mark.parametrize("activation", ["", "gelu"])
def test_dynamic_qdense_is_quantize_then_qdense(path, activation, monkeypatch):
    """DynamicQDense gives exactly what DynamicQuantizeLinear followed by QDense gives (the same
    quantized activation, rounding ties included, and the same integer product and epilogue)."""
    if path == "native" and not int8.native():
        pytest.skip("oneDNN int8 needs VNNI/AMX")
    if path == "fallback":
        monkeypatch.setattr(int8, "native", lambda: False)
    rng = np.random.default_rng(18)
    xs = _inputs() + [np.zeros((3, 16), np.float32)]  # all zeros: scale 1, zero point 0
    for i, x in enumerate(xs):
        w, ws, b = _dynamic_case(rng, x, per_column=bool(i % 2))
        (got,) = Q.DynamicQDense(x, int8.pack(w) if int8.native() else w, ws, None, b,
                                 activation=activation)  # fmt: skip
        qa, s, zp = Q.DynamicQuantizeLinear(x)
        (ref,) = Q.QDense(qa, w, s, ws, zp, None, b, activation=activation)
        assert got.dtype == np.float32 and got.shape == x.shape[:-1] + (w.shape[1],)
        np.testing.assert_array_equal(got, ref)


def test_dynamic_qdense_takes_weight_zero_points():
    """uint8 weights with a zero point take the generic (exact numpy) way."""
    rng = np.random.default_rng(19)
    x = rng.standard_normal((6, 40)).astype(np.float32)
    w = rng.integers(0, 256, (40, 8)).astype(np.uint8)
    ws, wzp = np.array(0.25, np.float32), np.array(128, np.uint8)
    (got,) = Q.DynamicQDense(x, w, ws, wzp)
    qa, s, zp = Q.DynamicQuantizeLinear(x)
    acc = (qa.astype(np.int64) - int(zp)) @ (w.astype(np.int64) - 128)
    np.testing.assert_array_equal(got, acc.astype(np.float32) * (s * ws))


def test_dynamic_qdense_matches_onnxruntime_dynamic_quantize_matmul():
    """Without an activation DynamicQDense is onnxruntime's DynamicQuantizeMatMul: the same
    quantized activation and integer product, float rounding of the epilogue only."""
    rng = np.random.default_rng(20)
    x = rng.standard_normal((1, 128, 768)).astype(np.float32)
    w, ws, b = _dynamic_case(rng, x, n=96)
    ins = [("a", x), ("b", w), ("bs", ws), ("bzp", None), ("bias", b)]
    ref, _ = run_both("DynamicQuantizeMatMul", ins, 1, out_types=[np.float32])
    (got,) = Q.DynamicQDense(x, int8.pack(w) if int8.native() else w, ws, None, b)
    np.testing.assert_array_less(np.abs(got - ref[0]), 2 * _ulps(ref[0]) + _ulps(b) + 1e-30)


@native
def test_dynamic_qdense_bound_operands_follow_each_call():
    """The bound fast path (backends/cpu/int8_dynamic.py) caches a primitive per weight with the
    scales and bias it saw: other scale/bias arrays on the same weight, other shapes and several
    threads at once each get their own exact result."""
    import threading

    rng = np.random.default_rng(26)
    w = rng.integers(-127, 128, (96, 64)).astype(np.int8)
    wp = int8.pack(w)
    xs = [rng.standard_normal((m, 96)).astype(np.float32) for m in (5, 17, 5)]
    params = [(rng.uniform(1e-3, 1e-2, 64).astype(np.float32), rng.standard_normal(64).astype(
        np.float32)) for _ in range(3)]  # fmt: skip

    def ref(x, ws, b):
        qa, s, zp = Q.DynamicQuantizeLinear(x)
        return Q.QDense(qa, w, s, ws, zp, None, b)[0]

    expected = {(i, j): ref(x, *p) for i, x in enumerate(xs) for j, p in enumerate(params)}
    for (i, j), e in expected.items():
        np.testing.assert_array_equal(Q.DynamicQDense(xs[i], wp, *params[j][:1], None,
                                                      params[j][1])[0], e)  # fmt: skip
    errors = []

    def worker(i, j):
        for _ in range(20):
            got = Q.DynamicQDense(xs[i], wp, params[j][0], None, params[j][1])[0]
            if not np.array_equal(got, expected[(i, j)]):
                errors.append((i, j))

    threads = [threading.Thread(target=worker, args=(i, i)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
