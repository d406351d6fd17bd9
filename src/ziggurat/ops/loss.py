"""Loss functions: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss."""

from __future__ import annotations

import numpy as np

from ..backends import xp_of
from ..errors import ExecutionError
from .registry import kernel

_REDUCTIONS = ("none", "sum", "mean")


def _work(x):
    """float16/bfloat16 inputs compute in float32 (sums of many small terms lose precision)."""
    dt = np.dtype(x.dtype)
    if (dt.kind == "f" and dt.itemsize < 4) or dt.kind == "V":
        return x.astype(np.float32)
    return x


def _nll(log_prob, target, weight, ignore_index, reduction: str, op: str):
    """The NLL loss of ``log_prob`` (N, C, d1..dk) against class indices ``target`` (N, d1..dk)."""
    if reduction not in _REDUCTIONS:
        raise ExecutionError(f"{op}: reduction {reduction!r} is not one of {_REDUCTIONS}")
    if log_prob.ndim < 2 or target.shape != log_prob.shape[:1] + log_prob.shape[2:]:
        raise ExecutionError(
            f"{op}: input shape {log_prob.shape} needs target shape (N, d1..dk) = "
            f"{log_prob.shape[:1] + log_prob.shape[2:]}, got {target.shape}"
        )
    xp = xp_of(log_prob)
    n_classes = log_prob.shape[1]
    target = target.astype(np.int64, copy=False)
    if ignore_index is not None:
        ignored = target == ignore_index
        # The ignored entries may hold any value (e.g. -1 or >= C): gather class 0 there instead.
        safe = xp.where(ignored, 0, target)
    else:
        ignored = None
        safe = target
    if safe.size and (int(safe.min()) < 0 or int(safe.max()) >= n_classes):
        raise ExecutionError(
            f"{op}: target holds a class index outside [0, {n_classes - 1}] that is not ignore_index "
            f"({ignore_index}); fix the labels or set ignore_index"
        )
    picked = xp.take_along_axis(log_prob, xp.expand_dims(safe, 1), axis=1).squeeze(1)
    loss = -picked
    if weight is not None:
        w = weight.astype(loss.dtype, copy=False)[safe]
    else:
        w = xp.ones_like(loss)
    if ignored is not None:
        w = xp.where(ignored, loss.dtype.type(0), w)
    loss = loss * w
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return loss.sum() / w.sum()


@kernel("NegativeLogLikelihoodLoss", since=12)
def NegativeLogLikelihoodLoss(
    input, target, weight=None, /, *, ignore_index=None, reduction="mean"
):
    """-input[n, target[n, d...], d...] * weight[target], reduced by ``reduction`` (none/sum/mean).

    ``mean`` divides by the sum of the weights of the entries that are not ``ignore_index``.
    """
    out = _nll(_work(input), target, weight, ignore_index, reduction, "NegativeLogLikelihoodLoss")
    return (xp_of(input).asarray(out).astype(input.dtype, copy=False),)


@kernel("SoftmaxCrossEntropyLoss", since=12)
def SoftmaxCrossEntropyLoss(
    scores, labels, weights=None, /, *, ignore_index=None, reduction="mean"
):
    """Cross entropy of softmax(scores, axis=1) against class ``labels``; returns (loss, log_prob)."""
    xp = xp_of(scores)
    if scores.ndim < 2:
        raise ExecutionError(
            f"SoftmaxCrossEntropyLoss: scores must be (N, C, ...), got shape {scores.shape}"
        )
    s = _work(scores)
    shifted = s - xp.max(s, axis=1, keepdims=True)
    log_prob = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    loss = _nll(log_prob, labels, weights, ignore_index, reduction, "SoftmaxCrossEntropyLoss")
    dt = scores.dtype
    return (xp.asarray(loss).astype(dt, copy=False), log_prob.astype(dt, copy=False))
