"""Search logic without a server: the SQL-facing functions over stored features that a fake
``plpy`` serves (tests/fakeplpy.py), against brute force."""

import struct

import numpy as np
import pytest

from fakeplpy import FakePlpy
from pgvision import search
from pgvision.errors import PgvisionError

DIMS = 8
ROW = dict(name="tiny", sha256="a" * 64, model_path=None, input_height=32, input_width=32,
           preprocessing="inception", feature_layer=None, pooling="avg", dims=DIMS)


def array_send(vector):
    """real[] in Postgres' binary array format, as array_send returns it."""
    head = struct.pack(">iiiii", 1, 0, 700, len(vector), 1)
    return head + b"".join(struct.pack(">if", 4, float(v)) for v in vector)


def serve_features(plpy, ids, vectors):
    """Answer the queries of pgvision.featurestore for one (model, table) with these
    features and no index: the first search records a snapshot (its file is written under
    the working directory, which the tests move to a temporary one)."""
    recorded = {}

    def state(_):
        return [{"version": 7, "generation": recorded.get("generation"),
                 "sha256": recorded.get("sha256"), "snap": recorded.get("snap"), "n": None,
                 "snap_foreign": False, "index_foreign": None,
                 "index_generation": None, "index_metric": None, "ef_search": None,
                 "index_sha": None, "index_snap": None, "index_dims": None, "index_storage": None,
                 "index_pca": None, "ef_setting": None,
                 "rls_active": recorded.get("rls_active", False)}]

    def record(args):
        recorded.update(generation=recorded.get("generation", 0) + 1, snap=args[2],
                        sha256=args[5])
        return []
    plpy.on(r"FROM vision.feature_versions v", state)
    plpy.on(r"FROM vision.model_store m", lambda args: [
        {**ROW, "model_sha256": ROW["sha256"], "source_oid": 4242,
         "may_read": recorded.get("may_read", True), **state(args)[0]}])
    plpy.on(r"SELECT vision._id_column\(\$1\) AS c", [{"c": "id"}])
    plpy.on(r"UPDATE vision.feature_snapshots SET n = n WHERE false", [])
    plpy.on(r"pg_advisory_xact_lock", [{}])
    plpy.on(r"SELECT pg_catalog.pg_current_snapshot\(\)::text AS s$", [{"s": "10:10:"}])
    plpy.on(r"INSERT INTO vision.feature_snapshots", record)
    plpy.on(r"DELETE FROM vision.feature_changes", [])
    plpy.on(r"FROM vision.feature_changes", [])
    plpy.on(r"SELECT pg_catalog.count\(\*\) AS n\s+FROM vision.feature_changes", [{"n": 0}])
    plpy.on(r"vision._store_files\(\)", [])
    plpy.on(r"FROM pg_catalog.pg_database", [])
    # odd rows in half precision, even ones single, as a table written before 0.17.0 and
    # half compacted holds them
    plpy.on(r"ORDER BY f.image_id$",
            [{"image_id": int(i), "half": v.astype("<f2").tobytes() if n % 2 else None,
              "single": None if n % 2 else array_send(v)}
             for n, (i, v) in enumerate(zip(ids, vectors))])
    return recorded


@pytest.fixture
def stored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a backend's working directory is the data directory
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(30, DIMS)).astype(np.float32)
    vectors[1::2] = vectors[1::2].astype(np.float16)  # what half precision holds of them
    ids = np.arange(100, 130)
    plpy = FakePlpy()
    plpy.on(r"FROM vision.model_store WHERE name", [ROW])
    plpy.on(r"SELECT \$1::regclass::oid", [{"oid": 4242}])
    plpy.on(r"SELECT \$1::regclass::text", [{"name": "public.t"}])
    plpy.on(r"has_table_privilege\(\$1, 'SELECT'\)", [{"ok": True}])
    plpy.on(r"row_security_active\(\$1\) AS active", [{"active": False, "id_column": "id"}])
    plpy.recorded = serve_features(plpy, ids, vectors)
    return plpy, ids, vectors


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_similar_equals_brute_force(stored, metric):
    plpy, ids, vectors = stored
    query = vectors[5]
    if metric == "cosine":
        dist = 1 - vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    elif metric == "l2":
        dist = np.linalg.norm(vectors - query, axis=1)
    else:
        dist = -(vectors @ query)
    dist[5] = np.inf  # the query image itself is excluded
    expected = ids[np.argsort(dist, kind="stable")[:4]].tolist()
    rows = search.similar(plpy, {}, 105, k=4, model="tiny", metric=metric, source="t")
    assert [r[0] for r in rows] == expected
    assert [r[2] for r in rows] == [1, 2, 3, 4]
    np.testing.assert_allclose([r[1] for r in rows], np.sort(dist)[:4], rtol=1e-5, atol=1e-5)


def test_the_matrix_is_read_once_while_its_version_holds(stored):
    plpy, _, _ = stored
    GD = {}
    for image_id in (101, 102, 103):
        search.similar(plpy, GD, image_id, k=3, model="tiny", source="t")
    reads = [q for q, _ in plpy.queries if q.rstrip().endswith("ORDER BY f.image_id")]
    assert len(reads) == 1


def test_candidates_restrict_the_answer(stored):
    plpy, _, _ = stored
    rows = search.similar(plpy, {}, 100, k=10, model="tiny", source="t",
                          candidates=[103, 107, 111])
    assert sorted(r[0] for r in rows) == [103, 107, 111]


def test_a_vector_of_the_wrong_dimension_is_named(stored):
    plpy, _, _ = stored
    with pytest.raises(PgvisionError, match=r'vision.similar_to_vector: argument "feature" must be '
                                            r"8 values \(the dimension of model 'tiny'\), got "
                                            r"'3 values'"):
        search.similar_to_vector(plpy, {}, [1.0, 2.0, 3.0], model="tiny", source="t")


def test_an_unknown_model_is_named_with_a_hint():
    plpy = FakePlpy().on(r"FROM vision.model_store WHERE name", [])
    with pytest.raises(PgvisionError, match=r"vision.similar: argument \"model\" names no "
                                            r"registered model: 'nope'") as info:
        search.similar(plpy, {}, 1, model="nope")
    assert "vision.models" in info.value.hint


def test_several_tables_need_the_source_argument():
    plpy = FakePlpy().on(r"FROM vision.model_store WHERE name", [ROW])
    plpy.on(r"FROM vision.feature_versions WHERE model = \$1 ORDER BY",
            [{"oid": 1, "name": "a"}, {"oid": 2, "name": "b"}])
    with pytest.raises(PgvisionError, match=r'vision.similar: argument "source" is needed: model '
                                            r"'tiny' has features in several tables \(a, b\)"):
        search.similar(plpy, {}, 1, model="tiny")


def test_a_table_the_caller_may_not_read_is_refused_before_its_features_are(stored):
    plpy, _, _ = stored
    plpy.on(r"has_table_privilege\(\$1, 'SELECT'\)", [{"ok": False}])
    plpy.on(r"regclass::text", [{"name": "public.t"}])
    plpy.recorded["may_read"] = False
    with pytest.raises(PgvisionError, match=r"vision.similar: permission denied for table "
                                            r"public.t: vision.similar over its images needs "
                                            r"SELECT on it") as info:
        search.similar(plpy, {}, 105, model="tiny", source="t")
    assert info.value.sqlstate == "42501"
    assert not [q for q, _ in plpy.queries if "vision.stored_features" in q]


def test_non_finite_query_vectors_are_named(stored):
    plpy, _, _ = stored
    with pytest.raises(PgvisionError, match=r'vision.similar_to_vector: argument "feature" must '
                                            r"be finite numbers \(no NaN or Infinity\), got "
                                            r"'nan at position 2'"):
        search.similar_to_vector(plpy, {}, [1.0, float("nan")] + [0.0] * 6, model="tiny",
                                 source="t")


def test_null_candidates_are_named(stored):
    plpy, _, _ = stored
    with pytest.raises(PgvisionError, match=r'vision.similar: argument "candidates" must be an '
                                            r"array of image ids without NULLs"):
        search.similar(plpy, {}, 105, model="tiny", source="t", candidates=[None, 2])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_with_row_level_security_the_answer_is_the_best_of_what_the_caller_sees(stored, metric):
    """Where the table's policy hides rows from the caller, the search widens its candidates
    until k visible ones are found: the answer equals brute force over the visible rows."""
    plpy, ids, vectors = stored
    seen = {int(i) for i in ids if i % 3 == 0}   # the caller's SELECT returns a third
    plpy.on(r"row_security_active\(\$1\) AS active", [{"active": True, "id_column": "id"}])
    plpy.recorded["rls_active"] = True
    plpy.on(r"SELECT \$1::pg_catalog.regclass::text AS name", [{"name": "public.t"}])
    asked = []

    def select(args):
        asked.append(len(args[0]))
        return [{"id": i} for i in args[0] if i in seen]
    plpy.on(r"SELECT id::pg_catalog.int8 AS id FROM public.t WHERE id", select)
    query = vectors[3]  # id 103: not the caller's to see
    with pytest.raises(PgvisionError, match="image 103 of public.t has no features"):
        search.similar(plpy, {}, 103, k=4, model="tiny", metric=metric, source="t")
    GD = {}
    search.similar(plpy, GD, 102, k=4, model="tiny", metric=metric, source="t")
    before = len(plpy.queries)
    rows = search.similar_to_vector(plpy, GD, query.tolist(), k=4, model="tiny", metric=metric,
                                    source="t")
    # the id column is looked up once while the features' version holds, not per search
    # or per widening round; whether a policy applies comes with the search's one context
    assert not [q for q, _ in plpy.queries[before:] if "_id_column" in q]
    assert [q for q, _ in plpy.queries if "_id_column" in q]
    visible = np.array([i in seen for i in ids])
    if metric == "cosine":
        dist = 1 - vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    else:
        dist = np.linalg.norm(vectors - query, axis=1)
    expected = ids[visible][np.argsort(dist[visible], kind="stable")[:4]].tolist()
    assert [r[0] for r in rows] == expected
    assert max(asked) > 4  # it had to look past the first k candidates
