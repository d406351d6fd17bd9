"""The ai.onnx.ml domain: feature transforms, encoders, map ops, and the helpers the model ops share.

Linear models live in ``ml_linear.py``, tree ensembles in ``ml_forest.py`` / ``ml_trees.py`` and
SVMs in ``ml_svm.py``; the score post-transforms they share are here. Where the spec leaves a
detail open, these kernels follow onnxruntime, which is what sklearn-onnx converted models are
validated against.
"""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel

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


# ---------------------------------------------------------------------------------------------
# Simple transforms


@kernel("ArrayFeatureExtractor", since=1, domain=ML)
def ArrayFeatureExtractor(x, indices, /):
    """Select ``indices`` along the last axis of ``x``."""
    xp = xp_of(x)
    idx = np.asarray(indices).reshape(-1).astype(np.int64)
    last = x.shape[-1]
    if idx.size and (idx.min() < 0 or idx.max() >= last):
        raise ExecutionError(
            f"ArrayFeatureExtractor: indices {idx.tolist()} out of range for last dimension {last}"
        )
    y = xp.take(x, xp.asarray(idx), axis=-1)
    if x.ndim == 1:  # onnxruntime returns a row for 1-D input
        y = y.reshape(1, -1)
    return (y,)


@kernel("Binarizer", since=1, domain=ML)
def Binarizer(x, /, *, threshold=0.0):
    """1 where x > threshold, else 0 (same dtype as x)."""
    xp = xp_of(x)
    return (xp.where(x > threshold, 1, 0).astype(x.dtype),)


@kernel("Normalizer", since=1, domain=ML)
def Normalizer(x, /, *, norm="MAX"):
    """Row-wise MAX / L1 / L2 normalization; rows whose divisor is 0 pass through. float32 out."""
    xp = xp_of(x)
    v = x.astype(np.float32) if x.ndim == 2 else x.astype(np.float32).reshape(1, -1)
    if norm == "MAX":
        d = v.max(axis=1, keepdims=True)
    elif norm == "L1":
        d = xp.abs(v).sum(axis=1, keepdims=True)
    elif norm == "L2":
        d = xp.sqrt((v * v).sum(axis=1, keepdims=True))
    else:
        raise ExecutionError(f"Normalizer: unknown norm {norm!r}; expected MAX, L1 or L2")
    y = xp.where(d != 0, v / xp.where(d != 0, d, 1), v)
    return (y.reshape(x.shape).astype(np.float32),)


@kernel("Scaler", since=1, domain=ML)
def Scaler(x, /, *, offset=None, scale=None):
    """(x - offset) * scale, per feature (last axis) or broadcast from one value. float32 out."""
    xp = xp_of(x)
    off = np.asarray(offset if offset is not None else [0.0], dtype=np.float32)
    sc = np.asarray(scale if scale is not None else [1.0], dtype=np.float32)
    for name, v in (("offset", off), ("scale", sc)):
        if v.size not in (1, x.shape[-1] if x.ndim else 1):
            raise ExecutionError(
                f"Scaler: {name} has {v.size} values; expected 1 or one per feature ({x.shape[-1]})"
            )
    return (((x.astype(np.float32) - xp.asarray(off)) * xp.asarray(sc)).astype(np.float32),)


@kernel("Imputer", since=1, domain=ML)
def Imputer(
    x,
    /,
    *,
    imputed_value_floats=None,
    imputed_value_int64s=None,
    replaced_value_float=0.0,
    replaced_value_int64=0,
):
    """Replace elements equal to the replaced value (NaN matches NaN) with the imputed value(s)."""
    xp = xp_of(x)
    if x.dtype.kind == "f":
        vals, rep = imputed_value_floats, float(replaced_value_float)
    else:
        vals, rep = imputed_value_int64s, int(replaced_value_int64)
    if vals is None or len(vals) == 0:
        raise ExecutionError(
            "Imputer: imputed_value_floats (float input) or imputed_value_int64s (integer input) "
            "must be set"
        )
    v = np.asarray(vals).astype(x.dtype)
    if v.size not in (1, x.shape[-1]):
        raise ExecutionError(
            f"Imputer: {v.size} imputed values; expected 1 or one per feature ({x.shape[-1]})"
        )
    hit = xp.isnan(x) if (x.dtype.kind == "f" and np.isnan(rep)) else x == rep
    return (xp.where(hit, xp.asarray(v), x).astype(x.dtype, copy=False),)


@kernel("OneHotEncoder", since=1, domain=ML)
def OneHotEncoder(x, /, *, cats_int64s=None, cats_strings=None, zeros=1):
    """One-hot over the category list: output shape x.shape + [n_categories], float32."""
    if cats_strings:
        cats = np.array(_strs(cats_strings), dtype=object)
        keys = x
    elif cats_int64s is not None and len(cats_int64s):
        cats = np.asarray(cats_int64s, dtype=np.int64)
        keys = np.asarray(x).astype(np.int64)
    else:
        raise ExecutionError("OneHotEncoder: set cats_int64s or cats_strings")
    pos = lookup_table(cats, np.arange(len(cats), dtype=np.int64), keys, -1)
    if not zeros and (pos < 0).any():
        raise ExecutionError(
            "OneHotEncoder: an input value is not among the categories and zeros=0; "
            "set zeros=1 to encode unknown values as all zeros"
        )
    y = (pos[..., None] == np.arange(len(cats))).astype(np.float32)
    return (y,)


@kernel("FeatureVectorizer", since=1, domain=ML)
def FeatureVectorizer(*inputs, inputdimensions=None):
    """Concatenate inputs (each [N, C] or [C]) along the feature axis, padding/truncating each
    to its declared width. float32 out."""
    dims = list(inputdimensions) if inputdimensions else [None] * len(inputs)
    if len(dims) != len(inputs):
        raise ExecutionError(
            f"FeatureVectorizer: {len(inputs)} inputs but {len(dims)} inputdimensions"
        )
    parts = []
    n = None
    for a, d in zip(inputs, dims):
        a = as_2d_float(a)
        n = a.shape[0] if n is None else n
        if d is not None:
            d = int(d)
            a = a[:, :d] if a.shape[1] >= d else np.pad(a, ((0, 0), (0, d - a.shape[1])))
        parts.append(a)
    return (np.concatenate(parts, axis=1) if parts else np.zeros((0, 0), np.float32),)


@kernel("CategoryMapper", since=1, domain=ML)
def CategoryMapper(
    x, /, *, cats_int64s=None, cats_strings=None, default_int64=-1, default_string="_Unused"
):
    """Map strings to int64 or int64 to strings through the parallel category lists."""
    ints = np.asarray(cats_int64s if cats_int64s is not None else [], dtype=np.int64)
    strs = np.array(_strs(cats_strings or []), dtype=object)
    if ints.size != strs.size:
        raise ExecutionError(
            f"CategoryMapper: cats_int64s ({ints.size}) and cats_strings ({strs.size}) differ in length"
        )
    if x.dtype == object:
        return (lookup_table(strs, ints, x, default_int64),)
    return (lookup_table(ints, strs, np.asarray(x).astype(np.int64), default_string),)


def _tensor_or_list(t, lst, dtype):
    if t is not None:
        return np.asarray(t).reshape(-1)
    if lst is None:
        return None
    return np.array(_strs(lst), dtype=object) if dtype is object else np.asarray(lst, dtype=dtype)


@kernel("LabelEncoder", since=1, domain=ML)
def LabelEncoder(
    x,
    /,
    *,
    classes_strings=None,
    default_float=-0.0,
    default_int64=-1,
    default_string="_Unused",
    default_tensor=None,
    keys_floats=None,
    keys_int64s=None,
    keys_strings=None,
    keys_tensor=None,
    values_floats=None,
    values_int64s=None,
    values_strings=None,
    values_tensor=None,
):
    """Map each element through keys_* -> values_* (opset 2/4), or classes_strings (opset 1)."""
    if classes_strings is not None and keys_strings is None and keys_tensor is None:
        # Opset 1: strings <-> their index in classes_strings.
        classes = np.array(_strs(classes_strings), dtype=object)
        idx = np.arange(len(classes), dtype=np.int64)
        if x.dtype == object:
            return (lookup_table(classes, idx, x, default_int64),)
        return (lookup_table(idx, classes, np.asarray(x).astype(np.int64), default_string),)
    keys = next(
        (
            k
            for k in (
                _tensor_or_list(keys_tensor, None, None),
                _tensor_or_list(None, keys_strings, object),
                _tensor_or_list(None, keys_int64s, np.int64),
                _tensor_or_list(None, keys_floats, np.float32),
            )
            if k is not None
        ),
        None,
    )
    if values_tensor is not None:
        values = np.asarray(values_tensor).reshape(-1)
    elif values_strings is not None:
        values = np.array(_strs(values_strings), dtype=object)
    elif values_int64s is not None:
        values = np.asarray(values_int64s, dtype=np.int64)
    elif values_floats is not None:
        values = np.asarray(values_floats, dtype=np.float32)
    else:
        values = None
    if keys is None or values is None or len(keys) != len(values):
        raise ExecutionError(
            "LabelEncoder: set exactly one keys_* and one values_* attribute of the same length"
        )
    if default_tensor is not None:
        default = np.asarray(default_tensor).reshape(-1)[0]
    elif values.dtype == object:
        default = default_string
    elif values.dtype.kind in "iu":
        default = default_int64
    else:
        default = default_float
    return (lookup_table(keys, values, x, default),)


# ---------------------------------------------------------------------------------------------
# Maps: ZipMap, DictVectorizer, CastMap


@kernel("ZipMap", since=1, domain=ML)
def ZipMap(x, /, *, classlabels_int64s=None, classlabels_strings=None):
    """Rows of scores -> a list of {label: score} dicts (ONNX seq(map))."""
    labels = class_labels(classlabels_int64s, classlabels_strings, "ZipMap").tolist()
    v = np.asarray(x, dtype=np.float32)
    v = v.reshape(1, -1) if v.ndim == 1 else v
    if v.shape[1] != len(labels):
        raise ExecutionError(
            f"ZipMap: input has {v.shape[1]} columns but there are {len(labels)} class labels"
        )
    return ([dict(zip(labels, row)) for row in v.tolist()],)


def _map_value_dtype(values):
    if values and all(isinstance(v, str) for v in values):
        return np.dtype(object)
    arr = np.asarray(values)
    if arr.dtype == np.float64 and not any(isinstance(v, np.float64) for v in values):
        return np.dtype(np.float32)  # Python floats: ONNX maps are map(*, float) in practice
    return arr.dtype


@kernel("DictVectorizer", since=1, domain=ML)
def DictVectorizer(x, /, *, int64_vocabulary=None, string_vocabulary=None):
    """A dict (or list of dicts) -> dense rows indexed by the vocabulary; missing keys are 0."""
    if string_vocabulary:
        vocab = _strs(string_vocabulary)
    elif int64_vocabulary is not None and len(int64_vocabulary):
        vocab = [int(v) for v in int64_vocabulary]
    else:
        raise ExecutionError("DictVectorizer: set int64_vocabulary or string_vocabulary")
    maps = [x] if isinstance(x, dict) else list(x)
    index = {k: i for i, k in enumerate(vocab)}
    all_vals = [v for m in maps for v in m.values()]
    dt = _map_value_dtype(all_vals) if all_vals else np.dtype(np.float32)
    if dt.kind == "O":
        out = np.full((len(maps), len(vocab)), "", dtype=object)
    else:
        out = np.zeros((len(maps), len(vocab)), dtype=dt)
    for r, m in enumerate(maps):  # one dict per row; a dict's items are Python objects anyway
        cols = [index.get(k, -1) for k in m]
        vals = list(m.values())
        keep = [i for i, c in enumerate(cols) if c >= 0]
        out[r, [cols[i] for i in keep]] = [vals[i] for i in keep]
    return (out,)


@kernel("CastMap", since=1, domain=ML)
def CastMap(x, /, *, cast_to="TO_FLOAT", map_form="DENSE", max_map=1):
    """An int64-keyed map -> a [1, N] tensor ordered by key (DENSE) or placed by key (SPARSE)."""
    dtypes = {"TO_FLOAT": np.float32, "TO_INT64": np.int64, "TO_STRING": object}
    if cast_to not in dtypes:
        raise ExecutionError(f"CastMap: unknown cast_to {cast_to!r}; expected {', '.join(dtypes)}")
    dt = dtypes[cast_to]
    keys = np.array(sorted(x), dtype=np.int64)
    vals = [x[k] for k in keys.tolist()]
    if dt is object:
        conv = np.array([str(v) for v in vals], dtype=object)
    else:
        conv = np.asarray([float(v) for v in vals]).astype(dt)
    if map_form == "DENSE":
        return (conv.reshape(1, -1),)
    if map_form != "SPARSE":
        raise ExecutionError(f"CastMap: unknown map_form {map_form!r}; expected DENSE or SPARSE")
    if keys.size and (keys.min() < 0 or keys.max() >= max_map):
        raise ExecutionError(f"CastMap: keys must be in [0, max_map={max_map}) for SPARSE")
    out = (
        np.zeros(int(max_map), dtype=dt)
        if dt is not object
        else np.full(int(max_map), "0", dtype=object)
    )
    out[keys] = conv
    return (out.reshape(1, -1),)
