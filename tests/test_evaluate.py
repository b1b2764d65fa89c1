"""Choosing features by measurement against the real server: the new poolings in extraction,
vision.evaluate_features on a small labelled table (figures equal the same measures run on
vision.extract_features' vectors), vision.maintain moving a table to another model, and bad
inputs as named errors."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import psycopg2
import pytest
from PIL import Image, ImageOps
from psycopg2 import errors as pgerr
from skimage import data as photos

from conftest import dsn, image_bytes, keras_bytes, query, register
import pgvision
from pgvision import evaluation, pooling

FAST = "mobilenet_v2"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # scikit-image's, real photographs
COPIES = 4


def copy_of(data, j):
    """A near-duplicate of an image: cropped, mirrored on odd copies, re-encoded."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    img = img.crop((3 * j, 2 * j, w - 3 * j, h - 2 * j)).resize((w, h))
    if j % 2:
        img = ImageOps.mirror(img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90 - 5 * j)
    return buf.getvalue()


@pytest.fixture
def labelled(db, make_table):
    """16 images: 4 originals in 4 copies each; label = the original's parity, group = it."""
    rows, labels = [], []
    for original, name in enumerate(PHOTOS):
        buf = io.BytesIO()
        Image.fromarray(getattr(photos, name)()).convert("RGB").resize((160, 120)).save(
            buf, "JPEG")
        data = buf.getvalue()
        for j in range(COPIES):
            image_id = original * COPIES + j + 1
            rows.append((image_id, copy_of(data, j)))
            labels.append((image_id, "even" if original % 2 == 0 else "odd", original))
    table = make_table("eval_images", rows)
    query(db, "DROP TABLE IF EXISTS eval_labels")
    query(db, "CREATE TABLE eval_labels (image_id bigint, label text, copy_of int)")
    query(db, "INSERT INTO eval_labels SELECT * FROM unnest(%s::bigint[], %s::text[], %s::int[])",
          ([r[0] for r in labels], [r[1] for r in labels], [r[2] for r in labels]))
    yield table, rows, labels
    query(db, "DROP TABLE IF EXISTS eval_labels")


@pytest.fixture
def tiny_models(db, tmp_path):
    data = keras_bytes(tmp_path, filters=4)
    register(db, "tiny_map", data, feature_layer="conv", pooling="none")
    register(db, "tiny_grid", data, feature_layer="conv", pooling="grid")
    register(db, "tiny_gem", data, feature_layer="conv", pooling="gem")
    yield
    query(db, "DELETE FROM vision.features WHERE model LIKE 'tiny\\_%'")
    query(db, "DELETE FROM vision.model_store WHERE name LIKE 'tiny\\_%'")


def features(db, model, images):
    return np.array([query(db, "SELECT vision.extract_features(%s, %s)",
                           (psycopg2.Binary(data), model))[0][0] for data in images],
                    dtype=np.float32)


def test_grid_and_gem_pooling_extract_what_the_reference_pools(db, tiny_models):
    images = [image_bytes(s) for s in (1, 2, 3)]
    maps = features(db, "tiny_map", images).reshape(3, 30, 30, 4)  # conv: 32 - 2 = 30
    assert query(db, "SELECT dims FROM vision.models WHERE name = 'tiny_grid'")[0][0] == \
        pooling.output_dims(4, "grid") == 20
    np.testing.assert_allclose(features(db, "tiny_grid", images), pooling.pool(maps, "grid"),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(features(db, "tiny_gem", images), pooling.pool(maps, "gem"),
                               rtol=1e-4, atol=1e-6)


def test_register_refuses_an_unknown_pooling(db, tmp_path):
    with pytest.raises(pgerr.InvalidParameterValue, match='argument "pooling".*sum'):
        register(db, "tiny_sum", keras_bytes(tmp_path), pooling="sum")


def test_evaluate_features_measures_what_the_same_protocol_measures_on_extracted_vectors(
        db, labelled, tiny_models):
    table, rows, labels = labelled
    got = query(db, """
        SELECT model, dims, images, precision_at_10, map_at_10, accuracy,
               near_duplicate_recall_at_2, ms_per_image
        FROM vision.evaluate_features('eval_labels', %s, ARRAY['tiny_grid', %s],
                                      options => '{"group_column": "copy_of"}')
        ORDER BY model""", (table, FAST))
    assert [r[0] for r in got] == sorted(["tiny_grid", FAST])
    y = np.array([label for _, label, _ in labels])
    groups = np.array([g for _, _, g in labels])
    for model, dims, images, precision, average, accuracy, recall, ms in got:
        want = evaluation.evaluate(features(db, model, [data for _, data in rows]), y, groups)
        assert images == len(rows) and dims == (20 if model == "tiny_grid" else 1280)
        assert precision == pytest.approx(want["precision_at_10"])
        assert average == pytest.approx(want["map_at_10"])
        assert accuracy == pytest.approx(want["accuracy"])
        assert recall == pytest.approx(want["near_duplicate_recall_at_2"])
        assert ms > 0
    # the CNN finds each photo's copies, and tells the two classes apart
    network = next(r for r in got if r[0] == FAST)
    assert network[6] > 0.9 and network[5] > 0.5, network
    assert query(db, "SELECT count(*) FROM vision.features WHERE source = %s::regclass",
                 (table,))[0][0] == 0  # nothing stored


def test_the_command_compares_models_with_the_same_figures(db, db_name, labelled):
    """`pgvision models compare` prints vision.evaluate_features' rows, best precision first."""
    table, _, _ = labelled
    done = subprocess.run(
        [os.path.join(sys.prefix, "bin", "pgvision"), "models", "compare", "eval_labels",
         table, "--model", FAST, "--model", "inception_v3", "--group-column", "copy_of",
         "--json"], capture_output=True, text=True, timeout=600,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PG")},
             "DATABASE_URL": dsn(db_name)})
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    want = query(db, """
        SELECT model, precision_at_10, accuracy, near_duplicate_recall_at_2
        FROM vision.evaluate_features('eval_labels', %s, ARRAY[%s, 'inception_v3'],
                                      options => '{"group_column": "copy_of"}')""",
                 (table, FAST))
    assert sorted(r["model"] for r in printed) == sorted(r[0] for r in want)
    assert [r["precision@10"] for r in printed] == sorted(
        (r["precision@10"] for r in printed), reverse=True)
    for row in printed:
        _, precision, accuracy, recall = next(w for w in want if w[0] == row["model"])
        assert row["precision@10"] == pytest.approx(precision, abs=5e-4)
        assert row["accuracy"] == pytest.approx(accuracy, abs=5e-4)
        assert row["near-dup recall@2"] == pytest.approx(recall, abs=5e-4)


def test_without_a_group_column_there_is_no_near_duplicate_figure(db, labelled):
    table = labelled[0]
    row = query(db, "SELECT near_duplicate_recall_at_2, accuracy FROM "
                    "vision.evaluate_features('eval_labels', %s, ARRAY[%s])", (table, FAST))[0]
    assert row[0] is None and 0 <= row[1] <= 1


@pytest.mark.parametrize("call,error,message", [
    ("vision.evaluate_features('eval_labels', 'eval_images', ARRAY['no_such_model'])",
     pgerr.UndefinedObject, 'argument "models" names no registered model'),
    ("vision.evaluate_features('eval_labels', 'eval_images', ARRAY[NULL::text])",
     pgerr.InvalidParameterValue, 'argument "models" must name at least one model'),
    ("vision.evaluate_features('eval_labels', 'eval_images', ARRAY['mobilenet_v2'], "
     "options => '{\"label_column\": \"kind\"}')",
     pgerr.UndefinedObject, 'cannot read image ids and labels'),
    ("vision.evaluate_features('eval_labels', 'eval_images', ARRAY['mobilenet_v2'], "
     "options => '{\"colour\": 1}')", pgerr.InvalidParameterValue, r"unknown key\(s\) \['colour'\]"),
    ("vision.evaluate_features('eval_labels', 'eval_images', max_images => 5)",
     pgerr.InvalidParameterValue, 'argument "max_images"'),
    ("vision.evaluate_features(NULL, 'eval_images')",
     pgerr.NullValueNotAllowed, 'argument "labels" must not be NULL'),
    ("vision.evaluate_features('eval_labels', 'eval_images', image_column => 'id')",
     pgerr.DatatypeMismatch, 'argument "image_column"'),
])
def test_bad_arguments_are_named(db, labelled, call, error, message):
    with pytest.raises(error, match=f"vision.evaluate_features: .*{message}"):
        query(db, f"SELECT * FROM {call}")


def test_features_that_would_not_fit_the_memory_limit_are_refused_before_work(db, labelled,
                                                                              tmp_path):
    """16 images of a 270,000-d model (pooling "none") hold 17 MB: over a 1 MB limit, refused
    before any image is read."""
    table = labelled[0]
    register(db, "tiny_wide", keras_bytes(tmp_path, filters=300), feature_layer="conv",
             pooling="none")
    try:
        query(db, "SET pgvision.max_batch_memory_mb = 1")
        with pytest.raises(pgerr.ProgramLimitExceeded,
                           match=r"vision.evaluate_features: features in memory, MB \(16 images "
                           r"x 270000 dims x 4 bytes\) = 17 is over pgvision.max_batch_memory_mb"):
            query(db, "SELECT * FROM vision.evaluate_features('eval_labels', %s, "
                      "ARRAY['tiny_wide'])", (table,))
    finally:
        query(db, "RESET pgvision.max_batch_memory_mb")
        query(db, "DELETE FROM vision.model_store WHERE name = 'tiny_wide'")


def test_one_class_nulls_and_unknown_images_are_refused(db, labelled):
    table = labelled[0]
    query(db, "UPDATE eval_labels SET label = 'even'")
    with pytest.raises(pgerr.InvalidParameterValue, match="at least 2 classes"):
        query(db, "SELECT * FROM vision.evaluate_features('eval_labels', %s, ARRAY[%s])",
              (table, FAST))
    query(db, "UPDATE eval_labels SET label = NULL WHERE image_id = 3")
    with pytest.raises(pgerr.NullValueNotAllowed, match="NULL id or label"):
        query(db, "SELECT * FROM vision.evaluate_features('eval_labels', %s, ARRAY[%s])",
              (table, FAST))
    query(db, "UPDATE eval_labels SET label = CASE WHEN image_id % 2 = 0 THEN 'a' ELSE 'b' END")
    query(db, "INSERT INTO eval_labels VALUES (999, 'a', 9)")
    with pytest.raises(psycopg2.Error, match=r"1 labelled image\(s\) are not readable.*\[999\]"):
        query(db, "SELECT * FROM vision.evaluate_features('eval_labels', %s, ARRAY[%s])",
              (table, FAST))


def test_a_role_that_may_not_read_the_table_is_refused(db, labelled, connect):
    table = labelled[0]
    query(db, "DROP ROLE IF EXISTS eval_outsider")
    query(db, "CREATE ROLE eval_outsider LOGIN")
    query(db, "GRANT SELECT ON eval_labels TO eval_outsider")
    try:
        conn = connect(user="eval_outsider")
        with pytest.raises(pgerr.InsufficientPrivilege, match=f"permission denied for table "
                           f"public.{table}: evaluating features"):
            query(conn, "SELECT * FROM vision.evaluate_features('eval_labels', %s, ARRAY[%s])",
                  (table, FAST))
        conn.close()
    finally:
        query(db, "REVOKE ALL ON eval_labels FROM eval_outsider")
        query(db, "DROP ROLE eval_outsider")


def test_maintain_moves_a_table_to_another_model_and_keeps_it_current(db, labelled,
                                                                       tiny_models):
    table, rows, _ = labelled
    query(db, f"CALL vision.extract_table('{table}', model => '{FAST}')")
    before = query(db, "SELECT image_id, feature FROM vision.features WHERE source = "
                       "%s::regclass AND model = %s ORDER BY 1", (table, FAST))
    report = query(db, "CALL vision.maintain(%s, add_model => 'tiny_grid')", (table,))[0][0]
    assert report["extracted"] == {FAST: 0, "tiny_grid": len(rows)}
    moved = query(db, "SELECT image_id, feature FROM vision.features WHERE source = "
                      "%s::regclass AND model = 'tiny_grid' ORDER BY 1", (table,))
    np.testing.assert_allclose(np.array([f for _, f in moved]),
                               features(db, "tiny_grid", [data for _, data in rows]),
                               rtol=2 ** -10, atol=1e-6)  # stored in half precision
    assert query(db, "SELECT image_id, feature FROM vision.features WHERE source = "
                     "%s::regclass AND model = %s ORDER BY 1", (table, FAST)) == before
    # from now on the plain maintain keeps the added model current too
    query(db, f"INSERT INTO {table} VALUES (100, %s)", (psycopg2.Binary(image_bytes(990)),))
    report = query(db, "CALL vision.maintain(%s)", (table,))[0][0]
    assert report["extracted"] == {FAST: 1, "tiny_grid": 1}


def test_a_table_with_another_model_only_is_told_how_to_move(db, labelled):
    """After the upgrade, the default model's search on a table extracted with another model
    names the image and the model, and the hint says how to move the table."""
    table = labelled[0]
    query(db, f"CALL vision.extract_table('{table}', model => '{FAST}')")
    with pytest.raises(pgerr.UndefinedObject) as info:
        query(db, "SELECT * FROM vision.similar(1, source => %s)", (table,))
    assert (f"vision.similar: argument \"image_id\": image 1 of public.{table} has no "
            f"features for model '{pgvision.DEFAULT_MODEL}'") in str(info.value)
    assert "vision.maintain(source, add_model => ...)" in info.value.diag.message_hint


def test_maintain_names_a_bad_added_model(db, labelled):
    table = labelled[0]
    with pytest.raises(pgerr.UndefinedObject, match='vision.maintain: argument "add_model" '
                       "names no registered model: 'nope'"):
        query(db, "CALL vision.maintain(%s, add_model => 'nope')", (table,))
    with pytest.raises(pgerr.UndefinedObject, match="was never extracted"):
        query(db, "CALL vision.maintain(%s, add_model => %s)", (table, FAST))


def test_row_level_security_holds_for_the_evaluated_images(db, labelled, connect):
    """A role that sees only some rows measures only what it may see: a labelled image its
    policy hides is named as unreadable, never extracted."""
    table = labelled[0]
    query(db, "DROP ROLE IF EXISTS eval_tenant")
    query(db, "CREATE ROLE eval_tenant LOGIN")
    query(db, f"GRANT SELECT ON {table}, eval_labels TO eval_tenant")
    query(db, f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    query(db, f"CREATE POLICY low_ids ON {table} TO eval_tenant USING (id <= 8)")
    try:
        conn = connect(user="eval_tenant")
        with pytest.raises(psycopg2.Error, match=r"8 labelled image\(s\) are not readable "
                           r"images .*\[9, 10, 11, 12, 13\]"):
            query(conn, "SELECT * FROM vision.evaluate_features('eval_labels', %s, ARRAY[%s])",
                  (table, FAST))
        query(db, "CREATE TABLE eval_visible AS SELECT * FROM eval_labels WHERE image_id <= 8")
        query(db, "GRANT SELECT ON eval_visible TO eval_tenant")
        images = query(conn, "SELECT images FROM vision.evaluate_features('eval_visible', %s, "
                             "ARRAY[%s])", (table, FAST))[0][0]
        assert images == 8
    finally:
        query(db, "DROP TABLE IF EXISTS eval_visible")
        query(db, f"DROP POLICY low_ids ON {table}")
        query(db, f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        query(db, f"REVOKE ALL ON {table}, eval_labels FROM eval_tenant")
        query(db, "DROP ROLE eval_tenant")
