"""ai.onnx.ml LinearRegressor and LinearClassifier."""

from __future__ import annotations

import numpy as np

from ...errors import ExecutionError
from ..registry import kernel
from .common import ML, as_2d_float, binary_scores, class_labels, post_transform_f32


@kernel("LinearRegressor", since=1, domain=ML)
def LinearRegressor(x, /, *, coefficients=None, intercepts=None, post_transform="NONE", targets=1):
    """X @ coefficients.T + intercepts for ``targets`` outputs, then post_transform. float32 out."""
    xf = as_2d_float(x)
    w = np.asarray(coefficients, dtype=np.float32).reshape(int(targets), -1)
    if w.shape[1] != xf.shape[1]:
        raise ExecutionError(
            f"LinearRegressor: {w.size} coefficients for {targets} targets need {w.shape[1]} "
            f"features, input has {xf.shape[1]}"
        )
    y = xf @ w.T
    if intercepts is not None and len(intercepts):
        y = y + np.asarray(intercepts, dtype=np.float32)
    return (post_transform_f32(y, post_transform),)


@kernel("LinearClassifier", since=1, domain=ML)
def LinearClassifier(
    x,
    /,
    *,
    classlabels_ints=None,
    classlabels_strings=None,
    coefficients=None,
    intercepts=None,
    multi_class=0,
    post_transform="NONE",
):
    """Linear scores per class -> (labels, scores). One score column with two labels is the
    binary case: label 1 when the raw score is positive, scores reported as two columns."""
    labels = class_labels(classlabels_ints, classlabels_strings, "LinearClassifier")
    xf = as_2d_float(x)
    w = np.asarray(coefficients, dtype=np.float32).reshape(-1, xf.shape[1])
    scores = xf @ w.T
    if intercepts is not None and len(intercepts):
        scores = scores + np.asarray(intercepts, dtype=np.float32)
    if w.shape[0] == 1:
        positive = scores[:, 0] > 0
        if len(labels) == 2:
            y = np.where(positive, labels[1], labels[0])
            z = binary_scores(scores, post_transform)
        else:
            pos, neg = (labels[0], labels[0]) if len(labels) == 1 else (1, 0)
            y = np.where(positive, pos, neg)
            z = post_transform_f32(scores, post_transform)
    else:
        y = labels[np.argmax(scores, axis=1)]
        z = post_transform_f32(scores, post_transform)
    return y.astype(labels.dtype), z.astype(np.float32)
