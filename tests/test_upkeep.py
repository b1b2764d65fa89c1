"""A live catalog: a changed, deleted or truncated image takes what pgvision derived from it
along at once; vision.maintain brings a table back up to date in one call; several sessions
share one table's extraction; pg_cron runs vision.maintain on a schedule."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg2
import pytest
from psycopg2 import errors as pgerr

from conftest import PORT, ROOT, SOCKET_DIR, image_bytes, query

FAST = "mobilenet_v2"
IDS = list(range(1, 9))
LABELS = {i: "even" if i % 2 == 0 else "odd" for i in IDS}


def derived(db, table, image_id):
    """What pgvision keeps about one image, table by table (neighbour lists naming it too)."""
    out = {}
    for kept in ("features", "extract_errors", "predictions", "map_2d", "clusters"):
        out[kept] = query(db, f"SELECT count(*) FROM vision.{kept} WHERE source = %s::regclass "
                              "AND image_id = %s", (table, image_id))[0][0]
    out["neighbours"] = query(db, "SELECT count(*) FROM vision.neighbours WHERE source = "
                                  "%s::regclass AND (image_id = %s OR %s = ANY(neighbour_ids))",
                              (table, image_id, image_id))[0][0]
    return out


@pytest.fixture
def catalog(db, make_table):
    """A table with features, a classifier that labelled it, cached neighbours, clusters, a
    2-D map and an index: everything vision.maintain keeps current."""
    table = make_table("live_products", [(i, image_bytes(400 + i)) for i in IDS])
    query(db, "DROP TABLE IF EXISTS live_labels")
    query(db, "CREATE TABLE live_labels (image_id bigint, label text)")
    query(db, "INSERT INTO live_labels SELECT * FROM unnest(%s::bigint[], %s::text[])",
          (list(LABELS), list(LABELS.values())))
    query(db, f"CALL vision.extract_table('{table}', model => '{FAST}')")
    query(db, f"SELECT vision.train_classifier('live_kind', 'live_labels', '{table}', '{FAST}', "
              "'knn', '{\"k\": 1}', folds => 2)")
    query(db, "SELECT vision.classify_table('live_kind')")
    query(db, f"SELECT vision.refresh_neighbours('{table}', '{FAST}', 3)")
    query(db, f"SELECT vision.cluster('{FAST}', 2, source => '{table}')")
    query(db, f"SELECT vision.embed_2d('{FAST}', 'pca', '{table}')")
    query(db, f"SELECT vision.create_index('{table}', '{FAST}')")
    yield table
    query(db, "DELETE FROM vision.classifiers WHERE name = 'live_kind'")
    query(db, "DROP TABLE live_labels")
    query(db, "DELETE FROM vision.indexes WHERE source = %s::regclass", (table,))


def similar(db, table, image_id, k=3):
    return [i for i, _, _ in query(db, f"SELECT * FROM vision.similar(%s, %s, '{FAST}', "
                                       f"source => '{table}')", (image_id, k))]


def test_a_replaced_image_is_forgotten_at_once_and_maintained_from_its_new_bytes(db, catalog):
    before = derived(db, catalog, 1)
    assert {kept for kept, n in before.items() if n} == set(before) - {"extract_errors"}
    query(db, f"UPDATE {catalog} SET image = (SELECT image FROM {catalog} WHERE id = 2) "
              "WHERE id = 1")
    assert derived(db, catalog, 1) == dict.fromkeys(before, 0)
    with pytest.raises(pgerr.UndefinedObject, match=r"image 1 of public.live_products has no "
                                                    r"features"):
        similar(db, catalog, 1)
    assert 1 not in similar(db, catalog, 2, k=7)
    report = query(db, f"CALL vision.maintain('{catalog}')")[0][0]
    assert report["extracted"] == {FAST: 1} and report["failed"] == {FAST: 0}
    assert report["labelled"] == {"live_kind": 1}
    # 2 of its 9 entries out of date (the old vector dead, the new one to add): past a fifth
    assert report["indexes"] == {FAST: "rebuilt"} and report["skipped"] == []
    assert report["neighbours"][FAST] >= 1
    # its features are now those of its new bytes: image 2's
    nearest = query(db, f"SELECT image_id, distance FROM vision.similar(1, 1, '{FAST}', "
                        f"source => '{catalog}')")
    assert nearest[0][0] == 2 and nearest[0][1] == pytest.approx(0, abs=1e-5)
    assert query(db, "SELECT label FROM vision.predictions WHERE classifier = 'live_kind' AND "
                     "image_id = 1") == [(LABELS[2],)]
    assert query(db, "SELECT neighbour_ids[1] FROM vision.neighbours WHERE source = "
                     "%s::regclass AND image_id = 1", (catalog,)) == [(2,)]


def test_an_update_that_keeps_the_image_keeps_its_features(db, catalog):
    query(db, f"ALTER TABLE {catalog} ADD COLUMN price int")
    stamp = query(db, "SELECT extracted_at FROM vision.features WHERE source = %s::regclass "
                      "AND image_id = 3", (catalog,))
    query(db, f"UPDATE {catalog} SET price = 10")
    query(db, f"UPDATE {catalog} SET image = image WHERE id = 3")  # the same bytes
    assert query(db, "SELECT extracted_at FROM vision.features WHERE source = %s::regclass "
                     "AND image_id = 3", (catalog,)) == stamp


def test_a_deleted_image_is_never_returned(db, catalog):
    query(db, "SELECT vision.record_vote('live_user', 4, true, %s, %s)", (FAST, catalog))
    query(db, f"DELETE FROM {catalog} WHERE id = 3")
    assert derived(db, catalog, 3) == dict.fromkeys(derived(db, catalog, 3), 0)
    for image_id in (1, 2, 4):
        assert 3 not in similar(db, catalog, image_id, k=7)
    assert 3 not in {i for _, i, _, _ in query(db, f"SELECT * FROM vision.similar_many("
                                                   f"ARRAY[1, 2]::bigint[], 7, '{FAST}', "
                                                   f"source => '{catalog}')")}
    assert 3 not in {i for i, _, _ in query(db, f"SELECT * FROM vision.recommend('live_user', 7, "
                                                f"model => '{FAST}', source => '{catalog}')")}
    assert 3 not in {i for _, i, _ in query(db, f"SELECT * FROM vision.bandit_next('live_user', "
                                                f"'{FAST}', '{catalog}')")}
    report = query(db, f"CALL vision.maintain('{catalog}')")[0][0]
    assert report["extracted"] == {FAST: 0} and report["indexes"] == {FAST: "removed 1"}
    assert query(db, "SELECT n FROM vision.index_status WHERE source = %s::regclass",
                 (catalog,)) == [(len(IDS) - 1,)]
    assert 3 not in similar(db, catalog, 1, k=7)
    query(db, "DELETE FROM vision.votes WHERE user_id = 'live_user'")


def test_truncate_forgets_the_whole_table(db, catalog):
    query(db, f"TRUNCATE {catalog}")
    for image_id in IDS:
        assert not any(derived(db, catalog, image_id).values())
    with pytest.raises(pgerr.UndefinedObject, match=r"has no stored features in any table|"
                                                    r"image 1 of public.live_products has no"):
        similar(db, catalog, 1)


def test_new_rows_are_extracted_and_indexed_in_place_by_maintain(db, catalog):
    query(db, f"INSERT INTO {catalog} VALUES (9, %s), (10, 'not an image')",
          (psycopg2.Binary(image_bytes(409)),))
    report = query(db, f"CALL vision.maintain('{catalog}')")[0][0]
    assert report["extracted"] == {FAST: 1} and report["failed"] == {FAST: 1}
    assert report["indexes"] == {FAST: "added 1"} and report["labelled"] == {"live_kind": 1}
    assert query(db, f"CALL vision.maintain('{catalog}')")[0][0]["extracted"] == {FAST: 0}


def test_two_sessions_share_one_table(db, connect, make_table):
    table = make_table("live_shared", [(i, image_bytes(500 + i)) for i in range(1, 25)])
    sessions = [connect(), connect()]
    for conn in sessions:  # load the model first, so both really run at once
        query(conn, f"SELECT vision.extract_features(%s, '{FAST}')",
              (psycopg2.Binary(image_bytes(1)),))
    results, errors = [], []

    def run(conn):
        try:
            results.append(query(conn, f"CALL vision.extract_table('{table}', model => '{FAST}', "
                                       "batch_size => 2)")[0])
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(conn,)) for conn in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    processed = [p for _, p, _ in results]
    assert sum(processed) == 24 and min(processed) > 0, processed
    assert query(db, "SELECT count(*) FROM vision.features WHERE source = %s::regclass",
                 (table,)) == [(24,)]
    jobs = query(db, "SELECT processed, total, state FROM vision.extract_jobs WHERE source = "
                     "%s::regclass ORDER BY job_id", (table,))
    assert sorted(p for p, _, _ in jobs) == sorted(processed)
    assert all(p == t and s == "done" for p, t, s in jobs)


def test_maintain_names_what_it_may_not_do(db, catalog):
    query(db, "DROP ROLE IF EXISTS live_reader")
    query(db, "CREATE ROLE live_reader LOGIN")
    query(db, f"GRANT SELECT ON {catalog}, live_labels TO live_reader")
    try:
        query(db, f"DELETE FROM {catalog} WHERE id = 5")
        reader = psycopg2.connect(host=SOCKET_DIR, port=PORT, user="live_reader",
                                  dbname=db.info.dbname)
        reader.autocommit = True
        try:
            report = query(reader, f"CALL vision.maintain('{catalog}')")[0][0]
        finally:
            reader.close()
        assert report["indexes"] == {}
        assert any("belongs to role postgres" in s for s in report["skipped"])
        with pytest.raises(pgerr.InsufficientPrivilege, match=r"vision.maintain: permission "
                                                               r"denied for table"):
            nobody = psycopg2.connect(host=SOCKET_DIR, port=PORT, user="live_reader",
                                      dbname=db.info.dbname)
            try:
                query(db, f"REVOKE SELECT ON {catalog} FROM live_reader")
                query(nobody, f"CALL vision.maintain('{catalog}')")
            finally:
                nobody.close()
    finally:
        query(db, "DROP OWNED BY live_reader CASCADE")
        query(db, "DROP ROLE live_reader")


@pytest.mark.parametrize("every,schedule", [("1 minute", "* * * * *"),
                                            ("15 minutes", "*/15 * * * *"),
                                            ("6 hours", "0 */6 * * *"), ("1 day", "0 0 * * *")])
def test_intervals_become_cron_schedules(every, schedule):
    from pgvision.upkeep import cron_schedule

    seconds = {"1 minute": 60, "15 minutes": 900, "6 hours": 21600, "1 day": 86400}[every]
    assert cron_schedule("vision.keep_current", seconds) == schedule


@pytest.mark.parametrize("seconds", [30, 7 * 60, 5 * 3600, 2 * 86400])
def test_intervals_cron_cannot_keep_are_refused(seconds):
    from pgvision.errors import PgvisionError
    from pgvision.upkeep import cron_schedule

    with pytest.raises(PgvisionError, match=r'vision.keep_current: argument "every" must be a '
                                            r"number of minutes that divides an hour"):
        cron_schedule("vision.keep_current", seconds)


def test_keep_current_runs_maintain_through_pg_cron(server):
    """In the database pg_cron serves (cron.database_name, the local cluster's `pgvision`): an
    inserted, an updated and a deleted row are reflected within the schedule, no call made."""
    conn = psycopg2.connect(host=SOCKET_DIR, port=PORT, user="postgres", dbname="postgres")
    cron_db = query(conn, "SHOW cron.database_name")[0][0]
    conn.close()
    conn = psycopg2.connect(host=SOCKET_DIR, port=PORT, user="postgres", dbname=cron_db)
    conn.autocommit = True
    table = "live_scheduled"
    try:
        # as `make migrate` installs it there (the demo's database), so `make demo` still can
        subprocess.run([sys.executable, "-m", "alembic", "-c",
                        os.path.join(ROOT, "migrations", "alembic.ini"), "-x",
                        f"dsn=postgresql://postgres@/{cron_db}?host={SOCKET_DIR}&port={PORT}",
                        "upgrade", "head"], check=True, capture_output=True)
        query(conn, "CREATE EXTENSION IF NOT EXISTS pg_cron")
        query(conn, f"DROP TABLE IF EXISTS {table}")
        query(conn, f"CREATE TABLE {table} (id bigint PRIMARY KEY, image bytea)")
        for i in (1, 2, 3):
            query(conn, f"INSERT INTO {table} VALUES (%s, %s)", (i, psycopg2.Binary(image_bytes(600 + i))))
        query(conn, f"CALL vision.extract_table('{table}', model => '{FAST}')")
        # pg_cron keeps its jobs in schema cron, which a plain role cannot use by default
        query(conn, "DROP ROLE IF EXISTS live_scheduler")
        query(conn, "CREATE ROLE live_scheduler")
        query(conn, f"GRANT SELECT ON {table} TO live_scheduler")
        query(conn, "SET ROLE live_scheduler")
        try:
            with pytest.raises(pgerr.InsufficientPrivilege,
                               match=r"vision.keep_current: role live_scheduler may not schedule "
                                     r"jobs with pg_cron: it lacks USAGE on schema cron"):
                query(conn, f"SELECT vision.keep_current('{table}')")
        finally:
            query(conn, "RESET ROLE")
        query(conn, f"REVOKE ALL ON {table} FROM live_scheduler")
        query(conn, "DROP ROLE live_scheduler")
        job = query(conn, f"SELECT vision.keep_current('{table}')")[0][0]
        assert query(conn, "SELECT schedule, command FROM cron.job WHERE jobid = %s", (job,)) == [
            ("* * * * *", "CALL vision.maintain('public.live_scheduled')")]
        query(conn, f"INSERT INTO {table} VALUES (4, %s)", (psycopg2.Binary(image_bytes(604)),))
        query(conn, f"UPDATE {table} SET image = %s WHERE id = 1",
              (psycopg2.Binary(image_bytes(603)),))
        query(conn, f"DELETE FROM {table} WHERE id = 2")
        deadline = time.monotonic() + 150
        state = None
        while time.monotonic() < deadline:
            state = query(conn, "SELECT array_agg(image_id ORDER BY image_id) FROM vision.features "
                                f"WHERE source = '{table}'::regclass")[0][0]
            if state == [1, 3, 4]:
                break
            time.sleep(3)
        runs = query(conn, "SELECT status, return_message FROM cron.job_run_details WHERE "
                           "jobid = %s ORDER BY runid", (job,))
        assert state == [1, 3, 4], (state, runs)
        one, three = [np.array(f) for (f,) in query(
            conn, "SELECT feature FROM vision.features WHERE source = %s::regclass AND "
                  "image_id IN (1, 3) ORDER BY image_id", (table,))]
        np.testing.assert_allclose(one, three, atol=1e-5)  # row 1 now holds row 3's bytes
        assert query(conn, f"SELECT vision.stop_keeping_current('{table}')") == [(True,)]
        assert query(conn, "SELECT count(*) FROM cron.job WHERE jobid = %s", (job,)) == [(0,)]
    finally:
        query(conn, f"SELECT vision.stop_keeping_current('{table}')")
        query(conn, f"DROP TABLE IF EXISTS {table}")
        conn.close()


def test_keep_current_explains_a_database_without_pg_cron(db, make_table):
    table = make_table("live_no_cron", [(1, image_bytes(1))])
    with pytest.raises(pgerr.UndefinedObject, match=r"vision.keep_current: pg_cron is not "
                                                    r"installed in this database"):
        query(db, f"SELECT vision.keep_current('{table}')")
