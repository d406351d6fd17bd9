"""ai.onnx.ml support vector machines: SVMClassifier and SVMRegressor (libsvm semantics).

A classifier with support vectors is one-vs-one (libsvm's pairwise decision values and votes, or
Platt-scaled pairwise probabilities coupled into class probabilities when prob_a/prob_b are set);
without support vectors it is a linear model with one coefficient row per class.
"""

from __future__ import annotations

import numpy as np

from ...errors import ExecutionError
from ..registry import kernel
from .common import ML, as_2d_float, binary_scores, class_labels
from .common import post_transform as apply_post


def _kernel_matrix(x, sv, kernel_type, kernel_params):
    """K(x_i, sv_j) for all rows of ``x`` (N, F) and ``sv`` (S, F): (N, S) float32."""
    gamma, coef0, degree = (list(kernel_params or []) + [0.0, 0.0, 0.0])[:3]
    dot = x @ sv.T
    if kernel_type == "LINEAR":
        return dot
    if kernel_type == "POLY":
        return (np.float32(gamma) * dot + np.float32(coef0)) ** int(degree)
    if kernel_type == "RBF":
        sq = (x * x).sum(axis=1)[:, None] + (sv * sv).sum(axis=1)[None, :] - 2 * dot
        return np.exp(-np.float32(gamma) * np.maximum(sq, 0))
    if kernel_type == "SIGMOID":
        return np.tanh(np.float32(gamma) * dot + np.float32(coef0))
    raise ExecutionError(
        f"SVM: unknown kernel_type {kernel_type!r}; expected LINEAR, POLY, RBF or SIGMOID"
    )


@kernel("SVMRegressor", since=1, domain=ML)
def SVMRegressor(
    x,
    /,
    *,
    coefficients=None,
    kernel_params=None,
    kernel_type="LINEAR",
    n_supports=0,
    one_class=0,
    post_transform="NONE",
    rho=None,
    support_vectors=None,
):
    """SVM regression (sum of coefficient-weighted kernels + rho) or one-class SVM (+1/-1)."""
    xf = as_2d_float(x)
    coef = np.asarray(coefficients, dtype=np.float32).reshape(-1)
    r = float(np.asarray(rho if rho is not None else [0.0]).reshape(-1)[0])
    if n_supports > 0:
        sv = np.asarray(support_vectors, dtype=np.float32).reshape(int(n_supports), -1)
        k = _kernel_matrix(xf, sv, kernel_type, kernel_params)
        y = k @ coef[: sv.shape[0]] + np.float32(r)
    else:  # linear: the coefficients are the weight vector
        y = _kernel_matrix(xf, coef.reshape(1, -1), kernel_type, kernel_params)[:, 0] + np.float32(
            r
        )
    if one_class:
        y = np.where(y > 0, 1.0, -1.0)
    y = apply_post(y.reshape(-1, 1).astype(np.float32), post_transform)
    return (np.asarray(y, dtype=np.float32),)


def _sigmoid_predict(dec, a, b):
    """libsvm's numerically stable 1 / (1 + exp(dec * A + B))."""
    f = dec * a + b
    pos = f >= 0
    ef = np.exp(-np.abs(f))
    return np.where(pos, ef / (1 + ef), 1 / (1 + ef))


def _couple(r):
    """Pairwise probabilities r (N, k, k) -> class probabilities (N, k) (libsvm's method 2)."""
    n, k, _ = r.shape
    eye = np.eye(k, dtype=bool)
    rt = np.swapaxes(r, 1, 2)
    q = np.where(eye, 0.0, -rt * r)
    q[:, np.arange(k), np.arange(k)] = np.where(eye, 0.0, rt * rt).sum(axis=2)
    p = np.full((n, k), 1.0 / k)
    qp = np.zeros((n, k))
    eps = 0.005 / k
    active = np.ones(n, dtype=bool)
    for _ in range(max(100, k)):  # libsvm's fixed-point iterations; converged rows stop moving
        qp = np.einsum("nij,nj->ni", q, p)
        pqp = (p * qp).sum(axis=1)
        active &= np.abs(qp - pqp[:, None]).max(axis=1) >= eps
        if not active.any():
            break
        for t in range(k):  # coordinate sweep over the (few) classes
            qtt = q[:, t, t]
            diff = np.where(active, (-qp[:, t] + pqp) / np.where(qtt == 0, 1, qtt), 0.0)
            p[:, t] += diff
            pqp = (pqp + diff * (diff * qtt + 2 * qp[:, t])) / (1 + diff) ** 2
            qp = (qp + diff[:, None] * q[:, t, :]) / (1 + diff)[:, None]
            p = p / (1 + diff)[:, None]
    return p


@kernel("SVMClassifier", since=1, domain=ML)
def SVMClassifier(
    x,
    /,
    *,
    classlabels_ints=None,
    classlabels_strings=None,
    coefficients=None,
    kernel_params=None,
    kernel_type="LINEAR",
    post_transform="NONE",
    prob_a=None,
    prob_b=None,
    rho=None,
    support_vectors=None,
    vectors_per_class=None,
):
    """SVM classification -> (labels, scores float32)."""
    labels = class_labels(classlabels_ints, classlabels_strings, "SVMClassifier")
    xf = as_2d_float(x)
    coef = np.asarray(coefficients, dtype=np.float32).reshape(-1)
    rho_v = np.asarray(rho if rho is not None else [], dtype=np.float32).reshape(-1)
    vpc = np.asarray(vectors_per_class if vectors_per_class is not None else [], dtype=np.int64)
    n_cls = len(labels)
    if vpc.size == 0 or vpc.sum() == 0:
        return _linear_svm(xf, coef, rho_v, labels, kernel_type, kernel_params, post_transform)
    sv = np.asarray(support_vectors, dtype=np.float32).reshape(int(vpc.sum()), -1)
    k = _kernel_matrix(xf, sv, kernel_type, kernel_params)  # (N, S)
    n_sv = sv.shape[0]
    dual = coef.reshape(n_cls - 1, n_sv)
    starts = np.concatenate([[0], np.cumsum(vpc)])
    pairs = [(i, j) for i in range(n_cls) for j in range(i + 1, n_cls)]
    dec = np.empty((xf.shape[0], len(pairs)), dtype=np.float32)
    for p, (i, j) in enumerate(pairs):  # one column per class pair (libsvm's layout)
        si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
        dec[:, p] = k[:, si] @ dual[j - 1, si] + k[:, sj] @ dual[i, sj] + rho_v[p]
    votes = np.zeros((xf.shape[0], n_cls), dtype=np.int64)
    for p, (i, j) in enumerate(pairs):
        win_i = dec[:, p] > 0
        votes[:, i] += win_i
        votes[:, j] += ~win_i
    # The label is always the vote winner, even when probabilities are reported (onnxruntime).
    y = labels[np.argmax(votes, axis=1)]
    if prob_a is not None and len(prob_a):
        pa = np.asarray(prob_a, dtype=np.float64)
        pb = np.asarray(prob_b, dtype=np.float64)
        r = np.zeros((xf.shape[0], n_cls, n_cls))
        for p, (i, j) in enumerate(pairs):
            v = np.clip(
                _sigmoid_predict(dec[:, p].astype(np.float64), pa[p], pb[p]), 1e-7, 1 - 1e-7
            )
            r[:, i, j], r[:, j, i] = v, 1 - v
        return y, np.asarray(apply_post(_couple(r), post_transform), dtype=np.float32)
    if n_cls == 2:
        return y, _binary_decision_scores(dec[:, :1], post_transform)
    return y, np.asarray(apply_post(dec, post_transform), dtype=np.float32)


def _binary_decision_scores(d, how):
    """Two score columns from the one binary decision value, as onnxruntime reports them:
    NONE [-d, d], LOGISTIC [s(-d), s(d)], the others [1 - v, v]."""
    if how == "NONE":
        return np.concatenate([-d, d], axis=1).astype(np.float32)
    if how == "LOGISTIC":
        return np.asarray(apply_post(np.concatenate([-d, d], axis=1), how), dtype=np.float32)
    return binary_scores(d, how).astype(np.float32)


def _linear_svm(xf, coef, rho_v, labels, kernel_type, kernel_params, how):
    """No support vectors: one (kernelized) coefficient row per class, plus rho[0] for every
    class (onnxruntime adds the first rho to all of them)."""
    w = coef.reshape(-1, xf.shape[1])
    scores = _kernel_matrix(xf, w, kernel_type, kernel_params)
    if rho_v.size:
        scores = scores + rho_v[0]
    if w.shape[0] == 1 and len(labels) == 2:
        d = scores[:, :1]
        best = (d[:, 0] > 0).astype(np.int64)
        return labels[best], _binary_decision_scores(d, how)
    best = np.argmax(scores, axis=1)
    return labels[best], np.asarray(apply_post(scores, how), dtype=np.float32)
