"""Random generators: RandomNormal/Uniform(+Like), Bernoulli, Multinomial, and Dropout (a
random mask in training mode, the identity at inference).

A ``seed`` attribute makes a node deterministic: every run of it draws the same numbers (the seed
float's bit pattern seeds a fresh numpy Generator). Without a seed, draws come from one shared
generator seeded by the OS. Samples are drawn in float64 and cast to the requested dtype; the
generation happens on the host (the session moves the result to the graph's device).
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from ..ir import dtypes
from .registry import kernel
from .shape import host_scalar

_SHARED_RNG = np.random.default_rng()


def _rng(seed) -> np.random.Generator:
    if seed is None:
        return _SHARED_RNG
    return np.random.default_rng(int(np.float64(seed).view(np.uint64)))


def _dtype(code, default: np.dtype) -> np.dtype:
    if code is None:
        return default
    dt = dtypes.to_numpy(int(code))
    if dt.kind in "Ob":
        raise ExecutionError(
            f"random ops produce numbers; dtype {dtypes.name(int(code))} is not allowed"
        )
    return dt


def _shape(shape) -> tuple[int, ...]:
    shape = tuple(int(d) for d in np.atleast_1d(shape)) if shape is not None else ()
    if any(d < 0 for d in shape):
        raise ExecutionError(f"random op shape {shape} has a negative dimension")
    return shape


@kernel("RandomNormal", since=1)
def RandomNormal(*, shape, dtype=1, mean=0.0, scale=1.0, seed=None):
    """Samples from N(mean, scale²) of the given shape and dtype (default float)."""
    y = _rng(seed).normal(mean, scale, _shape(shape))
    return (np.asarray(y).astype(_dtype(dtype, np.dtype(np.float32))),)


@kernel("RandomUniform", since=1)
def RandomUniform(*, shape, dtype=1, high=1.0, low=0.0, seed=None):
    """Samples from U[low, high) of the given shape and dtype (default float)."""
    y = _rng(seed).uniform(low, high, _shape(shape))
    return (np.asarray(y).astype(_dtype(dtype, np.dtype(np.float32))),)


@kernel("RandomNormalLike", since=1)
def RandomNormalLike(x, /, *, dtype=None, mean=0.0, scale=1.0, seed=None):
    """RandomNormal with X's shape and (unless ``dtype`` is given) X's dtype."""
    y = _rng(seed).normal(mean, scale, x.shape)
    return (np.asarray(y).astype(_dtype(dtype, x.dtype)),)


@kernel("RandomUniformLike", since=1)
def RandomUniformLike(x, /, *, dtype=None, high=1.0, low=0.0, seed=None):
    """RandomUniform with X's shape and (unless ``dtype`` is given) X's dtype."""
    y = _rng(seed).uniform(low, high, x.shape)
    return (np.asarray(y).astype(_dtype(dtype, x.dtype)),)


@kernel("Bernoulli", since=15)
def Bernoulli(x, /, *, dtype=None, seed=None):
    """1 with probability X (elementwise), else 0; dtype defaults to X's."""
    p = np.asarray(x, dtype=np.float64)
    y = _rng(seed).random(p.shape) < p
    return (y.astype(_dtype(dtype, x.dtype) if dtype is not None else x.dtype),)


@kernel("Multinomial", since=7)
def Multinomial(x, /, *, dtype=6, sample_size=1, seed=None):
    """``sample_size`` class indices per row of X [batch, classes] of unnormalized log-probabilities."""
    logits = np.asarray(x, dtype=np.float64)
    if logits.ndim != 2:
        raise ExecutionError(
            f"Multinomial: input must be 2-D [batch, classes], got shape {logits.shape}"
        )
    out_dtype = _dtype(dtype, np.dtype(np.int32))
    if out_dtype not in (np.int32, np.int64):
        raise ExecutionError(f"Multinomial: dtype must be int32 or int64, got {out_dtype}")
    batch, classes = logits.shape
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    u = _rng(seed).random((batch, int(sample_size)))
    out = np.empty((batch, int(sample_size)), dtype=out_dtype)
    for b in range(batch):  # one searchsorted per batch row
        out[b] = np.minimum(np.searchsorted(cdf[b], u[b], side="right"), classes - 1)
    return (out,)


# -- Dropout ---------------------------------------------------------------------------------------


def _all_true(x, dtype):
    return xp_of(x).ones(x.shape, dtype=dtype)


@kernel("Dropout", since=12)
def Dropout(data, ratio=None, training_mode=None, /, *, seed=None, n_outputs=1):
    """Identity at inference; with ``training_mode`` true, zero elements with probability ``ratio``
    and scale the rest by 1/(1-ratio). The mask comes from numpy's MT19937 seeded with ``seed``."""
    r = 0.5 if ratio is None else float(host_scalar(ratio))
    training = training_mode is not None and bool(host_scalar(training_mode))
    if not training or r == 0.0:
        if n_outputs < 2:  # no mask wanted: skip allocating one
            return (data,)
        return data, _all_true(data, np.bool_)
    if not 0.0 <= r < 1.0:
        raise ExecutionError(f"Dropout: ratio must be in [0, 1) in training mode, got {r}")
    if seed is None:
        draw = np.random.default_rng().random(data.shape)
    else:
        draw = np.random.RandomState(int(seed)).uniform(0.0, 1.0, data.shape)
    xp = xp_of(data)
    mask = xp.asarray(draw >= r)
    return (data * mask) * (1.0 / (1.0 - r)), mask


@kernel("Dropout", since=1)
def Dropout_1(data, /, *, ratio=0.5, is_test=0, opset=1, n_outputs=1):
    """Dropout-1..10: inference only, so the output is the input and the mask all ones (of the
    input's dtype before opset 10, bool from 10)."""
    if n_outputs < 2:
        return (data,)
    return data, _all_true(data, np.bool_ if opset >= 10 else data.dtype)
