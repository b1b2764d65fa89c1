"""Scale-out on one node: extraction in Postgres parallel workers through model handles,
the function form of extract_table, and the cap on model-holding backends."""

import json
import os

import numpy as np
import psycopg2
import pytest
from psycopg2 import errors as pgerr

from conftest import image_bytes, query

FAST = "mobilenet_v2"
PARALLEL = ("max_parallel_workers_per_gather = 2", "parallel_leader_participation = off",
            "pgvision.intra_op_threads = 1")


@pytest.fixture
def sparse_table(db, make_table):
    """Image bytes are TOASTed, so ~150 rows share a heap block and a parallel scan (which
    hands out blocks) would give one worker everything: fillfactor spreads the rows."""
    rows = [(i, image_bytes(100 + i)) for i in range(1, 13)] + [(13, b"\xff\xd8\xff\xe0 cut")]
    name = make_table("par_images", [])
    query(db, f"ALTER TABLE {name} SET (fillfactor = 10, parallel_workers = 2)")
    for image_id, data in rows:
        query(db, f"INSERT INTO {name} VALUES (%s, %s)", (image_id, psycopg2.Binary(data)))
    query(db, f"ANALYZE {name}")
    return name


def test_workers_extract_the_same_features_as_the_serial_function(db, connect, sparse_table):
    conn = connect()
    for setting in PARALLEL:
        query(conn, f"SET {setting}")
    # The handle travels in a setting, which Postgres copies into every worker.
    query(conn, "SELECT set_config('pgvision.handle', vision.model_handle(%s), false)", (FAST,))
    plan = "\n".join(r[0] for r in query(conn, f"""
        EXPLAIN (ANALYZE, VERBOSE, COSTS OFF)
        SELECT id, vision.extract_features_with(image, current_setting('pgvision.handle'),
                                                on_error => 'null')
        FROM {sparse_table}"""))
    assert "Workers Launched: 2" in plan
    worker_rows = [int(line.split("rows=")[1].split()[0]) for line in plan.splitlines()
                   if line.strip().startswith("Worker ") and "rows=" in line]
    assert len(worker_rows) == 2 and all(n > 0 for n in worker_rows), plan

    query(conn, f"""CREATE TEMP TABLE par_out AS SELECT id, vision.extract_features_with(
                      image, current_setting('pgvision.handle'), on_error => 'null') AS feature
                    FROM {sparse_table}""")
    parallel = dict(query(conn, "SELECT id, feature FROM par_out"))
    assert parallel.pop(13) is None  # the cut JPEG: NULL, not a failed query
    serial = dict(query(db, f"SELECT id, vision.extract_features(image, %s) FROM {sparse_table} "
                            "WHERE id <> 13", (FAST,)))
    assert sorted(parallel) == sorted(serial) == list(range(1, 13))
    for image_id, vector in serial.items():
        np.testing.assert_allclose(parallel[image_id], vector, rtol=1e-4, atol=1e-5)


def test_a_bad_image_fails_the_query_by_default_with_a_clear_error(db, sparse_table):
    handle = query(db, "SELECT vision.model_handle(%s)", (FAST,))[0][0]
    with pytest.raises(pgerr.InvalidBinaryRepresentation,
                       match=r'vision.extract_features_with: argument "image" is not a '
                             r"decodable image"):
        query(db, f"SELECT vision.extract_features_with(image, %s) FROM {sparse_table} "
                  "WHERE id = 13", (handle,))


def signed_by_the_server(db, handle):
    """A handle signed with the server's key, as vision.model_handle signs (the test runs as
    root and may read the data directory; a database role cannot)."""
    from pgvision import handles

    data_directory = query(db, "SHOW data_directory")[0][0]
    here = os.getcwd()
    os.chdir(data_directory)
    try:
        return handles.sign(handle)
    finally:
        os.chdir(here)


@pytest.mark.parametrize("change, signed, error, message", [
    (None, False, pgerr.InvalidParameterValue, r'argument "model_handle" is not a handle made '
                                               r"by vision.model_handle\(\): 'junk'"),
    ({"max_image_pixels": 10 ** 12}, False, pgerr.InvalidParameterValue,
     r'argument "model_handle" is not a handle made by vision.model_handle\(\)'),
    ({"version": "0.0.1"}, True, pgerr.ObjectInUse,
     r"was made by pgvision 0.0.1, this server runs"),
    ({"sha256": "0" * 64}, True, pgerr.UndefinedObject, r"not in this server's model cache"),
    ({"role": 1, "role_name": "someone_else"}, True, pgerr.InsufficientPrivilege,
     r'argument "model_handle" was made by role someone_else and carries its limits; this '
     r"query runs as another role"),
])
def test_bad_handles_are_refused(db, change, signed, error, message):
    handle = query(db, "SELECT vision.model_handle(%s)", (FAST,))[0][0]
    if change is None:
        handle = "junk"
    elif signed:
        handle = signed_by_the_server(db, {**json.loads(handle)["handle"], **change})
    else:  # edited by hand: its signature no longer matches
        handle = json.dumps({**json.loads(handle), "handle": {**json.loads(handle)["handle"],
                                                              **change}})
    with pytest.raises(error, match=message):
        query(db, "SELECT vision.extract_features_with(%s, %s)",
              (psycopg2.Binary(image_bytes(1)), handle))


def test_a_handle_of_a_dropped_model_is_refused(db, connect):
    """Workers cannot query the registry; a drop (even one not yet committed) refuses the
    handles of the model, and vision.model_handle lifts that after a rollback."""
    handle = query(db, "SELECT vision.model_handle(%s)", (FAST,))[0][0]
    image = psycopg2.Binary(image_bytes(1))
    conn = connect()
    conn.autocommit = False
    query(conn, "SELECT vision.drop_model(%s, cascade => true)", (FAST,))
    with pytest.raises(pgerr.UndefinedObject, match=rf'argument "model_handle": model '
                       rf"'{FAST}' was dropped or replaced after the handle was made"):
        query(db, "SELECT vision.extract_features_with(%s, %s)", (image, handle))
    conn.rollback()
    assert query(db, "SELECT vision.model_handle(%s)", (FAST,))[0][0]
    assert len(query(db, "SELECT vision.extract_features_with(%s, %s)",
                     (image, handle))[0][0]) == 1280


def test_handle_names_an_unknown_model_clearly(db):
    with pytest.raises(pgerr.UndefinedObject,
                       match=r"vision.model_handle: argument \"model\" names no registered model"):
        query(db, "SELECT vision.model_handle('nope')")


def test_model_backends_are_capped_with_a_clear_error(db, connect):
    query(db, "SELECT vision.extract_features(%s, %s)", (psycopg2.Binary(image_bytes(1)), FAST))
    holders = query(db, "SELECT slot, pid, rss_mb FROM vision.model_backends()")
    mine = query(db, "SELECT pg_backend_pid()")[0][0]
    slot = [s for s, pid, _ in holders if pid == mine][0]
    assert all(rss > 100 for _, _, rss in holders)  # a loaded TensorFlow model is large

    # Slots 0..slot are taken (this session's backend holds the last of them, and holds it
    # for its life), so a cap of slot + 1 leaves none for a new backend.
    limit = slot + 1
    conn = connect()
    query(conn, f"SET pgvision.max_model_backends = {limit}")
    with pytest.raises(pgerr.InsufficientResources,
                       match=rf"vision.extract_features: {limit} backends already hold a "
                             rf"model \(pgvision.max_model_backends = {limit}\)"):
        query(conn, "SELECT vision.extract_features(%s, %s)",
              (psycopg2.Binary(image_bytes(1)), FAST))
    handle = query(conn, "SELECT vision.model_handle(%s)", (FAST,))[0][0]
    with pytest.raises(pgerr.InsufficientResources, match="vision.extract_features_with: "):
        query(conn, "SELECT vision.extract_features_with(%s, %s)",
              (psycopg2.Binary(image_bytes(1)), handle))
    assert query(conn, "SELECT count(*) FROM vision.loaded_models()")[0][0] == 0


def test_extract_rows_takes_a_bounded_slice_in_the_callers_transaction(db, make_table, connect):
    table = make_table("rows_images", [(i, image_bytes(200 + i)) for i in range(1, 8)])
    conn = connect()
    conn.autocommit = False
    got = query(conn, f"SELECT processed, failed, remaining FROM vision.extract_rows("
                      f"'{table}', model => '{FAST}', batch_size => 2, max_rows => 5)")
    assert got == [(5, 0, 2)]
    conn.rollback()  # nothing of it stays
    assert query(db, f"SELECT count(*) FROM vision.features WHERE source = '{table}'::regclass")\
        == [(0,)]
    first = query(db, f"SELECT processed, remaining FROM vision.extract_rows('{table}', "
                      f"model => '{FAST}', max_rows => 5)")
    second = query(db, f"SELECT processed, remaining FROM vision.extract_rows('{table}', "
                       f"model => '{FAST}', max_rows => 5)")
    assert (first, second) == ([(5, 2)], [(2, 0)])
    ids = query(db, f"SELECT image_id FROM vision.features WHERE source = '{table}'::regclass "
                    "ORDER BY 1")
    assert [i for (i,) in ids] == list(range(1, 8))
    with pytest.raises(pgerr.InvalidParameterValue,
                       match=r'vision.extract_rows: argument "max_rows" must be between 1 and'):
        query(db, f"SELECT * FROM vision.extract_rows('{table}', max_rows => 0)")


def test_a_backend_that_loads_tensorflow_turns_jit_off(connect):
    """Postgres' LLVM JIT and TensorFlow's LLVM crash a process holding both."""
    conn = connect()
    query(conn, "SET jit = on")
    query(conn, "SELECT vision.extract_features(%s, %s)", (psycopg2.Binary(image_bytes(1)), FAST))
    assert query(conn, "SHOW jit") == [("off",)]
    query(conn, "SET jit_above_cost = 0")
    assert query(conn, "SELECT sum(g) FROM generate_series(1, 1000) g") == [(500500,)]


def test_the_extension_turns_jit_off_for_its_database(fresh_db, server):
    from conftest import dsn

    with psycopg2.connect(dsn(fresh_db)) as conn:
        conn.autocommit = True
        query(conn, "CREATE EXTENSION pgvision CASCADE")
    with psycopg2.connect(dsn(fresh_db)) as conn:
        assert query(conn, "SHOW jit") == [("off",)]
