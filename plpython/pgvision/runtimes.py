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
SHA-256, the feature layer, the pooling, the input size and the ONNX opset, so a
re-registered model, the same network fed another size, or a new converter never reuses a
stale file.

``pgvision.runtime`` picks the runtime: ``auto`` (ONNX Runtime when installed and the model
converts, else TensorFlow), ``onnx`` (error if it cannot) or ``tensorflow``.

int8: an installed model whose manifest entry says ``"int8": true`` also gets a statically
quantised copy (QDQ, per-channel int8 weights, uint8 activations calibrated on the images in
``tools/calibration``), made by ``make install``. ``pgvision.precision = auto`` (the default)
runs that copy on a CPU with int8 dot-product instructions (x86 VNNI or AMX, Arm dotprod),
where the default model ran 2.1× its float32 speed standalone and 1.7× in the database, at a
cosine of ~0.999 to float32's features (make bench-extract, make bench-quality); elsewhere, and with ``pgvision.precision = fp32``, the
float32 file runs, so a CPU without those instructions never gets slower.
"""

import hashlib
import os

from .errors import EXTERNAL_ERROR, PgvisionError

RUNTIMES = ("auto", "onnx", "tensorflow")
DEFAULT_RUNTIME = "auto"
OPSET = 17
SETTING = "pgvision.runtime"


PRECISIONS = ("auto", "fp32")
DEFAULT_PRECISION = "auto"
PRECISION_SETTING = "pgvision.precision"
# /proc/cpuinfo flags of int8 dot-product instructions, where int8 inference beats float32
INT8_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}


def _parse_setting(setting, value, choices, default):
    """``value`` of a text setting (NULL or empty: ``default``), refused unless a choice."""
    if value in (None, ""):
        return default
    if value not in choices:
        raise PgvisionError("pgvision", f'setting "{setting}" must be one of '
                            f"{', '.join(choices)}, got {value!r}")
    return value


def parse_runtime(value):
    """The runtime named by the ``pgvision.runtime`` setting (text or NULL)."""
    return _parse_setting(SETTING, value, RUNTIMES, DEFAULT_RUNTIME)


def parse_precision(value):
    """The precision named by the ``pgvision.precision`` setting (text or NULL)."""
    return _parse_setting(PRECISION_SETTING, value, PRECISIONS, DEFAULT_PRECISION)


_CPU_FLAGS = []


def cpu_flags(path="/proc/cpuinfo"):
    """The flags (x86) or features (Arm) this CPU reports; empty where unknown."""
    if not _CPU_FLAGS:
        flags = set()
        try:
            with open(path, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.split(":")[0].strip() in ("flags", "Features"):
                        flags.update(line.split(":", 1)[1].split())
        except OSError:
            pass
        _CPU_FLAGS.append(frozenset(flags))
    return _CPU_FLAGS[0]


def runs_int8(precision, flags=None):
    """Whether a model with an int8 copy runs it: ``auto``, on a CPU with int8 dot products."""
    return precision == "auto" and bool(INT8_FLAGS & (cpu_flags() if flags is None else flags))


def int8_file_name(row):
    """The quantised copy beside :func:`onnx_file_name`'s file."""
    return onnx_file_name(row)[:-len(".onnx")] + "-int8.onnx"


def quantise(source, target, batches):
    """Write ``source`` (a float32 ONNX file) statically quantised to int8 at ``target``: QDQ
    nodes, per-channel int8 weights, uint8 activations whose ranges ``batches`` (preprocessed
    float32 arrays) calibrate."""
    import tempfile

    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"]) \
        .get_inputs()[0].name

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.feed = iter([{name: batch} for batch in batches])

        def get_next(self):
            return next(self.feed, None)

    staging = f"{target}.{os.getpid()}.tmp"
    with tempfile.TemporaryDirectory() as work:
        prepared = os.path.join(work, "prepared.onnx")
        quant_pre_process(source, prepared, skip_symbolic_shape=True)
        try:
            quantize_static(prepared, staging, Batches(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
            os.replace(staging, target)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)


def onnx_installed():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def runs_on_onnx(runtime):
    """Whether a ``pgvision.runtime`` value means ONNX Runtime (``auto``: when installed)."""
    return runtime == "onnx" or (runtime == "auto" and onnx_installed())


def onnx_file_name(row):
    """``<sha256>-<12 hex>.onnx``: the Keras file's hash and what the converted graph depends
    on, from ``row`` (a registry row, model handle or manifest entry): the cut, its pooling,
    the input size (one network fed 224 or 299 px is two graphs) and the opset."""
    cut = (f"{row['feature_layer'] or ''}|{row['pooling']}|"
           f"{row['input_height']}x{row['input_width']}|opset{OPSET}")
    return f"{row['sha256']}-{hashlib.sha256(cut.encode()).hexdigest()[:12]}.onnx"


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
