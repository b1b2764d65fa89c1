#!/usr/bin/env python3
"""Classification benchmark on labelled image sets built offline, all in one run:

  digits   scikit-learn's handwritten digits (8x8, shipped with the package) drawn as images
  shapes   synthetic stripes / circles / checks / dots, random colours and positions
  photos   the scikit-image photographs, each in augmented copies (class = which photo)

For each set: features are extracted in the database, then vision.compare_classifiers
cross-validates every method (knn, softmax, logistic, sgd) on the same folds; printed with
the majority-class baseline and, side by side on the same stored features and folds, what a
careful data scientist writes by hand (Normalizer + LogisticRegressionCV, cosine kNN), as
ratios. Then labelling throughput: vision.classify_table vs the
client-side pipeline (psycopg2 fetches the features, numpy applies the same trained head,
the labels are written back), as a ratio. First, on all 1,797 digits with 1,000 labelled:
compare_classifiers timed on the 1,000, and held-out accuracy of the default head on the
base model's features against the same head on the features of a model vision.fine_tune
made from the 1,000 (``--only-held-out`` runs just that).

    make bench-classify                     # inception_v3
    make bench-classify BENCH_ARGS=--quick  # mobilenet_v2, smaller sets
"""

import argparse
import io
import warnings
import os
import sys
import time

import numpy as np
import psycopg2
import psycopg2.extras
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from test_classify import shape_image  # noqa: E402  (the test suite's pattern generator)
from search import augmented_photos  # noqa: E402
from common import feature_table, write_results  # noqa: E402


def encode(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def digits(n):
    from sklearn.datasets import load_digits

    data = load_digits()
    rows = []
    for image, target in list(zip(data.images, data.target))[:n]:
        grey = (255 - image * 16).clip(0, 255).astype(np.uint8)  # dark ink on white
        rows.append((str(target), encode(Image.fromarray(grey).resize((96, 96), Image.BICUBIC))))
    return rows


def shapes(n):
    kinds = ("stripes", "circles", "checks")
    return [(kinds[i % 3], shape_image(kinds[i % 3], i)) for i in range(n)]


def photos(per_photo):
    return [(f"photo{s}", data) for s, data in augmented_photos(per_photo)]


def load(cur, name, rows, model):
    table, labels = f"bench_cls_{name}", f"bench_cls_{name}_labels"
    cur.execute(f"DROP TABLE IF EXISTS {table}, {labels}")
    cur.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, image bytea)")
    cur.execute(f"CREATE TABLE {labels} (image_id bigint, label text)")
    for i, (label, data) in enumerate(rows, start=1):
        cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, psycopg2.Binary(data)))
        cur.execute(f"INSERT INTO {labels} VALUES (%s, %s)", (i, label))
    cur.execute("CALL vision.extract_table(%s, model => %s)", (table, model))
    return table, labels


def baselines(cur, table, labels, model, folds=5):
    """What a careful data scientist writes by hand, cross-validated on the same stored
    features and the same folds as vision.compare_classifiers (StratifiedKFold, shuffled,
    seed 0, over the labelled images in id order)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    from pgvision.learners import folds_for

    cur.execute(f"SELECT f.feature, l.label FROM {labels} l JOIN vision.features f ON "
                "f.image_id = l.image_id AND f.source = %s::regclass AND f.model = %s "
                "ORDER BY l.image_id", (table, model))
    rows = cur.fetchall()
    X = np.array([r[0] for r in rows], dtype=np.float32)
    names = sorted({r[1] for r in rows})
    y = np.array([names.index(r[1]) for r in rows])
    outer = folds_for(y, folds)
    split = StratifiedKFold(outer, shuffle=True, random_state=0)
    inner = max(2, min(5, int(np.bincount(y).min()) * (outer - 1) // outer))
    out = {}
    for kind, model_ in (("linear", make_pipeline(Normalizer(), LogisticRegressionCV(
            cv=inner, max_iter=3000))), ("knn", KNeighborsClassifier(
                5, metric="cosine", weights="distance"))):
        proba = cross_val_predict(model_, X, y, cv=split, method="predict_proba")
        auc = roc_auc_score(y, proba[:, 1]) if len(names) == 2 else roc_auc_score(
            y, proba, multi_class="ovr", average="macro")
        out[kind] = {"accuracy": accuracy_score(y, proba.argmax(1)),
                     "macro_f1": f1_score(y, proba.argmax(1), average="macro"),
                     "roc_auc": auc}
    return out


def throughput(cur, table, labels, model):
    from pgvision.learners import from_bytes

    cur.execute("SELECT vision.train_classifier('bench_head', %s, %s, %s, 'logistic', "
                "replace => true)", (labels, table, model))
    cur.execute("SELECT vision.classify_table('bench_head')")  # warm: load features
    cur.execute("DELETE FROM vision.predictions WHERE classifier = 'bench_head'")
    started = time.monotonic()
    cur.execute("SELECT vision.classify_table('bench_head')")
    n = cur.fetchone()[0]
    in_db = time.monotonic() - started
    cur.execute("SELECT weights, labels FROM vision.classifiers WHERE name = 'bench_head'")
    weights, names = cur.fetchone()
    head = from_bytes("logistic", weights, {}, None)
    # the client-side pipeline users would otherwise write: fetch features, apply the head,
    # write the labels back
    cur.execute("CREATE TEMP TABLE client_predictions (image_id bigint, label text, p real)")
    started = time.monotonic()
    cur.execute("SELECT image_id, feature FROM vision.features WHERE model = %s "
                "AND source = %s::regclass", (model, table))
    rows = cur.fetchall()
    proba = head.scores(np.array([r[1] for r in rows], dtype=np.float32))
    best = proba.argmax(axis=1)
    psycopg2.extras.execute_values(
        cur, "INSERT INTO client_predictions VALUES %s",
        [(r[0], names[b], float(p)) for r, b, p in zip(rows, best, proba.max(axis=1))])
    alone = time.monotonic() - started
    cur.execute("DROP TABLE client_predictions")
    cur.execute("DELETE FROM vision.classifiers WHERE name = 'bench_head'")
    return {"images": n, "in_db_img_s": n / in_db, "standalone_img_s": n / max(alone, 1e-9),
            "ratio": alone / in_db}


def held_out(cur, model, n_train):
    """scikit-learn's 1,797 digits: ``n_train`` labelled (stratified), the rest held out.
    compare_classifiers on the labelled ones (timed); then held-out accuracy of the default
    head on the base model's features against the same head on the features of a model
    vision.fine_tune made from the labelled images."""
    from sklearn.model_selection import train_test_split

    rows = digits(10000)
    table, labels = load(cur, "digits_all", rows, model)
    ids = np.arange(1, len(rows) + 1)
    train, test = train_test_split(ids, train_size=n_train, stratify=[r[0] for r in rows],
                                   random_state=0)
    cur.execute(f"CREATE TABLE {labels}_train AS SELECT * FROM {labels} "
                "WHERE image_id = ANY(%s)", (train.tolist(),))
    started = time.monotonic()
    cur.execute("SELECT method, accuracy FROM vision.compare_classifiers(%s, %s, %s, "
                "rank_by => 'accuracy')", (f"{labels}_train", table, model))
    compared = dict(cur.fetchall())
    compare_seconds = time.monotonic() - started

    def accuracy_of(feature_model):
        cur.execute("SELECT vision.train_classifier('bench_held_out', %s, %s, %s, "
                    "replace => true)", (f"{labels}_train", table, feature_model))
        cur.execute("SELECT vision.classify_table('bench_held_out')")
        cur.execute("SELECT avg((p.label = l.label)::int) FROM vision.predictions p JOIN "
                    f"{labels} l ON l.image_id = p.image_id WHERE p.classifier = "
                    "'bench_held_out' AND p.image_id = ANY(%s)", (test.tolist(),))
        value = float(cur.fetchone()[0])
        cur.execute("DELETE FROM vision.predictions WHERE classifier = 'bench_held_out'")
        cur.execute("DELETE FROM vision.classifiers WHERE name = 'bench_held_out'")
        return value

    training = training_time(cur, table, f"{labels}_train", model)
    base = accuracy_of(model)
    started = time.monotonic()
    cur.execute("SELECT vision.fine_tune('bench_tuned', %s, %s, base_model => %s, folds => 0, "
                "replace => true)", (f"{labels}_train", table, model))  # default options
    tuned = cur.fetchone()[0]
    tune_seconds = time.monotonic() - started
    cur.execute("CALL vision.extract_table(%s, model => 'bench_tuned')", (table,))
    after = accuracy_of("bench_tuned")
    cur.execute("DELETE FROM vision.features WHERE source = %s::regclass", (table,))
    cur.execute("SELECT vision.drop_model('bench_tuned', cascade => true)")
    cur.execute(f"DROP TABLE {table}, {labels}, {labels}_train")
    return {"labelled": int(n_train), "held_out": int(len(test)),
            "compare_seconds": compare_seconds, "compare_accuracy": compared,
            "base_held_out_accuracy": base, "tuned_held_out_accuracy": after,
            "fine_tune_seconds": tune_seconds, "epochs": tuned["epochs"],
            "from_layer": tuned["from_layer"], "trained_weights": tuned["trained_weights"],
            "training": training}


def reference_logistic_cv(X, y):
    """The reference a data scientist writes: Normalizer + LogisticRegressionCV (10 Cs, the
    same 5 stratified folds); (seconds, its best mean cross-validated accuracy)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import Normalizer

    started = time.monotonic()
    reference = LogisticRegressionCV(Cs=10, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                     max_iter=5000).fit(Normalizer().fit_transform(X), y)
    seconds = time.monotonic() - started
    return seconds, float(next(iter(reference.scores_.values())).mean(axis=0).max())


def stored_features(cur, table, labels, model):
    cur.execute("SELECT f.feature, l.label FROM vision.features f JOIN " + labels + " l "
                "ON l.image_id = f.image_id WHERE f.source = %s::regclass AND f.model = %s "
                "ORDER BY f.image_id", (table, model))
    rows = cur.fetchall()
    return (np.array([r[0] for r in rows], dtype=np.float32),
            np.unique([r[1] for r in rows], return_inverse=True)[1])


def training_time(cur, table, labels, model, scale_rows=10_000, reference_at_scale=False):
    """vision.train_classifier with its defaults (5-fold CV, then a fit on everything) on
    the labelled digits, timed beside the reference on the same features; then on
    ``scale_rows`` rows made from them (each a stored digit's features with multiplicative
    jitter and drop-out), the reference there only when asked (it takes many minutes)."""
    def timed_train(source, labels_table):
        started = time.monotonic()
        cur.execute("SELECT vision.train_classifier('bench_timed', %s, %s, %s, replace => true)",
                    (labels_table, source, model))
        metrics = cur.fetchone()[0]
        cur.execute("DELETE FROM vision.classifiers WHERE name = 'bench_timed'")
        return time.monotonic() - started, metrics

    seconds, metrics = timed_train(table, labels)
    X, y = stored_features(cur, table, labels, model)
    ref_seconds, ref_accuracy = reference_logistic_cv(X, y)
    out = {"rows": len(y), "seconds": seconds, "accuracy": metrics["accuracy"],
           "C": metrics.get("C"), "reference_seconds": ref_seconds,
           "reference_accuracy": ref_accuracy}
    rng = np.random.default_rng(1)
    pick = rng.integers(0, len(y), scale_rows)
    big = X[pick] * rng.lognormal(0, 0.35, (scale_rows, X.shape[1])).astype(np.float32) \
        * (rng.random((scale_rows, X.shape[1])) > 0.15)
    feature_table(cur, "bench_scale_train", model, scale_rows,
                  [(np.arange(1, scale_rows + 1), big)])
    cur.execute("DROP TABLE IF EXISTS bench_scale_labels")
    cur.execute("CREATE TABLE bench_scale_labels (image_id bigint, label text)")
    psycopg2.extras.execute_values(cur, "INSERT INTO bench_scale_labels VALUES %s",
                                   [(i + 1, str(int(y[p]))) for i, p in enumerate(pick)])
    big_seconds, big_metrics = timed_train("bench_scale_train", "bench_scale_labels")
    out.update(scale_rows=scale_rows, scale_seconds=big_seconds,
               scale_accuracy=big_metrics["accuracy"], scale_C=big_metrics.get("C"))
    if reference_at_scale:
        out["scale_reference_seconds"], out["scale_reference_accuracy"] = \
            reference_logistic_cv(big, y[pick])
    cur.execute("DELETE FROM vision.features WHERE source = 'bench_scale_train'::regclass")
    cur.execute("DROP TABLE bench_scale_train, bench_scale_labels")
    return out


def main():
    warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-learn 1.10 notices
    parser = argparse.ArgumentParser(description="pgvision classification benchmark")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="out/bench_classify.json")
    parser.add_argument("--only-held-out", action="store_true",
                        help="just the 1,000-label comparison and fine-tuning on digits")
    args = parser.parse_args()
    model = "mobilenet_v2" if args.quick else "inception_v3"
    sets = {"digits": digits(200 if args.quick else 500),
            "shapes": shapes(60 if args.quick else 120),
            "photos": photos(4 if args.quick else 8)}
    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    cur = conn.cursor()
    results = {"model": model}
    print(f"... digits: 1,000 labelled, the rest held out; fine-tuning {model}", flush=True)
    results["held_out"] = held_out(cur, model, 1000)
    h = results["held_out"]
    print(f"\ncompare_classifiers on {h['labelled']} labelled digits: "
          f"{h['compare_seconds']:.1f} s (" + ", ".join(
              f"{m} {a:.3f}" for m, a in h["compare_accuracy"].items()) + ")")
    t = h["training"]
    print(f"train_classifier with its defaults on {t['rows']} labelled digits x "
          f"{model}: {t['seconds']:.1f} s, CV accuracy {t['accuracy']:.3f} (C = {t['C']:g}); "
          f"LogisticRegressionCV (10 Cs, same 5 folds) by hand {t['reference_seconds']:.1f} s, "
          f"{t['reference_accuracy']:.3f}: {t['seconds'] / t['reference_seconds']:.2f}x the "
          f"time, {t['accuracy'] / t['reference_accuracy']:.3f}x the accuracy")
    print(f"train_classifier on {t['scale_rows']:,} rows: {t['scale_seconds']:.1f} s, CV "
          f"accuracy {t['scale_accuracy']:.3f} (C = {t['scale_C']:g})"
          + (f"; LogisticRegressionCV {t['scale_reference_seconds']:.1f} s, "
             f"{t['scale_reference_accuracy']:.3f}" if "scale_reference_seconds" in t else ""))
    print(f"held-out accuracy on {h['held_out']} digits: default head on {model} features "
          f"{h['base_held_out_accuracy']:.3f}; on the features of vision.fine_tune "
          f"({h['trained_weights']:,} weights above {h['from_layer']}, {h['epochs']} epochs, "
          f"{h['fine_tune_seconds']:.0f} s) {h['tuned_held_out_accuracy']:.3f} = "
          f"{h['tuned_held_out_accuracy'] - h['base_held_out_accuracy']:+.3f}", flush=True)
    if args.only_held_out:
        sets = {}
    for name, rows in sets.items():
        print(f"... {name}: {len(rows)} images, extracting with {model}", flush=True)
        table, labels = load(cur, name, rows, model)
        cur.execute("SELECT max(n)::float / sum(n) FROM (SELECT count(*) AS n FROM "
                    f"{labels} GROUP BY label) c")
        baseline = cur.fetchone()[0]
        cur.execute("SELECT method, accuracy, macro_f1, roc_auc, cv_seconds, rank FROM "
                    "vision.compare_classifiers(%s, %s, %s, rank_by => 'accuracy')",
                    (labels, table, model))
        methods = [dict(zip(("method", "accuracy", "macro_f1", "roc_auc", "cv_seconds", "rank"),
                            r)) for r in cur.fetchall()]
        results[name] = {"images": len(rows), "classes": len({l for l, _ in rows}),
                         "majority_baseline": baseline, "methods": methods,
                         "by_hand": baselines(cur, table, labels, model)}
        if name == "digits":
            results["throughput"] = throughput(cur, table, labels, model)
        cur.execute("DELETE FROM vision.features WHERE source = %s::regclass", (table,))
        cur.execute(f"DROP TABLE {table}, {labels}")

    if sets:
        print(f"\n5-fold cross-validation on {model} features (majority-class baseline in "
              "brackets)")
    for name in sets:
        r = results[name]
        print(f"\n{name}: {r['images']} images, {r['classes']} classes "
              f"[baseline {r['majority_baseline']:.2f}]")
        hand = r["by_hand"]
        for m in r["methods"]:
            kind = "knn" if m["method"] == "knn" else "linear"
            print(f"  {m['rank']}. {m['method']:<9} accuracy {m['accuracy']:.3f}  macro-F1 "
                  f"{m['macro_f1']:.3f}  ROC AUC {m['roc_auc']:.3f}  CV {m['cv_seconds']:.1f} s"
                  f"  / by hand ({kind}) {m['accuracy'] / hand[kind]['accuracy']:.2f}x")
        for kind, label in (("linear", "Normalizer + LogisticRegressionCV"),
                            ("knn", "cosine kNN (k=5, distance-weighted)")):
            h = hand[kind]
            print(f"     by hand: {label:<36} accuracy {h['accuracy']:.3f}  macro-F1 "
                  f"{h['macro_f1']:.3f}  ROC AUC {h['roc_auc']:.3f}")
        best = max(m["accuracy"] for m in r["methods"])
        default = next(m["accuracy"] for m in r["methods"] if m["method"] == "softmax")
        print(f"     default (softmax) / best by hand: "
              f"{default / max(h['accuracy'] for h in hand.values()):.2f}x, best pgvision / "
              f"best by hand: {best / max(h['accuracy'] for h in hand.values()):.2f}x")
    t = results.get("throughput")
    if t:
        print(f"\nLabelling {t['images']} images: vision.classify_table {t['in_db_img_s']:.0f} img/s, "
              f"client-side pipeline {t['standalone_img_s']:.0f} img/s = {t['ratio']:.2f}x")
    write_results(args.json, results)


if __name__ == "__main__":
    main()
