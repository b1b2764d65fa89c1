"""Feature extractors: a registered model loaded once per backend (ONNX Runtime, or
TensorFlow/Keras in safe mode), cut at its feature layer, pooled, and cached in ``GD``.

A loaded model is cached under its name and content hash, so a backend notices a
re-registered model. The cached entry maps a preprocessed batch to feature vectors: a
:class:`OnnxExtractor` (the model converted to ONNX once, see :mod:`pgvision.runtimes`) or,
with ``pgvision.runtime = tensorflow``, an :class:`Extractor`.
"""

import os
import sys
import tempfile

from . import hashing, ocr, offload, runtimes, serverlog, settings, slots, spi
from .pooling import keras_pooling
from .errors import EXTERNAL_ERROR, INVALID_PARAMETER, UNDEFINED_OBJECT, PgvisionError
from .files import default_model_dir, runtime_dir, sha256_file

_CACHE = "pgvision.models"


def import_tensorflow(plpy, GD, function="pgvision"):
    """Keras, with TensorFlow imported as this backend needs it (threads, JIT off)."""
    return import_keras(settings.thread_settings(plpy, GD), log=plpy.log, function=function)


def import_keras(threads=None, log=None, function="pgvision"):
    """Import TensorFlow/Keras once per process; ``threads`` applies only to that first import.
    What TensorFlow prints while it starts goes to ``log`` as one line (pgvision.serverlog).
    A server without TensorFlow (a serving-only install) gets an error that says so."""
    if "tensorflow" in sys.modules:
        import keras
        return keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if not hasattr(sys, "argv"):  # absl reads sys.argv, which an embedded interpreter lacks
        sys.argv = ["postgres"]
    try:
        with serverlog.captured_stderr("tensorflow", log):
            import tensorflow as tf
    except ImportError as err:
        raise PgvisionError(function, f"TensorFlow is not installed in the server's Python "
                            f"({err}); this install serves extraction with ONNX Runtime only",
                            EXTERNAL_ERROR, hint="Registering, converting and fine-tuning "
                            "models need the full install (requirements.txt, or the "
                            "Docker image's full target).") from None
    serverlog.quiet_loggers()
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    import keras
    return keras


def load_keras_file(function, path, threads=None, log=None):
    """Load a ``.keras`` file in safe mode, uncompiled."""
    keras = import_keras(threads, log, function)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types; the user needs the reason
        raise PgvisionError(function, f"cannot load model ({type(err).__name__}: {err})",
                            EXTERNAL_ERROR) from None


def at_input_size(inputs, output, input_size, function):
    """(inputs, output) of a one-input graph fed ``input_size`` inputs: as they are where the
    graph takes that size (or any), else the graph rebuilt for it with the same weights.
    Convolutions and pools do not depend on the size they are fed, so a network built for
    299 px runs at 224 px with fewer positions to compute; a graph that does (a Flatten, a
    Dense or a fixed-size pool before its output) cannot, and says so."""
    import keras

    built = tuple(inputs.shape[1:3])
    height, width = (int(v) for v in input_size)
    if None in built or built == (height, width):
        return inputs, output
    cut = keras.Model(inputs, output)
    try:
        resized = keras.models.clone_model(cut, input_tensors=keras.Input((height, width, 3)))
        resized.set_weights(cut.get_weights())
    except Exception as err:  # Keras raises many types; the user needs the reason
        raise PgvisionError(function, f'argument "input_height"/"input_width": the model, built '
                            f"for {built[0]}x{built[1]} inputs, cannot be fed {height}x{width} "
                            f"up to its feature layer ({type(err).__name__}: {str(err)[:200]})",
                            INVALID_PARAMETER) from None
    return resized.inputs[0], resized.outputs[0]


class Extractor:
    """A Keras model cut at its feature layer, pooled, behind one traced ``tf.function``."""

    runtime = "tensorflow"
    precision = "fp32"

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
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        if len(model.inputs) == 1:
            inputs, output = at_input_size(inputs, output, input_size, function)
        if len(output.shape) == 4 and pooling != "none":
            output = keras_pooling(output, pooling)
        if len(output.shape) != 2:
            output = keras.layers.Flatten()(output)
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


class OnnxExtractor:
    """Same interface as :class:`~pgvision.extractors.Extractor`, run by ONNX Runtime."""

    runtime = "onnx"

    def __init__(self, path, input_size, preprocessing, threads=(0, 0), precision="fp32"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads[0])  # 0: ONNX Runtime picks, like TF
        options.inter_op_num_threads = int(threads[1])
        options.log_severity_level = 3
        self.path, self.precision = path, precision
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        self.input_size = tuple(input_size)
        self.preprocessing = preprocessing
        self.dims = int(self.session.get_outputs()[0].shape[-1])

    def __call__(self, batch):
        import numpy as np

        batch = np.asarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return np.empty((0, self.dims), dtype=np.float32)
        return self.session.run(None, {self._input: batch})[0]


def onnx_extractor(function, row, threads, directories, cache_dir, convert_to, build_tensorflow,
                   strict, int8=False):
    """An :class:`OnnxExtractor` for a registry row (or handle), converting once if no cached
    file exists: ``convert_to(target)`` writes the file (in a child process) and returns why
    it could not, or None. ``int8``: the model's quantised copy where one is installed.

    When conversion fails, ``strict`` (``pgvision.runtime = onnx``) raises; otherwise the
    TensorFlow extractor ``build_tensorflow()`` is returned, so an unconvertible model still
    works."""
    size = (row["input_height"], row["input_width"])
    if int8:  # made by make install for the models whose manifest asks for it
        path = runtimes.find_onnx(directories[:1], runtimes.int8_file_name(row))
        if path is not None:
            return OnnxExtractor(path, size, row["preprocessing"], threads, "int8")
    name = runtimes.onnx_file_name(row)
    for directory in directories:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        try:
            return OnnxExtractor(path, size, row["preprocessing"], threads)
        except Exception:  # a damaged file: try the next, else convert again below
            if directory == cache_dir:
                os.unlink(path)
    target = os.path.join(cache_dir, name)
    problem = convert_to(target)
    if problem is None:
        try:
            return OnnxExtractor(target, size, row["preprocessing"], threads)
        except Exception as err:  # ONNX Runtime raises many types
            problem = f"{type(err).__name__}: {str(err)[:200]}"
    if strict:
        raise runtimes.unconvertible(function, row["name"], problem)
    return build_tensorflow()


def check_model_file(function, row):
    """A server-side model file must still be the one registered (same SHA-256)."""
    path = row["model_path"]
    if not os.path.isfile(path):
        raise PgvisionError(function, f"model {row['name']!r}: file {path!r} is missing",
                            EXTERNAL_ERROR, hint="Re-run make install, or re-register it.")
    if sha256_file(path) != row["sha256"]:
        raise PgvisionError(function, f"model {row['name']!r}: file {path!r} changed since it "
                            "was registered (SHA-256 differs)", EXTERNAL_ERROR,
                            hint="Register it again: SELECT vision.register_model(...)")


def model_file(plpy, GD, function, row):
    """Return a filesystem path holding the row's model (temp file for stored bytes)."""
    if row["model_path"]:
        check_model_file(function, row)
        return row["model_path"], False
    data = plpy.execute(spi.plan(plpy, GD,
                                 "SELECT model_bytes FROM vision.model_store WHERE name = $1",
                                 ["text"]), [row["name"]])[0]["model_bytes"]
    tmp = tempfile.NamedTemporaryFile(suffix=".keras", delete=False)
    with tmp:
        tmp.write(data)
    return tmp.name, True


def get_extractor(plpy, GD, function, row):
    """The cached extractor for a registry row, loading it on first use."""
    hit = cached_extractor(GD, row)
    if hit is not None:
        return hit
    runtime = settings.runtime_setting(plpy, GD)
    if row["model_path"]:  # also when a converted copy is used: the registry must hold
        check_model_file(function, row)
    slots.hold_model_slot(function, settings.max_model_backends(plpy, GD))
    def keras_file():  # a file model was checked above: hashing 90 MB twice costs 0.1 s
        return (row["model_path"], False) if row["model_path"] else \
            model_file(plpy, GD, function, row)

    return load_extractor(GD, function, row, keras_file, settings.thread_settings(plpy, GD),
                          runtime, plpy, settings.precision_setting(plpy, GD))


def cached_extractor(GD, row):
    """The extractor this backend holds for a registry row (or handle), if current."""
    cache = GD.setdefault(_CACHE, {})
    hit = cache.get(row["name"])
    if hit is not None and hit[0] == row["sha256"]:
        return hit[1]
    cache.pop(row["name"], None)  # drop a stale model before loading its successor
    return None


def onnx_dirs():
    """Where converted models are found: installed (make install), then this server's cache."""
    return [default_model_dir(), runtime_dir("models")]


def tensorflow_extractor(function, row, keras_file, threads=None, log=None):
    """Load the Keras model (``keras_file()`` → (path, temporary)) and cut it as ``row`` (a
    registry row or manifest entry) says; TensorFlow's start-up lines go to ``log``."""
    path, temporary = keras_file()
    try:
        model = load_keras_file(function, path, threads, log)
    finally:
        if temporary:
            os.unlink(path)
    return Extractor(model, (row["input_height"], row["input_width"]),
                     row["preprocessing"], row["feature_layer"], row["pooling"], function)


def prepare_model(args, progress):
    """The child's job (see :mod:`pgvision.offload`): load a Keras file in safe mode, cut it
    at its feature layer and pool it; convert it to ONNX at ``args["onnx_target"]`` (when
    given) and check that ONNX Runtime gives TensorFlow's features. Returns the input size,
    the feature dimensions and, when conversion failed, why."""
    import numpy as np

    function = args["function"]
    progress("loading the Keras model (safe mode)")
    model = load_keras_file(function, args["path"], tuple(args["threads"]))
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[-1] != 3:
        raise PgvisionError(function, f"the model's input must be (batch, height, width, 3) "
                            f"RGB, got {tuple(shape)}")
    height, width = args["input_height"] or shape[1], args["input_width"] or shape[2]
    if height is None or width is None:
        raise PgvisionError(function, "the model's input size is not fixed: pass input_height "
                            "and input_width")
    progress(f"cutting at layer {args['feature_layer'] or '(output)'}, {args['pooling']} "
             "pooling, and tracing")
    extractor = Extractor(model, (int(height), int(width)), args["preprocessing"],
                          args["feature_layer"], args["pooling"], function)
    result = {"input_height": int(height), "input_width": int(width), "dims": extractor.dims,
              "onnx_error": None}
    if args.get("onnx_target"):
        progress(f"converting to ONNX (opset {runtimes.OPSET})")
        try:
            runtimes.convert(extractor, args["onnx_target"])
            progress("checking ONNX Runtime's features against TensorFlow's")
            sample = np.random.default_rng(0).uniform(-1, 1, (2, int(height), int(width), 3))
            sample = sample.astype(np.float32)
            expected = extractor(sample)
            got = OnnxExtractor(args["onnx_target"], (height, width),
                                         args["preprocessing"])(sample)
            gap = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-6))
            if gap > 1e-3:
                os.unlink(args["onnx_target"])
                raise ValueError(f"ONNX features differ from TensorFlow's by {gap:.1e}")
        except Exception as err:  # tf2onnx and ONNX Runtime raise many types
            result["onnx_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    return result


def prepared(plpy, function, row, path, threads, onnx_target=None):
    """Check (and, given ``onnx_target``, convert) the Keras file at ``path`` for ``row`` in a
    child process (:func:`prepare_model`), so this backend never holds
    TensorFlow for it."""
    args = {key: row.get(key) for key in ("input_height", "input_width", "preprocessing",
                                          "feature_layer", "pooling")}
    args.update(function=function, path=path, threads=list(threads or (0, 0)),
                onnx_target=onnx_target)
    return offload.run(plpy, function, "prepare_model", args)


def load_extractor(GD, function, row, keras_file, threads, runtime, plpy=None, precision="fp32"):
    """Load (or convert, in a child process) the model on ``runtime`` and cache it in ``GD``.
    ``plpy``: where the conversion's progress is told (None: nowhere). ``precision``: the
    ``pgvision.precision`` setting (int8 or not, see :mod:`pgvision.runtimes`)."""
    def build_tensorflow():
        return tensorflow_extractor(function, row, keras_file, threads,
                                    plpy.log if plpy is not None else None)

    def convert_to(target):
        path, temporary = keras_file()
        try:
            return prepared(plpy, function, row, path, threads, target)["onnx_error"]
        finally:
            if temporary:
                os.unlink(path)

    if hashing.is_hash_row(row):  # the perceptual hash: no network to run
        extractor = hashing.HashExtractor(hashing.default_spec())
    elif ocr.is_ocr_row(row):  # RapidOCR runs its own ONNX files
        extractor = ocr.TextReader(function, ocr.default_spec(), threads)
    elif not runtimes.runs_on_onnx(runtime):
        extractor = build_tensorflow()
    else:
        extractor = onnx_extractor(function, row, threads, onnx_dirs(), runtime_dir("models"),
                                   convert_to, build_tensorflow, strict=runtime == "onnx",
                                   int8=runtimes.runs_int8(precision))
    cache = GD.setdefault(_CACHE, {})
    cache[row["name"]] = (row["sha256"], extractor)
    slots.record_models([f"{name} ({described(entry[1])})" for name, entry in sorted(cache.items())])
    return extractor


def described(extractor):
    """``onnx``, ``onnx int8`` or ``tensorflow``: what runs a loaded model."""
    return extractor.runtime + ("" if extractor.precision == "fp32" else f" {extractor.precision}")


def cached_models(GD):
    """Names of the models this backend holds in memory."""
    return sorted(GD.get(_CACHE, {}))


def forget(GD, name):
    """Drop this backend's copy of a model (it was dropped or replaced)."""
    GD.get(_CACHE, {}).pop(name, None)
