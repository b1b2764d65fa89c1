"""The model registry: Keras models stored in ``vision.model_store``, loaded once per backend.

A registered model is either bytes in the table (``.keras`` archive) or a server-side
``.keras`` file; either way its SHA-256 is recorded, so a backend notices a re-registered
model and a file changed behind the registry's back. Models load in Keras safe mode only
(no Lambda layers, no pickled code): a ``.keras`` archive is the only accepted format.

A loaded model is cached in ``GD`` under its name and content hash; the cached entry maps a
preprocessed batch to feature vectors: a :class:`pgvision.runtimes.OnnxExtractor` (the
model converted to ONNX once, see :mod:`pgvision.runtimes`) or, with ``pgvision.runtime =
tensorflow``, an :class:`Extractor` running the Keras model.
"""

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile

from . import DEFAULT_MODEL
from .errors import (DUPLICATE_OBJECT, EXTERNAL_ERROR, INSUFFICIENT_PRIVILEGE,
                     INSUFFICIENT_RESOURCES, OBJECT_IN_USE, UNDEFINED_OBJECT, PgvisionError,
                     require, require_choice, require_int_range, require_not_null)
from . import runtimes
from .images import DEFAULT_MAX_PIXELS, PREPROCESSING

POOLING = ("avg", "max", "none")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MANIFEST = "models.json"
_CACHE = "pgvision.models"
_PLANS = "pgvision.plans"


def default_model_dir():
    """``<venv>/share/pgvision/models``: next to the venv this package is installed in."""
    site_packages = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(site_packages)))
    return os.path.join(prefix, "share", "pgvision", "models")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan(plpy, GD, key, query, types=()):
    """A prepared statement kept for the life of the backend."""
    plans = GD.setdefault(_PLANS, {})
    if key not in plans:
        plans[key] = plpy.prepare(query, list(types))
    return plans[key]


def setting(plpy, GD, name, default):
    """An integer ``pgvision.*`` GUC, or ``default`` when unset."""
    row = plpy.execute(plan(plpy, GD, "setting", "SELECT current_setting($1, true) AS v",
                            ["text"]), [name])[0]
    return parse_setting(name, row["v"], default)


def parse_setting(name, value, default):
    """The integer value of GUC ``name`` as read (text or NULL), or ``default`` when unset."""
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise PgvisionError("pgvision", f'setting "{name}" must be an integer, '
                            f"got {value!r}") from None


def lookup(plpy, GD, function, name, argument="model"):
    """The registry row of ``name`` (without the model bytes), or a clear error."""
    require_not_null(function, argument, name)
    rows = plpy.execute(plan(plpy, GD, "lookup", """
        SELECT name, sha256, model_path, input_height, input_width, preprocessing,
               feature_layer, pooling, dims
        FROM vision.model_store WHERE name = $1""", ["text"]), [name])
    if not rows:
        raise PgvisionError(function, f'argument "{argument}" names no registered model: {name!r}',
                            UNDEFINED_OBJECT,
                            hint="SELECT name FROM vision.models lists the registered models.")
    return dict(rows[0])


# --- TensorFlow side -------------------------------------------------------------------

def thread_settings(plpy, GD):
    """TensorFlow (intra-op, inter-op) threads from the GUCs; 0 lets TensorFlow pick.

    Called before TensorFlow loads, it also turns JIT off for the session: Postgres' LLVM
    JIT and the LLVM inside TensorFlow crash a process that holds both (measured: signal 11
    on the next JIT-compiled query)."""
    plpy.execute(plan(plpy, GD, "jit_off", "SELECT set_config('jit', 'off', false)"))
    return (setting(plpy, GD, "pgvision.intra_op_threads", 0),
            setting(plpy, GD, "pgvision.inter_op_threads", 0))


def import_tensorflow(plpy, GD):
    """Keras, with TensorFlow imported as this backend needs it (threads, JIT off)."""
    return _import_keras(thread_settings(plpy, GD))


def _import_keras(threads=None):
    """Import TensorFlow/Keras once per process; ``threads`` applies only to that first import."""
    if "tensorflow" in sys.modules:
        import keras
        return keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if not hasattr(sys, "argv"):  # absl reads sys.argv, which an embedded interpreter lacks
        sys.argv = ["postgres"]
    import tensorflow as tf
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    import keras
    return keras


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


def load_keras_file(function, path, threads=None):
    """Load a ``.keras`` file in safe mode, uncompiled."""
    keras = _import_keras(threads)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types; the user needs the reason
        raise PgvisionError(function, f"cannot load model ({type(err).__name__}: {err})",
                            EXTERNAL_ERROR) from None


class Extractor:
    """A Keras model cut at its feature layer, pooled, behind one traced ``tf.function``."""

    runtime = "tensorflow"

    def __init__(self, model, input_size, preprocessing, feature_layer=None, pooling="avg",
                 function="vision.register_model"):
        import keras
        import tensorflow as tf

        if feature_layer:
            try:
                output = model.get_layer(feature_layer).output
            except ValueError:
                raise PgvisionError(function, f'argument "feature_layer" names no layer of the '
                                    f"model: {feature_layer!r}", UNDEFINED_OBJECT) from None
        else:
            output = model.output
        if len(output.shape) == 4:
            if pooling == "avg":
                output = keras.layers.GlobalAveragePooling2D()(output)
            elif pooling == "max":
                output = keras.layers.GlobalMaxPooling2D()(output)
        if len(output.shape) != 2:
            output = keras.layers.Flatten()(output)
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self.model = keras.Model(inputs, output)
        self.input_size = tuple(input_size)
        self.preprocessing = preprocessing
        self.dims = int(output.shape[-1])
        height, width = self.input_size
        # A None batch dimension: one trace serves every batch size (no re-trace per shape).
        self.traced = tf.function(lambda x: self.model(x, training=False), input_signature=[
            tf.TensorSpec([None, height, width, 3], tf.float32)])
        self(self._zeros(1))  # trace now, not on the first user call

    def _zeros(self, n):
        import numpy as np
        return np.zeros((n, *self.input_size, 3), dtype=np.float32)

    def __call__(self, batch):
        """``(n, h, w, 3)`` preprocessed float32 → ``(n, dims)`` float32 numpy array."""
        if len(batch) == 0:
            import numpy as np
            return np.empty((0, self.dims), dtype=np.float32)
        return self.traced(batch).numpy()


def _check_model_file(function, row):
    """A server-side model file must still be the one registered (same SHA-256)."""
    path = row["model_path"]
    if not os.path.isfile(path):
        raise PgvisionError(function, f"model {row['name']!r}: file {path!r} is missing",
                            EXTERNAL_ERROR, hint="Re-run make install, or re-register it.")
    if sha256_file(path) != row["sha256"]:
        raise PgvisionError(function, f"model {row['name']!r}: file {path!r} changed since it "
                            "was registered (SHA-256 differs)", EXTERNAL_ERROR,
                            hint="Register it again: SELECT vision.register_model(...)")


def _materialise(plpy, GD, function, row):
    """Return a filesystem path holding the row's model (temp file for stored bytes)."""
    if row["model_path"]:
        _check_model_file(function, row)
        return row["model_path"], False
    data = plpy.execute(plan(plpy, GD, "bytes",
                             "SELECT model_bytes FROM vision.model_store WHERE name = $1",
                             ["text"]), [row["name"]])[0]["model_bytes"]
    tmp = tempfile.NamedTemporaryFile(suffix=".keras", delete=False)
    with tmp:
        tmp.write(data)
    return tmp.name, True


def get_extractor(plpy, GD, function, row):
    """The cached extractor for a registry row, loading it on first use."""
    hit = _cached(GD, row)
    if hit is not None:
        return hit
    runtime = runtime_setting(plpy, GD)
    if row["model_path"]:  # also when a converted copy is used: the registry must hold
        _check_model_file(function, row)
    hold_model_slot(function, max_model_backends(plpy, GD))
    def keras_file():  # a file model was checked above: hashing 90 MB twice costs 0.1 s
        return (row["model_path"], False) if row["model_path"] else \
            _materialise(plpy, GD, function, row)

    return _load_extractor(GD, function, row, keras_file, thread_settings(plpy, GD), runtime)


def runtime_setting(plpy, GD):
    row = plpy.execute(plan(plpy, GD, "setting", "SELECT current_setting($1, true) AS v",
                            ["text"]), [runtimes.SETTING])[0]
    return runtimes.parse_runtime(row["v"])


def _cached(GD, row):
    cache = GD.setdefault(_CACHE, {})
    hit = cache.get(row["name"])
    if hit is not None and hit[0] == row["sha256"]:
        return hit[1]
    cache.pop(row["name"], None)  # drop a stale model before loading its successor
    return None


def _onnx_dirs():
    """Where converted models are found: installed (make install), then this server's cache."""
    return [default_model_dir(), runtime_dir("models")]


def tensorflow_extractor(function, row, keras_file, threads=None):
    """Load the Keras model (``keras_file()`` → (path, temporary)) and cut it as ``row`` (a
    registry row or manifest entry) says."""
    path, temporary = keras_file()
    try:
        model = load_keras_file(function, path, threads)
    finally:
        if temporary:
            os.unlink(path)
    return Extractor(model, (row["input_height"], row["input_width"]),
                     row["preprocessing"], row["feature_layer"], row["pooling"], function)


def _load_extractor(GD, function, row, keras_file, threads, runtime, built=None):
    """Load (or convert) the model on ``runtime`` and cache it in ``GD``; ``built``: a
    TensorFlow extractor already at hand, to convert from instead of loading again."""
    def build_tensorflow():
        return built or tensorflow_extractor(function, row, keras_file, threads)

    if not runtimes.runs_on_onnx(runtime):
        extractor = build_tensorflow()
    else:
        extractor = runtimes.onnx_extractor(function, row, threads, _onnx_dirs(),
                                            runtime_dir("models"), build_tensorflow,
                                            strict=runtime == "onnx")
    cache = GD.setdefault(_CACHE, {})
    cache[row["name"]] = (row["sha256"], extractor)
    _write_slot([f"{name} ({entry[1].runtime})" for name, entry in sorted(cache.items())])
    return extractor


def cached_models(GD):
    """Names of the models this backend holds in memory."""
    return sorted(GD.get(_CACHE, {}))


# --- SQL-facing functions --------------------------------------------------------------

FN_REGISTER = "vision.register_model"
FN_DROP = "vision.drop_model"


def _validate_registration(plpy, name, model_bytes, model_path, input_height, input_width,
                           preprocessing, pooling):
    fn = FN_REGISTER
    require_not_null(fn, "name", name)
    require(fn, "name", name, NAME_PATTERN.match(name), "a lower-case identifier "
            "(letters, digits, _; at most 63 characters)")
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
    """Validate, load in safe mode (proving it works), then insert the registry row."""
    fn = FN_REGISTER
    _validate_registration(plpy, name, model_bytes, model_path, input_height, input_width,
                           preprocessing, pooling)
    exists = plpy.execute(plan(plpy, GD, "exists",
                               "SELECT 1 FROM vision.model_store WHERE name = $1", ["text"]),
                          [name])
    if exists and not replace:
        raise PgvisionError(fn, f'argument "name": a model named {name!r} is already registered',
                            DUPLICATE_OBJECT, hint="Pass replace => true to replace it.")
    if model_path is not None:
        path, digest, temporary = model_path, sha256_file(model_path), False
    else:
        data = bytes(model_bytes)
        digest = hashlib.sha256(data).hexdigest()
        tmp = tempfile.NamedTemporaryFile(suffix=".keras", delete=False)
        with tmp:
            tmp.write(data)
        path, temporary = tmp.name, True
    threads = thread_settings(plpy, GD)
    try:
        model = load_keras_file(fn, path, threads)
    finally:
        if temporary:
            os.unlink(path)
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[-1] != 3:
        raise PgvisionError(fn, f"the model's input must be (batch, height, width, 3) RGB, "
                            f"got {tuple(shape)}")
    height = input_height or shape[1]
    width = input_width or shape[2]
    if height is None or width is None:
        raise PgvisionError(fn, "the model's input size is not fixed: pass input_height and "
                            "input_width")
    runtime = runtime_setting(plpy, GD)
    extractor = Extractor(model, (int(height), int(width)), preprocessing, feature_layer,
                          pooling, fn)
    plpy.execute(plan(plpy, GD, "upsert", """
        INSERT INTO vision.model_store AS m (name, model_bytes, model_path, sha256, input_height,
            input_width, preprocessing, feature_layer, pooling, dims, provenance)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (name) DO UPDATE SET model_bytes = EXCLUDED.model_bytes,
            model_path = EXCLUDED.model_path, sha256 = EXCLUDED.sha256,
            input_height = EXCLUDED.input_height, input_width = EXCLUDED.input_width,
            preprocessing = EXCLUDED.preprocessing, feature_layer = EXCLUDED.feature_layer,
            pooling = EXCLUDED.pooling, dims = EXCLUDED.dims, provenance = EXCLUDED.provenance,
            builtin = false, created_at = now()""",
        ["text", "bytea", "text", "text", "int4", "int4", "text", "text", "text", "int4",
         "text"]),
        [name, model_bytes, model_path, digest, int(height), int(width), preprocessing,
         feature_layer, pooling, extractor.dims, provenance or ""])
    row = dict(name=name, sha256=digest, input_height=int(height), input_width=int(width),
               preprocessing=preprocessing, feature_layer=feature_layer, pooling=pooling)
    # Converting now (ONNX Runtime) means the first extraction of every backend is fast.
    _load_extractor(GD, fn, row, None, threads, runtime, built=extractor)
    return extractor.dims


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
    keras = import_tensorflow(plpy, GD)
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
    """Remove a model; its stored features go too only with ``cascade``."""
    fn = FN_DROP
    lookup(plpy, GD, fn, name, argument="name")
    require_not_null(fn, "cascade", cascade)
    count = plpy.execute(plan(plpy, GD, "feature_count",
                              "SELECT count(*) AS n FROM vision.features WHERE model = $1",
                              ["text"]), [name])[0]["n"]
    if count and not cascade:
        raise PgvisionError(fn, f"model {name!r} has {count} stored feature rows", OBJECT_IN_USE,
                            hint="Pass cascade => true to delete them with the model.")
    plpy.execute(plan(plpy, GD, "drop_features", "DELETE FROM vision.features WHERE model = $1",
                      ["text"]), [name])
    plpy.execute(plan(plpy, GD, "drop_errors",
                      "DELETE FROM vision.extract_errors WHERE model = $1", ["text"]), [name])
    plpy.execute(plan(plpy, GD, "drop_model", "DELETE FROM vision.model_store WHERE name = $1",
                      ["text"]), [name])
    GD.get(_CACHE, {}).pop(name, None)
    return count


def read_manifest(model_dir):
    """The installed models' manifest (written by ``make install``), or [] when absent."""
    path = os.path.join(model_dir, MANIFEST)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["models"]


def register_builtin_models(plpy, GD, model_dir=None):
    """Register the installed models by path (run by CREATE EXTENSION; cheap: no TF)."""
    model_dir = model_dir or default_model_dir()
    entries = read_manifest(model_dir)
    if not entries:
        plpy.notice(f"pgvision: no installed models in {model_dir}; run `make install` on the "
                    f"database server for the default model {DEFAULT_MODEL!r}")
    for entry in entries:
        plpy.execute(plan(plpy, GD, "builtin", """
            INSERT INTO vision.model_store (name, model_path, sha256, input_height, input_width,
                preprocessing, feature_layer, pooling, dims, provenance, builtin)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true)
            ON CONFLICT (name) DO NOTHING""",
            ["text", "text", "text", "int4", "int4", "text", "text", "text", "int4", "text"]),
            [entry["name"], os.path.join(model_dir, entry["file"]), entry["sha256"],
             entry["input_height"], entry["input_width"], entry["preprocessing"],
             entry.get("feature_layer"), entry["pooling"], entry["dims"], entry["provenance"]])
    return len(entries)


def max_pixels(plpy, GD):
    return setting(plpy, GD, "pgvision.max_image_pixels", DEFAULT_MAX_PIXELS)


# --- Model-holding backends -------------------------------------------------------------
# Each backend that loads a model keeps ~0.5-1 GB resident for its life. A cluster-wide
# count of such backends is kept with one lock file per slot under the data directory:
# flock() is released by the kernel when the process exits, however it exits, so a slot can
# never leak. A backend takes one slot before its first model load and keeps it.

_SLOT = {"fd": None, "number": None}
RUNTIME_DIR = "pgvision"  # under the data directory (a backend's working directory)


def runtime_dir(*parts):
    return os.path.join(os.getcwd(), RUNTIME_DIR, *parts)


def default_max_model_backends():
    """Half the machine's memory at ~1 GiB per model-holding backend (at least 1)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, memory // (2 << 30))


def max_model_backends(plpy, GD):
    return setting(plpy, GD, "pgvision.max_model_backends", default_max_model_backends())


def _try_lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def hold_model_slot(function, limit):
    """Take a model slot for this backend, or refuse when ``limit`` backends hold one
    (``limit`` 0: no limit)."""
    if _SLOT["fd"] is not None:
        return _SLOT["number"]
    directory = runtime_dir("slots")
    os.makedirs(directory, exist_ok=True)
    for number in range(limit if limit > 0 else 1 << 16):
        fd = _try_lock(os.path.join(directory, f"slot{number}"))
        if fd is not None:
            _SLOT.update(fd=fd, number=number)
            _write_slot([])
            return number
    raise PgvisionError(function, f"{limit} backends already hold a model "
                        f"(pgvision.max_model_backends = {limit}); each keeps 0.1-0.8 GB of memory",
                        INSUFFICIENT_RESOURCES,
                        hint="SELECT * FROM vision.model_backends() lists them. Use fewer sessions "
                        "(a pool), close idle ones, or raise pgvision.max_model_backends.")


def _write_slot(models):
    """Record this process and what it holds ("name (runtime)" lines) in its slot file."""
    if _SLOT["fd"] is None:
        return
    text = "\n".join([str(os.getpid()), *models]).encode()
    os.ftruncate(_SLOT["fd"], 0)
    os.pwrite(_SLOT["fd"], text, 0)


def model_backends():
    """Rows (slot, pid, rss_mb, models) of the backends holding a model now; ``models`` are
    "name (runtime)" strings."""
    directory = runtime_dir("slots")
    rows = []
    for name in sorted(os.listdir(directory) if os.path.isdir(directory) else [],
                       key=lambda n: int(n[4:]) if n[4:].isdigit() else -1):
        number = int(name[4:]) if name.startswith("slot") and name[4:].isdigit() else None
        if number is None:
            continue
        path = os.path.join(directory, name)
        mine = number == _SLOT["number"]
        if not mine:
            fd = _try_lock(path)
            if fd is not None:  # free: nobody holds it
                os.close(fd)
                continue
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        pid = os.getpid() if mine else int(lines[0]) if lines[0].isdigit() else 0
        rows.append((number, pid, _rss_mb(pid), [line for line in lines[1:] if line]))
    return rows


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


# --- Model handles: extraction in parallel workers ---------------------------------------
# A parallel worker cannot query (see sql_call_no_spi), so it cannot read the registry. The
# leader resolves the model once into a handle (JSON text): the model's content hash, how to
# use it, and the settings a worker needs. The model file is copied under the data directory
# as <sha256>.keras; a worker loads only such files and checks the hash, so a hand-made
# handle can name nothing but a model some backend has already resolved.

FN_HANDLE = "vision.model_handle"
FN_WITH = "vision.extract_features_with"
_HANDLE_KEYS = ("version", "name", "sha256", "input_height", "input_width", "preprocessing",
                "feature_layer", "pooling", "dims", "threads", "max_model_backends",
                "max_image_pixels", "runtime")


def model_handle(plpy, GD, name):
    from . import __version__

    row = lookup(plpy, GD, FN_HANDLE, name)
    target = runtime_dir("models", f"{row['sha256']}.keras")
    if not os.path.isfile(target) or sha256_file(target) != row["sha256"]:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        path, temporary = _materialise(plpy, GD, FN_HANDLE, row)
        staging = f"{target}.{os.getpid()}.tmp"
        try:
            shutil.copyfile(path, staging)
            os.replace(staging, target)  # atomic: a worker never sees half a file
        finally:
            if temporary:
                os.unlink(path)
    runtime = _handle_runtime(plpy, GD, row)
    handle = {key: row.get(key) for key in _HANDLE_KEYS}
    handle.update(version=__version__, threads=list(thread_settings(plpy, GD)),
                  max_model_backends=max_model_backends(plpy, GD),
                  max_image_pixels=max_pixels(plpy, GD), runtime=runtime)
    return json.dumps(handle, sort_keys=True)


def _handle_runtime(plpy, GD, row):
    """The runtime workers will use: ``onnx`` once a converted file exists, which this
    converts the first time (loading the model here once), so workers never convert."""
    runtime = runtime_setting(plpy, GD)
    if not runtimes.runs_on_onnx(runtime):
        return "tensorflow"
    name = runtimes.onnx_file_name(row["sha256"], row["feature_layer"], row["pooling"])
    if runtimes.find_onnx(_onnx_dirs(), name):
        return "onnx"
    return get_extractor(plpy, GD, FN_HANDLE, row).runtime


def parse_handle(function, text):
    """The dict behind a handle of :func:`model_handle`, checked; no queries."""
    from . import __version__

    require_not_null(function, "model_handle", text)
    try:
        handle = json.loads(text)
        ok = isinstance(handle, dict) and set(_HANDLE_KEYS) <= set(handle) and \
            re.fullmatch(r"[0-9a-f]{64}", str(handle["sha256"])) is not None
    except ValueError:
        ok = False
    if not ok:
        raise PgvisionError(function, f'argument "model_handle" is not a handle made by '
                            f"{FN_HANDLE}(): {text[:60]!r}",
                            hint=f"Pass (SELECT {FN_HANDLE}('model')) computed before the query.")
    if handle["version"] != __version__:
        raise PgvisionError(function, f'argument "model_handle" was made by pgvision '
                            f"{handle['version']}, this server runs {__version__}", OBJECT_IN_USE,
                            hint=f"Call {FN_HANDLE}() again.")
    return handle


def _cached_model_file(sha256):
    """The model file with this hash: the data directory's cache, else an installed model
    (what a Greenplum segment, whose data directory the leader never wrote, relies on)."""
    candidates = [runtime_dir("models", f"{sha256}.keras")]
    candidates += [os.path.join(default_model_dir(), entry["file"])
                   for entry in read_manifest(default_model_dir()) if entry["sha256"] == sha256]
    for path in candidates:
        if os.path.isfile(path) and sha256_file(path) == sha256:
            return path
    return None


def extractor_for_handle(GD, function, handle):
    """The cached extractor of a parsed handle, loading it without any query."""
    hit = _cached(GD, handle)
    if hit is not None:
        return hit

    def keras_file():
        path = _cached_model_file(handle["sha256"])
        if path is None:
            raise PgvisionError(function, f"model {handle['name']!r} ({handle['sha256'][:12]}…) "
                                "is not in this server's model cache", UNDEFINED_OBJECT,
                                hint=f"Make the handle with {FN_HANDLE}() on this server.")
        return path, False

    if handle["runtime"] == "tensorflow":
        keras_file()  # fail before taking a slot
    hold_model_slot(function, handle["max_model_backends"])
    return _load_extractor(GD, function, handle, keras_file, tuple(handle["threads"]),
                           handle["runtime"])


# --- Nodes of a sharded cluster ---------------------------------------------------------

FN_CHECK_NODE = "vision.check_node"


def check_node(plpy, GD, version, model, sha256):
    """Refuse to serve a cluster call when this node's pgvision or model differs from the
    coordinator's; return this node's name (cluster_name, port and database)."""
    from . import __version__

    node = plpy.execute(plan(plpy, GD, "node_name", "SELECT vision.node_name() AS node"))[0]["node"]
    if version != __version__:
        raise PgvisionError(FN_CHECK_NODE, f"node {node} runs pgvision {__version__}, the "
                            f"coordinator {version}", OBJECT_IN_USE,
                            hint="Install one pgvision version on every node.")
    if model is not None:
        if sha256 is None:
            raise PgvisionError(FN_CHECK_NODE, f"the coordinator has no model named {model!r}",
                                UNDEFINED_OBJECT)
        row = lookup(plpy, GD, FN_CHECK_NODE, model)
        if row["sha256"] != sha256:
            raise PgvisionError(FN_CHECK_NODE, f"node {node} has another model {model!r} "
                                f"(sha256 {row['sha256'][:12]}…, coordinator {str(sha256)[:12]}…)",
                                OBJECT_IN_USE,
                                hint=f"SELECT vision_cluster.push_model('{model}') copies the "
                                "coordinator's model to every shard.")
    return node
