"""The model registry against the real server: builtin models, register/replace/drop,
safe mode, privileges, and the nsfwjs conversion checked against TF.js itself."""

import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg2
import pytest
from psycopg2 import errors as pgerr

from conftest import image_bytes, keras_bytes, query, register
from pgvision.files import default_model_dir, read_manifest

MODEL_DIR = default_model_dir()
CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(MODEL_DIR))), "..",
                     "cache")


@pytest.fixture
def cleanup_models(db):
    yield
    query(db, "DELETE FROM vision.features WHERE model NOT IN (SELECT name FROM vision.model_store WHERE builtin)")
    query(db, "DELETE FROM vision.model_store WHERE NOT builtin")


def test_create_extension_registers_the_installed_models(db):
    rows = query(db, "SELECT name, dims, input_height, stored_in, builtin, provenance "
                     "FROM vision.models ORDER BY name")
    manifest = {m["name"]: m for m in read_manifest(MODEL_DIR)}
    # + the hash and OCR models, which are not networks
    assert [r[0] for r in rows] == sorted([*manifest, "perceptual_hash", "pp_ocr_v6"])
    inception = dict(zip(["name", "dims", "input_height", "stored_in", "builtin", "provenance"],
                         next(r for r in rows if r[0] == "inception_v3")))
    assert inception["dims"] == 2048 and inception["input_height"] == 299
    assert inception["stored_in"] == "file" and inception["builtin"]
    assert "nsfwjs@4.4.0" in inception["provenance"]


def test_extension_and_package_versions_agree(db):
    (ext,), = query(db, "SELECT extversion FROM pg_extension WHERE extname = 'pgvision'")
    assert query(db, "SELECT vision.version()")[0][0] == ext


def test_register_from_bytes_then_extract(db, tmp_path, cleanup_models):
    assert register(db, "tiny", keras_bytes(tmp_path), preprocessing="raw") == 4
    row = query(db, "SELECT dims, input_height, input_width, stored_in, sha256 FROM vision.models "
                    "WHERE name = 'tiny'")[0]
    assert row[:4] == (4, 32, 32, "database") and len(row[4]) == 64
    feature = query(db, "SELECT vision.extract_features(%s, 'tiny')",
                    (psycopg2.Binary(image_bytes(1)),))[0][0]
    assert len(feature) == 4 and all(v >= 0 for v in feature)  # ReLU then average


def test_replace_is_picked_up_by_a_backend_that_cached_the_old_model(db, tmp_path, cleanup_models):
    image = psycopg2.Binary(image_bytes(2))
    register(db, "tiny", keras_bytes(tmp_path, seed=1), preprocessing="raw")
    before = query(db, "SELECT vision.extract_features(%s, 'tiny')", (image,))[0][0]
    with pytest.raises(pgerr.DuplicateObject, match="already registered"):
        register(db, "tiny", keras_bytes(tmp_path, seed=2))
    register(db, "tiny", keras_bytes(tmp_path, seed=2), preprocessing="raw", replace=True)
    after = query(db, "SELECT vision.extract_features(%s, 'tiny')", (image,))[0][0]
    assert not np.allclose(before, after)


def test_feature_layer_and_pooling_choose_the_output(db, tmp_path, cleanup_models):
    data = keras_bytes(tmp_path, filters=6)
    assert register(db, "tiny_conv_max", data, feature_layer="conv", pooling="max") == 6
    assert register(db, "tiny_conv_flat", data, feature_layer="conv", pooling="none") == 30 * 30 * 6
    with pytest.raises(pgerr.UndefinedObject, match='"feature_layer" names no layer of the model: '
                                                   "'mixed99'"):
        register(db, "tiny_bad", data, feature_layer="mixed99")


def test_lambda_layers_are_refused_by_safe_mode(db, tmp_path, cleanup_models):
    with pytest.raises(psycopg2.Error, match=r"vision.register_model: cannot load model .*"
                                             r"(Lambda|unsafe|safe_mode)"):
        register(db, "evil", keras_bytes(tmp_path, lambda_layer=True))
    assert not query(db, "SELECT 1 FROM vision.model_store WHERE name = 'evil'")


def test_a_network_fed_another_size_than_its_own_is_a_model_of_its_own(db, tmp_path,
                                                                       cleanup_models):
    """One .keras file registered at its own 32 px and fed 24 px: two models, two converted
    files, and the 24 px one gives what Keras gives the same network rebuilt for 24 px."""
    import keras
    from pgvision import images

    data = keras_bytes(tmp_path, name="sized", filters=5, seed=4)
    register(db, "tiny_32", data, preprocessing="raw")
    assert register(db, "tiny_24", data, preprocessing="raw", input_height=24,
                    input_width=24) == 5
    assert query(db, "SELECT input_height, input_width FROM vision.models WHERE name = "
                     "'tiny_24'")[0] == (24, 24)
    image = image_bytes(9, size=(80, 60))
    own, fed_24 = (np.array(query(db, "SELECT vision.extract_features(%s, %s)",
                                  (psycopg2.Binary(image), name))[0][0])
                   for name in ("tiny_32", "tiny_24"))
    model = keras.saving.load_model(tmp_path / "sized.keras", compile=False, safe_mode=True)
    rebuilt = keras.models.clone_model(model, input_tensors=keras.Input((24, 24, 3)))
    rebuilt.set_weights(model.get_weights())
    batch = images.to_array(images.decode(image, draft_size=(24, 24)), (24, 24))[None]
    np.testing.assert_allclose(fed_24, np.asarray(rebuilt(batch))[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(own, fed_24)
    data_dir = query(db, "SHOW data_directory")[0][0]
    converted = [f for f in os.listdir(os.path.join(data_dir, "pgvision", "models"))
                 if f.startswith(query(db, "SELECT sha256 FROM vision.models WHERE name = "
                                           "'tiny_24'")[0][0])]
    assert len(converted) == 2  # one ONNX graph for each input size


def test_a_network_that_cannot_take_another_size_is_refused_by_name(db, tmp_path,
                                                                    cleanup_models):
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    keras.Model(inputs, keras.layers.Dense(3, name="head")(x)).save(tmp_path / "flat.keras")
    with pytest.raises(pgerr.InvalidParameterValue,
                       match='vision.register_model: argument "input_height"/"input_width": '
                             "the model, built for 16x16 inputs, cannot be fed 20x20"):
        register(db, "flat_20", (tmp_path / "flat.keras").read_bytes(), preprocessing="raw",
                 feature_layer="head", input_height=20, input_width=20)
    assert not query(db, "SELECT 1 FROM vision.model_store WHERE name = 'flat_20'")
    # up to a convolutional layer it can
    assert register(db, "flat_20", (tmp_path / "flat.keras").read_bytes(), preprocessing="raw",
                    feature_layer="conv", input_height=20, input_width=20) == 2


@pytest.mark.parametrize("kwargs,error,message", [
    ({"name": "Bad Name", "data": b"x"}, pgerr.InvalidParameterValue, '"name" must be a lower-case'),
    ({"name": "x", "data": b"\x00pickle"}, pgerr.InvalidParameterValue,
     '"model_bytes" is not a .keras model archive'),
    ({"name": "x", "data": b"x", "preprocessing": "yolo"}, pgerr.InvalidParameterValue,
     "\"preprocessing\" must be one of 'inception', 'caffe', 'torch', 'raw', 'tfjs', got 'yolo'"),
    ({"name": "x", "data": b"x", "pooling": "sum"}, pgerr.InvalidParameterValue, '"pooling"'),
    ({"name": "x", "data": b"x", "input_height": 0}, pgerr.InvalidParameterValue,
     '"input_height" must be between 8 and 4096, got 0'),
])
def test_register_validates_every_argument(db, kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        register(db, kwargs.pop("name"), kwargs.pop("data"), **kwargs)


def test_register_needs_exactly_one_source(db):
    with pytest.raises(pgerr.InvalidParameterValue, match='exactly one of "model_bytes" and '
                                                          '"model_path"'):
        query(db, "SELECT vision.register_model('x')")


def test_register_from_a_server_file(db, tmp_path, server_tmp, cleanup_models):
    path = Path(server_tmp) / "tiny.keras"
    path.write_bytes(keras_bytes(tmp_path))
    os.chmod(path, 0o644)
    query(db, "SELECT vision.register_model('tiny_file', model_path => %s, preprocessing => 'raw')",
          (str(path),))
    assert query(db, "SELECT stored_in, model_path FROM vision.models WHERE name = 'tiny_file'")[0] \
        == ("file", str(path))
    with pytest.raises(pgerr.InvalidParameterValue, match='"model_path" must be an absolute path'):
        query(db, "SELECT vision.register_model('x', model_path => 'rel/tiny.keras')")


def test_a_file_changed_behind_the_registry_is_refused(db, connect, tmp_path, server_tmp,
                                                       cleanup_models):
    path = Path(server_tmp) / "tiny.keras"
    path.write_bytes(keras_bytes(tmp_path, seed=3))
    os.chmod(path, 0o644)
    query(db, "SELECT vision.register_model('tiny_file', model_path => %s)", (str(path),))
    path.write_bytes(keras_bytes(tmp_path, seed=4))
    other = connect()  # a backend that has not cached the model
    with pytest.raises(psycopg2.Error, match="changed since it was registered"):
        query(other, "SELECT vision.extract_features(%s, 'tiny_file')",
              (psycopg2.Binary(image_bytes(1)),))


def test_only_vision_admin_may_register_or_drop(db, connect, tmp_path, cleanup_models):
    query(db, "DROP ROLE IF EXISTS analyst; CREATE ROLE analyst LOGIN")
    query(db, "DROP ROLE IF EXISTS curator; CREATE ROLE curator LOGIN IN ROLE vision_admin")
    try:
        data = psycopg2.Binary(keras_bytes(tmp_path))
        analyst = connect(user="analyst")
        with pytest.raises(pgerr.InsufficientPrivilege):
            query(analyst, "SELECT vision.register_model('tiny', model_bytes => %s)", (data,))
        curator = connect(user="curator")
        query(curator, "SELECT vision.register_model('tiny', model_bytes => %s, "
                       "preprocessing => 'raw')", (data,))
        # analysts use models; they cannot change the registry
        assert len(query(analyst, "SELECT vision.extract_features(%s, 'tiny')",
                         (psycopg2.Binary(image_bytes(5)),))[0][0]) == 4
        with pytest.raises(pgerr.InsufficientPrivilege):
            query(analyst, "DELETE FROM vision.model_store")
        with pytest.raises(pgerr.InsufficientPrivilege, match="pg_read_server_files"):
            query(curator, "SELECT vision.register_model('x', model_path => '/etc/passwd')")
        assert query(curator, "SELECT vision.drop_model('tiny')")[0][0] == 0
    finally:
        query(db, "REASSIGN OWNED BY analyst, curator TO postgres; "
                  "DROP OWNED BY analyst, curator; DROP ROLE analyst; DROP ROLE curator")


def test_drop_model_keeps_features_unless_cascade(db, tmp_path, make_table, cleanup_models):
    register(db, "tiny", keras_bytes(tmp_path), preprocessing="raw")
    make_table("drop_src", [(1, image_bytes(1)), (2, image_bytes(2))])
    query(db, "CALL vision.extract_table('drop_src', model => 'tiny')")
    with pytest.raises(pgerr.ObjectInUse, match="model 'tiny' has 2 stored feature rows"):
        query(db, "SELECT vision.drop_model('tiny')")
    assert query(db, "SELECT vision.drop_model('tiny', cascade => true)")[0][0] == 2
    assert not query(db, "SELECT 1 FROM vision.features WHERE model = 'tiny'")
    with pytest.raises(pgerr.UndefinedObject, match='"name" names no registered model'):
        query(db, "SELECT vision.drop_model('tiny')")


def test_loaded_models_lists_this_backends_cache(db, connect):
    other = connect()
    assert query(other, "SELECT count(*) FROM vision.loaded_models()")[0][0] == 0
    query(other, "SELECT vision.extract_features(%s, 'mobilenet_v2')",
          (psycopg2.Binary(image_bytes(1)),))
    assert [r[0] for r in query(other, "SELECT * FROM vision.loaded_models()")] == ["mobilenet_v2"]


def loaded(conn, module):
    """Whether the connection's backend has imported ``module``."""
    query(conn, "CREATE OR REPLACE FUNCTION pg_temp.loaded(m text) RETURNS boolean "
                "LANGUAGE plpython3u AS $$ import sys; return m in sys.modules $$")
    return query(conn, "SELECT pg_temp.loaded(%s)", (module,))[0][0]


def offload_children():
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "pgvision.offload" in line]


def test_registration_runs_in_a_child_process_and_reports_progress(connect, tmp_path,
                                                                   cleanup_models):
    """The backend never holds TensorFlow for a registration (Inception-v3 cut at mixed7 left
    0.8.0's backend at 3.1 GB); it relays the child's steps as NOTICEs and then extracts from
    the converted file."""
    conn = connect()
    assert register(conn, "tiny", keras_bytes(tmp_path), preprocessing="raw") == 4
    steps = " ".join(conn.notices)
    for step in ("loading the Keras model (safe mode)", "converting to ONNX",
                 "checking ONNX Runtime's features against TensorFlow's"):
        assert f"vision.register_model: {step}" in steps
    feature = query(conn, "SELECT vision.extract_features(%s, 'tiny')",
                    (psycopg2.Binary(image_bytes(1)),))[0][0]
    assert len(feature) == 4
    assert query(conn, "SELECT * FROM vision.loaded_models()")[0][0] == "tiny"
    assert not loaded(conn, "tensorflow") and not loaded(conn, "keras")


def test_a_cancelled_registration_leaves_nothing(connect, cleanup_models):
    conn = connect()
    path = os.path.join(MODEL_DIR, "inception_v3.keras")
    started = threading.Thread(target=lambda: (time.sleep(4), conn.cancel()))
    started.start()
    with pytest.raises(pgerr.QueryCanceled):
        query(conn, "SELECT vision.register_model('inception_mixed7', model_path => %s, "
                    "feature_layer => 'mixed7')", (path,))
    started.join()
    assert any("loading the Keras model" in n for n in conn.notices)
    assert not query(conn, "SELECT 1 FROM vision.model_store WHERE name = 'inception_mixed7'")
    assert not offload_children()  # the child was killed with the statement


TFJS = os.path.join(CACHE, "node_modules", "@tensorflow", "tfjs")
TARBALL = os.path.join(CACHE, "nsfwjs-4.4.0.tgz")
TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")


@pytest.mark.skipif(not (os.path.isdir(TFJS) and os.path.isfile(TARBALL) and shutil.which("node")),
                    reason="TF.js reference not installed (make install-dev)")
def test_converted_inception_gives_the_class_scores_tfjs_gives(tmp_path):
    """Same photos through the original TF.js model (node) and our Keras 3 conversion."""
    import keras
    from skimage import data as photos

    from pgvision.images import preprocess, to_array
    from PIL import Image

    with tarfile.open(TARBALL) as tar:
        tar.extractall(tmp_path)
    unwrapped = tmp_path / "iv3"
    subprocess.run(["node", os.path.join(TOOLS, "unwrap_tfjs_js.js"),
                    tmp_path / "package/dist/models/inception_v3", unwrapped], check=True)
    batch = np.stack([to_array(Image.fromarray(p), (299, 299))
                      for p in (photos.astronaut(), photos.coffee())])
    batch = preprocess(batch, "inception").astype("<f4")
    batch.tofile(tmp_path / "x.f32")
    subprocess.run(["node", os.path.join(TOOLS, "tfjs_predict.js"), unwrapped, tmp_path / "x.f32",
                    "2", "299", "299", tmp_path / "y.json"], check=True,
                   env={**os.environ, "NODE_PATH": os.path.join(CACHE, "node_modules")})
    reference = np.array(json.loads((tmp_path / "y.json").read_text()))
    ours = keras.saving.load_model(os.path.join(MODEL_DIR, "inception_v3.keras"), compile=False,
                                   safe_mode=True)
    scores = np.asarray(ours(batch))
    assert scores.shape == reference.shape == (2, 5)
    assert np.abs(scores - reference).max() < 1e-4
    assert (scores.argmax(1) == reference.argmax(1)).all()


def test_keras_applications_register_offline_with_random_weights(db, cleanup_models):
    assert query(db, "SELECT vision.register_keras_application('mnv2_random', 'MobileNetV2', "
                     "weights => NULL)")[0][0] == 1280
    row = query(db, "SELECT input_height, preprocessing, stored_in, provenance FROM vision.models "
                    "WHERE name = 'mnv2_random'")[0]
    assert row[:3] == (224, "inception", "database")
    assert "keras.applications.MobileNetV2(weights=None" in row[3]
    assert len(query(db, "SELECT vision.extract_features(%s, 'mnv2_random')",
                     (psycopg2.Binary(image_bytes(9)),))[0][0]) == 1280


@pytest.mark.parametrize("args,message", [
    ("'x', 'AlexNet'", "\"application\" must be one of"),
    ("'x', 'ResNet50', weights => 'coco'", "\"weights\" must be 'imagenet' or NULL, got 'coco'"),
])
def test_keras_applications_validate_arguments(db, args, message):
    with pytest.raises(pgerr.InvalidParameterValue, match=message.replace("(", r"\(")):
        query(db, f"SELECT vision.register_keras_application({args})")
