"""How well a representation serves search and classification, measured on labelled images
(pure numpy and :mod:`pgvision.learners`; no server).

One protocol for everything, so figures compare: a fixed stratified split into training and
test images; **kNN precision@k** and **mAP@k** of each test image's k nearest training images
by cosine (a neighbour is relevant when it has the query's label); the **linear-probe
accuracy** of pgvision's own logistic learner (the one ``vision.train_classifier`` fits, its
C chosen by cross-validation on the training images only) on the test images; and, where
images come in groups of copies (``groups``), **near-duplicate recall@k**: the share of each
image's k nearest others, over all images, that are copies of the same original.

    >>> import numpy as np
    >>> X = np.eye(4, dtype=np.float32).repeat(3, axis=0)
    >>> y = np.arange(4).repeat(3)
    >>> round(near_duplicate_recall(X, y, 2), 2)
    1.0
"""

import json
import time

import numpy as np

from . import (classify, extract, extractors, learners, ocr, privileges, registry, settings,
               spi)
from .errors import PgvisionError, require_int_range, require_not_null
from .images import load_batch
from .progress import Progress

K = 10


def split(labels, test_share=1 / 3, seed=0):
    """(train positions, test positions): a stratified split, the same for every
    representation of the same labels. Classes with a single image go to training."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        n_test = int(round(len(members) * test_share)) if len(members) > 1 else 0
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


QUERY_BLOCK = 1024  # queries a similarity block holds: 20,000 images need 80 MB, not 1.6 GB


def _nearest(gallery, queries, k, exclude_self=False):
    """Positions (n_queries, k) of each query's k most cosine-similar gallery rows
    (``exclude_self``: queries are the gallery, and a row is not its own neighbour)."""
    G, Q = learners.unit(gallery), learners.unit(queries)
    k = min(k, len(G) - (1 if exclude_self else 0))
    blocks = []
    for start in range(0, len(Q), QUERY_BLOCK):
        similarity = Q[start:start + QUERY_BLOCK] @ G.T
        if exclude_self:
            rows = np.arange(len(similarity))
            similarity[rows, start + rows] = -np.inf
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(similarity, top, axis=1)
        blocks.append(np.take_along_axis(top, np.argsort(-order, axis=1, kind="stable"), axis=1))
    return np.concatenate(blocks) if blocks else np.empty((0, k), dtype=np.int64)


def retrieval(train_X, train_y, test_X, test_y, k=K):
    """(precision@k, mAP@k) of the test images' k nearest training images."""
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    hits = train_y[_nearest(train_X, test_X, k)] == test_y[:, None]
    precision = float(hits.mean())
    relevant = np.array([(train_y == label).sum() for label in test_y])
    ranks = np.arange(1, hits.shape[1] + 1)
    precision_at = np.cumsum(hits, axis=1) / ranks
    average = (precision_at * hits).sum(axis=1) / np.maximum(np.minimum(relevant, k), 1)
    return precision, float(average.mean())


def linear_probe(train_X, train_y, test_X, test_y, folds=3):
    """Test accuracy of pgvision's logistic learner fitted on the training images."""
    classes, train_t = np.unique(train_y, return_inverse=True)
    X = np.asarray(train_X, dtype=np.float32)
    if np.bincount(train_t).min() < 2:  # too few to cross-validate: the learner's own default
        clf = learners.fit("logistic", X, train_t, {}, len(classes))
    else:
        clf, _ = learners.train("logistic", X, train_t, {}, learners.folds_for(train_t, folds),
                                [str(c) for c in classes])
    predicted = classes[np.argmax(clf.scores(np.asarray(test_X, dtype=np.float32)), axis=1)]
    return float((predicted == np.asarray(test_y)).mean())


def near_duplicate_recall(X, groups, k=2):
    """Share of each image's k nearest other images that are copies of the same original."""
    groups = np.asarray(groups)
    near = _nearest(X, X, k, exclude_self=True)
    return float((groups[near] == groups[:, None]).mean())


def evaluate(X, labels, groups=None, k=K, seed=0):
    """Every measure of one representation ``X`` (n, d) of labelled images, on the split of
    ``labels``; ``groups`` (copies of one original share a value) adds near-duplicate
    recall@2."""
    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    train, test = split(labels, seed=seed)
    precision, average = retrieval(X[train], labels[train], X[test], labels[test], k)
    out = {"precision_at_10" if k == K else f"precision_at_{k}": precision,
           "map_at_10" if k == K else f"map_at_{k}": average,
           "accuracy": linear_probe(X[train], labels[train], X[test], labels[test]),
           "train_images": int(len(train)), "test_images": int(len(test))}
    if groups is not None:
        out["near_duplicate_recall_at_2"] = near_duplicate_recall(X, groups, 2)
    return out


# --- vision.evaluate_features: the same measures on a user's own labelled images -----------

FN_EVALUATE = "vision.evaluate_features"
MAX_IMAGES = 20_000


def evaluate_features(plpy, GD, labels, source, models=None, id_column="id",
                      image_column="image", options=None, max_images=2000):
    """One row per model: :func:`evaluate` of the labelled images of ``source``, extracted
    afresh (nothing is stored) so each model's time per image is measured too. ``models``
    NULL: every registered feature model (not the OCR model). ``options`` names the labels
    table's columns (``id_column``, ``label_column``, and ``group_column`` for near-duplicate
    recall)."""
    fn = FN_EVALUATE
    for argument, value in (("labels", labels), ("source", source), ("id_column", id_column),
                            ("image_column", image_column), ("max_images", max_images)):
        require_not_null(fn, argument, value)
    require_int_range(fn, "max_images", max_images, 20, MAX_IMAGES)
    opts = json.loads(options) if isinstance(options, str) else dict(options or {})
    unknown = sorted(set(opts) - {"id_column", "label_column", "group_column"})
    if unknown:
        raise PgvisionError(fn, f'argument "options": unknown key(s) {unknown}; expected '
                            "id_column, label_column, group_column")
    if models is None:
        models = [r["name"] for r in plpy.execute(  # the feature models: OCR reads text
            "SELECT name, sha256 FROM vision.model_store ORDER BY name")
            if not ocr.is_ocr_row(r)]
    if not models or any(m is None for m in models):
        raise PgvisionError(fn, 'argument "models" must name at least one model, and no NULL')
    rows = [registry.lookup(plpy, GD, fn, m, argument="models") for m in models]
    relid, qualified = extract.validate_table(plpy, GD, fn, spi.relid_of(plpy, source),
                                               id_column, image_column)
    privileges.require_select(plpy, GD, fn, relid, "evaluating features of its images")
    ids, y, groups = _labelled_images(plpy, fn, labels, opts, max_images)
    # one model's features are held at a time; a wide model (pooling "none") could hold GBs
    widest = max(int(row["dims"]) for row in rows)
    settings.require_within_limit(
        plpy, GD, fn, f"features in memory, MB ({len(ids)} images x {widest} dims x 4 bytes)",
        -(-len(ids) * widest * 4 // (1 << 20)), "pgvision.max_batch_memory_mb")
    out = []
    for row in rows:
        X, kept, seconds = _extract_all(plpy, GD, fn, qualified, row, id_column, image_column,
                                        ids)
        missing = np.setdiff1d(ids, kept)
        if len(missing):
            raise PgvisionError(fn, f'argument "labels": {len(missing)} labelled image(s) are '
                                f"not readable images of {qualified} (e.g. image ids "
                                f"{missing[:5].tolist()})", hint="Labelled ids must be rows of "
                                "source whose image decodes (and that you may see).")
        result = evaluate(X, y, groups)
        out.append({"model": row["name"], "dims": int(row["dims"]), "images": len(ids),
                    "precision_at_10": result["precision_at_10"],
                    "map_at_10": result["map_at_10"], "accuracy": result["accuracy"],
                    "near_duplicate_recall_at_2": result.get("near_duplicate_recall_at_2"),
                    "ms_per_image": 1000.0 * seconds / len(ids)})
        plpy.notice(f"{fn}: {row['name']}: precision@10 {result['precision_at_10']:.3f}, "
                    f"accuracy {result['accuracy']:.3f}, {out[-1]['ms_per_image']:.0f} ms/image")
    return out


def _labelled_images(plpy, fn, labels, opts, max_images):
    """(ids, labels, groups or None) of the labelled images, a stratified sample of at most
    ``max_images``; at least 2 classes with 2 images each."""
    rel, rows = classify.labelled_rows(plpy, fn, labels, opts)
    ids = np.array([r["id"] for r in rows], dtype=np.int64)
    y = np.array([r["label"] for r in rows], dtype=object)
    names, counts = np.unique(y.astype(str), return_counts=True)
    if len(names) < 2 or counts.min() < 2:
        raise PgvisionError(fn, f'argument "labels": {rel} needs at least 2 classes with at '
                            f"least 2 images each (it has {dict(zip(names.tolist(), counts.tolist()))})")
    groups = None
    if opts.get("group_column"):
        column = plpy.quote_ident(opts["group_column"])
        id_col = plpy.quote_ident(opts.get("id_column", "image_id"))
        try:
            found = {r["id"]: r["g"] for r in plpy.execute(
                f"SELECT {id_col}::bigint AS id, {column}::text AS g FROM {rel}")}
        except plpy.SPIError as err:
            raise PgvisionError(fn, f'argument "options": group_column {opts["group_column"]!r} '
                                f"cannot be read from {rel} ({err.args[0] if err.args else err})"
                                ) from None
        groups = np.array([found.get(i) for i in ids], dtype=object)
    if len(ids) > max_images:
        keep = learners.stratified_sample(np.unique(y.astype(str), return_inverse=True)[1],
                                          max_images)
        ids, y = ids[keep], y[keep]
        groups = groups[keep] if groups is not None else None
    return ids, y.astype(str), (groups.astype(str) if groups is not None else None)


def _extract_all(plpy, GD, fn, qualified, row, id_column, image_column, ids):
    """(features, ids that decoded, seconds spent decoding and extracting) of ``ids``, read
    and extracted batch by batch within pgvision.max_batch_memory_mb."""
    batch = min(extract.batch_limit(row, settings.max_batch_memory(plpy, GD)), 32)
    extractor = extractors.get_extractor(plpy, GD, fn, row)
    read = plpy.prepare(
        f"SELECT {plpy.quote_ident(id_column)}::bigint AS id, {plpy.quote_ident(image_column)} "
        f"AS image FROM {qualified} WHERE {plpy.quote_ident(id_column)} "
        "OPERATOR(pg_catalog.=) ANY($1)", ["int8[]"])
    pixels = settings.max_pixels(plpy, GD)
    progress = Progress(plpy.notice)
    vectors, seconds = {}, 0.0
    for start in range(0, len(ids), batch):
        rows = plpy.execute(read, [ids[start:start + batch].tolist()])
        started = time.monotonic()
        images, ok, _ = load_batch([r["image"] for r in rows if r["image"] is not None],
                                   (row["input_height"], row["input_width"]),
                                   row["preprocessing"], pixels)
        present = [r["id"] for r in rows if r["image"] is not None]
        for position, vector in zip(ok, extractor(images)):
            vectors[present[position]] = vector
        seconds += time.monotonic() - started
        progress.report(f"{fn}: {row['name']}: {min(start + batch, len(ids))}/{len(ids)} "
                        "images extracted")
    progress.finish()
    kept = np.array(sorted(vectors), dtype=np.int64)
    order = [vectors[i] for i in ids if i in vectors]
    return np.array(order, dtype=np.float32), kept, seconds
