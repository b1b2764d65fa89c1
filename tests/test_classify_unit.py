"""Classifier fitting and metrics without a server (pure numpy / scikit-learn)."""

import functools

import numpy as np
import pytest

from pgvision.learners import (C_GRID, PATIENCE, Linear, cross_validate, cross_validated, fit,
                               folds_for, from_bytes, to_bytes)


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


def baseline_accuracy(X_train, y_train, X_test, y_test):
    """What a careful data scientist writes by hand for CNN-like features."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    model = make_pipeline(Normalizer(), LogisticRegressionCV(max_iter=3000))
    return (model.fit(X_train, y_train).predict(X_test) == y_test).mean()


@functools.lru_cache(maxsize=1)
def digits_split():
    """scikit-learn's digits (shipped with it), 200 to train, 400 held out, and the
    hand-written baseline's held-out accuracy on them."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:200], order[200:600]
    split = X[train].astype(np.float32), y[train], X[test].astype(np.float32), y[test]
    return (*split, baseline_accuracy(*split))


@pytest.mark.parametrize("method", ["logistic", "softmax", "sgd"])
def test_linear_methods_match_the_hand_written_baseline_on_digits(method):
    X_train, y_train, X_test, y_test, baseline = digits_split()
    proba = fit(method, X_train, y_train, {}, 10).scores(X_test)
    accuracy = (proba.argmax(1) == y_test).mean()
    assert accuracy >= 0.98 * baseline, (accuracy, baseline)
    # calibrated: the Brier score of a confident, right model is small
    brier = ((proba - np.eye(10)[y_test]) ** 2).sum(axis=1).mean()
    assert brier < 0.15, brier


def test_dimensions_that_barely_vary_in_training_cannot_blow_up():
    """0.6.0 divided every dimension by its training standard deviation: a dimension that is
    nearly constant in a few training rows (a CNN channel a crop never fires) then dominated
    every other image (probabilities of 1.0 for the wrong class)."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (3, 32))
    y_train, y_test = np.repeat(np.arange(3), 4), np.repeat(np.arange(3), 20)
    X_train = np.hstack([centres[y_train] + rng.normal(0, 0.3, (12, 32)),
                         rng.normal(0, 1e-4, (12, 200))])       # quiet in training
    X_test = np.hstack([centres[y_test] + rng.normal(0, 0.3, (60, 32)),
                        np.abs(rng.normal(0, 0.2, (60, 200)))])  # they fire here
    for method in ("logistic", "softmax", "sgd"):
        proba = fit(method, X_train, y_train, {}, 3).scores(X_test)
        wrong = proba.argmax(1) != y_test
        assert wrong.mean() <= 0.05, method  # 0.6.0: 0.75 wrong, at probability 1.0
        assert not wrong.any() or proba[wrong].max() < 0.9, method  # no confident mistakes


def test_stored_classifiers_of_0_6_0_still_predict_as_before():
    """A classifier stored before 0.7.0 has no l2 flag: it scores raw features."""
    X, y = blobs()
    old = Linear(X.mean(0), X.std(0), np.ones((16, 3), np.float32), np.zeros(3, np.float32),
                 l2=False)
    arrays = old.arrays()
    del arrays["l2"]
    import io as _io
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    again = from_bytes("logistic", buf.getvalue(), {}, None)
    assert again.l2 is False and np.allclose(again.scores(X), old.scores(X))


def test_cross_validation_reports_its_progress():
    X, y = blobs()
    heard = []
    cross_validate("logistic", X, y, {}, 3, ["a", "b", "c"], heard.append)
    assert [h.split(" (")[0] for h in heard] == [f"logistic: fold {i}/3 cross-validated"
                                                 for i in (1, 2, 3)]


def test_the_regularisation_path_stops_when_the_loss_gets_worse_and_keeps_the_best():
    rng = np.random.default_rng(4)
    centres = rng.gamma(0.5, 1.0, (3, 64))
    y = np.repeat(np.arange(3), 40)
    X = np.maximum(centres[y] + rng.normal(0, 1.5, (120, 64)), 0)
    metrics, chosen, _ = cross_validated("softmax", X, y, {}, 4, ["a", "b", "c"])
    losses = [step["log_loss"] for step in metrics["path"]]
    best = int(np.argmin(losses))
    assert chosen == {"C": metrics["path"][best]["C"]} == {"C": metrics["C"]}
    # it stopped after PATIENCE worse values in a row, or at the end of the grid
    assert len(losses) == len(C_GRID) or len(losses) - 1 - best == PATIENCE


def test_a_large_training_set_chooses_its_penalty_on_a_sample(monkeypatch):
    """Past PATH_ROWS the path runs on a stratified sample; the metrics are still every
    labelled image's out-of-fold prediction at the chosen value."""
    import pgvision.learners as learners

    monkeypatch.setattr(learners, "PATH_ROWS", 60)
    rng = np.random.default_rng(5)
    centres = rng.gamma(0.5, 1.0, (3, 32))
    y = np.repeat(np.arange(3), 50)
    X = np.maximum(centres[y] + rng.normal(0, 1.0, (150, 32)), 0)
    heard = []
    clf, metrics = learners.train("softmax", X, y, {}, 3, ["a", "b", "c"], heard.append)
    assert any("on a sample of 60, 3 folds" in h for h in heard)
    assert metrics["n"] == 150 and sum(map(sum, metrics["confusion_matrix"])) == 150
    assert clf.scores(X[:5]).shape == (5, 3)
