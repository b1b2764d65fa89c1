"""Transfer learning deeper than the last layer: ``vision.fine_tune`` retrains the top
block(s) of a registered CNN (Inception-v3 ``mixed9``/``mixed10``, MobileNet-v2's last
inverted-residual blocks) together with a softmax head, on labelled image bytes in a table,
and registers the result as a new model whose features extract like any other's.

How it stays affordable on CPUs: the frozen lower part of the network runs **once** per
image (its activations are kept), and only the top block is trained, for a few epochs, with
early stopping on a held-out part of the training images. Batch-normalisation layers keep
the statistics learnt on ImageNet (their moving averages are frozen), the usual practice on
small labelled sets. Stratified k-fold cross-validation gives honest metrics, and the same
folds score the baseline users would otherwise use: a logistic head on the base model's
frozen features. The whole job runs in a child process (:mod:`pgvision.offload`), so the
backend never holds TensorFlow and a cancel leaves nothing registered.

    >>> cut_layer_name(["mixed8", "mixed9", "mixed10"], "mixed10", 1)
    'mixed9'
"""

import json
import os
import re
import shutil
import tempfile
import time

import numpy as np

from . import (DEFAULT_MODEL, classify, extractors, images, learners, offload, privileges,
               registry, settings, spi)
from .errors import UNDEFINED_OBJECT, PgvisionError, require, require_int_range, require_not_null
from .pooling import keras_pooling

FN = "vision.fine_tune"
DEFAULTS = {"epochs": 20, "learning_rate": 1e-3, "batch_size": 16, "patience": 3,
            "validation_fraction": 0.2, "seed": 0, "from_layer": None,
            "id_column": "image_id", "label_column": "label",
            "source_id_column": "id", "image_column": "image"}
MAX_BLOCKS = 4
_BOUNDARY = re.compile(r"^(mixed\d+|block_\d+_add|block_\d+_project_BN|expanded_conv_project_BN)$")


# --- validation (in the backend, before any work) ----------------------------------------

def check_options(options):
    opts = json.loads(options) if options else {}
    require(FN, "options", options, isinstance(opts, dict), "a JSON object")
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise PgvisionError(FN, f'argument "options": {sorted(unknown)} are not options of '
                            f"fine_tune (it takes {sorted(DEFAULTS)})")
    opts = {**DEFAULTS, **opts}
    require_int_range(FN, "options.epochs", opts["epochs"], 1, 500)
    require_int_range(FN, "options.batch_size", opts["batch_size"], 1, 512)
    require_int_range(FN, "options.patience", opts["patience"], 1, 100)
    for name, low, high in (("learning_rate", 0.0, 1.0), ("validation_fraction", 0.0, 0.5)):
        value = opts[name]
        require(FN, f"options.{name}", value, isinstance(value, (int, float)) and
                not isinstance(value, bool) and low < value <= high,
                f"a number above {low} and at most {high}")
    for name in ("id_column", "label_column", "source_id_column", "image_column"):
        require(FN, f"options.{name}", opts[name], isinstance(opts[name], str) and opts[name],
                "a column name")
    return opts


# --- the child's job ----------------------------------------------------------------------

def block_boundaries(names):
    """Layer names (in model order) after which a block ends: Inception-v3 ``mixedN``,
    MobileNet-v2's ``block_N_add`` or, for blocks without a residual, ``block_N_project_BN``."""
    ends = {}
    for name in names:
        if not _BOUNDARY.match(name):
            continue
        block = re.match(r"^(mixed\d+|block_\d+|expanded_conv)", name).group(1)
        ends[block] = name  # a block's add comes after its project_BN: the add wins
    order = {name: i for i, name in enumerate(names)}
    return sorted(ends.values(), key=order.get)


def cut_layer_name(names, feature_layer, blocks):
    """The layer whose output the trained part starts from, ``blocks`` blocks below the
    feature layer. Layers between the last block and the feature layer (MobileNet-v2's final
    1x1 convolution) belong to the top block."""
    position, boundaries = names.index(feature_layer), block_boundaries(names)
    before = [n for n in boundaries if names.index(n) < position]
    if feature_layer not in boundaries and before:
        before = before[:-1]  # the last block ends below the trailing layers: train them too
    if len(before) < blocks:
        raise PgvisionError(FN, f'argument "blocks": the model has {len(before)} block(s) '
                            f"below {feature_layer!r} that pgvision recognises, got {blocks}",
                            hint='Name the first frozen layer\'s output: options => '
                            '\'{"from_layer": "..."}\'')
    return before[-blocks]


def _split(keras, model, feature_layer, pooling, cut):
    """(bottom: input → cut, top: cut → pooled features), sharing the model's layers."""
    features = model.get_layer(feature_layer).output
    if len(features.shape) == 4:  # as extraction pools it ("none" trains on the average)
        features = keras_pooling(features, "avg" if pooling == "none" else pooling)
    middle = model.get_layer(cut).output
    return keras.Model(model.inputs, middle), keras.Model(middle, features)


def _frozen_pass(directory, bottom, size, mode, max_pixels, progress, batch=32):
    """The frozen layers' output for each decodable image of the job's folder, decoded a
    batch at a time (decoded Inception-v3 inputs are 1 MB an image): (activations, kept
    positions, {position: why skipped})."""
    with open(os.path.join(directory, "images.json"), encoding="utf-8") as fh:
        spans = json.load(fh)["spans"]
    outputs, ok, errors = [], [], {}
    with open(os.path.join(directory, "images.bin"), "rb") as fh:
        blob = fh.read()
    for first in range(0, len(spans), batch):
        encoded = [blob[start:start + length] for start, length in spans[first:first + batch]]
        X, kept, failed = images.load_batch(encoded, size, mode, max_pixels)
        ok += [first + p for p in kept]
        errors.update({first + p: why for p, why in failed.items()})
        if len(X):
            outputs.append(bottom.predict(X, verbose=0))
        if first and first % (batch * 8) == 0:
            progress(f"frozen layers: {first}/{len(spans)} images")
    if not outputs:
        raise PgvisionError(FN, f'argument "source": none of the {len(spans)} labelled images '
                            f"is decodable (e.g. {next(iter(errors.values()))})")
    return np.concatenate(outputs), ok, errors


def _head(keras, n_classes, start):
    """The softmax head, started where the logistic classifier on the frozen features ends:
    ((unit(f) - mean) / scale) @ W + b is unit(f) @ (W / scale) + (b - (mean / scale) @ W)."""
    dense = keras.layers.Dense(n_classes, activation="softmax")
    weights = start.weights / start.scale[:, None]
    bias = start.bias - (start.mean / start.scale) @ start.weights
    return keras.layers.UnitNormalization(), dense, [weights.astype(np.float32),
                                                     bias.astype(np.float32)]


def _accuracy(net, A, y):
    return float((net.predict(A, verbose=0, batch_size=64).argmax(axis=1) == y).mean())


def _train(keras, top, start_weights, A, y, features, n_classes, opts, rng, progress, label):
    """Train top + a softmax head on activations A, the head started from the logistic
    classifier on the frozen ``features`` (so training starts at the baseline's answers);
    early stopping on a stratified held-out part. Returns (predict(A') → probabilities,
    epochs run)."""
    from sklearn.model_selection import train_test_split

    fraction = float(opts["validation_fraction"])
    smallest = int(np.bincount(y, minlength=n_classes).min())
    if smallest >= 2 and int(round(len(y) * fraction)) >= n_classes:
        fit_idx, val_idx = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y,
                                            random_state=int(rng.integers(1 << 30)))
        validation = (A[val_idx], y[val_idx])
    else:  # too few images to hold some out: train the full epochs
        fit_idx, validation = np.arange(len(y)), None
    top.set_weights(start_weights)
    start = learners.fit("logistic", features[fit_idx], y[fit_idx], {}, n_classes)
    normalise, dense, head_weights = _head(keras, n_classes, start)
    inputs = keras.Input(A.shape[1:])
    net = keras.Model(inputs, dense(normalise(top(inputs))))
    dense.set_weights(head_weights)
    net.compile(optimizer=keras.optimizers.Adam(float(opts["learning_rate"])),
                loss="sparse_categorical_crossentropy")

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted((logs or {}).items())
                              if isinstance(v, float))
            progress(f"{label}: epoch {epoch + 1}/{opts['epochs']}, {shown}")

    callbacks = [Progress()]
    if validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping(patience=int(opts["patience"]),
                                                       restore_best_weights=True))
        before = _accuracy(net, *validation)
        started_at = net.get_weights()
        progress(f"{label}: the logistic head on the frozen features classifies "
                 f"{before:.3f} of the held-out images")
    history = net.fit(A[fit_idx], y[fit_idx], batch_size=int(opts["batch_size"]),
                      epochs=int(opts["epochs"]), validation_data=validation, verbose=0,
                      shuffle=True, callbacks=callbacks)
    kept = True
    if validation is not None and _accuracy(net, *validation) < before:
        net.set_weights(started_at)  # training made the held-out part worse: keep the start
        kept = False
        progress(f"{label}: training classified the held-out images worse than the "
                 "logistic head on the frozen features; keeping the base model's weights")
    return (lambda X: net.predict(X, verbose=0, batch_size=64)), \
        len(history.history["loss"]) if kept else 0


def fine_tune_job(args, progress):
    """The child's job: see the module docstring. ``args``: the base model's Keras file and
    registry row, the images folder, labels, blocks, folds, options, the output path."""
    import keras
    from sklearn.model_selection import StratifiedKFold

    opts, base = args["options"], args["base"]
    keras.utils.set_random_seed(int(opts["seed"]))
    rng = np.random.default_rng(int(opts["seed"]))
    size = (base["input_height"], base["input_width"])
    labels = args["label_names"]
    progress("loading the base model (safe mode)")
    model = extractors.load_keras_file(FN, args["model_path"], tuple(args["threads"]))
    feature_layer = base["feature_layer"] or model.layers[-1].name
    inputs, output = extractors.at_input_size(model.inputs[0],
                                              model.get_layer(feature_layer).output, size, FN)
    if inputs is not model.inputs[0]:  # a base fed another size than its network's own
        model = keras.Model(inputs, output)
    names = [layer.name for layer in model.layers]
    cut = opts["from_layer"] or cut_layer_name(names, feature_layer, args["blocks"])
    if cut not in names or names.index(cut) >= names.index(feature_layer):
        raise PgvisionError(FN, f'argument "options.from_layer" must name a layer below '
                            f"{feature_layer!r}, got {cut!r}", UNDEFINED_OBJECT)
    bottom, top = _split(keras, model, feature_layer, base["pooling"], cut)
    for layer in top.layers:  # ImageNet statistics stay: few images estimate them badly
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    trainable = sum(int(np.prod(w.shape)) for w in top.trainable_weights)
    progress(f"running the frozen layers up to {cut!r} once over {len(args['ids'])} images "
             f"({trainable:,} weights above it will train)")
    started = time.monotonic()
    A, ok, errors = _frozen_pass(args["images"], bottom, size, base["preprocessing"],
                                 args["max_pixels"], progress)
    frozen_seconds = time.monotonic() - started
    skipped = [{"image_id": args["ids"][p], "reason": reason} for p, reason in sorted(
        errors.items())]
    y = np.array(args["targets"], dtype=np.int64)[ok]
    counts = np.bincount(y, minlength=len(labels))
    if counts.min() < 2:
        raise PgvisionError(FN, f"class {labels[int(counts.argmin())]!r} has fewer than 2 "
                            f"decodable images ({len(skipped)} skipped, e.g. "
                            f"{skipped[:1]})")
    start_weights = top.get_weights()
    base_features = top.predict(A, verbose=0, batch_size=64)

    n_folds = min(int(args["folds"]), int(counts.min()))
    result = {"base_model": base["name"], "blocks": args["blocks"], "from_layer": cut,
              "trained_weights": trainable, "images": int(len(y)), "skipped": skipped,
              "frozen_pass_seconds": round(frozen_seconds, 1)}
    if n_folds >= 2:
        proba = np.zeros((len(y), len(labels)))
        base_proba = np.zeros_like(proba)
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=0).split(A, y)
        for fold, (train, test) in enumerate(splits, start=1):
            predict, _ = _train(keras, top, start_weights, A[train], y[train],
                                base_features[train], len(labels), opts, rng, progress,
                                f"fold {fold}/{n_folds}")
            proba[test] = predict(A[test])
            base_proba[test] = learners.fit("logistic", base_features[train], y[train], {},
                                            len(labels)).scores(base_features[test])
        result["cross_validation"] = {"folds": n_folds, **learners.report(y, proba, labels)}
        result["baseline"] = {"method": f"logistic on {base['name']}'s frozen features",
                              **learners.report(y, base_proba, labels)}
        result["gain_accuracy"] = (result["cross_validation"]["accuracy"] -
                                   result["baseline"]["accuracy"])
    started = time.monotonic()
    _, epochs = _train(keras, top, start_weights, A, y, base_features, len(labels), opts, rng,
                       progress, "final model")
    result["epochs"], result["train_seconds"] = epochs, round(time.monotonic() - started, 1)
    result["tuned"] = epochs > 0  # False: training did worse, the base weights were kept
    progress("saving the fine-tuned model")
    tuned = keras.Model(model.inputs, model.get_layer(feature_layer).output)
    tuned.save(args["output"])
    result["feature_layer"] = feature_layer
    return result


# --- SQL-facing -----------------------------------------------------------------------------

def _write_images(plpy, GD, source, opts, ids, directory):
    """The labelled images' bytes into ``directory`` (one file, spans in images.json), read
    from ``source`` as the caller (its privileges and row security apply)."""
    rel = privileges.table_name(plpy, GD, source)
    id_col = plpy.quote_ident(opts["source_id_column"])
    image_col = plpy.quote_ident(opts["image_column"])
    try:
        cursor = plpy.cursor(plpy.prepare(
            f"SELECT {id_col}::bigint AS id, {image_col}::bytea AS image FROM {rel} "
            f"WHERE {id_col} = ANY($1)", ["bigint[]"]), [ids])
    except plpy.SPIError as err:
        raise PgvisionError(FN, f'argument "source": cannot read ids and image bytes from '
                            f"{rel} ({err.args[0] if err.args else err})", UNDEFINED_OBJECT,
                            hint='Name the columns with options => \'{"source_id_column": '
                            '"...", "image_column": "..."}\'') from None
    found = {}
    with open(os.path.join(directory, "images.bin"), "wb") as blob:
        offset = 0
        while True:
            rows = cursor.fetch(100)
            if not rows:
                break
            for row in rows:
                data = bytes(row["image"]) if row["image"] is not None else b""
                blob.write(data)
                found[row["id"]] = (offset, len(data))
                offset += len(data)
    missing = [i for i in ids if i not in found]
    if missing:
        raise PgvisionError(FN, f'argument "labels": {len(missing)} labelled image(s) are not '
                            f"in {rel} (e.g. ids {missing[:5]})", UNDEFINED_OBJECT)
    with open(os.path.join(directory, "images.json"), "w", encoding="utf-8") as fh:
        json.dump({"spans": [found[i] for i in ids]}, fh)


def fine_tune(plpy, GD, name, labels, source, base_model=DEFAULT_MODEL, blocks=1, folds=3,
              options=None, replace=False):
    """Fine-tune ``base_model``'s top ``blocks`` on the labelled images of ``source``, register
    the result as model ``name``; returns the metrics as JSON."""
    registry.require_model_name(FN, name)
    require_not_null(FN, "labels", labels)
    require_not_null(FN, "source", source)
    require_int_range(FN, "blocks", blocks, 1, MAX_BLOCKS)
    require_int_range(FN, "folds", folds, 0, 10)
    require(FN, "folds", folds, folds != 1, "0 (no cross-validation) or between 2 and 10")
    opts = check_options(options)
    base = registry.lookup(plpy, GD, FN, base_model, "base_model")
    registry.require_free_name(plpy, GD, FN, name, replace)
    source_oid = spi.relid_of(plpy, source)
    privileges.require_select(plpy, GD, FN, source_oid, "fine-tuning on its images")
    rel, rows = classify.labelled_rows(plpy, FN, labels, opts)
    label_names = sorted({r["label"] for r in rows})
    require(FN, "labels", rel, len(label_names) >= 2, "a table of at least two classes")
    index = {label: i for i, label in enumerate(label_names)}
    ids = [r["id"] for r in rows]
    work = tempfile.mkdtemp(prefix="pgvision-finetune-")
    try:
        _write_images(plpy, GD, source_oid, opts, ids, work)
        path, temporary = extractors.model_file(plpy, GD, FN, base)
        try:
            result = offload.run(plpy, FN, "fine_tune", {
                "images": work, "ids": ids, "targets": [index[r["label"]] for r in rows],
                "label_names": label_names, "blocks": blocks, "folds": folds,
                "options": opts, "model_path": path, "output": os.path.join(work, "tuned.keras"),
                "threads": list(settings.thread_settings(plpy, GD)),
                "max_pixels": settings.max_pixels(plpy, GD),
                "base": {k: base[k] for k in ("name", "input_height", "input_width",
                                              "preprocessing", "feature_layer", "pooling")}})
        finally:
            if temporary:
                os.unlink(path)
        for skip in result["skipped"]:
            plpy.notice(f"{FN}: image {skip['image_id']} skipped: {skip['reason']}")
        with open(os.path.join(work, "tuned.keras"), "rb") as fh:
            tuned = fh.read()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    provenance = (f"fine_tune of {base['name']} on {rel} ({len(rows)} labels, "
                  f"{result['blocks']} block(s) from {result['from_layer']}, "
                  f"{result['epochs']} epochs)")
    result["dims"] = registry.register_model(
        plpy, GD, name, model_bytes=tuned, preprocessing=base["preprocessing"],
        feature_layer=result["feature_layer"], pooling=base["pooling"],
        input_height=base["input_height"], input_width=base["input_width"],
        provenance=provenance, replace=replace)
    result["model"] = name
    return json.dumps(result)
