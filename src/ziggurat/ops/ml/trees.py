"""ai.onnx.ml TreeEnsembleRegressor and TreeEnsembleClassifier (opsets 1 and 3).

Their (tree id, node id) encoding is converted to the flat tables of ``forest.Forest``.
"""

from __future__ import annotations

import numpy as np

from ...errors import ExecutionError
from ..registry import kernel
from .common import ML, _strs, binary_scores, class_labels
from .common import post_transform as apply_post
from .forest import LEAF, MEMBER, MODE_NAMES, Forest, agg_code, cached, features, pick

# ---------------------------------------------------------------------------------------------
# Legacy encoding: (tree id, node id) pairs, votes attached to leaf (tree id, node id)


def _legacy_forest(
    op,
    *,
    modes,
    treeids,
    nodeids,
    featureids,
    values,
    truenodeids,
    falsenodeids,
    missing,
    w_tree,
    w_node,
    w_target,
    w_weight,
    n_targets,
):
    modes = np.array([MODE_NAMES.get(m, -1) for m in _strs(modes)], dtype=np.int8)
    if (modes < 0).any() or (modes == MEMBER).any():
        raise ExecutionError(
            f"{op}: nodes_modes must be BRANCH_LEQ, BRANCH_LT, BRANCH_GTE, BRANCH_GT, BRANCH_EQ, "
            "BRANCH_NEQ or LEAF"
        )
    tree = np.asarray(treeids, dtype=np.int64)
    node = np.asarray(nodeids, dtype=np.int64)
    m = tree.size
    if not (node.size == modes.size == m):
        raise ExecutionError(f"{op}: the nodes_* attributes must all have the same length")
    span = int(node.max()) + 1 if m else 1
    key = tree * span + node
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]

    def locate(t, n, what):
        k = np.asarray(t, dtype=np.int64) * span + np.asarray(n, dtype=np.int64)
        pos = np.clip(np.searchsorted(sorted_key, k), 0, max(m - 1, 0))
        if k.size and (sorted_key[pos] != k).any():
            raise ExecutionError(f"{op}: {what} refers to a (tree, node) id that does not exist")
        return order[pos]

    is_branch = modes != LEAF
    true_next = np.arange(m)
    false_next = np.arange(m)
    true_next[is_branch] = locate(
        tree[is_branch], np.asarray(truenodeids)[is_branch], "nodes_truenodeids"
    )
    false_next[is_branch] = locate(
        tree[is_branch], np.asarray(falsenodeids)[is_branch], "nodes_falsenodeids"
    )
    # A tree's root is its first node (in attribute order) that no branch points at.
    referenced = np.zeros(m, dtype=bool)
    referenced[true_next[is_branch]] = True
    referenced[false_next[is_branch]] = True
    cand = np.flatnonzero(~referenced)
    _, first = np.unique(tree[cand], return_index=True)
    roots = cand[first]
    if roots.size != np.unique(tree).size:
        raise ExecutionError(f"{op}: every tree needs a root node that no other node points at")
    vals = np.zeros((m, n_targets))
    has = np.zeros((m, n_targets), dtype=bool)
    if w_tree is not None and len(w_tree):
        leaf = locate(w_tree, w_node, "the leaf weights")
        tgt = np.asarray(w_target, dtype=np.int64)
        if tgt.size and (tgt.min() < 0 or tgt.max() >= n_targets):
            raise ExecutionError(f"{op}: a target/class id is outside [0, {n_targets})")
        np.add.at(vals, (leaf, tgt), np.asarray(w_weight, dtype=np.float64))
        has[leaf, tgt] = True
    miss = np.zeros(m, dtype=bool) if not missing else np.asarray(missing, dtype=bool)
    return Forest(
        feature=np.asarray(featureids, dtype=np.int64),
        threshold=np.asarray(values, dtype=np.float64),
        mode=modes,
        true_next=true_next,
        false_next=false_next,
        missing_true=miss,
        roots=roots,
        values=vals,
        has=has,
    )


@kernel("TreeEnsembleRegressor", since=1, domain=ML)
def TreeEnsembleRegressor(
    x,
    /,
    *,
    aggregate_function="SUM",
    base_values=None,
    base_values_as_tensor=None,
    n_targets=None,
    nodes_falsenodeids=None,
    nodes_featureids=None,
    nodes_hitrates=None,
    nodes_hitrates_as_tensor=None,
    nodes_missing_value_tracks_true=None,
    nodes_modes=None,
    nodes_nodeids=None,
    nodes_treeids=None,
    nodes_truenodeids=None,
    nodes_values=None,
    nodes_values_as_tensor=None,
    post_transform="NONE",
    target_ids=None,
    target_nodeids=None,
    target_treeids=None,
    target_weights=None,
    target_weights_as_tensor=None,
):
    """Regression forest (opset 1/3 encoding): aggregate leaf values, add base values. float32."""
    k = int(n_targets) if n_targets else 1
    forest = cached(
        (
            nodes_modes,
            nodes_treeids,
            nodes_nodeids,
            nodes_featureids,
            nodes_values_as_tensor,
            nodes_values,
            nodes_truenodeids,
            nodes_falsenodeids,
            nodes_missing_value_tracks_true,
            target_treeids,
            target_nodeids,
            target_ids,
            target_weights_as_tensor,
            target_weights,
            n_targets,
        ),
        lambda: _legacy_forest(
            "TreeEnsembleRegressor",
            modes=nodes_modes,
            treeids=nodes_treeids,
            nodeids=nodes_nodeids,
            featureids=nodes_featureids,
            values=pick(nodes_values_as_tensor, nodes_values),
            truenodeids=nodes_truenodeids,
            falsenodeids=nodes_falsenodeids,
            missing=nodes_missing_value_tracks_true,
            w_tree=target_treeids,
            w_node=target_nodeids,
            w_target=target_ids,
            w_weight=pick(target_weights_as_tensor, target_weights),
            n_targets=k,
        ),
    )
    scores, _ = forest.aggregate(features(x), agg_code(aggregate_function))
    base = pick(base_values_as_tensor, base_values)
    if base is not None and base.size:
        scores = scores + base
    return (np.asarray(apply_post(scores, post_transform), dtype=np.float32),)


@kernel("TreeEnsembleClassifier", since=1, domain=ML)
def TreeEnsembleClassifier(
    x,
    /,
    *,
    base_values=None,
    base_values_as_tensor=None,
    class_ids=None,
    class_nodeids=None,
    class_treeids=None,
    class_weights=None,
    class_weights_as_tensor=None,
    classlabels_int64s=None,
    classlabels_strings=None,
    nodes_falsenodeids=None,
    nodes_featureids=None,
    nodes_hitrates=None,
    nodes_hitrates_as_tensor=None,
    nodes_missing_value_tracks_true=None,
    nodes_modes=None,
    nodes_nodeids=None,
    nodes_treeids=None,
    nodes_truenodeids=None,
    nodes_values=None,
    nodes_values_as_tensor=None,
    post_transform="NONE",
):
    """Classification forest: summed class votes -> (labels, scores float32)."""
    labels = class_labels(classlabels_int64s, classlabels_strings, "TreeEnsembleClassifier")
    weights = pick(class_weights_as_tensor, class_weights)
    forest = cached(
        (
            nodes_modes,
            nodes_treeids,
            nodes_nodeids,
            nodes_featureids,
            nodes_values_as_tensor,
            nodes_values,
            nodes_truenodeids,
            nodes_falsenodeids,
            nodes_missing_value_tracks_true,
            class_treeids,
            class_nodeids,
            class_ids,
            class_weights_as_tensor,
            class_weights,
            classlabels_int64s,
            classlabels_strings,
        ),
        lambda: _legacy_forest(
            "TreeEnsembleClassifier",
            modes=nodes_modes,
            treeids=nodes_treeids,
            nodeids=nodes_nodeids,
            featureids=nodes_featureids,
            values=pick(nodes_values_as_tensor, nodes_values),
            truenodeids=nodes_truenodeids,
            falsenodeids=nodes_falsenodeids,
            missing=nodes_missing_value_tracks_true,
            w_tree=class_treeids,
            w_node=class_nodeids,
            w_target=class_ids,
            w_weight=weights,
            n_targets=len(labels),
        ),
    )
    scores, seen = forest.aggregate(features(x), 1)
    base = pick(base_values_as_tensor, base_values)
    used = np.unique(np.asarray(class_ids if class_ids is not None else [], dtype=np.int64))
    if len(labels) == 2 and used.tolist() == [0]:
        return _binary_one_column(scores[:, :1], base, labels, weights, post_transform)
    if base is not None and base.size:
        scores = scores + base
        seen = seen | (np.arange(scores.shape[1]) < base.size)
    if len(labels) == 2:
        best = np.argmax(scores, axis=1)
    else:  # the best class among those some tree (or a base value) voted for, as onnxruntime
        best = np.argmax(np.where(seen, scores, -np.inf), axis=1)
    z = apply_post(scores, post_transform) if scores.shape[1] > 1 else scores
    return labels[best], np.asarray(z, dtype=np.float32)


def _binary_one_column(score, base, labels, weights, how):
    """Two labels but every vote is for class 0, whose score then stands for the positive class
    (sklearn-onnx's binary encoding): one score column, reported as two (onnxruntime's rule)."""
    if base is not None and base.size:
        score = score + base[0]
    code = {"LOGISTIC": 2, "PROBIT": 4}.get(how, 0) if isinstance(how, str) else int(how)
    if weights is not None and (weights >= 0).all():
        positive = score[:, 0] > 0.5  # votes are probabilities
        z = binary_scores(score, code)
    else:
        positive = score[:, 0] > 0  # votes are margins
        z = binary_scores(score, 2) if code == 2 else np.concatenate([-score, score], axis=1)
    return np.where(positive, labels[1], labels[0]).astype(labels.dtype), z.astype(np.float32)
