"""Signal kernels (DFT, STFT, MelWeightMatrix, windows) against onnxruntime and numpy."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops._ort import ort_outputs
from ziggurat.errors import ExecutionError
from ziggurat.ops.signal import (
    DFT,
    DFT_17,
    STFT,
    BlackmanWindow,
    HammingWindow,
    HannWindow,
    MelWeightMatrix,
)


def run_ort(op, inputs, opset=20, **attrs):
    return ort_outputs(op, inputs, opset=opset, ir_version=9, **attrs)[0]


RNG = np.random.default_rng(0)
COMPLEX = RNG.standard_normal((2, 8, 6, 2)).astype(np.float32)
REAL = RNG.standard_normal((2, 8, 6, 1)).astype(np.float32)


@pytest.mark.parametrize("x", [COMPLEX, REAL], ids=["complex", "real"])
@pytest.mark.parametrize("inverse", [0, 1])
@pytest.mark.parametrize("length", [None, 5, 12])
@pytest.mark.parametrize("axis", [1, 2, -2, -3])
def test_dft_matches_onnxruntime(x, inverse, length, axis):
    n = None if length is None else np.array(length, np.int64)
    ax = np.array(axis, np.int64)
    (y,) = DFT(x, n, ax, inverse=inverse)
    assert y.dtype == np.float32 and y.shape[-1] == 2
    np.testing.assert_allclose(y, run_ort("DFT", [x, n, ax], inverse=inverse), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("length", [None, 6, 12])
def test_rfft_and_irfft_match_onnxruntime(length):
    n = None if length is None else np.array(length, np.int64)
    ax = np.array(1, np.int64)
    (y,) = DFT(REAL, n, ax, onesided=1)
    np.testing.assert_allclose(y, run_ort("DFT", [REAL, n, ax], onesided=1), rtol=1e-4, atol=1e-4)
    (back,) = DFT(y, None, ax, onesided=1, inverse=1)
    assert back.shape[-1] == 1
    if length is None:
        np.testing.assert_allclose(back, REAL, atol=1e-5)
        np.testing.assert_allclose(
            back, run_ort("DFT", [y, None, ax], onesided=1, inverse=1), atol=1e-5
        )


def test_dft17_axis_attribute_and_float64():
    x = COMPLEX.astype(np.float64)
    (y,) = DFT_17(x, axis=2)
    assert y.dtype == np.float64
    c = x[..., 0] + 1j * x[..., 1]
    np.testing.assert_allclose(y[..., 0] + 1j * y[..., 1], np.fft.fft(c, axis=2), atol=1e-12)
    with pytest.raises(ExecutionError, match="axis"):
        DFT_17(x, axis=3)


@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("use_window,frame_length", [(False, 16), (True, None), (True, 20)])
def test_stft_matches_onnxruntime(onesided, use_window, frame_length):
    sig = RNG.standard_normal((2, 64, 1)).astype(np.float32)
    step = np.array(5, np.int64)
    window = np.hanning(20).astype(np.float32) if use_window else None
    fl = None if frame_length is None else np.array(frame_length, np.int64)
    (y,) = STFT(sig, step, window, fl, onesided=onesided)
    ref = run_ort("STFT", [sig, step, window, fl], opset=17, onesided=onesided)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_stft_complex_signal_is_two_sided():
    sig = RNG.standard_normal((1, 32, 2)).astype(np.float32)
    (y,) = STFT(sig, np.array(8, np.int64), None, np.array(16, np.int64))
    assert y.shape == (1, 3, 16, 2)
    c = sig[0, :16, 0] + 1j * sig[0, :16, 1]
    np.testing.assert_allclose(y[0, 0, :, 0] + 1j * y[0, 0, :, 1], np.fft.fft(c), atol=1e-4)


@pytest.mark.parametrize(
    "bins,n_fft,rate,lo,hi",
    [
        (40, 512, 16000, 20.0, 8000.0),
        (80, 400, 16000, 0.0, 8000.0),
        (13, 256, 22050, 300.0, 5000.0),
    ],
)
def test_melweightmatrix_matches_onnxruntime(bins, n_fft, rate, lo, hi):
    args = [
        np.array(bins, np.int64),
        np.array(n_fft, np.int64),
        np.array(rate, np.int64),
        np.array(lo, np.float32),
        np.array(hi, np.float32),
    ]
    (w,) = MelWeightMatrix(*args)
    assert w.dtype == np.float32 and w.shape == (n_fft // 2 + 1, bins)
    np.testing.assert_allclose(w, run_ort("MelWeightMatrix", args, opset=17), atol=1e-6)


@pytest.mark.parametrize(
    "fn,ref", [(HannWindow, np.hanning), (HammingWindow, None), (BlackmanWindow, np.blackman)]
)
@pytest.mark.parametrize("size", [1, 2, 7, 16])
def test_windows_against_numpy_and_onnxruntime(fn, ref, size):
    (sym,) = fn(np.array(size, np.int64), periodic=0, output_datatype=11)
    assert sym.dtype == np.float64
    if ref is None:  # Hamming with ONNX's alpha = 25/46 (numpy uses 0.54)
        n = np.arange(size)
        ref_sym = 25 / 46 - 21 / 46 * np.cos(2 * np.pi * n / (size - 1)) if size > 1 else np.ones(1)
    else:
        ref_sym = ref(size)
    np.testing.assert_allclose(sym, ref_sym, atol=1e-12)
    (per,) = fn(np.array(size, np.int64))
    assert per.dtype == np.float32
    name = fn.__name__
    np.testing.assert_allclose(per, run_ort(name, [np.array(size, np.int64)], opset=17), atol=1e-6)
