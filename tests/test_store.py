"""One copy of a catalog per server: shared snapshot files and indexes that every backend maps
(pgvision.sharedfiles), kept current by a change log, rebuilt from the tables when a file is
missing or damaged, with no size ceiling and a choice of index storage.

Features are generated in the server (random clustered vectors) so thousands of rows cost
seconds; the right answers are computed here with numpy from the same rows.
"""

import hashlib
import os
import subprocess
import time

import numpy as np
import pytest

import psycopg2
from pytest_postgresql.janitor import DatabaseJanitor

import pgvision
from conftest import PORT, SOCKET_DIR, USER, query, store_file

MODEL, DIMS = "mobilenet_v2", 1280


def fill(db, table, first, last, centres=50):
    """Images first..last of ``table`` with features: a non-negative clustered mixture."""
    query(db, f"INSERT INTO {table} SELECT g FROM generate_series({first}, {last}) g "
              "ON CONFLICT DO NOTHING")
    query(db, f"""
        INSERT INTO vision.features (model, source, image_id, feature)
        SELECT '{MODEL}', '{table}'::regclass, g,
               (SELECT array_agg(greatest(0, c.v + (random() - 0.5) * 0.6)::real ORDER BY c.i)
                FROM (SELECT i, (hashint4(i * 7919 + (g % {centres}) * 104729) % 1000) / 1000.0
                      AS v FROM generate_series(1, {DIMS}) i) c
                WHERE g IS NOT NULL)
        FROM generate_series({first}, {last}) g""")


def features(db, table):
    rows = query(db, "SELECT image_id, feature FROM vision.features WHERE source = %s::regclass "
                     "ORDER BY image_id", (table,))
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.float32)


def brute(ids, vectors, q, k, exclude=None):
    d = 1 - vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    order = [i for i in np.lexsort((ids, d)) if ids[i] != exclude][:k]
    return [int(ids[i]) for i in order]


def similar(conn, table, image_id, k=10, **kwargs):
    args = "".join(f", {key} => %({key})s" for key in kwargs)
    return [r[0] for r in query(conn, f"SELECT image_id FROM vision.similar(%(id)s, %(k)s, "
                                      f"'{MODEL}', source => '{table}'{args})",
                                {"id": image_id, "k": k, **kwargs})]


def snapshot_row(db, table):
    rows = query(db, "SELECT generation, sha256, n FROM vision.feature_snapshots "
                     "WHERE source = %s::regclass", (table,))
    return rows[0] if rows else None


def memory(conn):
    """(private, shared-file) resident kB of the connection's backend."""
    pid = query(conn, "SELECT pg_backend_pid()")[0][0]
    fields = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) if value.strip().endswith("kB") else value
    return fields["RssAnon"], fields["RssFile"]


@pytest.fixture
def table(db):
    name = "store_src"
    query(db, f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id bigint PRIMARY KEY)")
    yield name
    query(db, f"DROP TABLE IF EXISTS {name}")


def test_backends_share_one_copy_of_the_matrix(db, table, connect):
    fill(db, table, 1, 20_000)
    matrix_kb = 20_000 * DIMS * 4 // 1024  # 100 MB
    warm = "store_warm"
    query(db, f"DROP TABLE IF EXISTS {warm}; CREATE TABLE {warm} (id bigint PRIMARY KEY)")
    fill(db, warm, 1, 50)
    try:
        similar(db, table, 1)  # the first search writes the shared snapshot
        growth = []
        for _ in range(3):
            conn = connect()
            similar(conn, warm, 1)  # Python, numpy and faiss loaded: measure only the matrix
            before = memory(conn)
            similar(conn, table, 1, approximate=False)
            after = memory(conn)
            growth.append((after[0] - before[0], after[1] - before[1]))
        for private, mapped in growth:
            assert private < 0.1 * matrix_kb, growth
            assert mapped > 0.9 * matrix_kb, growth
    finally:
        query(db, f"DROP TABLE {warm}")


def test_changes_are_seen_by_every_backend_without_a_rebuild(db, table, connect):
    fill(db, table, 1, 3000)
    other = connect()
    similar(other, table, 1)
    generation = snapshot_row(db, table)[0]
    # another session adds, changes and deletes images
    fill(db, table, 3001, 3003)
    query(db, "UPDATE vision.features f SET feature = g.feature FROM vision.features g "
              "WHERE f.source = %(t)s::regclass AND g.source = f.source AND f.image_id = 10 "
              "AND g.image_id = 20", {"t": table})
    query(db, "DELETE FROM vision.features WHERE source = %s::regclass AND image_id = 30",
          (table,))
    ids, vectors = features(db, table)
    for image_id in (10, 20, 3002, 31):
        q = vectors[np.searchsorted(ids, image_id)]
        assert similar(other, table, image_id) == brute(ids, vectors, q, 10, exclude=image_id)
    assert 10 in similar(other, table, 20, 1)
    assert snapshot_row(db, table)[0] == generation  # the same file, the changes beside it
    # past MERGE_ROWS changes, the next search folds them into a new snapshot
    fill(db, table, 3004, 5500)
    ids, vectors = features(db, table)
    assert similar(other, table, 5000) == brute(ids, vectors, vectors[-501], 10, exclude=5000)
    generation2, _, n = snapshot_row(db, table)
    assert generation2 != generation and n == len(ids)
    assert query(db, "SELECT count(*) FROM vision.feature_changes WHERE source = %s::regclass",
                 (table,))[0][0] == 0
    # a bulk load (more than REREAD_FACTOR times that) is read from the table, not held first
    fill(db, table, 5501, 14000)
    ids, vectors = features(db, table)
    assert similar(other, table, 13000) == brute(ids, vectors, vectors[-1001], 10, exclude=13000)
    generation3, _, n = snapshot_row(db, table)
    assert generation3 != generation2 and n == len(ids) == 13999


def test_an_index_and_a_renewed_snapshot_answer_together(db, table, connect):
    fill(db, table, 1, 12_000)
    query(db, f"SELECT vision.create_index('{table}', '{MODEL}', ef_search => 64)")
    index_snap = query(db, "SELECT snap::text FROM vision.indexes WHERE source = %s::regclass",
                       (table,))[0][0]
    fill(db, table, 12_001, 14_100)  # past MERGE_ROWS: the next search renews the snapshot
    ids, vectors = features(db, table)
    other = connect()
    for image_id in (14_000, 5):  # approximate: 9 of the true 10 at least
        got = similar(other, table, image_id, approximate=True)
        assert len(set(got) & set(brute(ids, vectors, vectors[image_id - 1], 10,
                                        exclude=image_id))) >= 9
    assert not any("exact search" in n for n in other.notices)
    assert query(db, "SELECT snap::text FROM vision.feature_snapshots WHERE source = "
                     "%s::regclass", (table,))[0][0] != index_snap
    assert query(db, "SELECT pending_changes FROM vision.index_status WHERE source = "
                     "%s::regclass", (table,))[0][0] == 2100
    assert query(db, f"SELECT vision.refresh_index('{table}', '{MODEL}')")[0][0] == "added 2100"
    got = similar(other, table, 14_000, approximate=True)
    assert len(set(got) & set(brute(ids, vectors, vectors[14_000 - 1], 10, exclude=14_000))) >= 9


def test_missing_or_damaged_file_is_rebuilt_from_the_table(db, table, connect):
    fill(db, table, 1, 500)
    expected = similar(db, table, 7)
    _, sha, _ = snapshot_row(db, table)
    os.unlink(store_file(db, sha, "vec"))
    assert similar(connect(), table, 7) == expected
    _, sha, _ = snapshot_row(db, table)
    path = store_file(db, sha, "vec")
    assert os.path.exists(path)
    with open(path, "r+b") as fh:  # a flipped page in the middle of the vectors
        fh.seek(os.path.getsize(path) // 3)
        fh.write(b"\xff" * 4096)
    assert similar(connect(), table, 7) == expected
    _, sha, _ = snapshot_row(db, table)
    with open(store_file(db, sha, "vec"), "rb") as fh:
        fh.seek(os.path.getsize(path) // 3)
        assert fh.read(4096) != b"\xff" * 4096


def overwrite_row(path, position, vector, dtype="<f4"):
    """Write ``vector`` over row ``position`` of a snapshot file in place, keeping its size
    and modification time (as a stray tool or a bad disk would, not pgvision)."""
    before = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(np.dtype(dtype).itemsize * DIMS * position)
        fh.write(np.asarray(vector, dtype=dtype).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns


def test_a_row_damaged_in_a_mapped_snapshot_is_never_answered(db, table, connect):
    """The damage of #24: one row overwritten with another image's vector, size and mtime
    kept. A session that mapped the file before, and a new one, both answer as the table
    does; the first says so in a WARNING."""
    fill(db, table, 1, 500)
    ids, vectors = features(db, table)
    expected = similar(db, table, 7)
    _, sha, _ = snapshot_row(db, table)
    victim = 300
    assert victim not in expected
    overwrite_row(store_file(db, sha, "vec"), victim - 1, vectors[ids == 7][0])
    del db.notices[:]
    assert similar(db, table, 7) == expected  # this session mapped it before the damage
    assert any("is damaged (the row of image 300 does not match its checksum)" in n
               for n in db.notices), db.notices
    assert similar(connect(), table, 7) == expected  # a new session: re-hashed, rebuilt
    _, sha, _ = snapshot_row(db, table)
    assert os.path.exists(store_file(db, sha, "vec"))


def store_whole_ok(path, sha):
    import hashlib
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest() == sha


def test_maintain_finds_damage_no_search_reaches(db, table):
    fill(db, table, 1, 200)
    similar(db, table, 7)
    _, sha, _ = snapshot_row(db, table)
    overwrite_row(store_file(db, sha, "vec"), 150, np.zeros(DIMS))
    report = query(db, f"CALL vision.maintain('{table}')")[0][0]
    assert report["files"] == {"sound": 0, "damaged": [f"snapshot of model {MODEL} "
                                                      f"({sha[:12]}…)"]}
    assert snapshot_row(db, table)[1] == sha  # rebuilt at once, the same bytes again
    assert store_whole_ok(store_file(db, sha, "vec"), sha)
    ids, vectors = features(db, table)
    assert similar(db, table, 7) == brute(ids, vectors, vectors[ids == 7][0], 10, exclude=7)
    assert query(db, f"CALL vision.maintain('{table}')")[0][0]["files"] == \
        {"sound": 1, "damaged": []}


def test_a_read_only_transaction_searches_from_its_own_copy(db, table, connect):
    fill(db, table, 1, 200)
    ids, vectors = features(db, table)
    reader = connect()
    reader.autocommit = False
    with reader.cursor() as cur:
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute(f"SELECT image_id FROM vision.similar(9, 5, '{MODEL}', source => '{table}')")
        assert [r[0] for r in cur.fetchall()] == brute(ids, vectors, vectors[8], 5, exclude=9)
    reader.rollback()
    assert snapshot_row(db, table) is None  # it could not record one, and did not try to


@pytest.mark.parametrize("storage, pca_dims, method", [
    ("float32", None, "hnsw"), ("float16", None, "hnsw"), ("int8", None, "hnsw"),
    ("float32", 128, "hnsw"), ("float32", None, "ivf"), ("int8", None, "ivf")])
def test_every_index_storage_finds_the_neighbours(db, table, connect, storage, pca_dims,
                                                  method):
    fill(db, table, 1, 2000)
    query(db, f"SELECT vision.create_index('{table}', '{MODEL}', storage => %s, "
              "pca_dims => %s, ef_search => 80, method => %s)", (storage, pca_dims, method))
    ids, vectors = features(db, table)
    other = connect()  # maps the stored index afresh
    hits = 0
    for image_id in range(1, 2001, 100):
        q = vectors[image_id - 1]
        got = query(other, f"SELECT image_id, distance FROM vision.similar(%s, 10, '{MODEL}', "
                           f"source => '{table}', approximate => true)", (image_id,))
        expected = brute(ids, vectors, q, 10, exclude=image_id)
        hits += len({r[0] for r in got} & set(expected))
        for found, distance in got:  # re-ranked: exact distances whatever the storage
            v = vectors[found - 1]
            exact = 1 - v @ q / (np.linalg.norm(v) * np.linalg.norm(q))
            assert distance == pytest.approx(exact, abs=1e-5)
    assert hits / 200 >= 0.9
    status = query(db, "SELECT storage, n, size_bytes, method, lists, probes FROM "
                       "vision.index_status WHERE source = %s::regclass", (table,))[0]
    assert status[:2] == (storage, 2000)
    assert status[3:] == ((method, 45, 8) if method == "ivf" else (method, None, None))
    per_vector = status[2] / 2000
    assert per_vector < {"float32": 1.1, "float16": 0.6, "int8": 0.35}[storage] * 4 * DIMS \
        or pca_dims


def test_a_snapshot_or_index_from_another_server_is_never_trusted(db, table, connect):
    fill(db, table, 1, 300)
    query(db, f"SELECT vision.create_index('{table}', '{MODEL}')")
    generation = snapshot_row(db, table)[0]
    # as a restore into a younger cluster leaves them: transaction ids this server has not
    # reached, which would make its own changes look older than the snapshot
    future = "9000000000:9000000000:"
    for stored in ("feature_snapshots", "indexes"):
        query(db, f"UPDATE vision.{stored} SET snap = %s WHERE source = %s::regclass",
              (future, table))
    query(db, "UPDATE vision.features SET feature = %(f)s WHERE source = %(t)s::regclass "
              "AND image_id = 9", {"f": [1.0] * DIMS, "t": table})
    ids, vectors = features(db, table)
    other = connect()
    assert similar(other, table, 9, approximate=True) == brute(ids, vectors, vectors[8], 10,
                                                               exclude=9)
    assert any("restored from another server" in n for n in other.notices)
    assert snapshot_row(db, table)[0] != generation  # a snapshot of this server's own
    assert query(db, f"SELECT vision.refresh_index('{table}', '{MODEL}')")[0][0] == "rebuilt"


def test_files_of_a_dropped_table_are_removed(db, connect):
    query(db, "DROP TABLE IF EXISTS store_gone; CREATE TABLE store_gone (id bigint PRIMARY KEY)")
    fill(db, "store_gone", 1, 300)
    query(db, f"SELECT vision.create_index('store_gone', '{MODEL}')")
    snap = snapshot_row(db, "store_gone")[1]
    index = query(db, "SELECT sha256 FROM vision.indexes WHERE source = 'store_gone'::regclass")[0][0]
    paths = [store_file(db, snap, "vec"), store_file(db, index, "faiss")]
    assert all(os.path.exists(p) for p in paths)
    query(db, "DROP TABLE store_gone")
    old = time.time() - 3600  # older than the grace an uncommitted build gets
    for path in paths:
        os.utime(path, (old, old))
    query(db, "CREATE TABLE store_gone (id bigint PRIMARY KEY)")
    fill(db, "store_gone", 1, 50)
    query(db, f"SELECT vision.create_index('store_gone', '{MODEL}')")  # collects garbage
    assert not any(os.path.exists(p) for p in paths)
    query(db, "DROP TABLE store_gone")


def test_an_index_above_one_gigabyte(db):
    """The old ceiling was one bytea value (1 GB): 2048-d vectors, 140k of them."""
    name, n = "store_big", 140_000
    query(db, f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id bigint PRIMARY KEY)")
    try:
        query(db, f"INSERT INTO {name} SELECT g FROM generate_series(1, {n}) g")
        # the stored table itself, in single precision as 0.16.0 wrote it: the view would
        # convert each of the 140k rows on its way in, for nothing this test looks at
        query(db, f"""
            INSERT INTO vision.stored_features (model, source, image_id, feature)
            SELECT 'inception_v3', '{name}'::regclass, g,
                   (SELECT array_agg(((hashint4(i + (g % 97) * 4099) % 1000) / 1000.0
                                      + random() * 0.3)::real)
                    FROM generate_series(1, 2048) i WHERE g IS NOT NULL)
            FROM generate_series(1, {n}) g""")
        built = query(db, f"SELECT vision.create_index('{name}', 'inception_v3', m => 8, "
                          "ef_construction => 16)")[0][0]
        size, parts = query(db, "SELECT i.size_bytes, (SELECT count(*) FROM vision.index_chunks c "
                                "WHERE c.source = i.source) FROM vision.indexes i "
                                "WHERE i.source = %s::regclass", (name,))[0]
        assert built == n and size > 1 << 30 and parts == -(-size // (64 << 20))
        hits = query(db, f"SELECT image_id FROM vision.similar(12345, 5, 'inception_v3', "
                         f"source => '{name}', approximate => true)")
        assert len(hits) == 5
    finally:
        query(db, f"DROP TABLE {name}")


def test_pg_dump_and_restore_keep_search_working(fresh_db):
    """The tables are the truth: a restored database searches as the original did, its store
    files written again from the restored rows (another database has its own folder)."""
    conn = psycopg2.connect(host=SOCKET_DIR, port=PORT, user=USER, dbname=fresh_db)
    conn.autocommit = True
    query(conn, "CREATE EXTENSION pgvision CASCADE")
    query(conn, "CREATE TABLE dumped (id bigint PRIMARY KEY)")
    fill(conn, "dumped", 1, 300)
    query(conn, f"SELECT vision.create_index('dumped', '{MODEL}')")
    before = {i: similar(conn, "dumped", i, approximate=True) for i in (3, 150)}
    conn.close()
    bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
    dump = subprocess.run([os.path.join(bindir, "pg_dump"), "-Fc", "-h", SOCKET_DIR, "-p",
                           str(PORT), "-U", USER, fresh_db], capture_output=True, check=True).stdout
    janitor = DatabaseJanitor(user=USER, host=SOCKET_DIR, port=PORT, dbname="pgvision_restored")
    janitor.drop()
    with janitor:
        subprocess.run([os.path.join(bindir, "pg_restore"), "--exit-on-error", "-h", SOCKET_DIR,
                        "-p", str(PORT), "-U", USER, "-d", "pgvision_restored"], input=dump,
                       check=True, capture_output=True)
        restored = psycopg2.connect(host=SOCKET_DIR, port=PORT, user=USER,
                                    dbname="pgvision_restored")
        restored.autocommit = True
        try:
            after = {i: similar(restored, "dumped", i, approximate=True) for i in (3, 150)}
            assert after == before
            assert query(restored, "SELECT count(*) FROM vision.index_chunks")[0][0] >= 1
        finally:
            restored.close()


# --- half precision: the stored truth at half the disk ----------------------------------------

def test_half_precision_rows_round_trip_through_the_view(db, table):
    """real[] written through vision.features is stored in half precision (2 bytes a value)
    and read back as real[] holding what half precision holds; a value beyond its range
    keeps the row in single precision, exactly; UPDATE and DELETE go through the view."""
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(3, 300)).astype(np.float32)  # 256 values or more: half
    vectors[2, 7] = 1e6  # beyond binary16's ±65504
    query(db, f"INSERT INTO {table} VALUES (1), (2), (3)")
    for i, vector in enumerate(vectors, start=1):
        query(db, "INSERT INTO vision.features (model, source, image_id, feature) "
                  "VALUES (%s, %s::regclass, %s, %s::real[])", (MODEL, table, i, vector.tolist()))
    stored = query(db, "SELECT image_id, half IS NOT NULL, pg_column_size(half), "
                       "feature IS NOT NULL FROM vision.stored_features WHERE source = "
                       "%s::regclass ORDER BY 1", (table,))
    assert stored == [(1, True, 600 + 4, False), (2, True, 600 + 4, False), (3, False, None, True)]
    ids, read = features(db, table)
    assert ids.tolist() == [1, 2, 3]
    assert np.array_equal(read[:2], vectors[:2].astype(np.float16).astype(np.float32))
    assert np.array_equal(read[2], vectors[2])  # single precision, exact
    assert query(db, "SELECT images, half_precision, single_precision FROM "
                     "vision.feature_storage WHERE source = %s::regclass", (table,)) == [(3, 2, 1)]
    # an update through the view stores the new values, and stamps the row as newly extracted
    stamp = query(db, "SELECT extracted_at FROM vision.features WHERE source = %s::regclass "
                      "AND image_id = 3", (table,))[0][0]
    query(db, "UPDATE vision.features SET feature = %s::real[] WHERE source = %s::regclass "
              "AND image_id = 3", (vectors[0].tolist(), table))
    assert query(db, "SELECT half IS NOT NULL, feature IS NULL, extracted_at > %s FROM "
                     "vision.stored_features WHERE source = %s::regclass AND image_id = 3",
                 (stamp, table)) == [(True, True, True)]
    assert np.array_equal(features(db, table)[1][2], read[0])
    with pytest.raises(psycopg2.errors.NullValueNotAllowed,
                       match='vision._half: argument "feature" has NULL elements'):
        query(db, "UPDATE vision.features SET feature = '{1,NULL}' WHERE source = "
                  "%s::regclass AND image_id = 3", (table,))
    query(db, "DELETE FROM vision.features WHERE source = %s::regclass AND image_id = 1",
          (table,))
    assert features(db, table)[0].tolist() == [2, 3]
    # a 2048-d vector after a ReLU, mostly zeros, is stored compressed, and read back whole
    sparse = np.maximum(rng.normal(size=2048), 0.8).astype(np.float32) - 0.8
    query(db, "INSERT INTO vision.features (model, source, image_id, feature) "
              "VALUES (%s, %s::regclass, 1, %s::real[])", (MODEL, table, sparse.tolist()))
    assert query(db, "SELECT pg_column_size(half) < 4096 FROM vision.stored_features "
                     "WHERE source = %s::regclass AND image_id = 1", (table,)) == [(True,)]
    back = query(db, "SELECT feature FROM vision.features WHERE source = %s::regclass AND "
                     "image_id = 1", (table,))[0][0]
    assert np.array_equal(np.array(back, np.float32), sparse.astype(np.float16))


def test_an_upgraded_table_answers_the_same_neighbours_while_and_after_it_is_compacted(
        fresh_db, connect):
    """A 0.16.0 table (real[]) answers after ALTER EXTENSION ... UPDATE without a rewrite, and
    while vision.compact_features converts it (half of it converted, as an interrupted run
    leaves it), which then converts only what is left (resumable), reports its progress
    and keeps each row's extraction time; exact answers always equal brute force over the
    stored values, and the neighbours stay the same."""
    conn = psycopg2.connect(host=SOCKET_DIR, port=PORT, user=USER, dbname=fresh_db)
    conn.autocommit = True
    try:
        query(conn, "CREATE EXTENSION pgvision VERSION '0.16.0' CASCADE")
        query(conn, "CREATE TABLE old_catalog (id bigint PRIMARY KEY)")
        fill(conn, "old_catalog", 1, 400)
        probes = [3, 77, 150, 299, 388]
        ids, vectors = features(conn, "old_catalog")
        truth = {p: brute(ids, vectors, vectors[ids == p][0], 10, exclude=p) for p in probes}
        stamps = query(conn, "SELECT image_id, extracted_at FROM vision.features ORDER BY 1")

        query(conn, "ALTER EXTENSION pgvision UPDATE")
        assert query(conn, "SELECT half_precision, single_precision FROM "
                           "vision.feature_storage") == [(0, 400)]
        assert {p: similar(conn, "old_catalog", p) for p in probes} == truth
        # an interrupted conversion: every other row converted
        query(conn, "UPDATE vision.stored_features SET half = vision._half(feature), "
                    "feature = NULL WHERE image_id % 2 = 0")
        ids, mixed = features(conn, "old_catalog")
        assert {p: similar(conn, "old_catalog", p) for p in probes} == {
            p: brute(ids, mixed, mixed[ids == p][0], 10, exclude=p) for p in probes}

        conn.notices.clear()
        with conn.cursor() as cur:
            cur.execute("CALL vision.compact_features('old_catalog', batch_rows => 64)")
            assert cur.fetchone() == (200, 0)  # only what was left
        assert any("200 of 200 single-precision rows of old_catalog done" in n
                   for n in conn.notices), conn.notices
        assert query(conn, "SELECT half_precision, single_precision FROM "
                           "vision.feature_storage") == [(400, 0)]
        assert query(conn, "SELECT image_id, extracted_at FROM vision.features "
                           "ORDER BY 1") == stamps
        ids, halves = features(conn, "old_catalog")
        assert np.array_equal(halves, vectors.astype(np.float16).astype(np.float32))
        answers = {p: similar(conn, "old_catalog", p) for p in probes}
        assert answers == {p: brute(ids, halves, halves[ids == p][0], 10, exclude=p)
                           for p in probes}
        same = np.mean([len(set(answers[p]) & set(truth[p])) / 10 for p in probes])
        assert same >= 0.9, (answers, truth)
        with conn.cursor() as cur:  # nothing left: a second call converts nothing
            cur.execute("CALL vision.compact_features('old_catalog')")
            assert cur.fetchone() == (0, 0)
    finally:
        conn.close()


def test_compact_features_names_bad_arguments_and_wants_the_owner(db, table, connect):
    with pytest.raises(psycopg2.Error, match='vision.compact_features: argument "source"'):
        query(db, "CALL vision.compact_features(NULL)")
    with pytest.raises(psycopg2.Error,
                       match='vision.compact_features: argument "batch_rows" must be'):
        query(db, f"CALL vision.compact_features('{table}', batch_rows => 0)")
    query(db, "DROP ROLE IF EXISTS store_tenant; CREATE ROLE store_tenant LOGIN")
    query(db, f"GRANT SELECT ON {table} TO store_tenant")
    try:
        tenant = connect(user="store_tenant")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="compact_features"):
            query(tenant, f"CALL vision.compact_features('{table}')")
        tenant.close()
    finally:
        query(db, f"REVOKE ALL ON {table} FROM store_tenant; DROP ROLE store_tenant")


def snapshot_bytes_a_value(db, table):
    size, n = query(db, "SELECT size_bytes, n FROM vision.feature_snapshots "
                        "WHERE source = %s::regclass", (table,))[0]
    return (size - 4096) / (n * DIMS)  # less ids, norms, sums and trailer (< 16 bytes a row)


def test_an_indexed_tables_snapshot_is_half_precision_and_answers_the_same(db, table, connect):
    """An index answers an indexed table's searches; its snapshot only re-ranks and answers
    exact ones, in half precision: the values the table stores, in half the bytes."""
    fill(db, table, 1, 600)
    ids, vectors = features(db, table)
    before = {image_id: similar(db, table, image_id) for image_id in (7, 333)}
    assert snapshot_bytes_a_value(db, table) == pytest.approx(4, abs=0.1)  # no index: float32
    query(db, f"SELECT vision.create_index('{table}', '{MODEL}', storage => 'int8')")
    assert snapshot_bytes_a_value(db, table) == pytest.approx(2, abs=0.1)
    other = connect()
    for image_id, expected in before.items():
        assert similar(other, table, image_id, approximate=False) == expected
        assert expected == brute(ids, vectors, vectors[image_id - 1], 10, exclude=image_id)
        got = query(other, f"SELECT image_id, distance FROM vision.similar(%s, 10, '{MODEL}', "
                           f"source => '{table}', approximate => false)", (image_id,))
        q = vectors[image_id - 1]
        for found, distance in got:
            v = vectors[found - 1]
            assert distance == pytest.approx(1 - v @ q / (np.linalg.norm(v) * np.linalg.norm(q)),
                                             abs=1e-5)
    # a row half precision cannot hold keeps the rebuilt snapshot in float32, exactly
    wide = vectors[0].copy()
    wide[5] = 1e6
    query(db, "UPDATE vision.features SET feature = %s::real[] WHERE source = %s::regclass "
              "AND image_id = 1", (wide.tolist(), table))
    query(db, f"SELECT vision.create_index('{table}', '{MODEL}', storage => 'int8')")
    assert snapshot_bytes_a_value(db, table) == pytest.approx(4, abs=0.1)
    ids, vectors = features(db, table)
    assert vectors[0][5] == 1e6
    assert similar(connect(), table, 9, approximate=False) == brute(ids, vectors, vectors[8], 10,
                                                                    exclude=9)


def test_ivf_lists_follow_changes_and_a_session_may_scan_more(db, table, connect):
    """An IVF index answers like an HNSW one: changes since its build are searched exactly,
    refresh_index adds them to its lists, and pgvision.probes trades recall for speed."""
    fill(db, table, 1, 1500)
    query(db, f"SELECT vision.create_index('{table}', '{MODEL}', lists => 30, probes => 2)")
    assert query(db, "SELECT method, lists, probes FROM vision.index_status WHERE source = "
                     "%s::regclass", (table,)) == [("ivf", 30, 2)]
    fill(db, table, 1501, 1600)
    ids, vectors = features(db, table)
    other = connect()
    recall = {}
    for probes in (1, 30):
        query(other, f"SET pgvision.probes = {probes}")
        hits = 0
        for image_id in (1550, 1599, 7, 700, 1400):
            got = similar(other, table, image_id, approximate=True)
            hits += len(set(got) & set(brute(ids, vectors, vectors[image_id - 1], 10,
                                             exclude=image_id)))
        recall[probes] = hits / 50
    assert recall[30] == 1.0 and recall[1] <= recall[30]  # 30 of 30 lists: every row scanned
    assert not any("exact search" in n for n in other.notices)
    assert query(db, f"SELECT vision.refresh_index('{table}', '{MODEL}')")[0][0] == "added 100"
    query(other, "RESET pgvision.probes")
    got = similar(other, table, 1550, approximate=True)
    assert len(set(got) & set(brute(ids, vectors, vectors[1549], 10, exclude=1550))) >= 9
    # 0.17.0 cannot read IVF lists: a downgrade is refused while a table has them
    with pytest.raises(psycopg2.errors.ObjectNotInPrerequisiteState,
                       match="1 table\\(s\\) have IVF indexes"):
        with db.cursor() as cur:
            cur.execute("BEGIN; SET LOCAL pgvision.allow_downgrade = on; "
                        "ALTER EXTENSION pgvision UPDATE TO '0.17.0'")
    query(db, "ROLLBACK")
    assert query(db, "SELECT extversion FROM pg_extension WHERE extname = 'pgvision'") == \
        [(pgvision.__version__,)]


def test_an_indexs_entry_ids_are_one_mapped_file_rewritten_when_damaged(db, table, connect):
    """Every backend maps an index's entry ids from one store file beside the index (8 MB a
    million images no session holds of its own); a damaged copy is written again from
    vision.indexes, and the answers stay the same."""
    fill(db, table, 1, 600)
    query(db, f"SELECT vision.create_index('{table}', '{MODEL}')")
    expected = similar(connect(), table, 7, approximate=True)
    index_sha, stored = query(db, "SELECT sha256, entry_ids FROM vision.indexes "
                                  "WHERE source = %s::regclass", (table,))[0]
    ids_sha = hashlib.sha256(bytes(stored)).hexdigest()
    path = os.path.join(os.path.dirname(store_file(db, index_sha, "faiss")),
                        f"{index_sha}.{ids_sha}.ids")
    with open(path, "rb") as fh:
        assert fh.read() == bytes(stored)
    searching = [connect() for _ in range(2)]
    for conn in searching:
        assert similar(conn, table, 7, approximate=True) == expected
        pid = query(conn, "SELECT pg_backend_pid()")[0][0]
        with open(f"/proc/{pid}/maps") as fh:
            assert path in fh.read()  # mapped, not read into the backend
    with open(path, "r+b") as fh:  # entry 0 now names an image the index does not hold
        fh.write(np.array([10 ** 9], "<i8").tobytes())
    assert similar(connect(), table, 7, approximate=True) == expected
    with open(path, "rb") as fh:
        assert fh.read() == bytes(stored)
    # vision.maintain finds damage before any search maps the file again
    overwrite_row(path, 0, [10 ** 9], dtype="<i8")
    report = query(db, f"CALL vision.maintain('{table}')")[0][0]
    assert report["files"]["damaged"] == [f"index's entry ids of model {MODEL} "
                                          f"({ids_sha[:12]}…)"]
    assert not os.path.exists(path)
    assert similar(connect(), table, 7, approximate=True) == expected
    with open(path, "rb") as fh:
        assert fh.read() == bytes(stored)
    assert query(db, f"CALL vision.maintain('{table}')")[0][0]["files"] == \
        {"sound": 3, "damaged": []}


def test_a_table_gets_its_index_method_by_size(db, table):
    fill(db, table, 1, 300)
    query(db, f"SELECT vision.create_index('{table}', '{MODEL}')")
    assert query(db, "SELECT method FROM vision.index_status WHERE source = %s::regclass",
                 (table,)) == [("hnsw",)]  # below ann.IVF_FROM_ROWS (the doctest covers 1M)
    with pytest.raises(psycopg2.errors.InvalidParameterValue,
                       match='argument "lists" must be at most the 300 stored features'):
        query(db, f"SELECT vision.create_index('{table}', '{MODEL}', lists => 301)")
    with pytest.raises(psycopg2.errors.InvalidParameterValue,
                       match="argument \"pca_dims\" must be NULL for method 'ivf'"):
        query(db, f"SELECT vision.create_index('{table}', '{MODEL}', method => 'ivf', "
                  "pca_dims => 64)")


def test_a_damaged_half_precision_snapshot_is_rebuilt_from_the_compact_rows(db, table, connect):
    """An indexed table's snapshot holds half precision; a row overwritten in it is caught
    by its checksum and the snapshot is written again from the half-precision rows."""
    fill(db, table, 1, 500)
    query(db, f"SELECT vision.create_index('{table}', '{MODEL}', storage => 'int8')")
    assert snapshot_bytes_a_value(db, table) == pytest.approx(2, abs=0.1)
    ids, vectors = features(db, table)
    expected = brute(ids, vectors, vectors[6], 10, exclude=7)
    assert similar(db, table, 7, approximate=False) == expected
    _, sha, _ = snapshot_row(db, table)
    victim = next(i for i in range(400, 500) if i not in expected)
    overwrite_row(store_file(db, sha, "vec"), victim - 1, vectors[6], dtype="<f2")
    del db.notices[:]
    assert similar(db, table, 7, approximate=False) == expected
    assert any(f"the row of image {victim} does not match its checksum" in n
               for n in db.notices), db.notices
    assert similar(connect(), table, 7, approximate=False) == expected
    assert snapshot_bytes_a_value(db, table) == pytest.approx(2, abs=0.1)
