"""ai.onnx.ml feature transforms, encoders and map ops: ArrayFeatureExtractor, Binarizer,
Normalizer, Scaler, Imputer, OneHotEncoder, FeatureVectorizer, CategoryMapper, LabelEncoder, ZipMap,
DictVectorizer, CastMap.
"""

from __future__ import annotations

import numpy as np

from ...backends import xp_of
from ...errors import ExecutionError
from ..registry import kernel
from .common import ML, _strs, as_2d_float, class_labels, lookup_table

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
