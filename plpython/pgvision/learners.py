"""The learners behind classification (pure numpy and scikit-learn, no server): fitting knn,
softmax, logistic and sgd classifiers with k-fold cross-validation, their report (accuracy,
AUC, ...), and a classifier as plain arrays.

Linear methods see CNN features the way the literature and scikit-learn practice use them:
each row scaled to unit length, centred on the training mean, and divided by one scale for
all dimensions (the rows' mean distance to the centre), so no single dimension that barely
varies in a few training rows can be blown up; the regularisation strength is chosen by
cross-validation on the training set (log loss, so probabilities stay calibrated). Every
trained method except ``knn`` ends as one linear softmax layer,
``softmax((unit(x) - mean) / scale @ W + b)``, so prediction is numpy only and a stored
classifier is a handful of float arrays (an ``.npz`` archive read with ``allow_pickle=False``,
never a pickle). ``knn`` stores its labelled image ids and votes over their stored features.

    >>> clf = fit("logistic", X, y, {})          # doctest: +SKIP
    >>> clf.scores(X[:2])                        # doctest: +SKIP
"""

import io
import os
import time

import numpy as np

from .featurestore import FeatureMatrix
from .neighbours import distances

METHODS = ("knn", "softmax", "logistic", "sgd")
# C / alpha None: chosen by cross-validation from these. On unit-length CNN features C of 0.01
# to 1 never won (digits and photos, 30 to 1,000 labelled images: 100 to 10,000 did), and the
# path walks from the strongest penalty, so the grid starts at 1.
C_GRID = (1.0, 10.0, 100.0, 1000.0, 10000.0)
ALPHA_GRID = (1e-4, 1e-3, 1e-2)
DEFAULTS = {"knn": {"k": 5, "metric": "cosine"},
            "softmax": {"C": None, "balance": True},
            "logistic": {"C": None, "balance": True},
            "sgd": {"alpha": None, "l1_ratio": 0.15, "balance": True}}
# the parameter cross-validation chooses for a method, and its grid, strongest penalty first
PATHS = {"softmax": ("C", C_GRID), "logistic": ("C", C_GRID),
         "sgd": ("alpha", ALPHA_GRID[::-1])}


def unit(X):
    """Rows scaled to unit length (zero rows stay zero)."""
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class Linear:
    """softmax((x' - mean) / scale @ W + b) over ``classes`` (indices into the label list),
    where x' is x at unit length (``l2``; classifiers stored before 0.7.0 use x as it is)."""

    def __init__(self, mean, scale, weights, bias, l2=True):
        self.mean, self.scale, self.weights, self.bias = mean, scale, weights, bias
        self.l2 = l2

    def scores(self, X):
        X = unit(X) if self.l2 else X
        z = ((X - self.mean) / self.scale) @ self.weights + self.bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def arrays(self):
        return {"mean": self.mean, "scale": self.scale, "weights": self.weights,
                "bias": self.bias, "l2": np.array([1.0 if self.l2 else 0.0])}


class Knn:
    """Distance-weighted vote of the k nearest labelled vectors."""

    def __init__(self, vectors, targets, n_classes, k, metric):
        self.vectors, self.targets, self.n_classes = vectors, targets, n_classes
        self.k, self.metric = k, metric

    def scores(self, X):
        matrix = FeatureMatrix(np.arange(len(self.vectors)), self.vectors)
        out = np.zeros((len(X), self.n_classes))
        for row, x in enumerate(X):
            dist = distances(matrix, x, self.metric)
            near = np.argsort(dist, kind="stable")[:self.k]
            weight = 1.0 / (1e-6 + dist[near] - min(dist[near].min(), 0))
            np.add.at(out[row], self.targets[near], weight)
        return out / out.sum(axis=1, keepdims=True)


def prepare(X):
    """(mean, scale, Z): unit rows, centred, divided by their mean distance to the centre
    (one scale for every dimension)."""
    U = unit(X.astype(np.float64))
    mean = U.mean(axis=0)
    spread = float(np.sqrt(((U - mean) ** 2).sum(axis=1).mean())) or 1.0
    scale = np.full(X.shape[1], spread)
    return mean, scale, (U - mean) / scale


def row_span(Z):
    """An orthonormal basis (d, r) of the rows' span. An L2-penalised linear model's weights
    lie in it (representer theorem), so fitting on ``Z @ basis`` gives the same model in r <<
    d dimensions (40 images x 2048-d: ~25x faster, probabilities equal to ~1e-7)."""
    _, sv, vt = np.linalg.svd(Z, full_matrices=False)
    keep = sv > 1e-9 * (sv[0] if len(sv) else 1.0)
    return vt[keep].T if keep.any() else np.zeros((Z.shape[1], 1))


def binary_logistic(X, y, C=10.0, iterations=30):
    """(w, b) of an L2-penalised logistic regression, P(y=1) = sigmoid(X @ w + b), fitted by
    Newton's method in the span of the rows (:func:`row_span`): a shopper's 40 votes on
    2048-d features take a millisecond, where a general solver takes 60. ``C`` is the
    inverse penalty on w (b is not penalised), as in scikit-learn.

    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    >>> w, b = binary_logistic(X, np.array([1, 0, 1, 0]))
    >>> bool(w[0] > 0 > w[1])
    True
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    basis = row_span(X)
    Z = np.hstack([X @ basis, np.ones((len(X), 1))])
    theta = np.zeros(Z.shape[1])
    penalty = np.full(Z.shape[1], 1.0 / C)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ theta, -50, 50)))
        gradient = Z.T @ (p - y) + penalty * theta
        hessian = (Z.T * (p * (1 - p))) @ Z + np.diag(penalty) + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-7:
            break
    return basis @ theta[:-1], float(theta[-1])


def inner_folds(y):
    """Stratified folds for choosing regularisation: 5, or 2 from 500 images on (each half
    still trains on 250 or more; on 1,000 digits' Inception-v3 features the choice and the
    accuracy stay as with 3 folds, at 60% of the time), or None when a class has one
    image."""
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if smallest < 2:
        return None
    from sklearn.model_selection import StratifiedKFold
    return StratifiedKFold(min(5 if len(y) < 500 else 2, smallest), shuffle=True,
                           random_state=0)


def _binary_to_softmax(coef, intercept, n_classes):
    """scikit-learn's binary (1, d) coefficients → two-column softmax weights."""
    if n_classes == 2 and coef.shape[0] == 1:
        return (np.hstack([np.zeros_like(coef.T), coef.T]),
                np.array([0.0, intercept[0]]))
    return coef.T, intercept


def _chosen(estimator, param, grid, Z, y, folds):
    """The value of ``param`` in ``grid`` with the best cross-validated log loss. The grid is
    walked from the strongest penalty to the weakest with warm starts (each fit starts
    where the previous one ended), as LogisticRegressionCV walks its path."""
    from sklearn.base import clone
    from sklearn.metrics import log_loss

    losses = np.zeros(len(grid))
    for train, test in folds.split(Z, y):
        model = clone(estimator).set_params(warm_start=True)
        for i, value in enumerate(grid):
            model.set_params(**{param: value}).fit(Z[train], y[train])
            losses[i] += log_loss(y[test], model.predict_proba(Z[test]), labels=model.classes_)
    return grid[int(np.argmin(losses))]


def fit(method, X, y, options, n_classes=None, start=None):
    """Train ``method`` on features X (n, d) and class indices y; returns Linear or Knn.
    ``start`` (coef_, intercept_) starts the solver there (from cross-validation's folds)."""
    n_classes = n_classes or int(y.max()) + 1
    opts = {**DEFAULTS[method], **options}
    if method == "knn":
        return Knn(X.astype(np.float32), y, n_classes, int(opts["k"]), opts["metric"])
    mean, scale, Z = prepare(X)
    folds = inner_folds(y)
    if method == "sgd":  # elastic net: not rotation-invariant, so on all dimensions
        # one class per thread: its loops release the GIL
        sgd = _estimator(method, opts, warm=False, alpha=1e-4, n_jobs=2)
        alpha = opts["alpha"] if opts["alpha"] is not None else \
            _chosen(sgd, "alpha", PATHS["sgd"][1], Z, y, folds) if folds else 1e-4
        sgd.set_params(alpha=float(alpha), warm_start=start is not None)
        _warm(sgd, start, np.unique(y))
        clf = sgd.fit(Z, y)
        coef, intercept = clf.coef_, clf.intercept_
    else:  # softmax and logistic: one multinomial softmax layer with an L2 penalty
        # fewer rows than dimensions: fitted in the rows' span (same model, fewer unknowns)
        basis = row_span(Z) if len(Z) < Z.shape[1] else None
        R = Z @ basis if basis is not None else Z
        logistic = _estimator(method, opts, warm=False, C=1.0)
        C = opts["C"] if opts["C"] is not None else \
            _chosen(logistic, "C", C_GRID, R, y, folds) if folds else 1.0
        if basis is None and start is not None:
            logistic.set_params(warm_start=True)
            _warm(logistic, start, np.unique(y))
        clf = logistic.set_params(C=float(C)).fit(R, y)
        coef = clf.coef_ @ basis.T if basis is not None else clf.coef_
        intercept = clf.intercept_
    W, b = _binary_to_softmax(coef, intercept, n_classes)
    return Linear(mean.astype(np.float32), scale.astype(np.float32), W.astype(np.float32),
                  b.astype(np.float32))


def folds_for(y, requested):
    """Stratified folds: no more than the smallest class has members (at least 2)."""
    smallest = int(np.bincount(y).min())
    return max(2, min(requested, smallest))


def cross_validate(method, X, y, options, n_folds, labels, progress=None):
    """Out-of-fold probabilities → :func:`report` of them. ``progress(text)`` hears after
    each fold."""
    from sklearn.model_selection import StratifiedKFold

    proba = np.zeros((len(y), len(labels)))
    started = time.monotonic()
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=0).split(X, y)
    for done, (train, test) in enumerate(folds, start=1):
        proba[test] = fit(method, X[train], y[train], options, len(labels)).scores(X[test])
        if progress:
            progress(f"{method}: fold {done}/{n_folds} cross-validated "
                     f"({time.monotonic() - started:.1f} s)")
    return {"folds": n_folds, **report(y, proba, labels),
            "cv_seconds": time.monotonic() - started}


PATIENCE = 2  # grid values in a row with a worse cross-validated loss before the path stops
# above this many labelled images the path runs on a stratified sample of them (3 folds; a
# sample of 1,000 chose a penalty 10x too strong on 10,000 digits-like rows); the chosen
# value is then cross-validated on all of them, each fold starting from the sample's model
PATH_ROWS = 2000


def train(method, X, y, options, n_folds, labels, progress=None):
    """(classifier fitted on everything, :func:`cross_validated` metrics) in one pass: the
    value cross-validation chose is the one the final fit uses."""
    metrics, chosen, start = cross_validated(method, X, y, options, n_folds, labels, progress)
    started = time.monotonic()
    clf = fit(method, X, y, {**options, **chosen}, len(labels), start)
    metrics["train_seconds"] = time.monotonic() - started
    if progress:
        progress(f"{method}: fitted on all {len(y)} labelled images "
                 f"({metrics['train_seconds']:.1f} s)")
    return clf, metrics


def cross_validated(method, X, y, options, n_folds, labels, progress=None):
    """(metrics of out-of-fold predictions, {parameter: chosen value} or {}, a start for the
    final fit: the fold models' mean coefficients where they are in the features' own
    dimensions, else None).

    Where ``C`` (softmax, logistic) or ``alpha`` (sgd) is left to cross-validation, the
    regularisation path is walked once on the outer folds, from the strongest penalty to
    the weakest, each fold's model warm-started from its previous value, and stops when the
    folds' log loss got worse PATIENCE times in a row; the value with the best loss wins
    and the metrics are its out-of-fold predictions (as LogisticRegressionCV's scores are:
    the value is chosen on the same folds, so they lean optimistic by the little that
    choosing among a few values allows). The folds of one value are fitted in threads.
    ``progress(text)`` hears each value tried."""
    opts = {**DEFAULTS[method], **options}
    param, grid = PATHS.get(method, (None, ()))
    if param is None or opts[param] is not None or inner_folds(y) is None:
        return cross_validate(method, X, y, options, n_folds, labels, progress), {}, None
    started = time.monotonic()
    if len(y) <= PATH_ROWS:
        value, proba, path, start = regularisation_path(method, X, y, opts, n_folds,
                                                        len(labels), progress)
    else:
        sample = stratified_sample(y, PATH_ROWS)
        value, _, path, start = regularisation_path(
            method, X[sample], y[sample], opts, min(n_folds, 3), len(labels), progress,
            f" on a sample of {len(sample)}, 3 folds", span=False)
        _, proba, _, start = regularisation_path(
            method, X, y, opts, n_folds, len(labels), progress, " on all of them", span=False,
            grid=(value,), start=start)
    seconds = time.monotonic() - started
    if progress:
        progress(f"{method}: {param} = {value:g} won ({len(path)} of {len(grid)} values "
                 f"tried on {n_folds} folds, {seconds:.1f} s)")
    return {"folds": n_folds, **report(y, proba, labels), "cv_seconds": seconds,
            param: value, "path": [{param: v, "log_loss": loss} for v, loss in path]}, \
        {param: value}, start


def stratified_sample(y, rows):
    """Positions of about ``rows`` of ``y``, every class in proportion (at least 2 each)."""
    rng = np.random.default_rng(0)
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = max(2, int(round(rows * len(members) / len(y))))
        picked.append(rng.choice(members, min(take, len(members)), replace=False))
    return np.sort(np.concatenate(picked))


def _estimator(method, opts, warm=True, **params):
    """The scikit-learn estimator of a linear method (sgd: elastic-net SGD; softmax and
    logistic: multinomial L2 logistic regression) with ``opts``' class weights."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    weight = "balanced" if opts["balance"] else None
    if method == "sgd":
        return SGDClassifier(loss="log_loss", penalty="elasticnet",
                             l1_ratio=float(opts["l1_ratio"]), class_weight=weight,
                             max_iter=500, tol=1e-3, n_iter_no_change=3, random_state=0,
                             warm_start=warm, **params)
    return LogisticRegression(class_weight=weight, max_iter=5000, warm_start=warm, **params)


class _FoldThreads:
    """A pool of one thread per core for fitting folds at once, with the BLAS under each fit
    held to one thread: two fits that each spread over both cores contend (10,000 x 2048
    rows, 5 folds on 2 cores: 87 s; one BLAS thread a fit: 46 s)."""

    def __init__(self, folds):
        self.workers = max(1, min(folds, os.cpu_count() or 1))

    def __enter__(self):
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        self.limits = threadpool_limits(1) if self.workers > 1 else None
        self.pool = ThreadPoolExecutor(max_workers=self.workers)
        return self.pool

    def __exit__(self, *exc):
        self.pool.shutdown()
        if self.limits is not None:
            self.limits.restore_original_limits()
        return False


def _warm(model, start, classes):
    """Start ``model``'s next fit at ``start`` (coef_, intercept_) when its shape fits."""
    if start is not None and start[0].shape[0] == (1 if len(classes) == 2 else len(classes)):
        model.coef_, model.intercept_ = start[0].copy(), start[1].copy()
        model.classes_ = classes


def regularisation_path(method, X, y, opts, n_folds, n_classes, progress=None, where="",
                        span=True, grid=None, start=None):
    """(best value, its out-of-fold probabilities, [(value, log loss)] tried, the fold
    models' mean (coef_, intercept_) at the best value in the features' own dimensions, or
    None): see :func:`cross_validated`. ``grid`` (default: the method's) is walked in
    order, each fold's model starting from ``start`` (coef_, intercept_) when given."""
    from sklearn.base import clone
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    _, _, Z = prepare(X)
    param, default_grid = PATHS[method]
    grid = default_grid if grid is None else grid
    base = _estimator(method, opts)
    # elastic net is not rotation-invariant: every dimension; an L2 model's fold weights lie
    # in the span of all rows (fewer dimensions than rows)
    R = Z @ row_span(Z) if method != "sgd" and span and len(Z) < Z.shape[1] else Z
    folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=0).split(R, y))
    models = [clone(base) for _ in folds]
    for model, (train, _) in zip(models, folds):
        _warm(model, start, np.unique(y[train]))
    best, best_loss, best_proba, worse, path, start = None, np.inf, None, 0, [], None

    def one(i, value):
        train, test = folds[i]
        models[i].set_params(**{param: value}).fit(R[train], y[train])
        return test, models[i].predict_proba(R[test]), models[i].classes_

    with _FoldThreads(len(folds)) as pool:
        for value in grid:
            proba = np.zeros((len(y), n_classes))
            for test, fold_proba, classes in pool.map(lambda i: one(i, value),
                                                      range(len(folds))):
                proba[np.ix_(test, classes)] = fold_proba
            loss = float(log_loss(y, np.clip(proba, 1e-15, 1), labels=range(n_classes)))
            path.append((float(value), loss))
            if progress:
                progress(f"{method}: {param} = {value:g}, cross-validated log loss {loss:.4f}"
                         + where)
            if loss < best_loss - 1e-9:
                best, best_loss, best_proba, worse = float(value), loss, proba, 0
                start = None
                if R is Z and all(len(m.classes_) == n_classes for m in models):
                    start = (np.mean([m.coef_ for m in models], axis=0),
                             np.mean([m.intercept_ for m in models], axis=0))
            else:
                worse += 1
                if worse >= PATIENCE:
                    break
    return best, best_proba, path, start


def report(y, proba, labels):
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix, ROC AUC (one-vs-rest,
    macro), Brier score and the majority-class baseline of probabilities ``proba`` (n, classes)
    for true classes ``y``."""
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support, roc_auc_score)

    n_classes = len(labels)
    predicted = proba.argmax(axis=1)
    precision, recall, _, support = precision_recall_fscore_support(
        y, predicted, labels=range(n_classes), zero_division=0)
    if n_classes == 2:
        auc = roc_auc_score(y, proba[:, 1])
    else:
        auc = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=range(n_classes))
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, predicted)),
        "majority_baseline": float(np.bincount(y).max() / len(y)),
        "macro_f1": float(f1_score(y, predicted, average="macro")),
        "roc_auc": float(auc),
        "brier": float(((proba - np.eye(n_classes)[y]) ** 2).sum(axis=1).mean()),
        "per_class": {labels[i]: {"precision": float(precision[i]), "recall": float(recall[i]),
                                  "support": int(support[i])} for i in range(n_classes)},
        "confusion_matrix": confusion_matrix(y, predicted, labels=range(n_classes)).tolist(),
    }


def to_bytes(clf):
    buf = io.BytesIO()
    if isinstance(clf, Linear):
        np.savez(buf, **clf.arrays())
    return buf.getvalue()


def from_bytes(method, data, options, training):
    if method == "knn":
        vectors, targets, n_classes = training
        opts = {**DEFAULTS["knn"], **options}
        return Knn(vectors, targets, n_classes, int(opts["k"]), opts["metric"])
    with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as arrays:
        l2 = "l2" in arrays and bool(arrays["l2"][0])
        return Linear(arrays["mean"], arrays["scale"], arrays["weights"], arrays["bias"], l2)
