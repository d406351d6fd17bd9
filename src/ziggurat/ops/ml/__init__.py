"""The ai.onnx.ml domain (classical ML: sklearn-onnx and similar converters).

``preprocess.py``: feature transforms, encoders and map ops; ``linear.py``: linear models;
``svm.py``: SVMs; ``forest.py`` / ``trees.py``: tree ensembles (TreeEnsemble-5 and the legacy
TreeEnsembleRegressor/Classifier); ``common.py``: the score post-transforms and helpers they share.
"""
