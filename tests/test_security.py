"""Security for a shared database, with real roles: a superuser (the session's ``db``), an
owner of a table, a reader with SELECT on that table only, a role with nothing, an
application role, and a vision_admin member.

- No search_path door: hostile functions and operators on the caller's search_path are
  never called by any pgvision function.
- Privileges follow the source table: features, searches, classifiers, maps and errors of a
  table are only for roles that may SELECT it.
- Nobody writes pgvision's tables directly; owners alone replace or drop what they made;
  votes belong to the role that recorded them.
- Limits protecting the server are never raised by a plain session.
"""

import json

import psycopg2
import pytest
from psycopg2 import errors as pgerr

from conftest import PORT, SOCKET_DIR, image_bytes, query

FAST = "mobilenet_v2"
TABLE = "sec_products"
ROLES = {"owner": "pv_owner", "reader": "pv_reader", "nobody": "pv_nobody", "app": "pv_app",
         "dba": "pv_dba"}
IDS = list(range(1, 9))
# Every table pgvision stores data in, and the column a test may overwrite.
TABLES = {"features": "feature", "extract_errors": "error", "extract_jobs": "processed",
          "feature_versions": "version", "indexes": "ef_search", "neighbours": "k",
          "classifiers": "method", "predictions": "label", "votes": "liked",
          "taste_models": "votes", "clusters": "cluster", "cluster_centroids": "size",
          "map_2d": "x", "feature_snapshots": "n", "index_chunks": "part"}


@pytest.fixture(scope="module")
def shared(db, db_name):
    """A catalog owned by pv_owner (features, an index, a classifier and its labels,
    clusters, a map, cached neighbours), pv_reader may read the table, pv_app votes."""
    for role in ROLES.values():
        query(db, f"DROP ROLE IF EXISTS {role}")
        query(db, f"CREATE ROLE {role} LOGIN")
    query(db, f"GRANT vision_admin TO {ROLES['dba']}")
    query(db, f"DROP TABLE IF EXISTS {TABLE}, sec_labels")
    conns = {}

    def connect(role, **kwargs):
        """The role's connection (one per role), or a new one with connection options."""
        if not kwargs and role in conns:
            return conns[role][0]
        conn = psycopg2.connect(host=SOCKET_DIR, port=PORT, user=ROLES[role], dbname=db_name,
                                **kwargs)
        conn.autocommit = True
        conns.setdefault(role, []).insert(len(conns.get(role, [])) if kwargs else 0, conn)
        return conn

    owner = connect("owner")
    query(db, f"GRANT CREATE ON SCHEMA public TO {ROLES['owner']}")
    query(owner, f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, image bytea)")
    for i in IDS:
        query(owner, f"INSERT INTO {TABLE} VALUES (%s, %s)", (i, psycopg2.Binary(image_bytes(i))))
    query(owner, f"INSERT INTO {TABLE} VALUES (100, 'not an image')")  # an extraction error
    query(owner, f"GRANT SELECT ON {TABLE} TO {ROLES['reader']}, {ROLES['app']}, {ROLES['dba']}")
    query(owner, "CREATE TABLE sec_labels (image_id bigint, label text)")
    query(owner, "INSERT INTO sec_labels SELECT id, CASE WHEN id % 2 = 0 THEN 'even' ELSE 'odd' "
                 f"END FROM {TABLE} WHERE id < 100")
    query(owner, f"GRANT SELECT ON sec_labels TO {ROLES['reader']}")
    query(owner, f"CALL vision.extract_table('{TABLE}', model => '{FAST}')")
    query(owner, f"SELECT vision.create_index('{TABLE}', '{FAST}')")
    query(owner, f"SELECT vision.refresh_neighbours('{TABLE}', '{FAST}', 3)")
    query(owner, f"SELECT vision.train_classifier('sec_kind', 'sec_labels', '{TABLE}', "
                 f"'{FAST}', 'logistic', folds => 2)")
    query(owner, "SELECT vision.classify_table('sec_kind')")
    query(owner, f"SELECT vision.cluster('{FAST}', 2, source => '{TABLE}')")
    query(owner, f"SELECT vision.embed_2d('{FAST}', 'pca', '{TABLE}')")
    app = connect("app")
    for image_id, liked in ((1, True), (2, False), (3, True), (4, False)):
        query(app, "SELECT vision.record_vote('shopper', %s, %s, %s, %s)",
              (image_id, liked, FAST, TABLE))
    yield connect
    for opened in conns.values():
        for conn in opened:
            conn.close()
    query(db, f"DROP TABLE IF EXISTS {TABLE}, sec_labels")
    query(db, "DELETE FROM vision.classifiers WHERE name LIKE 'sec_%'")
    for role in ROLES.values():
        query(db, f"DROP OWNED BY {role} CASCADE")
        query(db, f"DROP ROLE {role}")


def snapshot(db):
    """Every row pgvision stores about the shared table, as the superuser sees it."""
    out = {}
    for table in TABLES:
        out[table] = query(db, f"SELECT md5(string_agg(t::text, ',' ORDER BY t::text)), count(*) "
                               f"FROM vision.{table} t WHERE source = '{TABLE}'::regclass")
    return out


# --- no search_path door -------------------------------------------------------------------

HOSTILE = [
    "FUNCTION pv_evil.array_send(real[]) RETURNS bytea AS $$ INSERT INTO pv_evil.log "
    "VALUES ('array_send'); SELECT pg_catalog.array_send($1) $$",
    "FUNCTION pv_evil.unnest(bigint[]) RETURNS SETOF bigint AS $$ INSERT INTO pv_evil.log "
    "VALUES ('unnest'); SELECT * FROM pg_catalog.unnest($1) $$",
    "FUNCTION pv_evil.unnest(integer[]) RETURNS SETOF integer AS $$ INSERT INTO pv_evil.log "
    "VALUES ('unnest int'); SELECT * FROM pg_catalog.unnest($1) $$",
    "FUNCTION pv_evil.current_setting(text, boolean) RETURNS text AS $$ INSERT INTO "
    "pv_evil.log VALUES ('current_setting'); SELECT pg_catalog.current_setting($1, $2) $$",
    "FUNCTION pv_evil.now() RETURNS timestamptz AS $$ INSERT INTO pv_evil.log VALUES ('now'); "
    "SELECT pg_catalog.now() $$",
    "FUNCTION pv_evil.has_table_privilege(oid, text) RETURNS boolean AS $$ INSERT INTO "
    "pv_evil.log VALUES ('has_table_privilege'); SELECT true $$",
    "FUNCTION pv_evil.format_type(oid, integer) RETURNS text AS $$ INSERT INTO pv_evil.log "
    "VALUES ('format_type'); SELECT pg_catalog.format_type($1, $2) $$",
    "FUNCTION pv_evil.texteq_evil(text, text) RETURNS boolean AS $$ INSERT INTO pv_evil.log "
    "VALUES ('= text'); SELECT pg_catalog.texteq($1, $2) $$",
]


@pytest.fixture
def evil(db, shared):
    """Hostile functions and an operator in a schema pv_nobody owns, each logging its call."""
    query(db, "DROP SCHEMA IF EXISTS pv_evil CASCADE")
    query(db, f"CREATE SCHEMA pv_evil AUTHORIZATION {ROLES['nobody']}")
    nobody = shared("nobody")
    query(nobody, "CREATE TABLE pv_evil.log (what text)")
    query(nobody, "GRANT INSERT ON pv_evil.log TO PUBLIC")
    for definition in HOSTILE:
        query(nobody, f"CREATE {definition} LANGUAGE sql")
    query(nobody, "CREATE OPERATOR pv_evil.= (LEFTARG = text, RIGHTARG = text, "
                  "FUNCTION = pv_evil.texteq_evil)")
    yield lambda: [w for (w,) in query(db, "SELECT what FROM pv_evil.log")]
    query(db, "DROP SCHEMA pv_evil CASCADE")


CALLS = [
    f"SELECT vision.extract_features(%(image)s, '{FAST}')",
    f"CALL vision.extract_table('{TABLE}', model => '{FAST}', retry_failed => true)",
    f"SELECT * FROM vision.extract_rows('{TABLE}', model => '{FAST}')",
    f"SELECT vision.extract_features_with(%(image)s, vision.model_handle('{FAST}'))",
    f"SELECT * FROM vision.similar(1, 3, '{FAST}', source => '{TABLE}')",
    f"SELECT * FROM vision.similar(1, 3, '{FAST}', source => '{TABLE}', approximate => false,"
    " candidates => ARRAY[2, 3]::bigint[])",
    f"SELECT * FROM vision.similar_many(ARRAY[1, 2]::bigint[], 3, '{FAST}', source => '{TABLE}')",
    f"SELECT * FROM vision.similar_to_image(%(image)s, 3, '{FAST}', source => '{TABLE}')",
    f"SELECT * FROM vision.similar_to_vector(%(vector)s::real[], 3, '{FAST}', source => '{TABLE}')",
    f"SELECT vision.refresh_index('{TABLE}', '{FAST}')",
    f"SELECT vision.refresh_neighbours('{TABLE}', '{FAST}', 3)",
    f"SELECT vision.train_classifier('sec_evil', 'sec_labels', '{TABLE}', '{FAST}', 'logistic',"
    " folds => 2, replace => true)",
    "SELECT * FROM vision.classify(1, 'sec_evil')",
    "SELECT * FROM vision.classify_image(%(image)s, 'sec_evil')",
    "SELECT vision.classify_table('sec_evil')",
    f"SELECT * FROM vision.compare_classifiers('sec_labels', '{TABLE}', '{FAST}', "
    "ARRAY['logistic', 'knn'], folds => 2)",
    "SELECT vision.evaluate_classifier('sec_evil')",
    f"SELECT vision.record_vote('evil', 1, true, '{FAST}', '{TABLE}')",
    f"SELECT vision.record_vote('evil', 2, false, '{FAST}', '{TABLE}')",
    f"SELECT * FROM vision.recommend('evil', 3, model => '{FAST}', source => '{TABLE}')",
    f"SELECT * FROM vision.bandit_next('evil', '{FAST}', '{TABLE}')",
    f"SELECT vision.cluster('{FAST}', 2, source => '{TABLE}')",
    f"SELECT vision.embed_2d('{FAST}', 'pca', '{TABLE}')",
    f"SELECT length(vision.plot_map('{FAST}', 'sec_evil', '{TABLE}', thumbnails => true))",
    f"SELECT vision.create_index('{TABLE}', '{FAST}')",
    f"SELECT vision.drop_index('{TABLE}', '{FAST}')",
    f"SELECT vision.create_index('{TABLE}', '{FAST}')",
    "SELECT * FROM vision.loaded_models()",
    "SELECT * FROM vision.model_backends()",
    f"SELECT vision.check_node(vision.version(), '{FAST}', %(sha256)s)",
    "SELECT * FROM vision.extract_progress",
    "SELECT * FROM vision.index_status",
    "SELECT * FROM vision.bandit_state",
]


def test_hostile_functions_on_the_search_path_are_never_called(db, shared, evil):
    victim = psycopg2.connect(db.dsn)  # a superuser, the worst victim
    victim.autocommit = True
    try:
        query(victim, "SET search_path = pv_evil, pg_catalog, public")
        query(victim, "SELECT array_send(ARRAY[1]::real[]), 'a' = 'a'")
        assert sorted(evil()) == ["= text", "array_send"], "the trap must work unqualified"
        query(db, "TRUNCATE pv_evil.log")
        image = psycopg2.Binary(image_bytes(99))
        vector = query(db, "SELECT feature FROM vision.features WHERE image_id = 1 AND "
                           "source = %s::regclass AND model = %s", (TABLE, FAST))[0][0]
        sha256 = query(db, "SELECT sha256 FROM vision.models WHERE name = %s", (FAST,))[0][0]
        called = {}
        for call in CALLS:
            query(victim, call, {"image": image, "vector": vector, "sha256": sha256})
            called.update({what: call for what in evil() if what not in called})
        assert called == {}
    finally:
        victim.close()
        query(db, "DELETE FROM vision.classifiers WHERE name = 'sec_evil'")
        query(db, "DELETE FROM vision.votes WHERE user_id = 'evil'")
        query(db, f"SELECT vision.drop_index('{TABLE}', '{FAST}')")  # made again by its owner
        query(shared("owner"), f"SELECT vision.create_index('{TABLE}', '{FAST}')")


def test_every_function_pins_its_search_path(db):
    """Every function of the extensions, except the procedure that commits (which pins it
    itself), runs with search_path = pg_catalog, pg_temp."""
    rows = query(db, """
        SELECT p.oid::regprocedure::text, p.prokind, p.proconfig FROM pg_proc p
        JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
        JOIN pg_extension e ON e.oid = d.refobjid AND d.deptype = 'e'
        WHERE e.extname = 'pgvision'""")
    assert len(rows) > 40
    for name, kind, config in rows:
        if kind == "p":
            assert config is None, name
        else:
            assert config == ["search_path=pg_catalog, pg_temp"], name


# --- privileges follow the source table -------------------------------------------------------

DENIED = r"permission denied for table public.sec_products: .* needs SELECT on it"


@pytest.mark.parametrize("call", [
    f"SELECT * FROM vision.similar(1, 3, '{FAST}', source => '{TABLE}')",
    f"SELECT * FROM vision.similar_many(ARRAY[1]::bigint[], 3, '{FAST}', source => '{TABLE}')",
    f"SELECT * FROM vision.similar_to_image(%(image)s, 3, '{FAST}', source => '{TABLE}')",
    f"SELECT * FROM vision.similar_to_vector(array_fill(0.5::real, ARRAY[1280]), 3, '{FAST}',"
    f" source => '{TABLE}')",
    f"SELECT * FROM vision.recommend('u', 3, model => '{FAST}', source => '{TABLE}')",
    f"SELECT vision.record_vote('u', 1, true, '{FAST}', '{TABLE}')",
    f"SELECT * FROM vision.bandit_next('u', '{FAST}', '{TABLE}')",
    f"SELECT vision.cluster('{FAST}', 2, source => '{TABLE}')",
    f"SELECT vision.embed_2d('{FAST}', 'pca', '{TABLE}')",
    f"SELECT vision.plot_map('{FAST}', source => '{TABLE}')",
    f"SELECT vision.create_index('{TABLE}', '{FAST}')",
    f"SELECT vision.refresh_index('{TABLE}', '{FAST}')",
    f"SELECT vision.refresh_neighbours('{TABLE}', '{FAST}')",
    f"SELECT vision.drop_index('{TABLE}', '{FAST}')",
    f"CALL vision.extract_table('{TABLE}', model => '{FAST}')",
    f"SELECT * FROM vision.extract_rows('{TABLE}', model => '{FAST}')",
    f"CALL vision.maintain('{TABLE}')",
    f"SELECT vision.keep_current('{TABLE}')",
])
def test_a_role_without_select_on_the_table_is_refused(db, shared, call):
    before = snapshot(db)
    with pytest.raises(pgerr.InsufficientPrivilege, match=DENIED):
        query(shared("nobody"), call, {"image": psycopg2.Binary(image_bytes(99))})
    assert snapshot(db) == before


def test_stored_rows_are_visible_only_to_readers_of_the_table(db, shared):
    nobody, reader = shared("nobody"), shared("reader")
    for table in TABLES:
        stored = query(db, f"SELECT count(*) FROM vision.{table} WHERE source = "
                           f"'{TABLE}'::regclass")[0][0]
        assert query(nobody, f"SELECT count(*) FROM vision.{table}")[0][0] == 0, table
        if table not in ("votes", "taste_models"):  # those belong to pv_app alone
            assert stored > 0 and query(reader, f"SELECT count(*) FROM vision.{table}")[0][0] \
                == stored, table
    for view in ("features_export", "predictions_export", "extract_progress", "index_status",
                 "bandit_state"):
        assert query(nobody, f"SELECT count(*) FROM vision.{view}")[0][0] == 0, view
    # without source => ..., a table the role cannot read is not even a candidate
    with pytest.raises(pgerr.UndefinedObject, match=r"model 'mobilenet_v2' has no stored "
                                                    r"features in any table"):
        query(nobody, f"SELECT * FROM vision.similar(1, model => '{FAST}')")
    for call in ("SELECT * FROM vision.classify(1, 'sec_kind')",
                 "SELECT vision.evaluate_classifier('sec_kind')",
                 "SELECT vision.classify_table('sec_kind')"):
        with pytest.raises(pgerr.UndefinedObject, match=r"names no trained classifier: "
                                                        r"'sec_kind'"):
            query(nobody, call)
    assert len(query(reader, f"SELECT * FROM vision.similar(1, 3, '{FAST}', "
                             f"source => '{TABLE}')")) == 3
    assert query(reader, "SELECT vision.evaluate_classifier('sec_kind') ? 'accuracy'")[0][0]


# --- nobody writes pgvision's tables directly -------------------------------------------------

def test_direct_writes_to_pgvision_tables_change_nothing(db, shared):
    owner = shared("owner")  # may read the table, owns its classifier and index
    before = snapshot(db)
    for table, column in TABLES.items():
        for change in (f"UPDATE vision.{table} SET {column} = {column}",
                       f"DELETE FROM vision.{table}"):
            try:  # refused outright (no privilege), or no row is the role's to change
                assert query(owner, f"WITH c AS ({change} RETURNING 1) "
                                    "SELECT count(*) FROM c") == [(0,)], change
            except pgerr.InsufficientPrivilege:
                pass
        # a copy of a stored row, new where the key allows, as the owner would forge it
        columns = [c for (c,) in query(db, "SELECT attname FROM pg_attribute WHERE attrelid = "
                                           "%s::regclass AND attnum > 0 AND NOT attisdropped "
                                           "AND attidentity = ''", (f"vision.{table}",))]
        row = query(db, f"SELECT to_jsonb(t) FROM vision.{table} t WHERE source = %s::regclass "
                        "LIMIT 1", (TABLE,))[0][0]
        row.update({k: v + 1000 for k, v in row.items() if k == "image_id"},
                   owner=ROLES["owner"])
        names = ", ".join(columns)
        with pytest.raises(psycopg2.Error, match=r"row-level security|permission denied"):
            query(owner, f"INSERT INTO vision.{table} ({names}) SELECT {names} FROM "
                         f"jsonb_populate_record(NULL::vision.{table}, %s)", (json.dumps(row),))
        with pytest.raises(pgerr.InsufficientPrivilege):
            query(owner, f"TRUNCATE vision.{table}")
    with pytest.raises(pgerr.InsufficientPrivilege):
        query(owner, "DELETE FROM vision.model_store")
    assert snapshot(db) == before


# --- owners -------------------------------------------------------------------------------

def test_only_the_owner_replaces_or_drops_a_classifier_or_index(db, shared):
    reader, dba = shared("reader"), shared("dba")
    before = snapshot(db)
    for call in (f"SELECT vision.train_classifier('sec_kind', 'sec_labels', '{TABLE}', "
                 f"'{FAST}', 'logistic', folds => 2, replace => true)",
                 f"SELECT vision.create_index('{TABLE}', '{FAST}', m => 8)",
                 f"SELECT vision.drop_index('{TABLE}', '{FAST}')"):
        with pytest.raises(pgerr.InsufficientPrivilege, match=r"belongs to role pv_owner: only "
                                                               r"its owner \(or vision_admin\)"):
            query(reader, call)
    assert snapshot(db) == before
    assert query(dba, f"SELECT vision.create_index('{TABLE}', '{FAST}')") == [(len(IDS),)]
    assert query(db, "SELECT owner FROM vision.indexes WHERE source = %s::regclass",
                 (TABLE,)) == [(ROLES["owner"],)]


def test_votes_belong_to_the_role_that_recorded_them(db, shared):
    app, reader = shared("app"), shared("reader")
    assert query(reader, "SELECT count(*) FROM vision.votes")[0][0] == 0
    assert query(reader, "SELECT count(*) FROM vision.taste_models")[0][0] == 0
    mine = query(app, f"SELECT image_id, strategy FROM vision.recommend('shopper', 8, "
                      f"model => '{FAST}', source => '{TABLE}')")
    assert {s for _, s in mine} == {"taste model"}
    assert not {1, 2, 3, 4} & {i for i, _ in mine}
    # the same user id under another role is another shopper, who has not voted yet
    theirs = query(reader, f"SELECT image_id, strategy FROM vision.recommend('shopper', 8, "
                           f"model => '{FAST}', source => '{TABLE}')")
    assert {s for _, s in theirs} == {"popularity"} and len(theirs) == len(IDS)
    assert query(reader, f"SELECT vision.record_vote('shopper', 5, true, '{FAST}', "
                         f"'{TABLE}')") == [(True,)]
    try:
        assert query(db, "SELECT owner, count(*) FROM vision.votes WHERE user_id = 'shopper' "
                         "GROUP BY 1 ORDER BY 1") == [(ROLES["app"], 4), (ROLES["reader"], 1)]
        assert query(app, "SELECT count(*) FROM vision.votes")[0][0] == 4
    finally:
        query(db, "DELETE FROM vision.votes WHERE owner = %s", (ROLES["reader"],))


# --- limits only an admin can raise ---------------------------------------------------------

def test_a_session_cannot_raise_the_limits_an_admin_set(db, shared):
    for role in ("reader", "dba"):
        query(db, f"ALTER ROLE {ROLES[role]} SET pgvision.max_image_pixels = 1000")
    try:
        image = psycopg2.Binary(image_bytes(7))  # 64 x 48 = 3072 pixels
        raised = {"options": "-c pgvision.max_image_pixels=100000000"}
        for conn in (shared("reader"), shared("reader", **raised)):
            query(conn, "SET pgvision.max_image_pixels = 100000000")
            with pytest.raises(pgerr.InvalidBinaryRepresentation, match=r"3072 pixels"):
                query(conn, f"SELECT vision.extract_features(%s, '{FAST}')", (image,))
            handle = json.loads(query(conn, f"SELECT vision.model_handle('{FAST}')")[0][0])
            assert handle["handle"]["max_image_pixels"] == 1000
        reader = shared("reader")
        query(reader, "SET pgvision.max_image_pixels = 100")  # lowering is always allowed
        assert json.loads(query(reader, f"SELECT vision.model_handle('{FAST}')")[0][0]
                          )["handle"]["max_image_pixels"] == 100
        dba = shared("dba")  # a vision_admin member may raise it
        query(dba, "SET pgvision.max_image_pixels = 100000000")
        assert len(query(dba, f"SELECT vision.extract_features(%s, '{FAST}')", (image,))[0][0]) \
            == 1280
    finally:
        for role in ("reader", "dba"):
            query(db, f"ALTER ROLE {ROLES[role]} RESET pgvision.max_image_pixels")


def test_a_batch_is_split_to_stay_under_the_memory_bound(db, shared):
    owner = shared("owner")
    query(owner, f"DELETE FROM {TABLE} WHERE id = 8")
    query(owner, f"INSERT INTO {TABLE} VALUES (8, %s)", (psycopg2.Binary(image_bytes(8)),))
    query(db, "DELETE FROM vision.features WHERE source = %s::regclass AND image_id = 8",
          (TABLE,))
    query(owner, "SET pgvision.max_batch_memory_mb = 40")  # ~16 MB per 224x224 image: 2
    owner.notices.clear()
    query(owner, f"CALL vision.extract_table('{TABLE}', model => '{FAST}', batch_size => 64)")
    assert any('argument "batch_size" 64 is lowered to 2 images' in n for n in owner.notices)
    query(owner, "SET pgvision.max_batch_memory_mb = 100000")  # a session cannot raise it
    owner.notices.clear()
    query(db, "DELETE FROM vision.features WHERE source = %s::regclass AND image_id = 8",
          (TABLE,))
    query(owner, f"CALL vision.extract_table('{TABLE}', model => '{FAST}', batch_size => 1024)")
    assert any('argument "batch_size" 1024 is lowered to 65 images' in n
               for n in owner.notices)


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("call,error,message", [
    (f"SELECT * FROM vision.similar(1, 3, '{FAST}', source => '{TABLE}', "
     "candidates => ARRAY[NULL, 2]::bigint[])", pgerr.InvalidParameterValue,
     r'vision.similar: argument "candidates" must be an array of image ids without NULLs'),
    (f"SELECT * FROM vision.similar_to_vector(array_fill('NaN'::real, ARRAY[1280]), 3, "
     f"'{FAST}', source => '{TABLE}')", pgerr.InvalidParameterValue,
     r'vision.similar_to_vector: argument "feature" must be finite numbers \(no NaN or '
     r"Infinity\), got 'nan at position 1'"),
    (f"SELECT * FROM vision.similar_to_vector(array_fill('Infinity'::real, ARRAY[1280]), 3, "
     f"'{FAST}', source => '{TABLE}')", pgerr.InvalidParameterValue,
     r"got 'inf at position 1'"),
    (f"SELECT * FROM vision.compare_classifiers('sec_labels', '{TABLE}', '{FAST}', '{{}}')",
     pgerr.InvalidParameterValue,
     r'vision.compare_classifiers: argument "methods" must be NULL \(every method\) or an '
     r"array of methods, got 'an empty array'"),
    ("SELECT vision.evaluate_classifier('no_such_classifier')", pgerr.UndefinedObject,
     r"vision.evaluate_classifier: argument \"classifier\" names no trained classifier: "
     r"'no_such_classifier'"),
    ("SELECT vision.evaluate_classifier(NULL)", pgerr.NullValueNotAllowed,
     r'vision.evaluate_classifier: argument "classifier" must not be NULL'),
    (f"SELECT vision.plot_map('{FAST}', source => '{TABLE}', thumbnails => true, "
     "id_column => 'nope')", pgerr.UndefinedObject,
     r'vision.plot_map: argument "id_column": table public.sec_products has no column '
     r"'nope'"),
    (f"SELECT vision.plot_map('{FAST}', source => '{TABLE}', thumbnails => true, "
     "image_column => 'nope')", pgerr.UndefinedObject,
     r'vision.plot_map: argument "image_column": table public.sec_products has no column'),
    (f"SELECT vision.record_vote(repeat('x', 1000000), 1, true, '{FAST}', '{TABLE}')",
     pgerr.InvalidParameterValue,
     r'vision.record_vote: argument "user_id" must be at most 256 characters, got '
     r"'1000000 characters'"),
])
def test_bad_input_is_named(db, shared, call, error, message):
    with pytest.raises(error, match=message):
        query(shared("owner"), call)


def test_drop_extension_without_cascade_keeps_users_data(fresh_db):
    conn = psycopg2.connect(host=SOCKET_DIR, port=PORT, user="postgres", dbname=fresh_db)
    conn.autocommit = True
    try:
        query(conn, "CREATE EXTENSION pgvision CASCADE")
        query(conn, "CREATE TABLE t (id bigint, image bytea)")
        query(conn, f"INSERT INTO vision.features (model, source, image_id, feature) "
                    f"VALUES ('{FAST}', 't', 1, ARRAY[1, 2]::real[])")
        with pytest.raises(pgerr.DependentObjectsStillExist,
                           match=r"DROP EXTENSION pgvision would delete what users stored: "
                                 r"1 feature rows"):
            query(conn, "DROP EXTENSION pgvision")
        assert query(conn, "SELECT count(*) FROM vision.features") == [(1,)]
        query(conn, "DROP EXTENSION pgvision CASCADE")
        assert not query(conn, "SELECT 1 FROM pg_namespace WHERE nspname = 'vision'")
    finally:
        conn.close()
