"""ai.onnx.ml tree ensembles: TreeEnsemble (opset 5), TreeEnsembleRegressor, TreeEnsembleClassifier.

Every encoding is first turned into one flat node table (feature, threshold, mode, true/false child,
leaf flag) plus a dense (node, target) table of leaf values. Evaluation walks all samples x trees
at once, one tree level per step, with array indexing; a loop runs over depth, not over samples.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..errors import ExecutionError
from .ml import ML, _strs, binary_scores, class_labels
from .ml import post_transform as apply_post
from .registry import kernel

LEQ, LT, GTE, GT, EQ, NEQ, MEMBER, LEAF = range(8)
_MODE_NAMES = {"BRANCH_LEQ": LEQ, "BRANCH_LT": LT, "BRANCH_GTE": GTE, "BRANCH_GT": GT,
               "BRANCH_EQ": EQ, "BRANCH_NEQ": NEQ, "BRANCH_MEMBER": MEMBER, "LEAF": LEAF}
_AGG_NAMES = {"AVERAGE": 0, "SUM": 1, "MIN": 2, "MAX": 3}
_CHUNK = 1 << 22  # elements per (rows x trees [x targets]) block


@dataclass
class Forest:
    """A tree ensemble as flat arrays. Nodes index 0..M-1; a leaf is a node with mode LEAF."""

    feature: np.ndarray  # (M,) int64
    threshold: np.ndarray  # (M,) float64
    mode: np.ndarray  # (M,) int8
    true_next: np.ndarray  # (M,) int64
    false_next: np.ndarray  # (M,) int64
    missing_true: np.ndarray  # (M,) bool
    roots: np.ndarray  # (T,) int64
    values: np.ndarray  # (M, K) float64 leaf contributions
    has: np.ndarray  # (M, K) bool: the leaf contributes to that target
    member_sets: np.ndarray | None = None  # (n_member, width) float64, NaN padded
    member_row: np.ndarray | None = None  # (M,) int64 row of member_sets, -1 if none

    def leaves(self, x):
        """Leaf node reached in every tree by every row of ``x``: (N, T) int64."""
        n = x.shape[0]
        t = self.roots.size
        cur = np.tile(self.roots, n)  # flat (row, tree) positions
        thr = self.threshold.astype(x.dtype)
        flat_x = np.ascontiguousarray(x).reshape(-1)
        row_base = np.repeat(np.arange(n, dtype=np.int64) * x.shape[1], t)
        is_leaf = self.mode == LEAF
        # children[2 * node] is the true branch, children[2 * node + 1] the false one.
        children = np.stack([self.true_next, self.false_next], axis=1).reshape(-1)
        branch_modes = np.unique(self.mode[~is_leaf]).tolist()
        track_missing = bool(self.missing_true.any())
        # Only positions still inside a tree are visited; the active list shrinks level by level.
        active = np.flatnonzero(~is_leaf[cur])
        for _ in range(self.mode.size + 1):  # depth is at most the node count
            if active.size == 0:
                return cur.reshape(n, t)
            node = cur[active]
            v = flat_x[row_base[active] + self.feature[node]]
            cond = self._compare(v, node, thr, branch_modes)
            if track_missing:
                cond |= np.isnan(v) & self.missing_true[node]
            nxt = children[2 * node + ~cond]
            cur[active] = nxt
            active = active[~is_leaf[nxt]]
        raise ExecutionError("tree ensemble: the trees contain a cycle (a node reaches itself)")

    def _compare(self, v, node, thr, branch_modes):
        t = thr[node]
        tests = {
            LEQ: lambda: v <= t, LT: lambda: v < t, GTE: lambda: v >= t, GT: lambda: v > t,
            EQ: lambda: v == t, NEQ: lambda: v != t, MEMBER: lambda: self._member(v, node),
        }
        if len(branch_modes) == 1:
            return tests[branch_modes[0]]()
        mode = self.mode[node]
        cond = np.zeros(v.shape, dtype=bool)
        for m in branch_modes:
            sel = mode == m
            if sel.any():
                cond[sel] = tests[m]()[sel]
        return cond

    def _member(self, v, node):
        row = self.member_row[node]
        sets = self.member_sets[np.maximum(row, 0)]
        return (row >= 0) & (v[:, None] == sets).any(axis=1)

    def aggregate(self, x, how):
        """(N, K) aggregated leaf values and (N, K) whether any tree contributed."""
        x = np.asarray(x)
        n, t, k = x.shape[0], self.roots.size, self.values.shape[1]
        out = np.zeros((n, k))
        seen = np.zeros((n, k), dtype=bool)
        step = max(1, _CHUNK // max(t * max(k, 1), 1))
        for s in range(0, n, step):  # row blocks bound the (rows, trees, targets) temporaries
            leaf = self.leaves(x[s:s + step])
            vals, has = self.values[leaf], self.has[leaf]
            seen[s:s + step] = has.any(axis=1)
            if how in (0, 1):
                acc = vals.sum(axis=1)
                out[s:s + step] = acc / t if how == 0 else acc
            elif how == 2:
                out[s:s + step] = np.where(has, vals, np.inf).min(axis=1)
            else:
                out[s:s + step] = np.where(has, vals, -np.inf).max(axis=1)
        out[~seen] = 0.0
        return out, seen


_CACHE: OrderedDict[tuple, tuple[tuple, Forest]] = OrderedDict()
_CACHE_SIZE = 32


def _cached(attrs: tuple, build) -> Forest:
    """The Forest for these attribute objects, built once.

    The runtime binds a node's attributes once and passes the same objects on every run, so the
    objects' identities are the key; the entry keeps them alive, so an id cannot be reused while
    cached.
    """
    key = tuple(id(a) for a in attrs)
    hit = _CACHE.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], attrs)):
        _CACHE.move_to_end(key)
        return hit[1]
    forest = build()
    _CACHE[key] = (attrs, forest)
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return forest


def _features(x):
    x = np.asarray(x)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    elif x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def _agg_code(a):
    if isinstance(a, str):
        if a not in _AGG_NAMES:
            raise ExecutionError(
                f"unknown aggregate_function {a!r}; expected AVERAGE, SUM, MIN or MAX"
            )
        return _AGG_NAMES[a]
    return int(a)


def _pick(tensor, lst):
    if tensor is not None:
        return np.asarray(tensor, dtype=np.float64).reshape(-1)
    return None if lst is None else np.asarray(lst, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Legacy encoding: (tree id, node id) pairs, votes attached to leaf (tree id, node id)


def _legacy_forest(op, *, modes, treeids, nodeids, featureids, values, truenodeids, falsenodeids,
                   missing, w_tree, w_node, w_target, w_weight, n_targets):
    modes = np.array([_MODE_NAMES.get(m, -1) for m in _strs(modes)], dtype=np.int8)
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
    true_next[is_branch] = locate(tree[is_branch], np.asarray(truenodeids)[is_branch], "nodes_truenodeids")
    false_next[is_branch] = locate(tree[is_branch], np.asarray(falsenodeids)[is_branch], "nodes_falsenodeids")
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
        feature=np.asarray(featureids, dtype=np.int64), threshold=np.asarray(values, dtype=np.float64),
        mode=modes, true_next=true_next, false_next=false_next, missing_true=miss, roots=roots,
        values=vals, has=has,
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
    forest = _cached(
        (nodes_modes, nodes_treeids, nodes_nodeids, nodes_featureids, nodes_values_as_tensor,
         nodes_values, nodes_truenodeids, nodes_falsenodeids, nodes_missing_value_tracks_true,
         target_treeids, target_nodeids, target_ids, target_weights_as_tensor, target_weights,
         n_targets),
        lambda: _legacy_forest(
            "TreeEnsembleRegressor", modes=nodes_modes, treeids=nodes_treeids,
            nodeids=nodes_nodeids, featureids=nodes_featureids,
            values=_pick(nodes_values_as_tensor, nodes_values), truenodeids=nodes_truenodeids,
            falsenodeids=nodes_falsenodeids, missing=nodes_missing_value_tracks_true,
            w_tree=target_treeids, w_node=target_nodeids, w_target=target_ids,
            w_weight=_pick(target_weights_as_tensor, target_weights), n_targets=k,
        ),
    )
    scores, _ = forest.aggregate(_features(x), _agg_code(aggregate_function))
    base = _pick(base_values_as_tensor, base_values)
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
    weights = _pick(class_weights_as_tensor, class_weights)
    forest = _cached(
        (nodes_modes, nodes_treeids, nodes_nodeids, nodes_featureids, nodes_values_as_tensor,
         nodes_values, nodes_truenodeids, nodes_falsenodeids, nodes_missing_value_tracks_true,
         class_treeids, class_nodeids, class_ids, class_weights_as_tensor, class_weights,
         classlabels_int64s, classlabels_strings),
        lambda: _legacy_forest(
            "TreeEnsembleClassifier", modes=nodes_modes, treeids=nodes_treeids,
            nodeids=nodes_nodeids, featureids=nodes_featureids,
            values=_pick(nodes_values_as_tensor, nodes_values), truenodeids=nodes_truenodeids,
            falsenodeids=nodes_falsenodeids, missing=nodes_missing_value_tracks_true,
            w_tree=class_treeids, w_node=class_nodeids, w_target=class_ids, w_weight=weights,
            n_targets=len(labels),
        ),
    )
    scores, seen = forest.aggregate(_features(x), 1)
    base = _pick(base_values_as_tensor, base_values)
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


# ---------------------------------------------------------------------------------------------
# TreeEnsemble (opset 5): interior nodes and leaves in separate tables


@kernel("TreeEnsemble", since=5, domain=ML)
def TreeEnsemble(
    x,
    /,
    *,
    aggregate_function=1,
    leaf_targetids=None,
    leaf_weights=None,
    membership_values=None,
    n_targets=None,
    nodes_falseleafs=None,
    nodes_falsenodeids=None,
    nodes_featureids=None,
    nodes_hitrates=None,
    nodes_missing_value_tracks_true=None,
    nodes_modes=None,
    nodes_splits=None,
    nodes_trueleafs=None,
    nodes_truenodeids=None,
    post_transform=0,
    tree_roots=None,
):
    """Tree ensemble regression (opset 5): output (N, n_targets) in the input's float dtype."""
    forest = _cached(
        (leaf_targetids, leaf_weights, membership_values, n_targets, nodes_falseleafs,
         nodes_falsenodeids, nodes_featureids, nodes_missing_value_tracks_true, nodes_modes,
         nodes_splits, nodes_trueleafs, nodes_truenodeids, tree_roots),
        lambda: _v5_forest(
            leaf_targetids, leaf_weights, membership_values, n_targets, nodes_falseleafs,
            nodes_falsenodeids, nodes_featureids, nodes_missing_value_tracks_true, nodes_modes,
            nodes_splits, nodes_trueleafs, nodes_truenodeids, tree_roots,
        ),
    )
    scores, _ = forest.aggregate(_features(x), _agg_code(aggregate_function))
    y = apply_post(scores, int(post_transform))
    return (np.asarray(y, dtype=x.dtype if np.asarray(x).dtype.kind == "f" else np.float32),)


def _v5_forest(leaf_targetids, leaf_weights, membership_values, n_targets, nodes_falseleafs,
               nodes_falsenodeids, nodes_featureids, nodes_missing_value_tracks_true, nodes_modes,
               nodes_splits, nodes_trueleafs, nodes_truenodeids, tree_roots):
    """Forest from the opset-5 encoding: the leaves become extra nodes M..M+L-1."""
    modes = np.asarray(nodes_modes).reshape(-1).astype(np.int8)
    m = modes.size
    lw = np.asarray(leaf_weights, dtype=np.float64).reshape(-1)
    n_leaf = lw.size
    k = int(n_targets)
    if (modes < 0).any() or (modes > MEMBER).any():
        raise ExecutionError("TreeEnsemble: nodes_modes values must be in [0, 6]")

    def child(ids, is_leaf):
        ids = np.asarray(ids, dtype=np.int64)
        return np.where(np.asarray(is_leaf, dtype=bool), ids + m, ids)

    mode = np.concatenate([modes, np.full(n_leaf, LEAF, dtype=np.int8)])
    vals = np.zeros((m + n_leaf, k))
    has = np.zeros((m + n_leaf, k), dtype=bool)
    tgt = np.asarray(leaf_targetids, dtype=np.int64)
    if tgt.size and (tgt.min() < 0 or tgt.max() >= k):
        raise ExecutionError(f"TreeEnsemble: leaf_targetids must be in [0, n_targets={k})")
    vals[m + np.arange(n_leaf), tgt] = lw
    has[m + np.arange(n_leaf), tgt] = True
    miss = np.zeros(m, dtype=bool) if not nodes_missing_value_tracks_true else \
        np.asarray(nodes_missing_value_tracks_true, dtype=bool)
    pad = np.zeros(n_leaf, dtype=np.int64)
    member_sets = member_row = None
    if (modes == MEMBER).any():
        member_sets, member_row = _membership(modes, membership_values, m + n_leaf)
    splits = np.asarray(nodes_splits, dtype=np.float64).reshape(-1)
    return Forest(
        feature=np.concatenate([np.asarray(nodes_featureids, dtype=np.int64), pad]),
        threshold=np.concatenate([splits, np.zeros(n_leaf)]),
        mode=mode,
        true_next=np.concatenate([child(nodes_truenodeids, nodes_trueleafs), pad]),
        false_next=np.concatenate([child(nodes_falsenodeids, nodes_falseleafs), pad]),
        missing_true=np.concatenate([miss, np.zeros(n_leaf, dtype=bool)]),
        roots=np.asarray(tree_roots, dtype=np.int64),
        values=vals, has=has, member_sets=member_sets, member_row=member_row,
    )


def _membership(modes, membership_values, total):
    """NaN-delimited member lists -> a NaN-padded (n_member, width) matrix and a node->row map."""
    mv = np.asarray(membership_values, dtype=np.float64).reshape(-1)
    cuts = np.flatnonzero(np.isnan(mv))
    groups = np.split(mv, cuts)
    groups = [g[~np.isnan(g)] for g in groups][: int((modes == MEMBER).sum())]
    width = max((g.size for g in groups), default=1) or 1
    sets = np.full((len(groups), width), np.nan)
    for i, g in enumerate(groups):  # one row per membership node
        sets[i, : g.size] = g
    row = np.full(total, -1, dtype=np.int64)
    row[np.flatnonzero(modes == MEMBER)[: len(groups)]] = np.arange(len(groups))
    return sets, row
