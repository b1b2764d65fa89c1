"""Inference runtimes for feature extraction: ONNX Runtime (the default) and TensorFlow.

The registry keeps Keras models (``.keras``, loaded in safe mode): they are the source of
truth. A model cut at its feature layer and pooled is converted to ONNX once (tf2onnx) and
cached by content hash; from then on a backend loads the ONNX file with ONNX Runtime in
well under a second, without importing TensorFlow (~4 s) or rebuilding and tracing the
Keras model (~5 s for Inception-v3). ``make bench-runtimes`` measures both runtimes on the
same model, and features agree to ~1e-6.

Where the ONNX file lives: ``make install`` converts the built-in models next to their
``.keras`` files; other models are converted on first use (or at registration) into
``<data directory>/pgvision/models``. The file name is derived from the Keras file's
SHA-256, the feature layer, the pooling and the ONNX opset, so a re-registered model or a
new converter never reuses a stale file.

``pgvision.runtime`` picks the runtime: ``auto`` (ONNX Runtime when installed and the model
converts, else TensorFlow), ``onnx`` (error if it cannot) or ``tensorflow``.
"""

import hashlib
import os

from .errors import EXTERNAL_ERROR, PgvisionError

RUNTIMES = ("auto", "onnx", "tensorflow")
DEFAULT_RUNTIME = "auto"
OPSET = 17
SETTING = "pgvision.runtime"


def parse_runtime(value):
    """The runtime named by the ``pgvision.runtime`` setting (text or NULL)."""
    if value in (None, ""):
        return DEFAULT_RUNTIME
    if value not in RUNTIMES:
        raise PgvisionError("pgvision", f'setting "{SETTING}" must be one of '
                            f"{', '.join(RUNTIMES)}, got {value!r}")
    return value


def onnx_installed():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def runs_on_onnx(runtime):
    """Whether a ``pgvision.runtime`` value means ONNX Runtime (``auto``: when installed)."""
    return runtime == "onnx" or (runtime == "auto" and onnx_installed())


def onnx_file_name(sha256, feature_layer, pooling):
    """``<sha256>-<12 hex>.onnx``: the Keras file's hash and what the cut depends on."""
    cut = hashlib.sha256(f"{feature_layer or ''}|{pooling}|opset{OPSET}".encode()).hexdigest()
    return f"{sha256}-{cut[:12]}.onnx"


def find_onnx(directories, name):
    for directory in directories:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def convert(extractor, target):
    """Write the traced TensorFlow function of an :class:`~pgvision.extractors.Extractor` as an
    ONNX file at ``target`` (atomically: a concurrent reader never sees half a file)."""
    import tensorflow as tf
    import tf2onnx

    height, width = extractor.input_size
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = f"{target}.{os.getpid()}.tmp"
    try:
        tf2onnx.convert.from_function(
            extractor.traced, input_signature=[tf.TensorSpec([None, height, width, 3],
                                                             tf.float32)],
            opset=OPSET, output_path=staging)
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


class OnnxExtractor:
    """Same interface as :class:`~pgvision.extractors.Extractor`, run by ONNX Runtime."""

    runtime = "onnx"

    def __init__(self, path, input_size, preprocessing, threads=(0, 0)):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads[0])  # 0: ONNX Runtime picks, like TF
        options.inter_op_num_threads = int(threads[1])
        options.log_severity_level = 3
        self.path = path
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
                   strict):
    """An :class:`OnnxExtractor` for a registry row (or handle), converting once if no cached
    file exists: ``convert_to(target)`` writes the file (in a child process) and returns why
    it could not, or None.

    When conversion fails, ``strict`` (``pgvision.runtime = onnx``) raises; otherwise the
    TensorFlow extractor ``build_tensorflow()`` is returned, so an unconvertible model still
    works."""
    name = onnx_file_name(row["sha256"], row["feature_layer"], row["pooling"])
    size = (row["input_height"], row["input_width"])
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
        raise unconvertible(function, row["name"], problem)
    return build_tensorflow()


def unconvertible(function, name, problem):
    return PgvisionError(function, f"model {name!r} cannot run on ONNX Runtime ({problem})",
                         EXTERNAL_ERROR, hint=f"SET {SETTING} = 'tensorflow' (or 'auto') runs "
                         "it on TensorFlow.")
