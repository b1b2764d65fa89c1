"""Visual search against the real server: exact k-NN, filters, HNSW index, cached neighbours.

Most tests store synthetic clustered 1280-d vectors as mobilenet_v2 features directly (fast,
and the right answer is computable here with numpy); one searches by real image bytes.
"""

import os

import numpy as np
import psycopg2
import pytest
from psycopg2 import errors as pgerr

from conftest import image_bytes, query, store_file

MODEL, DIMS = "mobilenet_v2", 1280


def clustered(n, seed=0, centres=20):
    """Non-negative Gaussian mixture, like pooled ReLU features."""
    rng = np.random.default_rng(seed)
    c = rng.gamma(0.5, 1.0, (centres, DIMS))
    x = c[rng.integers(0, centres, n)] + rng.normal(0, 0.3, (n, DIMS))
    return np.maximum(x, 0).astype(np.float32)


@pytest.fixture
def catalog(db):
    """Table `catalog_src` with 300 stored synthetic features (ids 1..300)."""
    vectors = clustered(300)
    query(db, "DROP TABLE IF EXISTS catalog_src; CREATE TABLE catalog_src (id bigint PRIMARY KEY)")
    store(db, "catalog_src", range(1, 301), vectors)
    yield vectors
    query(db, "DELETE FROM vision.features WHERE source = 'catalog_src'::regclass; "
              "DELETE FROM vision.indexes WHERE source = 'catalog_src'::regclass; "
              "DELETE FROM vision.neighbours WHERE source = 'catalog_src'::regclass; "
              "DROP TABLE catalog_src")


def store(db, table, ids, vectors):
    with db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} VALUES (%s) ON CONFLICT DO NOTHING", [(int(i),) for i in ids])
        cur.executemany("INSERT INTO vision.features (model, source, image_id, feature) "
                        "VALUES (%s, %s::regclass, %s, %s)",
                        [(MODEL, table, int(i), v.tolist()) for i, v in zip(ids, vectors)])


def brute(vectors, ids, q, metric, k, exclude=None):
    if metric == "cosine":
        d = 1 - vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    elif metric == "l2":
        d = np.linalg.norm(vectors - q, axis=1)
    else:
        d = -(vectors @ q)
    order = [i for i in np.lexsort((ids, d)) if ids[i] != exclude][:k]
    return [int(ids[i]) for i in order], d[order]


def similar(db, image_id, k=10, **kwargs):
    args = "".join(f", {key} => %({key})s" for key in kwargs)
    return query(db, f"SELECT image_id, distance, rank FROM vision.similar(%(id)s, %(k)s, "
                     f"model => '{MODEL}'{args})", {"id": image_id, "k": k, **kwargs})


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_exact_search_equals_brute_force(db, catalog, metric):
    ids = np.arange(1, 301)
    for image_id in (1, 150, 300):
        rows = similar(db, image_id, 10, metric=metric)
        expected, dist = brute(catalog, ids, catalog[image_id - 1], metric, 10, exclude=image_id)
        assert [r[0] for r in rows] == expected
        assert [r[2] for r in rows] == list(range(1, 11))
        np.testing.assert_allclose([r[1] for r in rows], dist, rtol=1e-4, atol=1e-4)


def test_ties_break_by_id_and_k_larger_than_the_table(db, catalog):
    query(db, "INSERT INTO catalog_src VALUES (1001), (1002)")
    with db.cursor() as cur:
        for image_id in (1002, 1001):  # exact copies of image 5
            cur.execute("INSERT INTO vision.features (model, source, image_id, feature) "
                        "SELECT model, source, %s, feature FROM vision.features "
                        "WHERE model = %s AND source = 'catalog_src'::regclass AND image_id = 5",
                        (image_id, MODEL))
    rows = similar(db, 5, 2)
    assert [r[0] for r in rows] == [1001, 1002] and rows[0][1] == pytest.approx(0, abs=1e-6)
    assert len(similar(db, 5, 5000)) == 301  # everything but the query itself


def test_candidates_restrict_the_search(db, catalog):
    allowed = list(range(100, 201))
    rows = similar(db, 1, 5, candidates=allowed)
    expected, _ = brute(catalog[99:200], np.arange(100, 201), catalog[0], "cosine", 5)
    assert [r[0] for r in rows] == expected
    # the same filter by SQL composition, e.g. on a category column of the source table
    query(db, "ALTER TABLE catalog_src ADD COLUMN category text")
    query(db, "UPDATE catalog_src SET category = CASE WHEN id BETWEEN 100 AND 200 THEN 'boots' END")
    composed = query(db, f"""SELECT s.image_id FROM vision.similar(1, 5, model => '{MODEL}',
        candidates => ARRAY(SELECT id FROM catalog_src WHERE category = 'boots')) s""")
    assert [r[0] for r in composed] == expected


def test_a_new_feature_is_found_by_a_backend_that_cached_the_matrix(db, catalog):
    similar(db, 7)
    query(db, "INSERT INTO catalog_src VALUES (5000)")
    store(db, "catalog_src", [5000], catalog[6:7] * 2.0)  # same direction as image 7
    assert similar(db, 7, 1)[0][0] == 5000


@pytest.mark.parametrize("call,error,message", [
    ("vision.similar(1, 0, model => 'mobilenet_v2')", pgerr.InvalidParameterValue,
     'argument "k" must be between 1 and 10000, got 0'),
    ("vision.similar(1, 1000000, model => 'mobilenet_v2')", pgerr.InvalidParameterValue,
     'argument "k" must be between 1 and 10000, got 1000000'),
    ("vision.similar(1, metric => 'hamming', model => 'mobilenet_v2')",
     pgerr.InvalidParameterValue, "argument \"metric\" must be one of 'cosine', 'l2', 'ip'"),
    ("vision.similar(999999, model => 'mobilenet_v2', source => 'catalog_src')",
     pgerr.UndefinedObject, 'argument "image_id": image 999999 of public.catalog_src has no features '
                            "for model 'mobilenet_v2'"),
    ("vision.similar(1, model => 'nope')", pgerr.UndefinedObject,
     "argument \"model\" names no registered model: 'nope'"),
    ("vision.similar(NULL, model => 'mobilenet_v2')", pgerr.NullValueNotAllowed,
     'argument "image_id" must not be NULL'),
    ("vision.similar_to_vector(array_fill(0.5::real, ARRAY[3]), model => 'mobilenet_v2')",
     pgerr.InvalidParameterValue, 'vision.similar_to_vector: argument "feature" must be 1280 '
                                  "values (the dimension of model 'mobilenet_v2'), got '3 values'"),
    ("vision.similar_to_vector(array_fill(NULL::real, ARRAY[1280]), model => 'mobilenet_v2')",
     pgerr.InvalidParameterValue, 'argument "feature" must be an array without NULLs'),
    ("vision.similar_to_vector(NULL, model => 'mobilenet_v2')", pgerr.NullValueNotAllowed,
     'vision.similar_to_vector: argument "feature" must not be NULL'),
    ("vision.similar_to_vector(array_fill(0.5::real, ARRAY[1280]), 0, 'mobilenet_v2')",
     pgerr.InvalidParameterValue, 'argument "k" must be between 1 and 10000, got 0'),
])
def test_bad_arguments_are_named(db, catalog, call, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        query(db, f"SELECT * FROM {call}")


def test_similar_to_vector_equals_similar_with_the_stored_vector(db, catalog):
    by_vector = query(db, f"""
        SELECT s.image_id, s.distance FROM vision.features f,
          vision.similar_to_vector(f.feature, 6, '{MODEL}', source => 'catalog_src') s
        WHERE f.model = '{MODEL}' AND f.source = 'catalog_src'::regclass AND f.image_id = 7""")
    assert by_vector[0] == (7, pytest.approx(0, abs=1e-5))  # itself, not excluded
    assert [(i, pytest.approx(d, abs=1e-6)) for i, d, _ in similar(db, 7, 5)] == by_vector[1:]


def test_several_sources_need_the_source_argument(db, catalog, make_table):
    make_table("other_src", [(1, image_bytes(1))])
    query(db, f"CALL vision.extract_table('other_src', model => '{MODEL}')")
    with pytest.raises(pgerr.InvalidParameterValue, match=r'argument "source" is needed: model '
                                                          r"'mobilenet_v2' has features in "
                                                          r"several tables \(public.catalog_src, "
                                                          r"public.other_src"):
        similar(db, 1)
    assert len(similar(db, 1, 3, source="catalog_src")) == 3


def test_similar_to_image_extracts_the_query_on_the_fly(db, make_table):
    make_table("photos_src", [(i, image_bytes(i)) for i in range(1, 9)])
    query(db, f"CALL vision.extract_table('photos_src', model => '{MODEL}')")
    rows = query(db, "SELECT image_id, distance FROM vision.similar_to_image(%s, 3, "
                     f"model => '{MODEL}', source => 'photos_src')",
                 (psycopg2.Binary(image_bytes(4)),))
    assert rows[0][0] == 4 and rows[0][1] == pytest.approx(0, abs=1e-5)
    with pytest.raises(pgerr.InvalidBinaryRepresentation,
                       match='vision.similar_to_image: argument "image" is not a decodable'):
        query(db, f"SELECT * FROM vision.similar_to_image('junk', model => '{MODEL}', "
                  "source => 'photos_src')")


def recall(db, catalog, image_ids, **kwargs):
    ids = np.arange(1, len(catalog) + 1)
    hits = 0
    for image_id in image_ids:
        got = [r[0] for r in similar(db, image_id, 10, **kwargs)]
        expected, _ = brute(catalog, ids, catalog[image_id - 1], "cosine", 10, exclude=image_id)
        hits += len(set(got) & set(expected))
    return hits / (10 * len(image_ids))


def index_status(db):
    return query(db, "SELECT n, stale, size_bytes > 0, dead_entries, pending_changes "
                     "FROM vision.index_status WHERE source = 'catalog_src'::regclass")[0]


def test_index_answers_changes_at_once_and_refresh_folds_them_in(db, catalog, connect):
    assert query(db, f"SELECT vision.create_index('catalog_src', '{MODEL}', ef_search => 64)")[0][0] == 300
    assert index_status(db) == (300, False, True, 0, 0)
    assert recall(db, catalog, range(1, 301, 15), approximate=True) >= 0.95
    # a new image, a changed one and a deleted one are answered by the next search, without
    # a refresh: the index skips what changed and the changes are searched exactly
    query(db, "INSERT INTO catalog_src VALUES (301)")
    store(db, "catalog_src", [301], catalog[9:10] * 3.0)
    query(db, "UPDATE vision.features SET feature = %s WHERE source = 'catalog_src'::regclass "
              "AND image_id = 20", [(catalog[49] * 2).tolist()])
    db.notices.clear()
    assert similar(db, 10, 1, approximate=True)[0][0] == 301
    assert similar(db, 50, 1, approximate=True)[0][0] == 20
    assert not any("exact search" in n for n in db.notices)
    assert index_status(db) == (300, True, True, 0, 2)
    query(db, "DELETE FROM vision.features WHERE source = 'catalog_src'::regclass AND image_id = 301")
    assert similar(db, 10, 1, approximate=True)[0][0] != 301
    # refresh adds image 20's new vector and marks its old entry dead, without a rebuild
    assert query(db, f"SELECT vision.refresh_index('catalog_src', '{MODEL}')")[0][0] == \
        "added 1, removed 1"
    assert index_status(db) == (300, False, True, 1, 0)
    assert similar(db, 50, 1, approximate=True)[0][0] == 20
    assert query(db, f"SELECT vision.refresh_index('catalog_src', '{MODEL}')")[0][0] == "fresh"
    # another backend maps the same files and answers the same
    other = connect()
    for image_id in (20, 50, 123):
        assert similar(other, image_id, approximate=True) == similar(db, image_id, approximate=True)


def test_old_vector_of_a_changed_image_is_never_answered(db, catalog):
    query(db, f"SELECT vision.create_index('catalog_src', '{MODEL}')")
    # image 7 moves far away: a search near its old vector must not find it there
    query(db, "UPDATE vision.features SET feature = %s WHERE source = 'catalog_src'::regclass "
              "AND image_id = 7", [(-catalog[7 - 1]).tolist()])
    near_old = query(db, "SELECT image_id FROM vision.similar_to_vector(%s, 5, "
                         f"'{MODEL}', source => 'catalog_src', approximate => true)",
                     [catalog[7 - 1].tolist()])
    assert 7 not in [r[0] for r in near_old]


def test_pca_index_reranks_exactly(db, catalog):
    query(db, f"SELECT vision.create_index('catalog_src', '{MODEL}', pca_dims => 64)")
    assert recall(db, catalog, range(1, 301, 20), approximate=True) >= 0.9
    exact = similar(db, 3, 5, approximate=False)
    approx = similar(db, 3, 5, approximate=True)
    shared = {r[0]: r[1] for r in exact}
    for image_id, distance, _ in approx:  # distances are exact, not PCA-space
        if image_id in shared:
            assert distance == pytest.approx(shared[image_id], abs=1e-5)


def test_corrupted_index_warns_and_searches_exactly(db, catalog, connect):
    query(db, f"SELECT vision.create_index('catalog_src', '{MODEL}')")
    sha = query(db, "SELECT sha256 FROM vision.indexes WHERE source = 'catalog_src'::regclass")[0][0]
    # the file goes and the stored chunks are damaged: nothing to map, nothing to restore
    os.unlink(store_file(db, sha, "faiss"))
    query(db, "UPDATE vision.index_chunks SET data = overlay(data placing '\\xdeadbeef' "
              "from 100) WHERE source = 'catalog_src'::regclass")
    other = connect()
    rows = similar(other, 42, 5, approximate=True)
    assert any("is corrupted (checksum mismatch); using exact search" in n for n in other.notices)
    assert [r[0] for r in rows] == [r[0] for r in similar(db, 42, 5, approximate=False)]
    query(db, "UPDATE vision.indexes SET dims = 99 WHERE source = 'catalog_src'::regclass")
    with pytest.raises(pgerr.DatatypeMismatch, match="the index of model 'mobilenet_v2' has 99 "
                                                     "dimensions but the model has 1280"):
        similar(db, 42, 5, approximate=True)


def test_create_index_validates(db, catalog):
    with pytest.raises(pgerr.InvalidParameterValue, match='"m" must be between 2 and 128'):
        query(db, f"SELECT vision.create_index('catalog_src', '{MODEL}', m => 1)")
    with pytest.raises(pgerr.InvalidParameterValue, match='"pca_dims" must be between 2 and 1280'):
        query(db, f"SELECT vision.create_index('catalog_src', '{MODEL}', pca_dims => 5000)")
    with pytest.raises(pgerr.UndefinedObject, match="has no index on this table"):
        query(db, f"SELECT vision.refresh_index('catalog_src', '{MODEL}')")


def neighbours(db):
    return {r[0]: list(r[1]) for r in query(
        db, "SELECT image_id, neighbour_ids FROM vision.neighbours "
            "WHERE source = 'catalog_src'::regclass")}


def test_cached_neighbours_are_exact_and_refresh_incrementally(db, catalog):
    assert query(db, f"SELECT vision.refresh_neighbours('catalog_src', '{MODEL}', 5)")[0][0] == 300
    cached = neighbours(db)
    ids = np.arange(1, 301)
    for image_id in (1, 77, 300):
        assert cached[image_id] == brute(catalog, ids, catalog[image_id - 1], "cosine", 5,
                                         exclude=image_id)[0]
    assert query(db, f"SELECT vision.refresh_neighbours('catalog_src', '{MODEL}', 5)")[0][0] == 0
    # a new near-copy of image 12 enters 12's list (and only lists it belongs to change)
    query(db, "INSERT INTO catalog_src VALUES (400)")
    store(db, "catalog_src", [400], catalog[11:12] * 1.01)
    written = query(db, f"SELECT vision.refresh_neighbours('catalog_src', '{MODEL}', 5)")[0][0]
    after = neighbours(db)
    assert after[12][0] == 400 and 400 in after and 1 <= written < 300
    # deleting it sends every list that held it back to a full search
    query(db, "DELETE FROM vision.features WHERE source = 'catalog_src'::regclass "
              "AND image_id = 400")
    query(db, f"SELECT vision.refresh_neighbours('catalog_src', '{MODEL}', 5)")
    final = neighbours(db)
    assert 400 not in final and all(400 not in v for v in final.values())
    assert final[12] == cached[12]


def test_dropping_a_table_forgets_its_features(db):
    query(db, "CREATE TABLE doomed_src (id bigint PRIMARY KEY)")
    store(db, "doomed_src", [1, 2], clustered(2, seed=5))
    query(db, f"SELECT vision.refresh_neighbours('doomed_src', '{MODEL}', 1)")
    oid = query(db, "SELECT 'doomed_src'::regclass::oid")[0][0]
    query(db, "DROP TABLE doomed_src")
    for table in ("features", "neighbours", "feature_versions"):
        assert not query(db, f"SELECT 1 FROM vision.{table} WHERE source::oid = %s", (oid,))


def test_similar_many_equals_one_call_per_image(db, catalog):
    for approximate in (False, True):
        if approximate:
            query(db, f"SELECT vision.create_index('catalog_src', '{MODEL}')")
        rows = query(db, "SELECT query_id, image_id, distance, rank FROM vision.similar_many("
                         f"ARRAY[5, 77, 5], 4, '{MODEL}', approximate => %s)", (approximate,))
        assert [r[0] for r in rows] == [5] * 4 + [77] * 4 + [5] * 4
        for query_id in (5, 77):
            single = similar(db, query_id, 4, approximate=approximate)
            assert [r[1:] for r in rows if r[0] == query_id][:4] == single
    with pytest.raises(pgerr.UndefinedObject, match=r'argument "image_ids": image 424242 of '
                                                    r"public.catalog_src has no features for "
                                                    r"model 'mobilenet_v2'"):
        query(db, f"SELECT * FROM vision.similar_many(ARRAY[1, 424242], model => '{MODEL}')")
    with pytest.raises(pgerr.InvalidParameterValue, match="an array without NULLs"):
        query(db, f"SELECT * FROM vision.similar_many(ARRAY[1, NULL], model => '{MODEL}')")
