"""What the ai.onnx.ml kernels share: attribute strings, lookup tables, score post-transforms,
class labels and float feature matrices.

Where the spec leaves a detail open, these kernels follow onnxruntime, which is what sklearn-onnx
converted models are validated against.
"""

from __future__ import annotations

import numpy as np

from ...errors import ExecutionError

ML = "ai.onnx.ml"

# ---------------------------------------------------------------------------------------------
# Shared helpers


def _strs(values):
    """Attribute strings (bytes or str) as a list of str."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _sdt(a):
    """An object/str array as numpy StringDType (sortable and searchable)."""
    return np.asarray(a, dtype=object).astype(np.dtypes.StringDType())


def lookup_table(keys, values, x, default):
    """Map each element of ``x`` through keys -> values (later duplicate keys win), else default.

    Vectorized with a sorted key array and searchsorted; string keys go through StringDType and
    float NaN keys match NaN inputs.
    """
    keys = np.asarray(keys)
    values = np.asarray(values)
    x = np.asarray(x)
    flat = x.reshape(-1)
    if keys.dtype == object or keys.dtype.kind in "US" or keys.dtype.kind == "T":
        k = _sdt(keys)
        q = _sdt(flat) if flat.size else np.array([], dtype=np.dtypes.StringDType())
    else:
        k = keys
        q = flat.astype(keys.dtype, copy=False) if flat.dtype != object else flat.astype(keys.dtype)
    # Keep the last occurrence of each key: unique over the reversed arrays.
    uk, first_rev = np.unique(k[::-1], return_index=True)
    uv = values[::-1][first_rev]
    out = np.empty(flat.shape, dtype=values.dtype)
    out[...] = default
    if uk.size and flat.size:
        pos = np.clip(np.searchsorted(uk, q), 0, uk.size - 1)
        hit = uk[pos] == q
        if k.dtype.kind == "f":
            nan_keys = np.isnan(uk)
            if nan_keys.any():  # NaN sorts last; a NaN key matches any NaN input
                nan_val = uv[np.flatnonzero(nan_keys)[0]]
                is_nan = np.isnan(q)
                out[is_nan] = nan_val
                hit &= ~is_nan
        out[hit] = uv[pos[hit]]
    return out.reshape(x.shape)


def _logistic(v):
    return 1.0 / (1.0 + np.exp(-v))


def _softmax(v):
    e = np.exp(v - v.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _softmax_zero(v):
    """Softmax over the non-zero entries of each row; zero entries stay zero."""
    nz = v != 0
    m = np.where(nz, v, -np.inf).max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.where(nz, np.exp(v - m), 0.0)
    s = e.sum(axis=1, keepdims=True)
    return np.where(s > 0, e / np.where(s > 0, s, 1), 0.0)


def _probit(v):
    """sqrt(2) * erfinv(2v - 1), with the same closed-form erfinv approximation as onnxruntime."""
    x = 2 * v - 1
    sgn = np.where(x < 0, -1.0, 1.0)
    t = (1 - x) * (1 + x)
    with np.errstate(divide="ignore", invalid="ignore"):  # outside (0, 1) is NaN/inf, as in ORT
        lg = np.log(t)
        a = 0.147
        p = 2 / (3.14159 * a) + 0.5 * lg
        q = lg / a
        return 1.41421356 * sgn * np.sqrt(-p + np.sqrt(p * p - q))


_POST = {"NONE": 0, "SOFTMAX": 1, "LOGISTIC": 2, "SOFTMAX_ZERO": 3, "PROBIT": 4}


def post_transform(scores, how):
    """Apply a post_transform (name or the TreeEnsemble-5 integer code) to (N, K) scores.

    The elementwise transforms (LOGISTIC, PROBIT) apply to any number of columns; a softmax of a
    single column is left as the raw score, as onnxruntime does. (onnxruntime also skips LOGISTIC
    on one column, a known bug: microsoft/onnxruntime#26596; we follow the spec there.)
    """
    code = _POST.get(how, how) if isinstance(how, str) else int(how)
    if code == 0 or (scores.shape[-1] == 1 and code in (1, 3)):
        return scores
    if code == 1:
        return _softmax(scores)
    if code == 2:
        return _logistic(scores)
    if code == 3:
        return _softmax_zero(scores)
    if code == 4:
        return _probit(scores)
    raise ExecutionError(
        f"unknown post_transform {how!r}; expected NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO or PROBIT"
    )


def post_transform_f32(scores, how):
    return np.asarray(post_transform(scores, how), dtype=np.float32)


def binary_scores(raw, how):
    """Two score columns [1 - v, v] from one raw score column, v being the raw score passed
    through LOGISTIC or PROBIT, else the raw score itself (onnxruntime's rule)."""
    code = _POST.get(how, how) if isinstance(how, str) else int(how)
    v = _logistic(raw) if code == 2 else _probit(raw) if code == 4 else raw
    return np.concatenate([1 - v, v], axis=1)


def class_labels(classlabels_ints=None, classlabels_strings=None, op="classifier"):
    """The label array of a classifier (int64 or object) from whichever attribute is set."""
    if classlabels_strings:
        return np.array(_strs(classlabels_strings), dtype=object)
    if classlabels_ints is not None and len(classlabels_ints):
        return np.asarray(classlabels_ints, dtype=np.int64)
    raise ExecutionError(f"{op}: set classlabels_ints/int64s or classlabels_strings")


def as_2d_float(x, dtype=np.float32):
    """Input features as a 2-D (N, F) float array (1-D input is one row)."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    elif x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    return x.astype(dtype, copy=False)
