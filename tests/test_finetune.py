"""vision.fine_tune against the real server: the top block of MobileNet-v2 retrained on
labelled image bytes in a table, cross-validated against the logistic head on the frozen
features, registered as a model that extracts like any other; only vision_admin may, bad
input is named, a cancel leaves nothing."""

import glob
import threading
import time

import numpy as np
import pytest
from psycopg2 import errors as pgerr

from conftest import query
from test_classify import shape_image
from test_models import offload_children

KINDS = ("stripes", "circles", "checks")


@pytest.fixture
def shapes(db, make_table):
    rows = [(i, shape_image(KINDS[i % 3], i)) for i in range(1, 19)] + [(99, b"GIF89a broken")]
    make_table("ft_shapes", rows)
    query(db, "DROP TABLE IF EXISTS ft_labels; CREATE TABLE ft_labels (image_id bigint, label text)")
    query(db, "INSERT INTO ft_labels SELECT id, (ARRAY['stripes','circles','checks'])[id % 3 + 1] "
              "FROM ft_shapes")
    query(db, "DROP ROLE IF EXISTS analyst; CREATE ROLE analyst LOGIN; "
              "DROP ROLE IF EXISTS curator; CREATE ROLE curator LOGIN IN ROLE vision_admin; "
              "GRANT SELECT ON ft_shapes, ft_labels TO analyst, curator")
    yield
    query(db, "DELETE FROM vision.features WHERE model LIKE 'ft\\_%'; "
              "DELETE FROM vision.model_store WHERE name LIKE 'ft\\_%'; DROP TABLE ft_labels; "
              "REASSIGN OWNED BY analyst, curator TO postgres; "
              "DROP OWNED BY analyst, curator; DROP ROLE analyst; DROP ROLE curator")


FINE_TUNE = ("SELECT vision.fine_tune(%s, 'ft_labels', 'ft_shapes', base_model => 'mobilenet_v2', "
             "folds => 2, options => '{\"epochs\": 3}')")


def features(conn, image_id, model):
    return np.array(query(conn, "SELECT vision.extract_features(image, %s) FROM ft_shapes "
                                "WHERE id = %s", (model, image_id))[0][0])


def test_fine_tune_registers_a_model_that_extracts_like_any_other(shapes, connect):
    curator = connect(user="curator")
    result = query(curator, FINE_TUNE, ("ft_tuned",))[0][0]  # jsonb
    assert result["model"] == "ft_tuned" and result["dims"] == 1280
    assert result["images"] == 18 and result["from_layer"] == "block_15_add"
    assert [s["image_id"] for s in result["skipped"]] == [99]
    assert "not a decodable image" in result["skipped"][0]["reason"]
    assert any("image 99 skipped: not a decodable image" in n for n in curator.notices)
    assert any("fold 2/2: epoch 3/3" in n for n in curator.notices)  # progress while it trains
    cv, baseline = result["cross_validation"], result["baseline"]
    assert cv["folds"] == 2 and cv["n"] == 18
    assert cv["accuracy"] >= 0.8 > cv["majority_baseline"]
    assert baseline["method"] == "logistic on mobilenet_v2's frozen features"
    assert result["gain_accuracy"] == pytest.approx(cv["accuracy"] - baseline["accuracy"])
    dims, provenance, builtin = query(curator, "SELECT dims, provenance, builtin FROM "
                                               "vision.models WHERE name = 'ft_tuned'")[0]
    assert dims == 1280 and not builtin
    assert provenance.startswith("fine_tune of mobilenet_v2 on public.ft_labels (19 labels, 1 block(s) "
                                 "from block_15_add")
    tuned, base = features(curator, 1, "ft_tuned"), features(curator, 1, "mobilenet_v2")
    assert tuned.shape == base.shape == (1280,) and not np.allclose(tuned, base, atol=1e-3)
    analyst = connect(user="analyst")
    assert features(analyst, 2, "ft_tuned").shape == (1280,)  # anyone may use the model
    with pytest.raises(pgerr.InsufficientPrivilege):
        query(analyst, FINE_TUNE, ("ft_other",))


def test_a_base_fed_another_size_than_its_network_tunes_at_that_size(shapes, connect):
    """The default model is Inception-v3 (built for 299 px) fed 224 px: its tuned copy is a
    network for 224 px inputs, registered at that size, extracting at it."""
    from pgvision import DEFAULT_MODEL

    curator = connect(user="curator")
    result = query(curator, "SELECT vision.fine_tune('ft_small', 'ft_labels', 'ft_shapes', "
                            "base_model => %s, folds => 0, options => '{\"epochs\": 1}')",
                   (DEFAULT_MODEL,))[0][0]
    assert result["dims"] == 3840 and result["from_layer"] == "mixed5"
    assert query(curator, "SELECT input_height, input_width, feature_layer, pooling FROM "
                          "vision.models WHERE name = 'ft_small'")[0] == (224, 224, "mixed6", "grid")
    assert features(curator, 3, "ft_small").shape == (3840,)


@pytest.mark.parametrize("call, error, message", [
    ("SELECT vision.fine_tune('ft_x', 'ft_labels', 'ft_shapes', base_model => 'nope')",
     pgerr.UndefinedObject, '"base_model" names no registered model'),
    ("SELECT vision.fine_tune('ft_x', 'ft_labels', 'ft_shapes', blocks => 9)",
     pgerr.InvalidParameterValue, '"blocks" must be between 1 and 4, got 9'),
    ("SELECT vision.fine_tune('ft_x', 'ft_labels', 'ft_shapes', folds => 1)",
     pgerr.InvalidParameterValue, '"folds" must be 0 .no cross-validation. or between 2 and 10'),
    ("SELECT vision.fine_tune('mobilenet_v2', 'ft_labels', 'ft_shapes')",
     pgerr.DuplicateObject, "a model named 'mobilenet_v2' is already registered"),
    ("SELECT vision.fine_tune('ft_x', 'ft_labels', 'ft_shapes', "
     "options => '{\"image_column\": \"photo\"}')",
     pgerr.UndefinedObject, 'cannot read ids and image bytes from public.ft_shapes .*"photo"'),
])
def test_bad_input_is_named_before_any_work(shapes, db, call, error, message):
    with pytest.raises(error, match=f"vision.fine_tune: .*{message}"):
        query(db, call)


def test_labels_without_an_image_are_named(shapes, db):
    query(db, "INSERT INTO ft_labels VALUES (500, 'circles'), (501, 'checks')")
    with pytest.raises(pgerr.UndefinedObject, match=r"2 labelled image\(s\) are not in "
                                                    r"public.ft_shapes \(e.g. ids \[500, 501\]\)"):
        query(db, "SELECT vision.fine_tune('ft_x', 'ft_labels', 'ft_shapes')")


def test_a_cancelled_fine_tune_leaves_nothing(shapes, connect):
    conn = connect()
    before = set(glob.glob("/tmp/pgvision-finetune-*"))
    cancel = threading.Thread(target=lambda: (time.sleep(5), conn.cancel()))
    cancel.start()
    with pytest.raises(pgerr.QueryCanceled):
        query(conn, FINE_TUNE, ("ft_cancelled",))
    cancel.join()
    assert not query(conn, "SELECT 1 FROM vision.model_store WHERE name = 'ft_cancelled'")
    assert set(glob.glob("/tmp/pgvision-finetune-*")) == before
    assert not offload_children()
