"""Classifier fitting and metrics without a server (pure numpy / scikit-learn)."""

import numpy as np
import pytest

from pgvision.classify import Linear, cross_validate, fit, folds_for, from_bytes, to_bytes


def blobs(n_per=20, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, d))  # different directions, so cosine kNN works too
    X = np.vstack([rng.normal(c, 1.0, (n_per, d)) for c in centres]).astype(np.float32)
    return X, np.repeat(np.arange(3), n_per)


@pytest.mark.parametrize("method", ["knn", "logistic", "sgd"])
def test_separable_blobs_are_learned(method):
    X, y = blobs()
    metrics = cross_validate(method, X, y, {}, 5, ["a", "b", "c"])
    assert metrics["accuracy"] > 0.95 and metrics["roc_auc"] > 0.95


def test_binary_linear_models_become_two_column_softmax():
    X, y = blobs()
    keep = y < 2
    clf = fit("logistic", X[keep], y[keep], {})
    assert clf.weights.shape == (16, 2)
    proba = clf.scores(X[keep])
    assert np.allclose(proba.sum(axis=1), 1) and (proba.argmax(1) == y[keep]).mean() > 0.95


def test_linear_classifiers_round_trip_without_pickle():
    X, y = blobs()
    clf = fit("logistic", X, y, {})
    again = from_bytes("logistic", to_bytes(clf), {}, None)
    assert isinstance(again, Linear) and np.allclose(again.scores(X), clf.scores(X))


def test_folds_never_exceed_the_smallest_class():
    assert folds_for(np.array([0] * 10 + [1] * 3), 5) == 3
    assert folds_for(np.array([0] * 10 + [1] * 1), 5) == 2
