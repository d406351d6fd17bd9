"""ai.onnx.ml kernels against onnxruntime on small models built with onnx.helper.

Tree ensembles and SVMs are built the way sklearn-onnx encodes sklearn models (random forests,
gradient boosting, one-vs-one SVC with and without probabilities).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ziggurat.errors import ExecutionError
from ziggurat.ops.ml import forest as ml_forest
from ziggurat.ops.ml import linear as ml_linear
from ziggurat.ops.ml import preprocess as ml
from ziggurat.ops.ml import svm as ml_svm
from ziggurat.ops.ml import trees as ml_trees

FLOAT, INT64, STRING = TensorProto.FLOAT, TensorProto.INT64, TensorProto.STRING


def _vi(name, v):
    if isinstance(v, dict):
        k, val = next(iter(v.items()))
        kt = STRING if isinstance(k, str) else INT64
        vt = STRING if isinstance(val, str) else FLOAT
        return helper.make_value_info(
            name, helper.make_map_type_proto(kt, helper.make_tensor_type_proto(vt, []))
        )
    elem = STRING if v.dtype == object else helper.np_dtype_to_tensor_dtype(v.dtype)
    return helper.make_tensor_value_info(name, elem, v.shape)


def run_ort(op, inputs, out_types=(FLOAT,), ml_opset=3, **attrs):
    """Run one ai.onnx.ml node in onnxruntime; returns the list of outputs.

    ``out_types`` holds an element type per output, or a TypeProto (for maps/sequences).
    """
    names = [f"i{k}" for k in range(len(inputs))]
    outs = [f"o{k}" for k in range(len(out_types))]
    out_vis = [
        helper.make_tensor_value_info(o, t, None)
        if isinstance(t, int)
        else helper.make_value_info(o, t)
        for o, t in zip(outs, out_types)
    ]
    node = helper.make_node(op, names, outs, domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph([node], "g", [_vi(n, v) for n, v in zip(names, inputs)], out_vis)
    opsets = [
        helper.make_opsetid("", 21 if ml_opset >= 5 else 17),
        helper.make_opsetid("ai.onnx.ml", ml_opset),
    ]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs)))


RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 4)).astype(np.float32)
X[::7, 1] = np.nan  # trees must route missing values
XS = np.array([["a", "b"], ["c", "zz"]], dtype=object)
XI = np.array([[1, 2], [3, 4]], dtype=np.int64)

# ---------------------------------------------------------------------------------------------
# Transforms and encoders


def test_array_feature_extractor_and_binarizer():
    x3 = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    idx = np.array([3, 1], np.int64)
    for x in (x3, x3[0, 0]):
        (z,) = ml.ArrayFeatureExtractor(x, idx)
        np.testing.assert_array_equal(z, run_ort("ArrayFeatureExtractor", [x, idx])[0])
    with pytest.raises(ExecutionError, match="out of range"):
        ml.ArrayFeatureExtractor(x3, np.array([4]))
    x = np.nan_to_num(X)  # onnxruntime rejects NaN here
    (b,) = ml.Binarizer(x, threshold=0.3)
    np.testing.assert_array_equal(b, run_ort("Binarizer", [x], threshold=0.3)[0])
    (bd,) = ml.Binarizer(x.astype(np.float64), threshold=0.3)  # onnxruntime has float only
    assert bd.dtype == np.float64
    np.testing.assert_array_equal(bd, b)


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer(norm):
    x = RNG.standard_normal((5, 3)).astype(np.float32)
    x[0] = 0  # divisor 0: the row passes through
    (y,) = ml.Normalizer(x, norm=norm)
    np.testing.assert_allclose(y, run_ort("Normalizer", [x], norm=norm)[0], rtol=1e-6, atol=1e-7)


def test_scaler_imputer_feature_vectorizer():
    xd = np.arange(6, dtype=np.float64).reshape(2, 3)
    attrs = dict(offset=[1.0, 0.0, 2.0], scale=[2.0, 3.0, 4.0])
    (y,) = ml.Scaler(xd, **attrs)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, run_ort("Scaler", [xd], **attrs)[0])
    xn = np.array([[1.5, 2.0, np.nan], [np.nan, 4, 5]], np.float32)
    attrs = dict(imputed_value_floats=[9.0, 8.0, 7.0], replaced_value_float=float("nan"))
    np.testing.assert_array_equal(ml.Imputer(xn, **attrs)[0], run_ort("Imputer", [xn], **attrs)[0])
    attrs = dict(imputed_value_int64s=[-1], replaced_value_int64=2)
    (yi,) = ml.Imputer(XI, **attrs)
    assert yi.dtype == np.int64
    np.testing.assert_array_equal(yi, run_ort("Imputer", [XI], (INT64,), **attrs)[0])
    a, b = np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32).reshape(2, 2)
    (fv,) = ml.FeatureVectorizer(a, b, inputdimensions=[3, 3])
    np.testing.assert_array_equal(
        fv, run_ort("FeatureVectorizer", [a, b], inputdimensions=[3, 3])[0]
    )


def test_one_hot_encoder_and_category_mapper():
    (y,) = ml.OneHotEncoder(XI, cats_int64s=[1, 3, 4, 9])
    np.testing.assert_array_equal(y, run_ort("OneHotEncoder", [XI], cats_int64s=[1, 3, 4, 9])[0])
    (y,) = ml.OneHotEncoder(XS, cats_strings=["a", "c"])
    np.testing.assert_array_equal(y, run_ort("OneHotEncoder", [XS], cats_strings=["a", "c"])[0])
    with pytest.raises(ExecutionError, match="zeros"):
        ml.OneHotEncoder(XS, cats_strings=["a"], zeros=0)
    attrs = dict(cats_strings=["a", "c"], cats_int64s=[5, 6])
    (si,) = ml.CategoryMapper(XS, **attrs)
    np.testing.assert_array_equal(si, run_ort("CategoryMapper", [XS], (INT64,), **attrs)[0])
    attrs = dict(cats_strings=["a", "c"], cats_int64s=[1, 4], default_string="?")
    (ints,) = ml.CategoryMapper(XI, **attrs)
    np.testing.assert_array_equal(ints, run_ort("CategoryMapper", [XI], (STRING,), **attrs)[0])


def test_label_encoder_versions():
    x = np.array(["a", "b", "q"], dtype=object)
    (y,) = ml.LabelEncoder(x, classes_strings=["b", "a"])  # opset 1
    np.testing.assert_array_equal(
        y, run_ort("LabelEncoder", [x], (INT64,), ml_opset=1, classes_strings=["b", "a"])[0]
    )
    attrs = dict(keys_int64s=[1, 3], values_strings=["one", "three"], default_string="?")
    (y,) = ml.LabelEncoder(XI, **attrs)
    np.testing.assert_array_equal(
        y, run_ort("LabelEncoder", [XI], (STRING,), ml_opset=2, **attrs)[0]
    )
    xf = np.array([1.5, 2.0, 7.0], np.float32)
    attrs = dict(keys_floats=[1.5, 2.0], values_floats=[3.0, 4.0])
    np.testing.assert_array_equal(
        ml.LabelEncoder(xf, **attrs)[0], run_ort("LabelEncoder", [xf], ml_opset=2, **attrs)[0]
    )
    # Opset 4 semantics: NaN keys match NaN, the last duplicate key wins, tensor values/defaults.
    xn = np.array([np.nan, 1.0, 2.0], np.float32)
    (y,) = ml.LabelEncoder(xn, keys_floats=[1.0, float("nan"), 1.0], values_int64s=[1, 2, 3])
    assert y.tolist() == [2, 3, -1]
    (y,) = ml.LabelEncoder(
        x,
        keys_strings=["a"],
        values_tensor=np.array([7], np.int16),
        default_tensor=np.array([9], np.int16),
    )
    assert y.dtype == np.int16 and y.tolist() == [7, 9, 9]


def test_zipmap_dictvectorizer_castmap():
    probs = np.array([[0.3, 0.7], [0.1, 0.9]], np.float32)
    for labels in (dict(classlabels_strings=["a", "b"]), dict(classlabels_int64s=[3, 5])):
        key = STRING if "classlabels_strings" in labels else INT64
        seq = helper.make_sequence_type_proto(
            helper.make_map_type_proto(key, helper.make_tensor_type_proto(FLOAT, []))
        )
        (out,) = ml.ZipMap(probs, **labels)
        assert out == run_ort("ZipMap", [probs], (seq,), **labels)[0]
    vocab = ["a", "c", "b", "z"]
    (dv,) = ml.DictVectorizer({"a": 4.0, "c": 8.0}, string_vocabulary=vocab)
    np.testing.assert_array_equal(
        dv, run_ort("DictVectorizer", [{"a": 4.0, "c": 8.0}], string_vocabulary=vocab)[0]
    )
    attrs = dict(cast_to="TO_FLOAT", map_form="SPARSE", max_map=5)
    (cm,) = ml.CastMap({1: 4.0, 3: 8.0}, **attrs)
    np.testing.assert_array_equal(cm, run_ort("CastMap", [{1: 4.0, 3: 8.0}], **attrs)[0])
    (cm,) = ml.CastMap({3: 8.0, 1: 4.0}, cast_to="TO_INT64")
    assert cm.dtype == np.int64 and cm.tolist() == [[4, 8]]


# ---------------------------------------------------------------------------------------------
# Linear models

POSTS = ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO"]


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("n_rows,n_labels", [(1, 2), (3, 3), (2, 2)])
@pytest.mark.parametrize("strings", [False, True])
def test_linear_classifier(post, n_rows, n_labels, strings):
    x = np.nan_to_num(X)
    labels = (
        dict(classlabels_strings=[f"c{i}" for i in range(n_labels)])
        if strings
        else dict(classlabels_ints=list(range(10, 10 + n_labels)))
    )
    attrs = dict(
        coefficients=RNG.standard_normal(n_rows * 4).tolist(),
        intercepts=RNG.standard_normal(n_rows).tolist(),
        post_transform=post,
        **labels,
    )
    y, z = ml_linear.LinearClassifier(x, **attrs)
    ref_y, ref_z = run_ort("LinearClassifier", [x], (STRING if strings else INT64, FLOAT), **attrs)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_allclose(z, ref_z, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("post", POSTS)
def test_linear_regressor(post):
    x = np.nan_to_num(X)
    attrs = dict(
        coefficients=RNG.standard_normal(8).tolist(),
        intercepts=[0.5, -0.5],
        targets=2,
        post_transform=post,
    )
    (y,) = ml_linear.LinearRegressor(x, **attrs)
    np.testing.assert_allclose(y, run_ort("LinearRegressor", [x], **attrs)[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Tree ensembles


def random_forest(rng, n_trees, depth, leaf_votes, n_features=4):
    """Legacy (tree id, node id) encoding of random trees; ``leaf_votes(tree)`` -> [(id, weight)]."""
    nodes = {
        k: []
        for k in (
            "treeids",
            "nodeids",
            "featureids",
            "values",
            "modes",
            "truenodeids",
            "falsenodeids",
            "missing_value_tracks_true",
        )
    }
    votes = {k: [] for k in ("treeids", "nodeids", "ids", "weights")}
    for t in range(n_trees):
        table = []

        def build(d, table=table):
            nid = len(table)
            table.append(None)
            if d >= depth or (d > 0 and rng.random() < 0.25):
                table[nid] = (0, 0.0, "LEAF", 0, 0)
            else:
                f, v = int(rng.integers(0, n_features)), float(np.float32(rng.standard_normal()))
                table[nid] = (f, v, "BRANCH_LEQ", build(d + 1), build(d + 1))
            return nid

        build(0)
        for nid, (f, v, mode, tr, fl) in enumerate(table):
            for key, val in zip(nodes, (t, nid, f, v, mode, tr, fl, int(rng.integers(0, 2)))):
                nodes[key].append(val)
            if mode == "LEAF":
                for cid, w in leaf_votes(t):
                    for key, val in zip(votes, (t, nid, cid, float(w))):
                        votes[key].append(val)
    return {f"nodes_{k}": v for k, v in nodes.items()}, votes


@pytest.mark.parametrize(
    "agg,post", list(itertools.product(["SUM", "AVERAGE", "MIN", "MAX"], POSTS))
)
def test_tree_ensemble_regressor(agg, post):
    rng = np.random.default_rng(1)
    nodes, votes = random_forest(
        rng,
        6,
        4,
        lambda t: [(int(c), rng.standard_normal()) for c in rng.choice(3, 2, replace=False)],
    )
    attrs = dict(
        nodes,
        target_treeids=votes["treeids"],
        target_nodeids=votes["nodeids"],
        target_ids=votes["ids"],
        target_weights=votes["weights"],
        n_targets=3,
        aggregate_function=agg,
        post_transform=post,
        base_values=[0.1, 0.2, -0.3],
    )
    (y,) = ml_trees.TreeEnsembleRegressor(X, **attrs)
    assert y.dtype == np.float32
    np.testing.assert_allclose(
        y, run_ort("TreeEnsembleRegressor", [X], **attrs)[0], rtol=1e-5, atol=1e-5
    )


def _rf_votes(rng, k, n_trees):
    def votes(t):
        p = rng.dirichlet(np.ones(k))
        return [(c, p[c] / n_trees) for c in range(k)]

    return votes


CLASSIFIERS = {
    # name: (labels, leaf votes, base_values, post_transform), as sklearn-onnx writes them
    "random_forest_3": (3, lambda rng: _rf_votes(rng, 3, 5), None, "NONE"),
    "gbm_binary": (2, lambda rng: lambda t: [(0, rng.standard_normal())], [0.3], "LOGISTIC"),
    "gbm_binary_raw": (2, lambda rng: lambda t: [(0, rng.standard_normal())], None, "NONE"),
    "binary_probabilities": (2, lambda rng: lambda t: [(0, rng.random() / 5)], None, "NONE"),
    "gbm_multiclass": (
        3,
        lambda rng: lambda t: [(t % 3, rng.standard_normal())],
        [0.1, -0.2, 0.3],
        "SOFTMAX",
    ),
    "sparse_votes": (
        4,
        lambda rng: lambda t: [(int(rng.integers(0, 2)), rng.random())],
        None,
        "NONE",
    ),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("strings", [False, True])
def test_tree_ensemble_classifier(name, strings):
    rng = np.random.default_rng(2)
    n_labels, votes_fn, base, post = CLASSIFIERS[name]
    nodes, votes = random_forest(rng, 6, 4, votes_fn(rng))
    labels = (
        dict(classlabels_strings=[f"c{i}" for i in range(n_labels)])
        if strings
        else dict(classlabels_int64s=list(range(3, 3 + n_labels)))
    )
    attrs = dict(
        nodes,
        class_treeids=votes["treeids"],
        class_nodeids=votes["nodeids"],
        class_ids=votes["ids"],
        class_weights=votes["weights"],
        post_transform=post,
        **labels,
    )
    if base:
        attrs["base_values"] = base
    y, z = ml_trees.TreeEnsembleClassifier(X, **attrs)
    ref_y, ref_z = run_ort(
        "TreeEnsembleClassifier", [X], (STRING if strings else INT64, FLOAT), **attrs
    )
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_allclose(z, ref_z, rtol=1e-5, atol=1e-5)


def _v5_forest(rng, n_trees, depth, n_targets, member=True):
    """Random TreeEnsemble-5 attributes with every node mode, set membership and missing routes."""
    a = {
        k: []
        for k in (
            "modes",
            "featureids",
            "splits",
            "truenodeids",
            "falsenodeids",
            "trueleafs",
            "falseleafs",
            "missing_value_tracks_true",
        )
    }
    leaf_w, leaf_t, roots, members = [], [], [], []

    def leaf():
        leaf_w.append(float(rng.standard_normal()))
        leaf_t.append(int(rng.integers(0, n_targets)))
        return len(leaf_w) - 1

    def node(d):
        i = len(a["modes"])
        mode = int(rng.integers(0, 7 if member else 6))
        split = float("nan")
        if mode == 6:
            members.extend(
                rng.integers(-3, 4, size=int(rng.integers(1, 4))).astype(float).tolist() + [np.nan]
            )
        else:
            split = float(np.round(rng.standard_normal(), 1))
        for key, val in zip(
            a, (mode, int(rng.integers(0, 4)), split, 0, 0, 0, 0, int(rng.integers(0, 2)))
        ):
            a[key].append(val)
        for side in ("true", "false"):
            is_leaf = d + 1 >= depth or rng.random() < 0.3
            a[f"{side}nodeids"][i] = leaf() if is_leaf else node(d + 1)
            a[f"{side}leafs"][i] = int(is_leaf)
        return i

    roots = [node(0) for _ in range(n_trees)]
    attrs = {f"nodes_{k}": v for k, v in a.items()}
    attrs.update(
        nodes_modes=np.array(a["modes"], np.uint8),
        nodes_splits=np.array(a["splits"], np.float32),
        leaf_weights=np.array(leaf_w, np.float32),
        leaf_targetids=leaf_t,
        tree_roots=roots,
        n_targets=n_targets,
    )
    if members:
        attrs["membership_values"] = np.array(members, np.float32)
    return attrs


@pytest.mark.parametrize("agg", [0, 1, 2, 3])
def test_tree_ensemble_v5_matches_onnxruntime(agg):
    rng = np.random.default_rng(agg)
    attrs = _v5_forest(rng, 5, 4, 2)
    x = np.round(rng.standard_normal((60, 4)) * 2).astype(np.float32)  # exact hits for EQ / MEMBER
    x[::9, 0] = np.nan
    (y,) = ml_forest.TreeEnsemble(x, aggregate_function=agg, **attrs)
    ort_attrs = {
        k: numpy_helper.from_array(v, k) if isinstance(v, np.ndarray) else v
        for k, v in attrs.items()
    }
    np.testing.assert_allclose(
        y,
        run_ort("TreeEnsemble", [x], ml_opset=5, aggregate_function=agg, **ort_attrs)[0],
        rtol=1e-5,
        atol=1e-5,
    )
    (yd,) = ml_forest.TreeEnsemble(x.astype(np.float64), aggregate_function=agg, **attrs)
    assert yd.dtype == np.float64


def test_tree_ensemble_v5_post_transform_follows_the_spec_codes():
    # The spec numbers SOFTMAX 1 and LOGISTIC 2 (onnxruntime swaps them).
    attrs = _v5_forest(np.random.default_rng(5), 3, 3, 2, member=False)
    (raw,) = ml_forest.TreeEnsemble(X, **attrs)
    (soft,) = ml_forest.TreeEnsemble(X, post_transform=1, **attrs)
    (logi,) = ml_forest.TreeEnsemble(X, post_transform=2, **attrs)
    np.testing.assert_allclose(soft.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(logi, 1 / (1 + np.exp(-raw)), rtol=1e-6)


def test_tree_ensemble_many_rows_and_trees_is_vectorized():
    rng = np.random.default_rng(3)
    nodes, votes = random_forest(rng, 100, 8, lambda t: [(0, rng.standard_normal())])
    x = rng.standard_normal((5000, 4)).astype(np.float32)
    attrs = dict(
        nodes,
        target_treeids=votes["treeids"],
        target_nodeids=votes["nodeids"],
        target_ids=votes["ids"],
        target_weights=votes["weights"],
        n_targets=1,
    )
    (y,) = ml_trees.TreeEnsembleRegressor(x, **attrs)
    np.testing.assert_allclose(
        y, run_ort("TreeEnsembleRegressor", [x], **attrs)[0], rtol=1e-4, atol=1e-4
    )


# ---------------------------------------------------------------------------------------------
# SVMs


def _svc_attrs(rng, n_cls, per_class, kernel, proba, post="NONE"):
    s = sum(per_class)
    attrs = dict(
        kernel_type=kernel,
        kernel_params=[0.3, 0.5, 2.0],
        post_transform=post,
        vectors_per_class=per_class,
        support_vectors=rng.standard_normal(s * 4).astype(np.float32).tolist(),
        coefficients=rng.standard_normal((n_cls - 1) * s).astype(np.float32).tolist(),
        rho=rng.standard_normal(n_cls * (n_cls - 1) // 2).astype(np.float32).tolist(),
        classlabels_ints=list(range(5, 5 + n_cls)),
    )
    if proba:
        pairs = n_cls * (n_cls - 1) // 2
        attrs.update(
            prob_a=(-rng.random(pairs) - 0.5).tolist(),
            prob_b=(rng.standard_normal(pairs) * 0.1).tolist(),
        )
    return attrs


@pytest.mark.parametrize("kernel", ["LINEAR", "POLY", "RBF", "SIGMOID"])
@pytest.mark.parametrize("n_cls,per_class", [(2, [3, 2]), (3, [2, 3, 2]), (4, [2, 1, 2, 1])])
@pytest.mark.parametrize("proba", [False, True])
def test_svm_classifier(kernel, n_cls, per_class, proba):
    x = np.nan_to_num(X)
    attrs = _svc_attrs(np.random.default_rng(n_cls), n_cls, per_class, kernel, proba)
    y, z = ml_svm.SVMClassifier(x, **attrs)
    ref_y, ref_z = run_ort("SVMClassifier", [x], (INT64, FLOAT), **attrs)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_allclose(z, ref_z, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("post", POSTS)
def test_svm_classifier_post_transforms(post):
    x = np.nan_to_num(X)
    for n_cls, per_class in ((2, [3, 2]), (3, [2, 3, 2])):
        attrs = _svc_attrs(np.random.default_rng(7), n_cls, per_class, "RBF", False, post)
        y, z = ml_svm.SVMClassifier(x, **attrs)
        ref_y, ref_z = run_ort("SVMClassifier", [x], (INT64, FLOAT), **attrs)
        np.testing.assert_array_equal(y, ref_y)
        np.testing.assert_allclose(z, ref_z, rtol=1e-4, atol=1e-5)


def test_svm_classifier_linear_mode():
    x = np.nan_to_num(X)
    attrs = dict(
        kernel_type="LINEAR",
        kernel_params=[0.0, 0.0, 0.0],
        classlabels_ints=[0, 1, 2],
        coefficients=RNG.standard_normal(12).tolist(),
        rho=[0.1, 0.2, 0.3],
    )
    y, z = ml_svm.SVMClassifier(x, **attrs)
    ref_y, ref_z = run_ort("SVMClassifier", [x], (INT64, FLOAT), **attrs)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_allclose(z, ref_z, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("one_class", [0, 1])
@pytest.mark.parametrize("n_supports", [0, 5])
def test_svm_regressor(one_class, n_supports):
    x = np.nan_to_num(X)
    rng = np.random.default_rng(4)
    attrs = dict(
        kernel_type="RBF" if n_supports else "LINEAR",
        kernel_params=[0.3, 0.5, 2.0],
        n_supports=n_supports,
        one_class=one_class,
        rho=[0.1],
        coefficients=rng.standard_normal(n_supports or 4).astype(np.float32).tolist(),
    )
    if n_supports:
        attrs["support_vectors"] = rng.standard_normal(n_supports * 4).astype(np.float32).tolist()
    (y,) = ml_svm.SVMRegressor(x, **attrs)
    np.testing.assert_allclose(y, run_ort("SVMRegressor", [x], **attrs)[0], rtol=1e-5, atol=1e-5)
