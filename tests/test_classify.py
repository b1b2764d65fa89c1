"""Classification against the real server: CV metrics on a set where the right answer is
certain, every method, prediction of stored and new images, batch labelling, errors."""

import io
import re

import numpy as np
import psycopg2
import pytest
from PIL import Image, ImageDraw
from psycopg2 import errors as pgerr

from conftest import query

MODEL = "mobilenet_v2"
CLASSES = ("stripes", "circles", "checks")


def shape_image(kind, seed):
    """A 96x96 picture of one kind of pattern, random colours and offsets."""
    rng = np.random.default_rng(seed)
    fg, bg = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2))
    img = Image.new("RGB", (96, 96), bg)
    draw = ImageDraw.Draw(img)
    step = int(rng.integers(10, 18))
    off = int(rng.integers(0, step))
    if kind == "stripes":
        for x in range(off - 96, 96, step):
            draw.polygon([(x, 0), (x + step // 2, 0), (x + step // 2 + 96, 96), (x + 96, 96)], fill=fg)
    elif kind == "circles":
        for _ in range(int(rng.integers(3, 7))):
            cx, cy, r = (int(v) for v in rng.integers([10, 10, 6], [86, 86, 20]))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=3)
    else:
        for x in range(off - step, 96, step):
            for y in range(off - step, 96, step):
                if ((x + y) // step) % 2 == 0:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=fg)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shapes(db):
    """30 labelled images (10 per class) plus 3 unlabelled, with mobilenet features."""
    query(db, "DROP TABLE IF EXISTS shapes, shape_labels")
    query(db, "CREATE TABLE shapes (id bigint PRIMARY KEY, image bytea)")
    query(db, "CREATE TABLE shape_labels (image_id bigint, label text)")
    for i in range(33):
        kind = CLASSES[i % 3]
        query(db, "INSERT INTO shapes VALUES (%s, %s)", (i + 1, psycopg2.Binary(shape_image(kind, i))))
        if i < 30:
            query(db, "INSERT INTO shape_labels VALUES (%s, %s)", (i + 1, kind))
    query(db, f"CALL vision.extract_table('shapes', model => '{MODEL}')")
    yield
    query(db, "DROP TABLE shapes, shape_labels")
    query(db, "DELETE FROM vision.classifiers")


def train(db, name, method, options="{}", **kwargs):
    args = "".join(f", {k} => %({k})s" for k in kwargs)
    return query(db, f"SELECT vision.train_classifier(%(name)s, 'shape_labels', 'shapes', "
                     f"'{MODEL}', %(method)s, %(options)s{args}, replace => true)",
                 {"name": name, "method": method, "options": options, **kwargs})[0][0]


@pytest.mark.parametrize("method", ["knn", "softmax", "logistic", "sgd"])
def test_every_method_beats_the_majority_baseline_clearly(db, shapes, method):
    metrics = train(db, f"shapes_{method}", method)
    assert metrics["majority_baseline"] == pytest.approx(1 / 3)
    assert metrics["accuracy"] >= metrics["majority_baseline"] + 0.4, metrics
    assert metrics["roc_auc"] > 0.8
    assert metrics["folds"] == 5 and metrics["n"] == 30
    assert sum(map(sum, metrics["confusion_matrix"])) == 30
    assert set(metrics["per_class"]) == set(CLASSES)
    assert query(db, "SELECT vision.evaluate_classifier(%s)", (f"shapes_{method}",))[0][0] == metrics


def test_training_says_which_penalty_won_and_how_long_each_stage_took(db, shapes):
    del db.notices[:]
    metrics = train(db, "shapes_timed", "softmax")
    said = "".join(db.notices)
    tried = [step["C"] for step in metrics["path"]]
    assert metrics["C"] in tried and tried == sorted(tried)  # strongest penalty first
    best = min(metrics["path"], key=lambda step: step["log_loss"])
    assert best["C"] == metrics["C"]
    assert f"softmax: C = {metrics['C']:g} won ({len(tried)} of " in said
    assert re.search(r"softmax: fitted on all 30 labelled images \(\d+\.\d s\)", said)
    assert metrics["cv_seconds"] > 0 and metrics["train_seconds"] > 0


def test_classify_stored_and_new_images(db, shapes):
    train(db, "shapes_logistic", "logistic")
    rows = query(db, "SELECT label, probability FROM vision.classify(31, 'shapes_logistic', 3)")
    assert [r[0] for r in rows][0] == "stripes"  # image 31 is a held-out stripes picture
    assert sum(r[1] for r in rows) == pytest.approx(1.0, abs=1e-5)
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    new = query(db, "SELECT label FROM vision.classify_image(%s, 'shapes_logistic', 1)",
                (psycopg2.Binary(shape_image("checks", 999)),))
    assert new == [("checks",)]


def test_classify_table_labels_incrementally(db, shapes):
    train(db, "shapes_knn", "knn", '{"k": 3}')
    assert query(db, "SELECT vision.classify_table('shapes_knn')")[0][0] == 33
    labels = dict(query(db, "SELECT image_id, label FROM vision.predictions "
                            "WHERE classifier = 'shapes_knn'"))
    assert [labels[i] for i in (31, 32, 33)] == list(CLASSES)
    assert query(db, "SELECT vision.classify_table('shapes_knn')")[0][0] == 0
    train(db, "shapes_knn", "knn", '{"k": 5}')  # retrained: every prediction is redone
    assert query(db, "SELECT vision.classify_table('shapes_knn')")[0][0] == 33


def test_compare_classifiers_ranks_methods(db, shapes):
    rows = query(db, "SELECT method, accuracy, roc_auc, rank FROM vision.compare_classifiers("
                     f"'shape_labels', 'shapes', '{MODEL}', ARRAY['knn', 'logistic'], 'accuracy')")
    assert sorted(r[0] for r in rows) == ["knn", "logistic"]
    assert [r[3] for r in rows] == [1, 2] and rows[0][1] >= rows[1][1]


@pytest.mark.parametrize("setup,call,error,message", [
    ("", "SELECT vision.classify(1, 'nope')", pgerr.UndefinedObject,
     "vision.classify: argument \"classifier\" names no trained classifier: 'nope'"),
    ("CREATE TEMP TABLE one_class AS SELECT image_id, 'x' AS label FROM shape_labels",
     f"SELECT vision.train_classifier('c', 'one_class', 'shapes', '{MODEL}')",
     pgerr.InvalidParameterValue, "has only one class (['x'])"),
    ("CREATE TEMP TABLE ghost AS SELECT * FROM shape_labels UNION ALL SELECT 9999, 'x'",
     f"SELECT vision.train_classifier('c', 'ghost', 'shapes', '{MODEL}')",
     pgerr.UndefinedObject, "1 labelled image(s) have no features for model 'mobilenet_v2' "
                            "(e.g. [9999])"),
    ("CREATE TEMP TABLE nulls AS SELECT * FROM shape_labels UNION ALL SELECT 1, NULL",
     f"SELECT vision.train_classifier('c', 'nulls', 'shapes', '{MODEL}')",
     pgerr.NullValueNotAllowed, "1 row(s) of nulls have a NULL id or label"),
    ("", f"SELECT vision.train_classifier('c', 'shape_labels', 'shapes', '{MODEL}', 'knn', "
         "'{\"k\": 500}')", pgerr.InvalidParameterValue,
     'argument "options.k" must be smaller than the labelled set (30 images), got 500'),
    ("", f"SELECT vision.train_classifier('c', 'shape_labels', 'shapes', '{MODEL}', 'xgb')",
     pgerr.InvalidParameterValue, "argument \"method\" must be one of 'knn', 'softmax'"),
    ("", f"SELECT vision.train_classifier('c', 'shape_labels', 'shapes', '{MODEL}', 'knn', "
         "'{\"depth\": 3}')", pgerr.InvalidParameterValue,
     "['depth'] are not options of method 'knn'"),
    ("CREATE TEMP TABLE lonely AS SELECT * FROM shape_labels WHERE label <> 'checks' "
     "UNION ALL SELECT 3, 'checks'",
     f"SELECT vision.train_classifier('c', 'lonely', 'shapes', '{MODEL}')",
     pgerr.InvalidParameterValue, "class 'checks' has only 1 labelled image"),
    ("", "SELECT vision.classify(1, 'shapes_logistic', 0)", pgerr.InvalidParameterValue,
     'argument "top_k" must be between 1 and 1000, got 0'),
])
def test_bad_input_is_named(db, shapes, setup, call, error, message):
    train(db, "shapes_logistic", "logistic")
    if setup:
        query(db, setup)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        query(db, call)


def test_a_classifier_of_another_feature_size_is_refused(db, shapes):
    train(db, "shapes_logistic", "logistic")
    query(db, "UPDATE vision.classifiers SET dims = 2048 WHERE name = 'shapes_logistic'")
    with pytest.raises(pgerr.DatatypeMismatch, match="was trained on 2048-d features of model "
                                                     "'mobilenet_v2', which now gives 1280-d"):
        query(db, "SELECT * FROM vision.classify(1, 'shapes_logistic')")


def test_a_classifier_copied_to_a_node_is_checked(db):
    """vision._put_classifier (what vision_cluster.train_classifier runs on each shard)."""
    call = ("SELECT vision._put_classifier('copied', 'mobilenet_v2', 'pg_class', %s, '{}', "
            "ARRAY['a', 'b'], %s, %s, '{}', '{}', '{}', now())")
    for method, dims, weights, message in [
        ("knn", 1280, b"x", r'argument "method" must be a method that keeps no per-node '
                            r"training set \(not knn\), got 'knn'"),
        ("logistic", 3, b"x", r'argument "dims" must be 1280 \(the dimensions of model '
                              r"'mobilenet_v2' on this node\), got 3"),
        ("logistic", 1280, b"not an npz", r'argument "weights" is not a stored logistic '
                                          r"classifier"),
    ]:
        with pytest.raises(pgerr.InvalidParameterValue, match="vision._put_classifier: " + message):
            query(db, call, (method, dims, psycopg2.Binary(weights)))
    assert not query(db, "SELECT 1 FROM vision.classifiers WHERE name = 'copied'")
