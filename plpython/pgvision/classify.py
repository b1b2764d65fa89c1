"""Classification on stored features: train (knn, softmax head, logistic, sgd) with k-fold
cross-validation, store the classifier as plain arrays, predict one image or a whole table.

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
import json
import time

import numpy as np

from . import extract, featurestore, privileges, registry, snapshots, spi
from .progress import Progress
from .errors import (DATATYPE_MISMATCH, DUPLICATE_OBJECT, NULL_VALUE, UNDEFINED_OBJECT,
                     PgvisionError, require, require_choice, require_int_range,
                     require_not_null)
from .search import distances

METHODS = ("knn", "softmax", "logistic", "sgd")
FN_TRAIN = "vision.train_classifier"
FN_CLASSIFY = "vision.classify"
FN_CLASSIFY_IMAGE = "vision.classify_image"
FN_TABLE = "vision.classify_table"
FN_COMPARE = "vision.compare_classifiers"
FN_PUT = "vision._put_classifier"
FN_EVALUATE = "vision.evaluate_classifier"
# C / alpha None: chosen by cross-validation on the training set from these.
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
ALPHA_GRID = (1e-4, 1e-3, 1e-2)
DEFAULTS = {"knn": {"k": 5, "metric": "cosine"},
            "softmax": {"C": None, "balance": True},
            "logistic": {"C": None, "balance": True},
            "sgd": {"alpha": None, "l1_ratio": 0.15, "balance": True}}


# --- fitting (pure numpy / scikit-learn) ------------------------------------------------

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
        matrix = featurestore.FeatureMatrix(np.arange(len(self.vectors)), self.vectors)
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


def fit(method, X, y, options, n_classes=None):
    """Train ``method`` on features X (n, d) and class indices y; returns Linear or Knn."""
    n_classes = n_classes or int(y.max()) + 1
    opts = {**DEFAULTS[method], **options}
    if method == "knn":
        return Knn(X.astype(np.float32), y, n_classes, int(opts["k"]), opts["metric"])
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    mean, scale, Z = prepare(X)
    weight = "balanced" if opts["balance"] else None
    folds = inner_folds(y)
    if method == "sgd":  # elastic net: not rotation-invariant, so on all dimensions
        sgd = SGDClassifier(loss="log_loss", penalty="elasticnet", alpha=1e-4,
                            l1_ratio=float(opts["l1_ratio"]), class_weight=weight,
                            max_iter=500, tol=1e-3, n_iter_no_change=3, random_state=0,
                            n_jobs=2)  # one class per thread: its loops release the GIL
        alpha = opts["alpha"] if opts["alpha"] is not None else \
            _chosen(sgd, "alpha", ALPHA_GRID[::-1], Z, y, folds) if folds else 1e-4
        clf = sgd.set_params(alpha=float(alpha)).fit(Z, y)
        coef, intercept = clf.coef_, clf.intercept_
    else:  # softmax and logistic: one multinomial softmax layer with an L2 penalty
        basis = row_span(Z)
        R = Z @ basis
        logistic = LogisticRegression(C=1.0, class_weight=weight, max_iter=5000)
        C = opts["C"] if opts["C"] is not None else \
            _chosen(logistic, "C", C_GRID, R, y, folds) if folds else 1.0
        clf = logistic.set_params(C=float(C)).fit(R, y)
        coef, intercept = clf.coef_ @ basis.T, clf.intercept_
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


# --- SQL-facing -------------------------------------------------------------------------

def _options(fn, method, options):
    opts = json.loads(options) if options else {}
    require(fn, "options", options, isinstance(opts, dict), "a JSON object")
    unknown = set(opts) - set(DEFAULTS[method]) - {"id_column", "label_column"}
    if unknown:
        raise PgvisionError(fn, f'argument "options": {sorted(unknown)} are not options of '
                            f"method {method!r} (it takes {sorted(DEFAULTS[method])})")
    if method == "knn":
        require_int_range(fn, "options.k", opts.get("k", 5), 1, 1000)
        require_choice(fn, "options.metric", opts.get("metric", "cosine"), ("cosine", "l2", "ip"))
    for name in ("C", "alpha"):
        if opts.get(name) is not None:
            value = opts[name]
            require(fn, f"options.{name}", value, isinstance(value, (int, float)) and
                    not isinstance(value, bool) and value > 0,
                    "a positive number (or null: chosen by cross-validation)")
    return opts


def read_labels(plpy, fn, labels, opts):
    """(name of the labels table, rows (id, label) ordered by id)."""
    id_col = plpy.quote_ident(opts.get("id_column", "image_id"))
    label_col = plpy.quote_ident(opts.get("label_column", "label"))
    rel = plpy.execute(plpy.prepare("SELECT $1::regclass::text AS name", ["regclass"]),
                       [labels])[0]["name"]
    try:
        return rel, plpy.execute(f"SELECT {id_col}::bigint AS id, {label_col}::text AS label "
                                 f"FROM {rel} ORDER BY 1")
    except plpy.SPIError as err:
        raise PgvisionError(fn, f'argument "labels": cannot read image ids and labels from '
                            f"{rel} ({err.args[0] if err.args else err})", UNDEFINED_OBJECT,
                            hint='Name the columns with options => \'{"id_column": "...", '
                            '"label_column": "..."}\'') from None


def labelled_rows(plpy, fn, labels, opts):
    """:func:`read_labels`, refusing rows with a NULL id or label."""
    rel, rows = read_labels(plpy, fn, labels, opts)
    nulls = [r["id"] for r in rows if r["label"] is None or r["id"] is None]
    if nulls:
        raise PgvisionError(fn, f'argument "labels": {len(nulls)} row(s) of {rel} have a NULL '
                            f"id or label (image ids {nulls[:5]})", NULL_VALUE)
    return rel, rows


def _labelled(plpy, GD, fn, labels, source, model_row, opts):
    """(vectors, class indices, label names, image ids) of the labelled images."""
    rel, rows = labelled_rows(plpy, fn, labels, opts)
    matrix = snapshots.load_for(plpy, GD, fn, model_row, source)
    ids = np.array([r["id"] for r in rows], dtype=np.int64)
    present = np.isin(ids, matrix.ids)
    if not present.all():
        missing = ids[~present][:5].tolist()
        raise PgvisionError(fn, f'argument "labels": {int((~present).sum())} labelled image(s) '
                            f"have no features for model {model_row['name']!r} (e.g. {missing})",
                            UNDEFINED_OBJECT, hint="CALL vision.extract_table(...) first.")
    names = sorted({r["label"] for r in rows})
    if len(names) < 2:
        raise PgvisionError(fn, f'argument "labels": {rel} has only one class ({names}); a '
                            "classifier needs at least two")
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    counts = np.bincount(y, minlength=len(names))
    if counts.min() < 2:
        raise PgvisionError(fn, f'argument "labels": class {names[int(counts.argmin())]!r} has '
                            "only 1 labelled image; cross-validation needs at least 2 per class")
    return matrix.vectors[matrix.positions(ids)], y, names, ids


def _prepare_training(plpy, GD, fn, labels, source, model, method, options):
    require_not_null(fn, "labels", labels)
    require_choice(fn, "method", method, METHODS)
    opts = _options(fn, method, options)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    X, y, names, ids = _labelled(plpy, GD, fn, labels, source, model_row, opts)
    if method == "knn":
        if "k" in opts:
            require(fn, "options.k", opts["k"], opts["k"] < len(y),
                    f"smaller than the labelled set ({len(y)} images)")
        else:  # the default k, within what a small labelled set allows
            opts["k"] = min(DEFAULTS["knn"]["k"], len(y) - 1)
    return opts, model_row, source, X, y, names, ids


def train_classifier(plpy, GD, name, labels, source=None, model=None, method="softmax",
                     options=None, folds=5, replace=False):
    """Cross-validate, fit on everything, store; returns the CV metrics as JSON."""
    fn = FN_TRAIN
    require_not_null(fn, "name", name)
    require(fn, "name", name, registry.NAME_PATTERN.match(name), "a lower-case identifier")
    require_int_range(fn, "folds", folds, 2, 20)
    exists = plpy.execute(spi.plan(plpy, GD, "SELECT owner FROM vision.classifiers "
                                   "WHERE name = $1", ["text"]), [name])
    if exists and not replace:
        raise PgvisionError(fn, f'argument "name": a classifier named {name!r} exists',
                            DUPLICATE_OBJECT, hint="Pass replace => true to retrain it.")
    if exists:
        privileges.require_owner(plpy, GD, fn, f"classifier {name!r}", exists[0]["owner"])
    opts, model_row, source, X, y, names, ids = _prepare_training(
        plpy, GD, fn, labels, source, model, method, options)
    metrics = cross_validate(method, X, y, opts, folds_for(y, folds), names,
                             lambda text: plpy.notice(f"{fn}: {text}"))
    plpy.notice(f"{fn}: fitting {method} on all {len(y)} labelled images")
    started = time.monotonic()
    clf = fit(method, X, y, opts, len(names))
    metrics["train_seconds"] = time.monotonic() - started
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.classifiers AS c (name, model, source, method, options, labels,
            dims, weights, train_ids, train_targets, metrics)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (name) DO UPDATE SET model = EXCLUDED.model, source = EXCLUDED.source,
            method = EXCLUDED.method, options = EXCLUDED.options, labels = EXCLUDED.labels,
            dims = EXCLUDED.dims, weights = EXCLUDED.weights, train_ids = EXCLUDED.train_ids,
            train_targets = EXCLUDED.train_targets, metrics = EXCLUDED.metrics,
            trained_at = pg_catalog.now()""",
        ["text", "text", "oid", "text", "jsonb", "text[]", "int4", "bytea", "int8[]", "int4[]",
         "jsonb"]),
        [name, model_row["name"], source, method, json.dumps(opts), names, model_row["dims"],
         to_bytes(clf), ids.tolist(), y.tolist(), json.dumps(metrics)])
    GD.setdefault("pgvision.classifiers", {}).pop(name, None)
    return json.dumps(metrics)


def put_classifier(plpy, GD, name, model, source, method, options, labels, dims, weights,
                   train_ids, train_targets, metrics, trained_at):
    """Store a classifier trained on another node (a coordinator) as it is, ``trained_at``
    included, so every node's copy is recognisably the same version. Returns this node's
    name. Internal to vision_cluster.train_classifier."""
    fn = FN_PUT
    for argument, value in (("name", name), ("source", source), ("labels", labels),
                            ("weights", weights), ("trained_at", trained_at)):
        require_not_null(fn, argument, value)
    require_choice(fn, "method", method, METHODS)
    require(fn, "method", method, method != "knn",
            "a method that keeps no per-node training set (not knn)")
    model_row = registry.lookup(plpy, GD, fn, model)
    require(fn, "dims", dims, dims == model_row["dims"],
            f"{model_row['dims']} (the dimensions of model {model!r} on this node)")
    try:
        from_bytes(method, weights, json.loads(options), None)  # refuse what would not load
    except Exception as err:  # numpy and zipfile raise several types for damaged bytes
        raise PgvisionError(fn, f'argument "weights" is not a stored {method} classifier '
                            f"({type(err).__name__}: {err})") from None
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.classifiers AS c (name, model, source, method, options, labels,
            dims, weights, train_ids, train_targets, metrics, trained_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        ON CONFLICT (name) DO UPDATE SET model = EXCLUDED.model, source = EXCLUDED.source,
            method = EXCLUDED.method, options = EXCLUDED.options, labels = EXCLUDED.labels,
            dims = EXCLUDED.dims, weights = EXCLUDED.weights, train_ids = EXCLUDED.train_ids,
            train_targets = EXCLUDED.train_targets, metrics = EXCLUDED.metrics,
            trained_at = EXCLUDED.trained_at""",
        ["text", "text", "regclass", "text", "jsonb", "text[]", "int4", "bytea", "int8[]",
         "int4[]", "jsonb", "timestamptz"]),
        [name, model, source, method, options, labels, dims, weights, train_ids, train_targets,
         metrics, trained_at])
    GD.setdefault("pgvision.classifiers", {}).pop(name, None)
    return plpy.execute(spi.plan(plpy, GD, "SELECT vision.node_name() AS node"))[0]["node"]


def _classifier(plpy, GD, fn, name):
    require_not_null(fn, "classifier", name)
    rows = plpy.execute(spi.plan(plpy, GD, """
        SELECT name, model, source::oid AS source, method, options::text AS options, labels,
               dims, trained_at::text AS version
        FROM vision.classifiers WHERE name = $1""", ["text"]), [name])
    if not rows:
        raise PgvisionError(fn, f'argument "classifier" names no trained classifier: {name!r}',
                            UNDEFINED_OBJECT,
                            hint="SELECT name FROM vision.classifiers lists them.")
    row = dict(rows[0])
    model_row = registry.lookup(plpy, GD, fn, row["model"])
    if model_row["dims"] != row["dims"]:
        raise PgvisionError(fn, f"classifier {name!r} was trained on {row['dims']}-d features of "
                            f"model {row['model']!r}, which now gives {model_row['dims']}-d",
                            DATATYPE_MISMATCH, hint="Retrain it with vision.train_classifier.")
    cache = GD.setdefault("pgvision.classifiers", {})
    hit = cache.get(name)
    if hit is None or hit[0] != row["version"]:
        stored = plpy.execute(plpy.prepare(
            "SELECT weights, train_ids, train_targets FROM vision.classifiers WHERE name = $1",
            ["text"]), [name])[0]
        training = None
        if row["method"] == "knn":
            matrix = snapshots.load(plpy, GD, fn, row["model"], row["source"], row["dims"])
            ids = np.array(stored["train_ids"], dtype=np.int64)
            keep = np.isin(ids, matrix.ids)
            training = (matrix.vectors[matrix.positions(ids[keep])],
                        np.array(stored["train_targets"], dtype=np.int64)[keep], len(row["labels"]))
        hit = (row["version"], from_bytes(row["method"], stored["weights"],
                                          json.loads(row["options"]), training))
        cache[name] = hit
    return row, model_row, hit[1]


def _source(plpy, GD, fn, row, source):
    """The table to read features from: the classifier's own unless another is named."""
    if source is None:
        return row["source"]
    return featurestore.resolve_source(plpy, GD, fn, row["model"], source)


def _top(row, proba, top_k):
    order = np.argsort(-proba, kind="stable")[:top_k]
    return [(row["labels"][i], float(proba[i])) for i in order]


def classify(plpy, GD, image_id, classifier, top_k=3, source=None):
    """(label, probability) rows for a stored image, most likely first."""
    fn = FN_CLASSIFY
    require_not_null(fn, "image_id", image_id)
    require_int_range(fn, "top_k", top_k, 1, 1000)
    row, model_row, clf = _classifier(plpy, GD, fn, classifier)
    source = _source(plpy, GD, fn, row, source)
    found = featurestore.fetch(plpy, GD, row["model"], source, [image_id], row["dims"])
    if not len(found.ids):
        raise PgvisionError(fn, f'argument "image_id": image {image_id} has no features for '
                            f"model {row['model']!r}", UNDEFINED_OBJECT)
    return _top(row, clf.scores(found.vectors)[0], top_k)


def classify_image(plpy, GD, image, classifier, top_k=3):
    """(label, probability) rows for new image bytes."""
    fn = FN_CLASSIFY_IMAGE
    require_int_range(fn, "top_k", top_k, 1, 1000)
    row, model_row, clf = _classifier(plpy, GD, fn, classifier)
    vector = np.asarray(extract.features_of(plpy, GD, fn, image, model_row), dtype=np.float32)
    return _top(row, clf.scores(vector[None, :])[0], top_k)


def classify_table(plpy, GD, classifier, source=None, batch_size=1000):
    """Label every image of the source with features but no current prediction."""
    fn = FN_TABLE
    require_int_range(fn, "batch_size", batch_size, 1, 100_000)
    row, model_row, clf = _classifier(plpy, GD, fn, classifier)
    source = _source(plpy, GD, fn, row, source)
    pending = plpy.execute(plpy.prepare("""
        SELECT f.image_id FROM vision.features f
        LEFT JOIN vision.predictions p ON p.classifier = $1 AND p.source = f.source
             AND p.image_id = f.image_id
        WHERE f.model = $2 AND f.source = $3
          AND (p.image_id IS NULL OR p.predicted_at < greatest(f.extracted_at, $4::timestamptz))
        ORDER BY f.image_id""", ["text", "text", "oid", "text"]),
        [classifier, row["model"], source, row["version"]])
    ids = [r["image_id"] for r in pending]
    save = spi.plan(plpy, GD, """
        INSERT INTO vision.predictions (classifier, source, image_id, label, probability)
        SELECT $1, $2, pg_catalog.unnest($3::int8[]), pg_catalog.unnest($4::text[]),
               pg_catalog.unnest($5::float4[])
        ON CONFLICT (classifier, source, image_id) DO UPDATE SET label = EXCLUDED.label,
            probability = EXCLUDED.probability, predicted_at = pg_catalog.clock_timestamp()""",
        ["text", "oid", "int8[]", "text[]", "float4[]"])
    progress = Progress(plpy.notice)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        found = featurestore.fetch(plpy, GD, row["model"], source, chunk, row["dims"])
        proba = clf.scores(found.vectors)
        best = proba.argmax(axis=1)
        spi.write(plpy, GD, save, [classifier, source, found.ids.tolist(),
                            [row["labels"][i] for i in best], proba.max(axis=1).tolist()])
        progress.report(f"{fn}: {min(start + batch_size, len(ids))}/{len(ids)} images labelled")
    progress.finish()
    return len(ids)


def compare_classifiers(plpy, GD, labels, source=None, model=None, methods=None,
                        rank_by="roc_auc", folds=5, options=None):
    """Cross-validate several methods on the same folds; rows ranked by ``rank_by``.

    ``options`` takes what ``train_classifier`` takes: ``id_column`` / ``label_column`` for
    the labels table, and each method's options under its name, e.g.
    ``{"knn": {"k": 3}, "logistic": {"C": 0.5}}``."""
    fn = FN_COMPARE
    shared, per_method = _compare_options(fn, options)
    methods = list(methods) if methods is not None else list(METHODS)
    require(fn, "methods", "an empty array", len(methods) > 0,
            "NULL (every method) or an array of methods")
    for method in methods:
        require_choice(fn, "methods", method, METHODS)
    require_choice(fn, "rank_by", rank_by, ("accuracy", "macro_f1", "roc_auc"))
    require_int_range(fn, "folds", folds, 2, 20)
    results, done = [], {}
    for method in methods:
        method_options = json.dumps({**shared, **per_method.get(method, {})})
        opts, _, _, X, y, names, _ = _prepare_training(plpy, GD, fn, labels, source, model,
                                                       method, method_options)
        # softmax and logistic are one model: with the same options, cross-validate it once
        same = ("linear" if method in ("softmax", "logistic") else method,
                json.dumps(opts, sort_keys=True))
        if same not in done:
            done[same] = cross_validate(method, X, y, opts, folds_for(y, folds), names,
                                        lambda text: plpy.notice(f"{fn}: {text}"))
        results.append((method, done[same]))
    results.sort(key=lambda r: -r[1][rank_by])
    return [(method, m["accuracy"], m["macro_f1"], m["roc_auc"], m["cv_seconds"], rank)
            for rank, (method, m) in enumerate(results, start=1)]


def _compare_options(fn, options):
    """(options for every method, {method: its own options}) of compare_classifiers."""
    opts = json.loads(options) if options else {}
    require(fn, "options", options, isinstance(opts, dict), "a JSON object")
    unknown = set(opts) - set(METHODS) - {"id_column", "label_column"}
    if unknown:
        raise PgvisionError(fn, f'argument "options": {sorted(unknown)} are neither a method '
                            "nor id_column / label_column",
                            hint='Give a method\'s options under its name: {"knn": {"k": 3}}')
    for method in METHODS:
        require(fn, f"options.{method}", opts.get(method, {}),
                isinstance(opts.get(method, {}), dict), "a JSON object")
    shared = {k: v for k, v in opts.items() if k in ("id_column", "label_column")}
    return shared, {m: opts[m] for m in METHODS if m in opts}


def evaluate_classifier(plpy, GD, classifier):
    """The cross-validated metrics stored when the classifier was trained (JSON)."""
    fn = FN_EVALUATE
    require_not_null(fn, "classifier", classifier)
    rows = plpy.execute(spi.plan(plpy, GD, "SELECT metrics::text AS m FROM vision.classifiers "
                                 "WHERE name = $1", ["text"]), [classifier])
    if not rows:
        raise PgvisionError(fn, f'argument "classifier" names no trained classifier: '
                            f"{classifier!r}", UNDEFINED_OBJECT,
                            hint="SELECT name FROM vision.classifiers lists them.")
    return rows[0]["m"]
