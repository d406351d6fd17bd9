"""scikit-learn models converted by skl2onnx run in Ziggurat as they do in sklearn and onnxruntime.

Each test trains a small model on a dataset bundled with scikit-learn (no download), converts it
with skl2onnx and checks Ziggurat's outputs against onnxruntime's (labels equal, scores within
float32 noise) and against the sklearn model's own ``predict`` / ``predict_proba``. sklearn computes
in float64 while the converted graph runs in float32, so a sample sitting on a decision boundary
may flip there: sklearn agreement is checked on the label rate and a looser score tolerance.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import (
    FloatTensorType,
    Int64TensorType,
    StringTensorType,
)
from sklearn import datasets
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    GradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeRegressor

import ziggurat as zg

# skl2onnx 1.20 is tested up to opset 22. It emits TreeEnsembleRegressor/Classifier whatever the
# ai.onnx.ml opset (never the ml-5 TreeEnsemble op, which the conformance suite covers instead); its
# float64 tree models declare a double output that TreeEnsembleRegressor's spec (float only) and
# onnxruntime reject, so trees are tested in float32 only.
OPSET = {"": 21, "ai.onnx.ml": 3}
NO_ZIPMAP = {"zipmap": False}


def _load(name: str):
    loader = getattr(datasets, f"load_{name}")
    x, y = loader(return_X_y=True)
    return x.astype(np.float32), y


def _run_both(onx, feeds: dict) -> tuple[list, list]:
    """Ziggurat's and onnxruntime's outputs for the converted model."""
    data = onx.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = zg.InferenceSession(data).run(None, feeds)
    assert len(got) == len(ref)
    return got, ref


def _assert_matches_ort(got: list, ref: list, atol: float = 1e-5) -> None:
    for g, r in zip(got, ref, strict=True):
        assert isinstance(g, np.ndarray), type(g)
        assert g.dtype == r.dtype and g.shape == r.shape, (g.dtype, g.shape, r.dtype, r.shape)
        if r.dtype.kind in "biuO":
            np.testing.assert_array_equal(g, r)
        else:
            scale = max(float(np.abs(r).max()), 1.0)
            np.testing.assert_allclose(g, r, rtol=0, atol=atol * scale)


def _check_classifier(model, x, onx, *, proba_atol=1e-4, label_rate=0.99):
    got, ref = _run_both(onx, {"X": x})
    _assert_matches_ort(got, ref)
    labels, proba = got
    assert np.mean(labels == model.predict(x)) >= label_rate
    np.testing.assert_allclose(proba, model.predict_proba(x), rtol=0, atol=proba_atol)


def test_scaler_logistic_regression_pipeline_iris():
    x, y = _load("iris")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    onx = to_onnx(model, x[:1], target_opset=OPSET, options={id(model): NO_ZIPMAP})
    _check_classifier(model, x, onx)


def test_logistic_regression_zipmap_outputs_dicts():
    """The default conversion ends in ZipMap: probabilities as one {class: prob} dict per row."""
    x, y = _load("iris")
    model = LogisticRegression(max_iter=500).fit(x, y)
    onx = to_onnx(model, x[:1], target_opset=OPSET)
    feeds = {"X": x[::7]}
    data = onx.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = zg.InferenceSession(data).run(None, feeds)
    np.testing.assert_array_equal(got[0], ref[0])
    assert len(got[1]) == len(ref[1]) == len(feeds["X"])
    for g, r in zip(got[1], ref[1]):
        assert sorted(g) == sorted(r)
        np.testing.assert_allclose([g[k] for k in r], list(r.values()), rtol=0, atol=1e-5)


def test_random_forest_classifier_breast_cancer():
    x, y = _load("breast_cancer")
    model = RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0).fit(x, y)
    onx = to_onnx(model, x[:1], target_opset=OPSET, options={id(model): NO_ZIPMAP})
    _check_classifier(model, x, onx)


def test_gradient_boosting_regressor_diabetes():
    x, y = _load("diabetes")
    model = GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    onx = to_onnx(model, x[:1], target_opset=OPSET)
    got, ref = _run_both(onx, {"X": x})
    _assert_matches_ort(got, ref)
    np.testing.assert_allclose(got[0][:, 0], model.predict(x), rtol=1e-4, atol=1e-3)


def test_decision_tree_regressor_diabetes():
    x, y = _load("diabetes")
    model = DecisionTreeRegressor(max_depth=8, random_state=0).fit(x, y)
    onx = to_onnx(model, x[:1], target_opset=OPSET)
    got, ref = _run_both(onx, {"X": x})
    _assert_matches_ort(got, ref)
    # A float32 threshold can send a boundary sample down the other branch: compare the rate.
    close = np.isclose(got[0][:, 0], model.predict(x), rtol=1e-5, atol=1e-3)
    assert close.mean() >= 0.99


@pytest.mark.filterwarnings("ignore::FutureWarning")  # SVC(probability=True) deprecated in 1.9
def test_svc_probability_iris():
    x, y = _load("iris")
    model = SVC(probability=True, random_state=0).fit(x, y)
    onx = to_onnx(model, x[:1], target_opset=OPSET, options={id(model): NO_ZIPMAP})
    # libsvm's Platt scaling runs in float64 over float64 kernels; float32 leaves ~1e-3 there.
    _check_classifier(model, x, onx, proba_atol=5e-3)


def test_kneighbors_classifier_digits():
    """KNN converts to pairwise distances, TopK, gathers of the training labels and a vote."""
    x, y = _load("digits")
    x_train, x_test, y_train = x[:1200], x[1200:1400], y[:1200]
    model = KNeighborsClassifier(n_neighbors=5).fit(x_train, y_train)
    onx = to_onnx(model, x_test[:1], target_opset=OPSET, options={id(model): NO_ZIPMAP})
    _check_classifier(model, x_test, onx)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_classifier_digits():
    x, y = _load("digits")
    x = x / 16.0
    model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0).fit(
        x[:900], y[:900]
    )
    onx = to_onnx(model, x[:1], target_opset=OPSET, options={id(model): NO_ZIPMAP})
    _check_classifier(model, x, onx)


def test_column_transformer_one_hot_strings():
    """String and numeric columns as separate graph inputs: OneHotEncoder on strings, scaled
    numbers, concatenated, then a linear classifier."""
    x, y = _load("iris")
    rng = np.random.default_rng(0)
    colour = np.array(["red", "green", "blue"], dtype=object)[rng.integers(0, 3, len(x))]
    # Make the string column informative so the encoder's weights matter.
    colour = np.where(y == 2, "violet", colour).astype(object)
    frame_num, frame_cat = x[:, :2], colour.reshape(-1, 1)
    features = np.concatenate([frame_num.astype(object), frame_cat], axis=1)
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), [0, 1]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), [2]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(features, y)
    onx = to_onnx(
        model,
        initial_types=[("num", FloatTensorType([None, 2])), ("cat", StringTensorType([None, 1]))],
        target_opset=OPSET,
        options={id(model.steps[-1][1]): NO_ZIPMAP},
    )
    # Categories never seen in training encode as all zeros (handle_unknown="ignore").
    frame_cat = frame_cat.copy()
    frame_cat[::10, 0] = "purple"
    features[:, 2:] = frame_cat
    feeds = {"num": frame_num, "cat": frame_cat}
    got, ref = _run_both(onx, feeds)
    _assert_matches_ort(got, ref)
    assert np.mean(got[0] == model.predict(features)) >= 0.99
    np.testing.assert_allclose(got[1], model.predict_proba(features), rtol=0, atol=1e-4)


def test_ridge_on_int64_input():
    """Integer features: skl2onnx casts them to float inside the graph."""
    x, y = _load("diabetes")
    xi = np.round(x * 100).astype(np.int64)
    model = Ridge(alpha=1.0).fit(xi, y)
    onx = to_onnx(
        model, initial_types=[("X", Int64TensorType([None, xi.shape[1]]))], target_opset=OPSET
    )
    got, ref = _run_both(onx, {"X": xi})
    _assert_matches_ort(got, ref)
    np.testing.assert_allclose(got[0][:, 0], model.predict(xi), rtol=1e-4, atol=1e-2)


def test_pca_kmeans_pipeline_digits():
    """PCA (MatMul after centering) then KMeans: labels and distances to the centroids."""
    x, _ = _load("digits")
    model = make_pipeline(
        PCA(n_components=12, random_state=0), KMeans(n_clusters=8, n_init=2, random_state=0)
    ).fit(x)
    onx = to_onnx(model, x[:1], target_opset=OPSET)
    got, ref = _run_both(onx, {"X": x})
    _assert_matches_ort(got, ref, atol=1e-4)
    assert np.mean(got[0] == model.predict(x)) >= 0.99
    np.testing.assert_allclose(got[1], model.transform(x), rtol=1e-3, atol=1e-2)
