"""Which inference runtime extracts features, ONNX Runtime (the default) or TensorFlow,
and the conversion of a Keras model to ONNX; the extractors themselves are
:mod:`pgvision.extractors`.

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


def unconvertible(function, name, problem):
    return PgvisionError(function, f"model {name!r} cannot run on ONNX Runtime ({problem})",
                         EXTERNAL_ERROR, hint=f"SET {SETTING} = 'tensorflow' (or 'auto') runs "
                         "it on TensorFlow.")
