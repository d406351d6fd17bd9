"""Signal processing: DFT, STFT, MelWeightMatrix, window functions.

Complex tensors are real tensors with a trailing dimension of 2 (real, imaginary); real signals have a
trailing dimension of 1.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from ..ir.dtypes import FLOAT, to_numpy
from .registry import kernel


def _scalar(a, default=None):
    if a is None:
        return default
    a = np.asarray(a).reshape(-1)
    if a.size == 0:
        return default
    return a[0].item()


def _to_complex(xp, x, what):
    """(..., 1) real or (..., 2) complex tensor -> complex array of shape (...)."""
    if x.ndim < 2 or x.shape[-1] not in (1, 2):
        raise ExecutionError(
            f"{what}: input shape {tuple(x.shape)} must end in 1 (real) or 2 (complex: real, imag)"
        )
    if x.shape[-1] == 1:
        return x[..., 0], False
    cdt = np.complex128 if x.dtype == np.float64 else np.complex64
    return x[..., 0].astype(cdt) + 1j * x[..., 1].astype(cdt), True


def _from_complex(xp, c, dtype):
    return xp.stack([c.real, c.imag], axis=-1).astype(dtype, copy=False)


def _work_float(dtype):
    return np.float64 if dtype == np.float64 else np.float32


def _dft(x, dft_length, axis, inverse, onesided):
    xp = xp_of(x)
    out_dtype = x.dtype
    rank = x.ndim
    ax = axis + rank if axis < 0 else axis
    if not 0 <= ax < rank - 1:
        raise ExecutionError(
            f"DFT: axis {axis} is out of range for input rank {rank}; the last dimension holds the "
            f"real/imaginary parts, so the axis must be in [{-rank}, {-2}] or [0, {rank - 2}]"
        )
    if x.shape[-1] not in (1, 2):
        raise ExecutionError(
            f"DFT: input shape {tuple(x.shape)} must end in 1 (real) or 2 (complex: real, imag)"
        )
    work = x.astype(_work_float(x.dtype), copy=False)
    n = None if dft_length is None else int(dft_length)
    if onesided and inverse:
        # IRFFT: a one-sided complex spectrum in, the full real signal out.
        c, _ = _to_complex(xp, work, "DFT")
        m = c.shape[ax]
        n = 2 * (m - 1) if n is None else n
        y = xp.fft.irfft(c, n=n, axis=ax)
        return y[..., None].astype(out_dtype, copy=False)
    if onesided and x.shape[-1] == 1:
        y = xp.fft.rfft(work[..., 0], n=n, axis=ax)
        return _from_complex(xp, y, out_dtype)
    c, _ = _to_complex(xp, work, "DFT")
    y = xp.fft.ifft(c, n=n, axis=ax) if inverse else xp.fft.fft(c, n=n, axis=ax)
    if onesided:  # complex input, forward: keep the non-redundant half
        keep = y.shape[ax] // 2 + 1
        y = xp.take(y, xp.arange(keep), axis=ax)
    return _from_complex(xp, y, out_dtype)


@kernel("DFT", since=17)
def DFT_17(x, dft_length=None, /, *, axis=1, inverse=0, onesided=0):
    """DFT-17: the axis is an attribute (default 1)."""
    return (_dft(x, _scalar(dft_length), axis, inverse, onesided),)


@kernel("DFT", since=20)
def DFT(x, dft_length=None, axis=None, /, *, inverse=0, onesided=0):
    """DFT-20: the axis is an optional scalar input (default -2, the last signal axis)."""
    return (_dft(x, _scalar(dft_length), int(_scalar(axis, -2)), inverse, onesided),)


@kernel("STFT", since=17)
def STFT(signal, frame_step, window=None, frame_length=None, /, *, onesided=1):
    """Short-time Fourier transform of a (batch, length, 1|2) signal -> (batch, frames, bins, 2)."""
    xp = xp_of(signal)
    if signal.ndim != 3:
        raise ExecutionError(
            f"STFT: signal must have rank 3 (batch, length, 1 or 2), got shape {tuple(signal.shape)}"
        )
    step = int(_scalar(frame_step))
    length = signal.shape[1]
    flen = _scalar(frame_length)
    if flen is None:
        flen = window.shape[0] if window is not None else length
    flen = int(flen)
    if window is not None and window.shape[0] != flen:
        raise ExecutionError(
            f"STFT: window has {window.shape[0]} values but frame_length is {flen}; they must match"
        )
    if step <= 0 or flen <= 0 or flen > length:
        raise ExecutionError(
            f"STFT: need frame_step > 0 and 0 < frame_length <= signal length {length}; got "
            f"frame_step={step}, frame_length={flen}"
        )
    frames = (length - flen) // step + 1
    idx = np.arange(frames)[:, None] * step + np.arange(flen)[None, :]
    work = signal.astype(_work_float(signal.dtype), copy=False)
    c, is_complex = _to_complex(xp, work, "STFT")
    seg = c[:, xp.asarray(idx)]  # (batch, frames, frame_length)
    if window is not None:
        seg = seg * xp.asarray(window).astype(seg.real.dtype)
    if onesided and not is_complex:  # a complex signal has no redundant half to drop
        y = xp.fft.rfft(seg, axis=-1)
    else:
        y = xp.fft.fft(seg, axis=-1)
    return (_from_complex(xp, y, signal.dtype),)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@kernel("MelWeightMatrix", since=17)
def MelWeightMatrix(
    num_mel_bins,
    dft_length,
    sample_rate,
    lower_edge_hertz,
    upper_edge_hertz,
    /,
    *,
    output_datatype=FLOAT,
):
    """Triangular mel filterbank, shape (dft_length // 2 + 1, num_mel_bins), peaks of 1."""
    n_mel = int(_scalar(num_mel_bins))
    n_fft = int(_scalar(dft_length))
    rate = float(_scalar(sample_rate))
    lo, hi = float(_scalar(lower_edge_hertz)), float(_scalar(upper_edge_hertz))
    if n_mel <= 0 or n_fft <= 0 or rate <= 0 or not 0 <= lo < hi:
        raise ExecutionError(
            "MelWeightMatrix: need num_mel_bins > 0, dft_length > 0, sample_rate > 0 and "
            f"0 <= lower_edge_hertz < upper_edge_hertz; got {n_mel}, {n_fft}, {rate}, {lo}, {hi}"
        )
    n_bins = n_fft // 2 + 1
    mel_lo, mel_hi = _hz_to_mel(lo), _hz_to_mel(hi)
    # The step divides by num_mel_bins + 2 (not + 1), as onnxruntime and the ONNX suite do.
    mels = mel_lo + np.arange(n_mel + 2) * ((mel_hi - mel_lo) / (n_mel + 2))
    # Band edges snapped down to whole spectrogram bins.
    edges = np.floor((n_fft + 1) * _mel_to_hz(mels) / rate).astype(np.int64)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    j = np.arange(n_bins)[:, None]
    rise = (j - lower) / np.maximum(center - lower, 1)
    fall = (upper - j) / np.maximum(upper - center, 1)
    w = np.where((j >= lower) & (j < center), rise, 0.0)
    w = np.where((j > center) & (j < upper), fall, w)
    w = np.where(j == center, 1.0, w)
    return (w.astype(to_numpy(output_datatype)),)


def _window(size, periodic, output_datatype, op, coeffs):
    """Generalized cosine window sum_k (-1)^k a_k cos(2 pi k n / N)."""
    n = int(_scalar(size))
    if n < 0:
        raise ExecutionError(f"{op}: size must be >= 0, got {n}")
    denom = n if periodic else n - 1
    k = np.arange(n, dtype=np.float64)
    if denom <= 0:  # a one-point symmetric window is its centre value, 1
        return (np.ones(n, dtype=to_numpy(output_datatype)),)
    phase = 2 * math.pi * k / denom
    w = np.zeros(n)
    for i, a in enumerate(coeffs):
        w = w + ((-1) ** i) * a * np.cos(i * phase)
    return (w.astype(to_numpy(output_datatype)),)


@kernel("HannWindow", since=17)
def HannWindow(size, /, *, output_datatype=FLOAT, periodic=1):
    """Hann window of ``size`` points (periodic or symmetric)."""
    return _window(size, periodic, output_datatype, "HannWindow", (0.5, 0.5))


@kernel("HammingWindow", since=17)
def HammingWindow(size, /, *, output_datatype=FLOAT, periodic=1):
    """Hamming window (alpha = 25/46) of ``size`` points."""
    return _window(size, periodic, output_datatype, "HammingWindow", (25 / 46, 21 / 46))


@kernel("BlackmanWindow", since=17)
def BlackmanWindow(size, /, *, output_datatype=FLOAT, periodic=1):
    """Blackman window of ``size`` points."""
    return _window(size, periodic, output_datatype, "BlackmanWindow", (0.42, 0.5, 0.08))
