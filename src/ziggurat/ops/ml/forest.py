"""The tree-ensemble engine shared by the ai.onnx.ml tree ops, and TreeEnsemble (opset 5).

Every encoding is first turned into one flat node table (feature, threshold, mode, true/false child,
leaf flag) plus a dense (node, target) table of leaf values. Evaluation walks all samples x trees
at once, one tree level per step, with array indexing; a loop runs over depth, not over samples.
Built tables are cached per node (see ``cached``), so a served model pays for them once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ...errors import ExecutionError
from ..registry import kernel
from .common import ML
from .common import post_transform as apply_post

LEQ, LT, GTE, GT, EQ, NEQ, MEMBER, LEAF = range(8)
MODE_NAMES = {
    "BRANCH_LEQ": LEQ,
    "BRANCH_LT": LT,
    "BRANCH_GTE": GTE,
    "BRANCH_GT": GT,
    "BRANCH_EQ": EQ,
    "BRANCH_NEQ": NEQ,
    "BRANCH_MEMBER": MEMBER,
    "LEAF": LEAF,
}
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
            LEQ: lambda: v <= t,
            LT: lambda: v < t,
            GTE: lambda: v >= t,
            GT: lambda: v > t,
            EQ: lambda: v == t,
            NEQ: lambda: v != t,
            MEMBER: lambda: self._member(v, node),
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
            leaf = self.leaves(x[s : s + step])
            vals, has = self.values[leaf], self.has[leaf]
            seen[s : s + step] = has.any(axis=1)
            if how in (0, 1):
                acc = vals.sum(axis=1)
                out[s : s + step] = acc / t if how == 0 else acc
            elif how == 2:
                out[s : s + step] = np.where(has, vals, np.inf).min(axis=1)
            else:
                out[s : s + step] = np.where(has, vals, -np.inf).max(axis=1)
        out[~seen] = 0.0
        return out, seen


_CACHE: OrderedDict[tuple, tuple[tuple, Forest]] = OrderedDict()
_CACHE_SIZE = 32


def cached(attrs: tuple, build) -> Forest:
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


def features(x):
    x = np.asarray(x)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    elif x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def agg_code(a):
    if isinstance(a, str):
        if a not in _AGG_NAMES:
            raise ExecutionError(
                f"unknown aggregate_function {a!r}; expected AVERAGE, SUM, MIN or MAX"
            )
        return _AGG_NAMES[a]
    return int(a)


def pick(tensor, lst):
    if tensor is not None:
        return np.asarray(tensor, dtype=np.float64).reshape(-1)
    return None if lst is None else np.asarray(lst, dtype=np.float64)


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
    spec = dict(
        leaf_targetids=leaf_targetids,
        leaf_weights=leaf_weights,
        membership_values=membership_values,
        n_targets=n_targets,
        nodes_falseleafs=nodes_falseleafs,
        nodes_falsenodeids=nodes_falsenodeids,
        nodes_featureids=nodes_featureids,
        nodes_missing_value_tracks_true=nodes_missing_value_tracks_true,
        nodes_modes=nodes_modes,
        nodes_splits=nodes_splits,
        nodes_trueleafs=nodes_trueleafs,
        nodes_truenodeids=nodes_truenodeids,
        tree_roots=tree_roots,
    )
    forest = cached(tuple(spec.values()), lambda: _v5_forest(**spec))
    scores, _ = forest.aggregate(features(x), agg_code(aggregate_function))
    y = apply_post(scores, int(post_transform))
    return (np.asarray(y, dtype=x.dtype if np.asarray(x).dtype.kind == "f" else np.float32),)


def _v5_forest(
    *,
    leaf_targetids,
    leaf_weights,
    membership_values,
    n_targets,
    nodes_falseleafs,
    nodes_falsenodeids,
    nodes_featureids,
    nodes_missing_value_tracks_true,
    nodes_modes,
    nodes_splits,
    nodes_trueleafs,
    nodes_truenodeids,
    tree_roots,
):
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
    miss = (
        np.zeros(m, dtype=bool)
        if not nodes_missing_value_tracks_true
        else np.asarray(nodes_missing_value_tracks_true, dtype=bool)
    )
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
        values=vals,
        has=has,
        member_sets=member_sets,
        member_row=member_row,
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
