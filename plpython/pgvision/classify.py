"""The SQL functions of classification: train a classifier on a labels table (with k-fold
cross-validation), store it, predict one image, new bytes or a whole table, compare methods.
The learners themselves are :mod:`pgvision.learners`."""

import json

import numpy as np

from . import extract, featurestore, privileges, registry, snapshots, spi
from .progress import Progress
from .errors import (DATATYPE_MISMATCH, DUPLICATE_OBJECT, NULL_VALUE, UNDEFINED_OBJECT,
                     PgvisionError, require, require_choice, require_int_range,
                     require_not_null)
from .learners import (DEFAULTS, METHODS, cross_validated, folds_for, from_bytes, to_bytes,
                       train)

FN_TRAIN = "vision.train_classifier"
FN_CLASSIFY = "vision.classify"
FN_CLASSIFY_IMAGE = "vision.classify_image"
FN_TABLE = "vision.classify_table"
FN_COMPARE = "vision.compare_classifiers"
FN_PUT = "vision._put_classifier"
FN_EVALUATE = "vision.evaluate_classifier"

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
    clf, metrics = train(method, X, y, opts, folds_for(y, folds), names,
                         lambda text: plpy.notice(f"{fn}: {text}"))
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
        SELECT f.image_id FROM vision.stored_features f
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
            done[same] = cross_validated(method, X, y, opts, folds_for(y, folds), names,
                                         lambda text: plpy.notice(f"{fn}: {text}"))[0]
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
