"""The model registry: Keras models stored in ``vision.model_store``, registered, looked up
and dropped.

A registered model is either bytes in the table (``.keras`` archive) or a server-side
``.keras`` file; either way its SHA-256 is recorded, so a backend notices a re-registered
model and a file changed behind the registry's back. Models load in Keras safe mode only
(no Lambda layers, no pickled code): a ``.keras`` archive is the only accepted format.
"""

import hashlib
import io
import os
import re
import tempfile
import zipfile

from . import DEFAULT_MODEL, extractors, hashing, ocr, runtimes, settings, spi
from .errors import (DUPLICATE_OBJECT, INSUFFICIENT_PRIVILEGE, OBJECT_IN_USE, UNDEFINED_OBJECT,
                     EXTERNAL_ERROR, INVALID_PARAMETER, PgvisionError, require, require_choice,
                     require_int_range, require_not_null)
from .files import default_model_dir, read_manifest, runtime_dir, sha256_file
from .images import PREPROCESSING
from .pooling import POOLING

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def lookup(plpy, GD, function, name, argument="model", makes="features"):
    """The registry row of ``name`` (without the model bytes), or a clear error. ``makes``:
    what the caller needs of the model, ``"features"`` (vectors) or ``"text"`` (the OCR
    model's lines); None takes either (extraction, dropping)."""
    require_not_null(function, argument, name)
    rows = plpy.execute(spi.plan(plpy, GD, """
        SELECT name, sha256, model_path, input_height, input_width, preprocessing,
               feature_layer, pooling, dims
        FROM vision.model_store WHERE name = $1""", ["text"]), [name])
    if not rows:
        raise PgvisionError(function, f'argument "{argument}" names no registered model: {name!r}',
                            UNDEFINED_OBJECT,
                            hint="SELECT name FROM vision.models lists the registered models.")
    return require_kind(function, dict(rows[0]), makes, argument)


def require_kind(function, row, makes, argument="model"):
    """``row`` (a registry row), when its model makes what the caller needs (``makes``, as
    for :func:`lookup`); else the error that says which kind it is."""
    if makes is not None and ocr.is_ocr_row(row) != (makes == "text"):
        raise PgvisionError(function, f'argument "{argument}": model {row["name"]!r} ' + (
            "reads text; it makes no feature vectors" if makes == "features" else
            "makes feature vectors; it reads no text"), INVALID_PARAMETER,
            hint="vision.read_text and vision.search_text use the OCR model pp_ocr_v6; every "
            "other function takes a feature model.")
    return row


def check_keras_archive(function, argument, path_or_bytes):
    """Accept only a ``.keras`` zip archive (the format Keras' safe mode fully covers)."""
    try:
        with zipfile.ZipFile(path_or_bytes) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as err:
        raise PgvisionError(function, f'argument "{argument}" is not a .keras model archive ({err})')
    if "config.json" not in names:
        raise PgvisionError(function, f'argument "{argument}" is a zip file but not a .keras '
                            "model archive (no config.json)")


FN_REGISTER = "vision.register_model"
FN_DROP = "vision.drop_model"


def require_model_name(function, name):
    require_not_null(function, "name", name)
    require(function, "name", name, NAME_PATTERN.match(name), "a lower-case identifier "
            "(letters, digits, _; at most 63 characters)")


def require_free_name(plpy, GD, function, name, replace):
    """Refuse a name a model already has, unless it is to be replaced."""
    exists = plpy.execute(spi.plan(plpy, GD, "SELECT 1 FROM vision.model_store WHERE name = $1",
                                   ["text"]), [name])
    if exists and not replace:
        raise PgvisionError(function, f'argument "name": a model named {name!r} is already '
                            "registered", DUPLICATE_OBJECT,
                            hint="Pass replace => true to replace it.")


def validate_registration(plpy, name, model_bytes, model_path, input_height, input_width,
                           preprocessing, pooling):
    fn = FN_REGISTER
    require_model_name(fn, name)
    if (model_bytes is None) == (model_path is None):
        raise PgvisionError(fn, 'give exactly one of "model_bytes" and "model_path"')
    require_choice(fn, "preprocessing", preprocessing, PREPROCESSING)
    require_choice(fn, "pooling", pooling, POOLING)
    for argument, value in (("input_height", input_height), ("input_width", input_width)):
        if value is not None:
            require_int_range(fn, argument, value, 8, 4096)
    if model_path is not None:
        require(fn, "model_path", model_path, os.path.isabs(model_path), "an absolute path")
        allowed = plpy.execute("SELECT pg_has_role(current_user, 'pg_read_server_files', "
                               "'MEMBER') AS ok")[0]["ok"]
        if not allowed:
            raise PgvisionError(fn, 'registering from "model_path" reads a server file: only '
                                "superusers and members of pg_read_server_files may",
                                INSUFFICIENT_PRIVILEGE, hint="Pass the file's bytes instead.")
        require(fn, "model_path", model_path, os.path.isfile(model_path),
                "a readable file on the database server")
    check_keras_archive(fn, "model_bytes" if model_path is None else "model_path",
                        model_path if model_path is not None else io.BytesIO(bytes(model_bytes)))


def register_model(plpy, GD, name, model_bytes=None, model_path=None, preprocessing="inception",
                   feature_layer=None, pooling="avg", input_height=None, input_width=None,
                   provenance="", replace=False):
    """Validate; load in safe mode, cut and convert to ONNX in a child process (proving it
    works, with progress NOTICEs); then insert the registry row."""
    fn = FN_REGISTER
    validate_registration(plpy, name, model_bytes, model_path, input_height, input_width,
                          preprocessing, pooling)
    require_free_name(plpy, GD, fn, name, replace)
    if model_path is not None:
        path, digest, temporary = model_path, sha256_file(model_path), False
    else:
        data = bytes(model_bytes)
        digest = hashlib.sha256(data).hexdigest()
        tmp = tempfile.NamedTemporaryFile(suffix=".keras", delete=False)
        with tmp:
            tmp.write(data)
        path, temporary = tmp.name, True
    threads = settings.thread_settings(plpy, GD)
    runtime = settings.runtime_setting(plpy, GD)
    row = dict(name=name, sha256=digest, input_height=input_height, input_width=input_width,
               preprocessing=preprocessing, feature_layer=feature_layer, pooling=pooling)
    target = None
    if runtimes.runs_on_onnx(runtime):  # converting now makes every backend's first use fast
        # named once the input size is known (the model's own, when none is given)
        target = os.path.join(runtime_dir("models"), f".{digest}.{os.getpid()}.converting")
    try:  # in a child process: this backend never holds TensorFlow for it
        found = extractors.prepared(plpy, fn, row, path, threads, target)
        if target is not None and not found["onnx_error"]:
            row.update(input_height=found["input_height"], input_width=found["input_width"])
            os.replace(target, os.path.join(runtime_dir("models"), runtimes.onnx_file_name(row)))
    finally:
        if temporary:
            os.unlink(path)
        if target is not None and os.path.exists(target):
            os.unlink(target)
    if found["onnx_error"] and runtime == "onnx":
        raise runtimes.unconvertible(fn, name, found["onnx_error"])
    if found["onnx_error"]:
        plpy.notice(f"{fn}: model {name!r} runs on TensorFlow: it does not convert to ONNX "
                    f"({found['onnx_error']})")
    height, width = found["input_height"], found["input_width"]
    revoke_handles(plpy, GD, name)  # of the model this replaces, if any
    plpy.execute(spi.plan(plpy, GD, """
        INSERT INTO vision.model_store AS m (name, model_bytes, model_path, sha256, input_height,
            input_width, preprocessing, feature_layer, pooling, dims, provenance)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (name) DO UPDATE SET model_bytes = EXCLUDED.model_bytes,
            model_path = EXCLUDED.model_path, sha256 = EXCLUDED.sha256,
            input_height = EXCLUDED.input_height, input_width = EXCLUDED.input_width,
            preprocessing = EXCLUDED.preprocessing, feature_layer = EXCLUDED.feature_layer,
            pooling = EXCLUDED.pooling, dims = EXCLUDED.dims, provenance = EXCLUDED.provenance,
            builtin = false, created_at = pg_catalog.now()""",
        ["text", "bytea", "text", "text", "int4", "int4", "text", "text", "text", "int4",
         "text"]),
        [name, model_bytes, model_path, digest, int(height), int(width), preprocessing,
         feature_layer, pooling, found["dims"], provenance or ""])
    extractors.forget(GD, name)  # a replaced model's old copy; the new one loads on first use
    return found["dims"]


FN_APPLICATION = "vision.register_keras_application"

# keras.applications constructors pgvision knows the input size and preprocessing of.
APPLICATIONS = {
    "InceptionV3": (299, "inception"), "Xception": (299, "inception"),
    "InceptionResNetV2": (299, "inception"), "MobileNetV2": (224, "inception"),
    "ResNet50V2": (224, "inception"), "ResNet50": (224, "caffe"), "ResNet101": (224, "caffe"),
    "VGG16": (224, "caffe"), "VGG19": (224, "caffe"), "DenseNet121": (224, "torch"),
    "EfficientNetB0": (224, "raw"), "ConvNeXtTiny": (224, "raw"),
}


def register_keras_application(plpy, GD, name, application, weights="imagenet", replace=False):
    """Build a keras.applications model (headless, average-pooled) and store it as bytes.

    ``weights => 'imagenet'`` downloads Google's weights, so the database server needs
    internet access; ``weights => NULL`` gives random weights (for trying the plumbing).
    """
    fn = FN_APPLICATION
    require_choice(fn, "application", application, sorted(APPLICATIONS))
    require(fn, "weights", weights, weights in ("imagenet", None), "'imagenet' or NULL")
    size, preprocessing = APPLICATIONS[application]
    keras = extractors.import_tensorflow(plpy, GD, fn)
    try:
        model = getattr(keras.applications, application)(
            weights=weights, include_top=False, pooling="avg", input_shape=(size, size, 3))
    except Exception as err:  # urllib/OSError when offline; the user needs the reason
        raise PgvisionError(fn, f"cannot build {application} with weights={weights!r} "
                            f"({type(err).__name__}: {err})", EXTERNAL_ERROR,
                            hint="ImageNet weights are downloaded by Keras: the database server "
                            "needs internet access. Offline, register a .keras file instead.") \
            from None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.keras")
        model.save(path)
        with open(path, "rb") as fh:
            data = fh.read()
    provenance = (f"keras.applications.{application}(weights={weights!r}, include_top=False, "
                  f"pooling='avg'), Keras {keras.__version__}")
    return register_model(plpy, GD, name, data, None, preprocessing, None, "none", None, None,
                          provenance, replace)


def drop_model(plpy, GD, name, cascade=False):
    """Remove a model; its stored features (or text) go too only with ``cascade``."""
    fn = FN_DROP
    lookup(plpy, GD, fn, name, argument="name", makes=None)
    require_not_null(fn, "cascade", cascade)
    stored = plpy.execute(spi.plan(plpy, GD, """
        SELECT (SELECT pg_catalog.count(*) FROM vision.stored_features WHERE model = $1) AS feature,
               (SELECT pg_catalog.count(*) FROM vision.image_text WHERE model = $1) AS text""",
        ["text"]), [name])[0]
    count = stored["feature"] + stored["text"]
    if count and not cascade:
        held = " and ".join(f"{n} stored {kind} rows" for kind, n in stored.items() if n)
        raise PgvisionError(fn, f"model {name!r} has {held}", OBJECT_IN_USE,
                            hint="Pass cascade => true to delete them with the model.")
    revoke_handles(plpy, GD, name)
    for table in ("vision.stored_features", "vision.image_text"):
        spi.write(plpy, GD, spi.plan(plpy, GD, f"DELETE FROM {table} WHERE model = $1",
                                     ["text"]), [name])
    spi.write(plpy, GD, spi.plan(plpy, GD, "DELETE FROM vision.extract_errors WHERE model = $1",
                                 ["text"]), [name])
    plpy.execute(spi.plan(plpy, GD, "DELETE FROM vision.model_store WHERE name = $1",
                          ["text"]), [name])
    extractors.forget(GD, name)
    return count




# --- registrations, for model handles ------------------------------------------------------

def registration(plpy, GD, name):
    """(database OID, token) of model ``name``'s registration, None when there is none. The
    token is new whenever the model is registered again or replaced."""
    rows = plpy.execute(spi.plan(plpy, GD, """
        SELECT (SELECT oid FROM pg_catalog.pg_database
                WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()) AS db,
               sha256, created_at::text AS registered
        FROM vision.model_store WHERE name = $1""", ["text"]), [name])
    if not rows:
        return None
    row = rows[0]
    return int(row["db"]), hashlib.sha256(f"{row['sha256']}|{row['registered']}".encode()) \
        .hexdigest()[:32]


def revoked_path(database, name, token):
    """The file whose presence refuses handles of one registration: a parallel worker cannot
    query the registry, but it can look for this (``<data directory>/pgvision/revoked``)."""
    return runtime_dir("revoked", f"{int(database)}.{name}.{token}")


def revoke_handles(plpy, GD, name):
    """Refuse the handles of ``name``'s current registration (it is being dropped or
    replaced). Written before the transaction commits: should it roll back, the next
    ``vision.model_handle`` for the model lifts the refusal."""
    current = registration(plpy, GD, name)
    if current is not None:
        path = revoked_path(current[0], name, current[1])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="ascii"):
            pass


def register_builtin_models(plpy, GD, model_dir=None):
    """Register the installed models by path (run by CREATE EXTENSION; cheap: no TF). A model
    the schema being installed cannot hold (a pooling an older version's CHECK does not know,
    on the way up an upgrade path) is left for the upgrade that can: it registers them too."""
    model_dir = model_dir or default_model_dir()
    entries = read_manifest(model_dir)
    if not entries:
        plpy.notice(f"pgvision: no installed models in {model_dir}; run `make install` on the "
                    f"database server for the default model {DEFAULT_MODEL!r}")
    registered = 0
    for entry in entries + [hashing.builtin_entry(), ocr.builtin_entry()]:
        try:
            with plpy.subtransaction():
                _insert_builtin(plpy, GD, model_dir, entry)
        except plpy.spiexceptions.CheckViolation:
            continue
        registered += 1
    return registered


def _insert_builtin(plpy, GD, model_dir, entry):
    plpy.execute(spi.plan(plpy, GD, """
        INSERT INTO vision.model_store (name, model_path, sha256, input_height, input_width,
            preprocessing, feature_layer, pooling, dims, provenance, builtin)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true)
        ON CONFLICT (name) DO NOTHING""",
        ["text", "text", "text", "int4", "int4", "text", "text", "text", "int4", "text"]),
        [entry["name"], os.path.join(model_dir, entry["file"]), entry["sha256"],
         entry["input_height"], entry["input_width"], entry["preprocessing"],
         entry.get("feature_layer"), entry["pooling"], entry["dims"], entry["provenance"]])
