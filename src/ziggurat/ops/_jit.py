"""Optional numba kernels for elementwise and row-wise work that numpy does in many passes.

Used only where they measurably beat batched numpy (2-core Zen 4, float32, thread CPU time):
the erf GELU of a BERT-base FFN activation (128 x 3072) takes 0.15 ms in one fused loop against
1.4 ms for numpy's ~30 chunked passes, and a LayerNorm of 128 x 768 0.035 ms against 0.10 ms; the residual add before it (SkipLayerNorm)
folded into the same row loop saves one more pass and the sum's temporary.
Softmax and the tanh GELU stay in numpy: numba calls libm's scalar exp/tanh per element, 5-10x
slower than numpy's SIMD loops.

numba is imported on first use by a large enough input (never at ``import ziggurat`` nor at
session creation; loading numba and its on-disk cache costs about 0.5-1 s once per process, paid by
that first run), and everything works without it: callers fall back to their numpy path, which gives the same results within float32 rounding.
Opt-in: ``ZIGGURAT_JIT=1`` (and numba installed, ``pip install 'ziggurat[jit]'``) turns it on.
Off by default because numba and llvmlite add ~118 MiB of RSS for a 2-7 % gain on BERT-base and
GPT-2 (measured 2026-12-06: 86 vs 88 ms, 127 vs 137 ms; bert-tiny unchanged), which would break the
serving-memory goal of model size + 150 MB. The loops use fast-math reassociation and contraction (so sums
may be vectorized) but keep IEEE NaN/inf semantics (no ``nnan``/``ninf`` flags).
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

from ._ewmath import _ERF32_P, _ERF32_Q

MIN_ELEMENTS = (
    1 << 15
)  # inputs this large load numba (bert-tiny's FFN at seq 128: 65k); smaller ones use it once loaded

_lock = threading.Lock()
_state: dict[str, object] = {}


def kernels(size: int) -> SimpleNamespace | None:
    """The compiled kernels, or None when numba is unavailable, disabled, or not loaded yet and
    ``size`` (elements of the caller's input) is below MIN_ELEMENTS."""
    ns = _state.get("ns")
    if ns is not None or "failed" in _state:
        return ns  # type: ignore[return-value]
    if size < MIN_ELEMENTS or os.environ.get("ZIGGURAT_JIT", "0") != "1":
        return None
    with _lock:
        if "ns" not in _state and "failed" not in _state:
            try:
                _state["ns"] = _build()
            except ImportError:
                _state["failed"] = True
    return _state.get("ns")  # type: ignore[return-value]


def _build() -> SimpleNamespace:
    import numba
    import numpy as np

    flags = {"reassoc", "contract", "nsz", "arcp"}  # no nnan/ninf: NaN and inf stay IEEE
    jit = numba.njit(cache=True, fastmath=flags, nogil=True, boundscheck=False, error_model="numpy")
    f32 = np.float32
    p0, p1, p2, p3, p4, p5 = (f32(c) for c in _ERF32_P)
    q0, q1, q2, q3, q4, q5 = (f32(c) for c in _ERF32_Q)

    @jit
    def gelu_erf(x, y):  # pragma: no cover - compiled
        """y[i] = 0.5 x (1 + erf(x / sqrt 2)) over flat float32 arrays (y may be x)."""
        for i in range(x.size):
            v = x[i]
            u = min(max(v * f32(0.70710677), f32(-4.0)), f32(4.0))
            t = u * u
            p = ((((p5 * t + p4) * t + p3) * t + p2) * t + p1) * t + p0
            q = ((((q5 * t + q4) * t + q3) * t + q2) * t + q1) * t + q0
            e = u * p / q
            if u >= f32(4.0):  # the fit leaves erf(4) 1.5e-8 short of 1, scaled by x: saturate
                e = f32(1.0)
            elif u <= f32(-4.0):
                e = f32(-1.0)
            y[i] = f32(0.5) * v * (f32(1.0) + e)

    @jit
    def layer_norm(x, g, b, eps, y):  # pragma: no cover - compiled
        """Each row of the 2-D float32 x normalised (two-pass variance), scaled and shifted."""
        rows, cols = x.shape
        inv_n = f32(1.0) / f32(cols)
        for r in range(rows):
            s = f32(0.0)
            for c in range(cols):
                s += x[r, c]
            m = s * inv_n
            v = f32(0.0)
            for c in range(cols):
                d = x[r, c] - m
                v += d * d
            inv = f32(1.0) / np.sqrt(v * inv_n + eps)
            for c in range(cols):
                y[r, c] = (x[r, c] - m) * inv * g[c] + b[c]

    @jit
    def skip_layer_norm(a, b, g, beta, eps, y, s):  # pragma: no cover - compiled
        """Each row of s = a + b (2-D float32, as numpy's add rounds it) normalised like
        ``layer_norm`` into y; s may be y (the sum is then not kept). One read of a and b and
        one write of y, where add-then-normalise made three passes and a temporary."""
        rows, cols = a.shape
        inv_n = f32(1.0) / f32(cols)
        for r in range(rows):
            t = f32(0.0)
            for c in range(cols):
                v = a[r, c] + b[r, c]
                s[r, c] = v
                t += v
            m = t * inv_n
            var = f32(0.0)
            for c in range(cols):
                d = s[r, c] - m
                var += d * d
            inv = f32(1.0) / np.sqrt(var * inv_n + eps)
            for c in range(cols):
                y[r, c] = (s[r, c] - m) * inv * g[c] + beta[c]

    return SimpleNamespace(
        gelu_erf=gelu_erf, layer_norm=layer_norm, skip_layer_norm=skip_layer_norm
    )
