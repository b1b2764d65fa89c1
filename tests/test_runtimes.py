"""Inference runtimes against the real server: ONNX Runtime by default (converted from the
registered Keras model), TensorFlow on request, the same features from both."""

import hashlib
import io
import os

import numpy as np
import psycopg2
import pytest
from PIL import Image
from skimage import data as photos

from conftest import image_bytes, keras_bytes, query, register
from pgvision import DEFAULT_MODEL
from pgvision.runtimes import int8_file_name, onnx_file_name, runs_int8

FAST = "mobilenet_v2"
TF_LOADED = """CREATE FUNCTION pg_temp.tf_loaded() RETURNS boolean LANGUAGE plpython3u AS
  'import sys; return "tensorflow" in sys.modules'"""


def backend(connect, runtime=None):
    conn = connect()
    query(conn, TF_LOADED)
    if runtime:
        query(conn, "SET pgvision.runtime = %s", (runtime,))
    return conn


def features(conn, data, model):
    return np.array(query(conn, "SELECT vision.extract_features(%s, %s)",
                          (psycopg2.Binary(data), model))[0][0])


def tf_loaded(conn):
    return query(conn, "SELECT pg_temp.tf_loaded()")[0][0]


@pytest.fixture
def tiny_model(db, tmp_path):
    """A registered model that is not installed: it is converted into the data directory."""
    data = keras_bytes(tmp_path, name="tiny_runtime", filters=6, seed=3)
    register(db, "tiny_runtime", data, preprocessing="raw")
    data_dir = query(db, "SHOW data_directory")[0][0]
    path = os.path.join(data_dir, "pgvision", "models",
                        onnx_file_name({"sha256": hashlib.sha256(data).hexdigest(),
                                        "feature_layer": None, "pooling": "avg",
                                        "input_height": 32, "input_width": 32}))
    yield path
    query(db, "SELECT vision.drop_model('tiny_runtime', cascade => true)")


def test_the_default_runtime_extracts_without_importing_tensorflow(connect):
    conn = backend(connect)
    vector = features(conn, image_bytes(11), FAST)
    assert vector.shape == (1280,) and vector.max() > 0
    assert not tf_loaded(conn)
    assert query(conn, "SELECT vision.loaded_models()") == [(FAST,)]


def test_onnx_runtime_and_tensorflow_give_the_same_features(connect):
    onnx, tensorflow = backend(connect), backend(connect, "tensorflow")
    for seed in (12, 13):
        data = image_bytes(seed, size=(300, 200))
        np.testing.assert_allclose(features(onnx, data, FAST), features(tensorflow, data, FAST),
                                   rtol=1e-4, atol=1e-5)
    assert tf_loaded(tensorflow) and not tf_loaded(onnx)
    held = dict(query(onnx, "SELECT pid, models FROM vision.model_backends()"))
    for conn, runtime in ((onnx, "onnx"), (tensorflow, "tensorflow")):
        assert held[conn.get_backend_pid()] == [f"{FAST} ({runtime})"]


def test_a_registered_model_is_converted_once_at_registration(connect, tiny_model):
    assert os.path.isfile(tiny_model)
    onnx, tensorflow = backend(connect, "onnx"), backend(connect, "tensorflow")
    data = image_bytes(14)
    np.testing.assert_allclose(features(onnx, data, "tiny_runtime"),
                               features(tensorflow, data, "tiny_runtime"), rtol=1e-4, atol=1e-6)
    assert not tf_loaded(onnx)


def test_a_damaged_converted_file_is_converted_again(connect, tiny_model):
    expected = features(backend(connect, "tensorflow"), image_bytes(15), "tiny_runtime")
    with open(tiny_model, "wb") as fh:
        fh.write(b"not an onnx model")
    conn = backend(connect, "onnx")
    np.testing.assert_allclose(features(conn, image_bytes(15), "tiny_runtime"), expected,
                               rtol=1e-4, atol=1e-6)
    with open(tiny_model, "rb") as fh:
        assert fh.read(17) != b"not an onnx model"


def test_an_unknown_runtime_is_refused_naming_the_setting_and_value(connect):
    conn = backend(connect, "tensorrt")
    with pytest.raises(psycopg2.errors.InvalidParameterValue,
                       match=r'setting "pgvision.runtime" must be one of auto, onnx, '
                             r"tensorflow, got 'tensorrt'"):
        features(conn, image_bytes(16), FAST)


# --- int8: the default model's quantised copy ------------------------------------------------

def loaded(conn):
    return query(conn, "SELECT models FROM vision.model_backends() "
                       "WHERE pid = pg_backend_pid()")[0][0]


def test_int8_features_stay_within_a_cosine_of_float32_and_fp32_is_one_setting_away(connect):
    """Where the CPU has int8 dot products the default model runs its int8 copy; SET
    pgvision.precision = fp32 runs the float32 file, which a CPU without them always gets."""
    pictures = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        buf = io.BytesIO()
        Image.fromarray(getattr(photos, name)()).convert("RGB").save(buf, "JPEG")
        pictures.append(buf.getvalue())
    auto, fp32 = backend(connect), backend(connect)
    query(fp32, "SET pgvision.precision = 'fp32'")
    a = np.array([features(auto, p, DEFAULT_MODEL) for p in pictures])
    f = np.array([features(fp32, p, DEFAULT_MODEL) for p in pictures])
    assert loaded(fp32) == [f"{DEFAULT_MODEL} (onnx)"]
    if runs_int8("auto"):
        assert loaded(auto) == [f"{DEFAULT_MODEL} (onnx int8)"]
        cosine = (a * f).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(f, axis=1)
        assert not np.array_equal(a, f) and cosine.min() > 0.99, cosine
    else:
        assert loaded(auto) == [f"{DEFAULT_MODEL} (onnx)"]
        np.testing.assert_array_equal(a, f)


def test_an_unknown_precision_is_refused_naming_the_setting_and_value(connect):
    conn = backend(connect)
    query(conn, "SET pgvision.precision = 'int4'")
    with pytest.raises(psycopg2.errors.InvalidParameterValue,
                       match=r'setting "pgvision.precision" must be one of auto, fp32, '
                             r"got 'int4'"):
        features(conn, image_bytes(16), DEFAULT_MODEL)


@pytest.mark.parametrize("flags,precision,expected", [
    ({"avx2", "avx512_vnni"}, "auto", True), ({"avx_vnni"}, "auto", True),
    ({"asimd", "asimddp"}, "auto", True), ({"avx2", "avx512f"}, "auto", False),
    (set(), "auto", False), ({"avx512_vnni"}, "fp32", False)])
def test_int8_runs_only_on_cpus_with_int8_dot_products(flags, precision, expected):
    assert runs_int8(precision, frozenset(flags)) is expected


def test_the_quantised_copy_sits_beside_the_float32_file():
    row = {"sha256": "ab" * 32, "feature_layer": "mixed6", "pooling": "grid",
           "input_height": 299, "input_width": 299}
    assert int8_file_name(row) == onnx_file_name(row).replace(".onnx", "-int8.onnx")


def test_a_converted_file_is_named_by_everything_its_graph_depends_on():
    row = {"sha256": "ab" * 32, "feature_layer": "mixed6", "pooling": "grid",
           "input_height": 299, "input_width": 299}
    names = {onnx_file_name(row)} | {onnx_file_name({**row, key: value}) for key, value in (
        ("sha256", "cd" * 32), ("feature_layer", "mixed7"), ("pooling", "avg"),
        ("input_height", 224), ("input_width", 224))}
    assert len(names) == 6 and all(n.startswith(("ab" * 32, "cd" * 32)) for n in names)
