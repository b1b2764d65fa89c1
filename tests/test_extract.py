"""Feature extraction in the real backend: vision.extract_features and vision.extract_table."""

import threading
import time

import numpy as np
import psycopg2
import pytest
from psycopg2 import errors as pgerr

from conftest import image_bytes, query
from pgvision import DEFAULT_MODEL

FAST = "mobilenet_v2"  # 3x cheaper than the default; used where the model doesn't matter


def features(db, data, model=None):
    sql = "SELECT vision.extract_features(%s" + (", %s)" if model else ")")
    params = (psycopg2.Binary(data),) + ((model,) if model else ())
    return query(db, sql, params)[0][0]


def test_default_model_gives_its_grid_pooled_inception_features(db):
    vector = features(db, image_bytes(1, size=(320, 240)))
    assert len(vector) == 5 * 768  # mixed6's 768 channels: the average and four quadrants
    assert all(v >= 0 for v in vector) and max(vector) > 0  # pooled ReLU activations
    assert vector == features(db, image_bytes(1, size=(320, 240)), DEFAULT_MODEL)


def test_inception_v3_keeps_the_features_it_always_meant(db):
    """A new default is a new name: inception_v3 is still mixed10, average-pooled, and
    0.14.0's default still its mixed6 grid fed 299 px."""
    assert query(db, "SELECT feature_layer, pooling, dims FROM vision.models "
                     "WHERE name = 'inception_v3'")[0] == ("mixed10", "avg", 2048)
    assert len(features(db, image_bytes(1), "inception_v3")) == 2048
    assert query(db, "SELECT feature_layer, pooling, input_height, input_width FROM "
                     "vision.models WHERE name = 'inception_v3_mixed6_grid'")[0] == \
        ("mixed6", "grid", 299, 299)


def test_the_default_is_inception_v3_cut_at_mixed6_and_fed_224_px(db, connect):
    """The default's float32 features are Keras's: the network built for 299 px, rebuilt for
    224 px inputs with the same weights, cut at mixed6 and grid-pooled."""
    import keras
    from pgvision import images, pooling
    from pgvision.files import default_model_dir

    assert query(db, "SELECT feature_layer, pooling, input_height, input_width FROM "
                     "vision.models WHERE name = %s", (DEFAULT_MODEL,))[0] == \
        ("mixed6", "grid", 224, 224)
    data = image_bytes(8, size=(400, 300))
    fp32 = connect(options="-c pgvision.precision=fp32")  # read when a backend loads a model
    in_db = np.array(features(fp32, data))
    model = keras.saving.load_model(f"{default_model_dir()}/inception_v3.keras", compile=False,
                                    safe_mode=True)
    cut = keras.Model(model.inputs[0], model.get_layer("mixed6").output)
    rebuilt = keras.models.clone_model(cut, input_tensors=keras.Input((224, 224, 3)))
    rebuilt.set_weights(cut.get_weights())
    batch = images.preprocess(images.to_array(images.decode(data, draft_size=(224, 224)),
                                              (224, 224))[None], "inception")
    maps = np.asarray(rebuilt(batch))
    assert maps.shape == (1, 12, 12, 768)  # 17 x 17 positions at 299 px
    np.testing.assert_allclose(in_db, pooling.pool(maps, "grid")[0], rtol=1e-3, atol=1e-4)


def test_in_db_features_equal_standalone_keras_on_the_same_pipeline(db):
    """The backend really runs the model: same numbers as Keras in this process."""
    import keras
    from pgvision import images
    from pgvision.files import default_model_dir

    data = image_bytes(7, size=(500, 375))
    in_db = np.array(features(db, data, FAST))
    model = keras.saving.load_model(f"{default_model_dir()}/{FAST}.keras", compile=False,
                                    safe_mode=True)
    cut = keras.Model(model.inputs[0],
                      keras.layers.GlobalAveragePooling2D()(model.get_layer("out_relu").output))
    batch = images.preprocess(images.to_array(images.decode(data, draft_size=(224, 224)),
                                              (224, 224))[None], "inception")
    standalone = np.asarray(cut(batch))[0]
    assert in_db.shape == (1280,)
    np.testing.assert_allclose(in_db, standalone, rtol=1e-4, atol=1e-5)


def test_features_are_deterministic_and_distinguish_images(db):
    a1, a2 = features(db, image_bytes(3), FAST), features(db, image_bytes(3), FAST)
    b = features(db, image_bytes(4), FAST)
    assert a1 == a2
    assert not np.allclose(a1, b)


def test_grey_png_and_jpeg_of_the_same_picture_are_close(db):
    jpeg = np.array(features(db, image_bytes(5, fmt="JPEG"), FAST))
    png = np.array(features(db, image_bytes(5, fmt="PNG"), FAST))
    other = np.array(features(db, image_bytes(6, fmt="PNG"), FAST))

    def cos(u, v):
        return u @ v / np.linalg.norm(u) / np.linalg.norm(v)

    assert cos(jpeg, png) > cos(jpeg, other)


@pytest.mark.parametrize("data,error,message", [
    (None, pgerr.NullValueNotAllowed, 'argument "image" must not be NULL'),
    (b"", pgerr.InvalidBinaryRepresentation, 'argument "image" is empty (0 bytes)'),
    (b"GIF89a-nope", pgerr.InvalidBinaryRepresentation,
     'argument "image" is not a decodable image ('),
    ("truncated", pgerr.InvalidBinaryRepresentation,
     'argument "image" is not a decodable image (truncated JPEG)'),
])
def test_bad_images_get_clear_errors(db, data, error, message):
    if data == "truncated":
        whole = image_bytes(8, size=(300, 300))
        data = whole[: len(whole) // 2]
    param = psycopg2.Binary(data) if data is not None else None
    with pytest.raises(error) as info:
        query(db, "SELECT vision.extract_features(%s)", (param,))
    assert f"vision.extract_features: {message}" in str(info.value)


def test_decompression_bombs_are_refused(db):
    query(db, "SET pgvision.max_image_pixels = 10000")
    try:
        with pytest.raises(pgerr.InvalidBinaryRepresentation, match="is too large, over 10000 "
                                                                    "pixels"):
            features(db, image_bytes(1, size=(200, 100)))
    finally:
        query(db, "RESET pgvision.max_image_pixels")


def test_unknown_model_is_named(db):
    with pytest.raises(pgerr.UndefinedObject,
                       match="vision.extract_features: argument \"model\" names no registered "
                             "model: 'nope'"):
        features(db, image_bytes(1), "nope")


def test_works_in_a_query_over_a_table(db, make_table):
    make_table("shop", [(i, image_bytes(i)) for i in range(1, 4)])
    rows = query(db, f"SELECT id, array_length(vision.extract_features(image, '{FAST}'), 1) "
                     "FROM shop ORDER BY id")
    assert rows == [(1, 1280), (2, 1280), (3, 1280)]


# --- extract_table --------------------------------------------------------------------

def stored(db, table, model=FAST):
    return dict(query(db, "SELECT image_id, feature FROM vision.features "
                          "WHERE source = %s::regclass AND model = %s", (table, model)))


def test_extract_table_writes_features_and_records_bad_rows(db, make_table):
    good = {i: image_bytes(i) for i in (1, 2, 4, 6)}
    make_table("catalog", [*good.items(), (3, b"garbage"), (5, None)])
    job_id, processed, failed = query(
        db, "CALL vision.extract_table('catalog', model => %s, batch_size => 3)", (FAST,))[0]
    assert (processed, failed) == (4, 2)
    saved = stored(db, "catalog")
    assert sorted(saved) == [1, 2, 4, 6]
    # batched features equal one-at-a-time ones
    # stored in half precision: within one binary16 step (2**-10 relative)
    np.testing.assert_allclose(saved[4], features(db, good[4], FAST), rtol=2 ** -10, atol=1e-5)
    errors = dict(query(db, "SELECT image_id, error FROM vision.extract_errors "
                            "WHERE source = 'catalog'::regclass"))
    assert errors[3].startswith("vision.extract_table: image 3 is not a decodable image")
    assert errors[5] == "vision.extract_table: image 5 is NULL"
    progress = query(db, "SELECT state, processed, failed, total, percent "
                         "FROM vision.extract_progress WHERE job_id = %s", (job_id,))[0]
    assert progress == ("done", 4, 2, 6, 100)


def test_extract_table_is_incremental_and_retries_only_on_request(db, make_table):
    make_table("inc", [(1, image_bytes(1)), (2, b"bad")])
    assert query(db, f"CALL vision.extract_table('inc', model => '{FAST}')")[0][1:] == (1, 1)
    query(db, "INSERT INTO inc VALUES (3, %s)", (psycopg2.Binary(image_bytes(3)),))
    first = stored(db, "inc")
    # only the new row: the stored one is not recomputed, the bad one not retried
    assert query(db, f"CALL vision.extract_table('inc', model => '{FAST}')")[0][1:] == (1, 0)
    assert stored(db, "inc")[1] == first[1]
    # an unchanged bad row is retried only on request ...
    assert query(db, f"CALL vision.extract_table('inc', model => '{FAST}')")[0][1:] == (0, 0)
    assert query(db, f"CALL vision.extract_table('inc', model => '{FAST}', "
                     "retry_failed => true)")[0][1:] == (0, 1)
    # ... a replaced image is a new image: the next extraction takes it (change tracking)
    query(db, "UPDATE inc SET image = %s WHERE id = 2", (psycopg2.Binary(image_bytes(2)),))
    assert query(db, f"CALL vision.extract_table('inc', model => '{FAST}')")[0][1:] == (1, 0)
    assert sorted(stored(db, "inc")) == [1, 2, 3]
    assert not query(db, "SELECT 1 FROM vision.extract_errors WHERE source = 'inc'::regclass")


def test_extract_table_default_model_and_integer_id_types(db, make_table):
    make_table("small_ids", [(1, image_bytes(11)), (2, image_bytes(12))], id_type="smallint")
    assert query(db, "CALL vision.extract_table('small_ids')")[0][1:] == (2, 0)
    assert {len(v) for v in stored(db, "small_ids", DEFAULT_MODEL).values()} == {3840}


def test_extract_table_commits_batch_by_batch(db, make_table, connect):
    """Another session sees finished batches while the CALL is still running."""
    make_table("batches", [(i, image_bytes(i)) for i in range(1, 13)])
    worker = connect()
    done = threading.Event()

    def run():
        query(worker, f"CALL vision.extract_table('batches', model => '{FAST}', batch_size => 2)")
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    seen_partial = False
    while not done.is_set():
        n = query(db, "SELECT count(*) FROM vision.features WHERE source = 'batches'::regclass")[0][0]
        seen_partial |= 0 < n < 12
        assert n % 2 == 0  # never half a batch
        time.sleep(0.01)
    thread.join()
    assert seen_partial
    assert len(stored(db, "batches")) == 12


def test_cancel_keeps_whole_batches_only_and_a_second_call_resumes(db, make_table, connect):
    make_table("cancelled", [(i, image_bytes(i)) for i in range(1, 41)])
    worker = connect()
    pid = query(worker, "SELECT pg_backend_pid()")[0][0]
    failure = []

    def run():
        try:
            query(worker, f"CALL vision.extract_table('cancelled', model => '{FAST}', "
                          "batch_size => 4)")
        except psycopg2.Error as err:
            failure.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        n = query(db, "SELECT count(*) FROM vision.features WHERE source = 'cancelled'::regclass")[0][0]
        if n >= 8:
            break
        time.sleep(0.01)
    query(db, "SELECT pg_cancel_backend(%s)", (pid,))
    thread.join()
    assert failure and isinstance(failure[0], pgerr.QueryCanceled)
    kept = len(stored(db, "cancelled"))
    state, processed = query(db, "SELECT state, processed FROM vision.extract_progress "
                                 "WHERE source = 'cancelled'::regclass")[0]
    assert 8 <= kept < 40 and kept % 4 == 0
    assert (state, processed) == ("interrupted", kept)
    assert query(worker, f"CALL vision.extract_table('cancelled', model => '{FAST}')")[0][1:] \
        == (40 - kept, 0)
    assert len(stored(db, "cancelled")) == 40


def test_progress_is_reported_without_a_flood_and_always_at_the_end(make_table, connect):
    make_table("chatty", [(i, image_bytes(300 + i)) for i in range(1, 9)])
    conn = connect()
    query(conn, f"CALL vision.extract_table('chatty', model => '{FAST}', batch_size => 1)")
    progress = [n for n in conn.notices if "rows of public.chatty" in n]
    assert 1 <= len(progress) < 8  # eight batches in well under 5 s a report
    assert "8/8 rows of public.chatty (0 skipped)" in progress[-1]


def test_extract_table_inside_a_transaction_block_commits_once(db, make_table, connect):
    make_table("atomic", [(1, image_bytes(1)), (2, image_bytes(2))])
    conn = connect()
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute(f"CALL vision.extract_table('atomic', model => '{FAST}', batch_size => 1)")
        assert "called inside a transaction block" in " ".join(conn.notices)
        assert not stored(db, "atomic")  # not visible before COMMIT
    conn.rollback()
    assert not stored(db, "atomic")


@pytest.mark.parametrize("call,error,message", [
    ("CALL vision.extract_table('no_such_table')", pgerr.UndefinedTable, "no_such_table"),
    ("CALL vision.extract_table('argcheck', id_column => 'nope')", pgerr.UndefinedObject,
     "vision.extract_table: argument \"id_column\": table public.argcheck has no column 'nope'"),
    ("CALL vision.extract_table('argcheck', id_column => 'label')", pgerr.DatatypeMismatch,
     "argument \"id_column\": column 'label' of public.argcheck is text, expected smallint or integer "
     "or bigint"),
    ("CALL vision.extract_table('argcheck', image_column => 'label')", pgerr.DatatypeMismatch,
     "column 'label' of public.argcheck is text, expected bytea"),
    ("CALL vision.extract_table('argcheck', batch_size => 0)", pgerr.InvalidParameterValue,
     'argument "batch_size" must be between 1 and 1024, got 0'),
    ("CALL vision.extract_table('argcheck', model => 'nope')", pgerr.UndefinedObject,
     "argument \"model\" names no registered model: 'nope'"),
    ("CALL vision.extract_table('argcheck', retry_failed => NULL)", pgerr.NullValueNotAllowed,
     'argument "retry_failed" must not be NULL'),
])
def test_extract_table_validates_arguments_before_work(db, make_table, call, error, message):
    make_table("argcheck", [(1, image_bytes(1))])
    query(db, "ALTER TABLE argcheck ADD COLUMN label text")
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        query(db, call)
    assert not stored(db, "argcheck", DEFAULT_MODEL)


def test_a_plan_that_would_go_parallel_still_works(db, make_table):
    """PL/Python queries in subtransactions, which parallel mode forbids: the functions are
    PARALLEL UNSAFE, so the planner keeps them out of parallel plans."""
    make_table("big_scan", [(i, image_bytes(i)) for i in range(1, 5)])
    settings = ("max_parallel_workers_per_gather = 2", "parallel_setup_cost = 0",
                "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0")
    for setting in settings:
        query(db, f"SET {setting}")
    try:
        query(db, "ALTER TABLE big_scan SET (parallel_workers = 2)")
        assert any("Gather" in r[0] for r in query(db, "EXPLAIN SELECT id FROM big_scan"))
        rows = query(db, f"SELECT id, vision.extract_features(image, '{FAST}') FROM big_scan")
        assert sorted(r[0] for r in rows) == [1, 2, 3, 4]
        assert all(len(r[1]) == 1280 for r in rows)
    finally:
        query(db, "RESET ALL")


def test_two_sessions_split_a_table_by_parts(db, make_table, connect):
    make_table("split", [(i, image_bytes(i)) for i in range(1, 13)])
    results = {}

    def run(part):
        results[part] = query(connect(), f"CALL vision.extract_table('split', model => '{FAST}', "
                                         f"batch_size => 2, parts => 2, part => {part})")[0]

    threads = [threading.Thread(target=run, args=(p,)) for p in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results[0][1:] == (6, 0) and results[1][1:] == (6, 0)
    assert sorted(stored(db, "split")) == list(range(1, 13))
    with pytest.raises(pgerr.InvalidParameterValue, match='"part" must be between 0 and 1, got 2'):
        query(db, "CALL vision.extract_table('split', parts => 2, part => 2)")


def test_single_precision_rows_are_written_as_array_text_that_round_trips_float32_exactly(db):
    from pgvision.halfprecision import array_text

    vector = np.random.default_rng(5).standard_normal(1280).astype(np.float32) * 1e-3
    vector[:4] = [1e-40, 3.4e38, -0.0, 1.0]  # a subnormal, near-max, signed zero, exact
    stored = query(db, "SELECT %s::float4[]", (array_text(vector),))[0][0]
    assert np.array_equal(np.array(stored, dtype=np.float32), vector)
