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
- The source table's row-level security holds for every answer: a role whose SELECT does not
  return an image never gets its id, feature, score or label from pgvision either.
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
TABLES = {"stored_features": "half", "extract_errors": "error", "extract_jobs": "processed",
          "feature_versions": "version", "indexes": "ef_search", "neighbours": "k",
          "classifiers": "method", "predictions": "label", "votes": "liked",
          "taste_models": "votes", "clusters": "cluster", "cluster_centroids": "size",
          "map_2d": "x", "feature_snapshots": "n", "index_chunks": "part",
          "image_text": "body"}


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
    query(owner, f"CALL vision.extract_table('{TABLE}', model => 'perceptual_hash')")
    query(owner, f"CALL vision.extract_table('{TABLE}', model => 'pp_ocr_v6')")
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
    f"SELECT * FROM vision.duplicates('{TABLE}', '{FAST}')",
    f"SELECT * FROM vision.duplicates_of(%(image)s, '{TABLE}', '{FAST}')",
    "SELECT * FROM vision.moderate(%(image)s)",
    "SELECT count(*) FROM vision.content_scores, vision.flagged_images",
    "SELECT * FROM vision.read_text(%(image)s)",
    f"SELECT * FROM vision.search_text('shirt', '{TABLE}')",
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
    f"SELECT * FROM vision.duplicates('{TABLE}', '{FAST}')",
    f"SELECT * FROM vision.duplicates_of(%(image)s, '{TABLE}', '{FAST}')",
    f"SELECT * FROM vision.search_text('shirt', '{TABLE}')",
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
                                           "AND attidentity = '' AND attgenerated = ''",
                                           (f"vision.{table}",))]
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
    # nor through the view that shows the stored features as real[]
    for change in ("UPDATE vision.features SET feature = feature",
                   "UPDATE vision.features SET extracted_at = now()",
                   "DELETE FROM vision.features"):
        assert query(owner, f"WITH c AS ({change} RETURNING 1) SELECT count(*) FROM c") == \
            [(0,)], change
    with pytest.raises(psycopg2.Error, match=r"row-level security"):
        query(owner, "INSERT INTO vision.features (model, source, image_id, feature) SELECT "
                     "model, source, image_id + 1000, feature FROM vision.features LIMIT 1")
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
    assert {s for _, s in mine} == {"nearest liked + Rocchio"}  # 2 + 2 votes: no taste model yet
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
        # ... but its handle, which carries its limits, serves no other role
        admins = query(dba, f"SELECT vision.model_handle('{FAST}')")[0][0]
        with pytest.raises(pgerr.InsufficientPrivilege, match=r'"model_handle" was made by '
                           r"role pv_dba and carries its limits"):
            query(reader, "SELECT vision.extract_features_with(%s, %s)", (image, admins))
        with pytest.raises(pgerr.InsufficientPrivilege, match=r"made by role pv_dba"):
            query(db, f"SET ROLE {ROLES['reader']}; "
                      "SELECT vision.extract_features_with(%s, %s)", (image, admins))
        query(db, "RESET ROLE")
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


# --- row-level security of the source table -------------------------------------------------

RLS_TABLE = "sec_tenants"
RLS_IDS = list(range(1, 13))
SEEN = [i for i in RLS_IDS if i % 2 == 0]      # the reader's rows (tenant pv_reader)
HIDDEN = [i for i in RLS_IDS if i % 2 == 1]


@pytest.fixture(scope="module")
def tenants(db, shared):
    """A table of two tenants with a policy: pv_reader sees its 6 rows of 12. pv_owner (who
    owns the table, so the policy does not apply to it) extracts, indexes, classifies,
    clusters and maps all 12."""
    owner = shared("owner")
    query(owner, f"CREATE TABLE {RLS_TABLE} (id bigint PRIMARY KEY, image bytea, tenant name)")
    for i in RLS_IDS:
        query(owner, f"INSERT INTO {RLS_TABLE} VALUES (%s, %s, %s)",
              (i, psycopg2.Binary(image_bytes(200 + i)),
               ROLES["reader"] if i in SEEN else ROLES["app"]))
    query(owner, f"INSERT INTO {RLS_TABLE} VALUES (101, 'not an image', %s), "
                 "(102, 'not an image either', %s)", (ROLES["reader"], ROLES["app"]))
    query(owner, f"ALTER TABLE {RLS_TABLE} ENABLE ROW LEVEL SECURITY")
    query(owner, f"CREATE POLICY tenant ON {RLS_TABLE} USING (tenant = current_user)")
    query(owner, f"GRANT SELECT ON {RLS_TABLE} TO {ROLES['reader']}, {ROLES['app']}")
    query(owner, "CREATE TABLE sec_tenant_labels (image_id bigint, label text)")
    query(owner, "INSERT INTO sec_tenant_labels SELECT id, CASE WHEN id % 3 = 0 THEN 'a' ELSE "
                 f"'b' END FROM {RLS_TABLE} WHERE id < 100")
    query(owner, f"GRANT SELECT ON sec_tenant_labels TO {ROLES['reader']}")
    query(owner, f"CALL vision.extract_table('{RLS_TABLE}', model => '{FAST}')")
    query(owner, f"CALL vision.extract_table('{RLS_TABLE}', model => 'perceptual_hash')")
    query(owner, f"SELECT vision.create_index('{RLS_TABLE}', '{FAST}')")
    query(owner, f"SELECT vision.refresh_neighbours('{RLS_TABLE}', '{FAST}', 3)")
    query(owner, f"SELECT vision.train_classifier('sec_tenant_kind', 'sec_tenant_labels', "
                 f"'{RLS_TABLE}', '{FAST}', 'logistic', folds => 2)")
    query(owner, "SELECT vision.classify_table('sec_tenant_kind')")
    query(owner, f"SELECT vision.cluster('{FAST}', 2, source => '{RLS_TABLE}')")
    query(owner, f"SELECT vision.embed_2d('{FAST}', 'pca', '{RLS_TABLE}')")
    yield shared
    query(db, f"DROP TABLE {RLS_TABLE}, sec_tenant_labels")
    query(db, "DELETE FROM vision.classifiers WHERE name = 'sec_tenant_kind'")


def ids_of(rows, column=0):
    return {row[column] for row in rows}


def test_stored_rows_of_hidden_images_are_not_readable(db, tenants):
    reader, owner = tenants("reader", options=""), tenants("owner")
    where = f"WHERE source = '{RLS_TABLE}'::regclass"
    for table in ("features", "predictions", "clusters", "map_2d"):
        assert ids_of(query(owner, f"SELECT image_id FROM vision.{table} {where}")) == \
            set(RLS_IDS), table
        assert ids_of(query(reader, f"SELECT image_id FROM vision.{table} {where}")) == \
            set(SEEN), table
    assert ids_of(query(reader, f"SELECT image_id FROM vision.extract_errors {where}")) == {101}
    # a cached neighbour list is shown only where every image in it is the reader's
    for image_id, neighbours in query(reader, "SELECT image_id, neighbour_ids FROM "
                                              f"vision.neighbours {where}"):
        assert {image_id, *neighbours} <= set(SEEN)
    # a classifier trained on images the reader cannot see is not the reader's to read
    assert query(reader, "SELECT count(*) FROM vision.classifiers "
                         "WHERE name = 'sec_tenant_kind'") == [(0,)]
    assert ids_of(query(reader, "SELECT image_id FROM vision.features_export "
                                f"WHERE source = 'public.{RLS_TABLE}'")) == set(SEEN)


@pytest.mark.parametrize("approximate, method", [(False, None), (True, "hnsw"), (True, "ivf")])
def test_searches_answer_only_images_the_caller_can_see(db, tenants, approximate, method):
    reader, owner = tenants("reader", options=""), tenants("owner")
    if method == "ivf":  # the table's owner, no superuser, builds IVF lists in place of the graph
        query(owner, f"SELECT vision.create_index('{RLS_TABLE}', '{FAST}', method => 'ivf', "
                     "lists => 3)")
    try:
        assert query(owner, "SELECT method FROM vision.index_status WHERE source = "
                            f"'{RLS_TABLE}'::regclass") == [(method or "hnsw",)]
        search_as_tenants(reader, owner, approximate)
    finally:
        if method == "ivf":
            query(owner, f"SELECT vision.create_index('{RLS_TABLE}', '{FAST}')")


def search_as_tenants(reader, owner, approximate):
    mode = f"'{FAST}', source => '{RLS_TABLE}', approximate => {approximate}"
    everyone = query(owner, f"SELECT image_id FROM vision.similar(2, 11, {mode})")
    assert ids_of(everyone) == set(RLS_IDS) - {2}
    found = query(reader, f"SELECT image_id, distance, rank FROM vision.similar(2, 3, {mode})")
    assert [r[0] for r in found] == [i for (i,) in everyone if i in SEEN][:3]
    assert [r[2] for r in found] == [1, 2, 3]
    assert ids_of(query(reader, f"SELECT image_id FROM vision.similar(2, 10, {mode})")) == \
        set(SEEN) - {2}
    many = query(reader, f"SELECT query_id, image_id FROM vision.similar_many("
                         f"ARRAY{SEEN}::bigint[], 10, {mode})")
    assert ids_of(many, 1) <= set(SEEN) and ids_of(many) == set(SEEN)
    # the hidden photo's own bytes and vector find it for the owner, never for the reader
    hidden = HIDDEN[2]
    vector = query(owner, "SELECT feature FROM vision.features WHERE source = "
                          f"'{RLS_TABLE}'::regclass AND model = '{FAST}' AND image_id = %s",
                   (hidden,))[0][0]
    image = psycopg2.Binary(image_bytes(200 + hidden))
    for call, argument in (("similar_to_vector(%s::real[]", vector),
                           ("similar_to_image(%s", image)):
        assert query(owner, f"SELECT image_id FROM vision.{call}, 1, {mode})",
                     (argument,)) == [(hidden,)]
        answered = query(reader, f"SELECT image_id FROM vision.{call}, 20, {mode})", (argument,))
        assert ids_of(answered) == set(SEEN)


def test_near_duplicates_are_of_images_the_caller_can_see(db, tenants):
    """A hidden image is never a group member nor a duplicate of new bytes, even its own."""
    reader, owner = tenants("reader", options=""), tenants("owner")
    hidden = HIDDEN[1]
    image = psycopg2.Binary(image_bytes(200 + hidden))
    call = f"SELECT image_id FROM vision.duplicates_of(%s, '{RLS_TABLE}', '{FAST}')"
    assert hidden in ids_of(query(owner, call, (image,)))
    assert ids_of(query(reader, call, (image,))) <= set(SEEN)
    everyone = query(owner, f"SELECT image_id FROM vision.duplicates('{RLS_TABLE}', '{FAST}', "
                            "min_similarity => 0.3)")
    assert ids_of(everyone) & set(HIDDEN), "the owner's loose groups hold hidden images"
    seen = query(reader, f"SELECT image_id FROM vision.duplicates('{RLS_TABLE}', '{FAST}', "
                         "min_similarity => 0.3)")
    assert ids_of(seen) <= set(SEEN)


def test_a_hidden_image_is_as_unknown_as_a_missing_one(db, tenants):
    reader = tenants("reader", options="")  # a session of its own: no SET of other tests
    messages = []
    for image_id in (HIDDEN[0], 999):  # hidden, and not in the table at all
        for call in (f"SELECT * FROM vision.similar({image_id}, 3, '{FAST}', "
                     f"source => '{RLS_TABLE}')",
                     f"SELECT * FROM vision.similar_many(ARRAY[{image_id}]::bigint[], 3, "
                     f"'{FAST}', source => '{RLS_TABLE}')",
                     f"SELECT * FROM vision.classify({image_id}, 'sec_kind', "
                     f"source => '{RLS_TABLE}')",
                     f"SELECT vision.record_vote('shopper', {image_id}, true, '{FAST}', "
                     f"'{RLS_TABLE}')"):
            with pytest.raises(psycopg2.Error) as refused:
                query(reader, call)
            messages.append(str(refused.value).split("\n")[0].replace(str(image_id), "N"))
    assert messages[:4] == messages[4:]
    assert all("has no features" in m or "have no features" in m for m in messages), messages


def test_learners_use_and_answer_only_visible_images(db, tenants):
    reader = tenants("reader", options="")  # a session of its own: no SET of other tests
    for image_id, liked in ((SEEN[0], True), (SEEN[1], False), (SEEN[2], True)):
        query(reader, "SELECT vision.record_vote('tenant_shopper', %s, %s, %s, %s)",
              (image_id, liked, FAST, RLS_TABLE))
    recommended = query(reader, "SELECT image_id FROM vision.recommend('tenant_shopper', 20, "
                                f"model => '{FAST}', source => '{RLS_TABLE}')")
    assert recommended and ids_of(recommended) <= set(SEEN)
    for _ in range(8):
        (_, image_id, _), = query(reader, "SELECT * FROM vision.bandit_next("
                                          f"'tenant_shopper', '{FAST}', '{RLS_TABLE}')")
        assert image_id in SEEN
    # labels of images the reader cannot see are labels of images without features
    with pytest.raises(pgerr.UndefinedObject, match=r"6 labelled image\(s\) have no features "
                                                    r"for model 'mobilenet_v2' \(e.g. \[1, 3, "
                                                    r"5, 7, 9\]\)"):
        query(reader, "SELECT * FROM vision.compare_classifiers('sec_tenant_labels', "
                      f"'{RLS_TABLE}', '{FAST}', ARRAY['knn'], folds => 2)")
    png = query(reader, f"SELECT vision.plot_map('{FAST}', 'cluster', '{RLS_TABLE}', "
                        "labels => 'id')")[0][0]
    assert bytes(png[:8]) == b"\x89PNG\r\n\x1a\n"


def test_readers_do_not_replace_what_the_owner_computed(db, shared):
    reader = shared("reader")
    before = snapshot(db)
    for call in (f"SELECT vision.cluster('{FAST}', 1, source => '{TABLE}')",
                 f"SELECT vision.refresh_neighbours('{TABLE}', '{FAST}', 2)",
                 f"SELECT vision.embed_2d('{FAST}', 'pca', '{TABLE}')"):
        with pytest.raises(pgerr.InsufficientPrivilege, match=r"only its owner \(pv_owner\) "
                                                               r"or vision_admin"):
            query(reader, call)
    assert snapshot(db) == before


def test_one_call_cannot_return_more_rows_than_an_admin_allows(db, shared):
    query(db, f"ALTER ROLE {ROLES['reader']} SET pgvision.max_result_rows = 20")
    try:
        limited = shared("reader", options="")  # a new session reads the role's setting
        with pytest.raises(pgerr.ProgramLimitExceeded,
                           match=r"vision.similar_many: rows \(image_ids x k\) = 24 is over "
                                 r"pgvision.max_result_rows \(20\)"):
            query(limited, f"SELECT * FROM vision.similar_many(ARRAY{IDS}::bigint[], 3, "
                           f"'{FAST}', source => '{TABLE}')")
        query(limited, "SET pgvision.max_result_rows = 0")  # a session cannot lift it
        with pytest.raises(pgerr.ProgramLimitExceeded):
            query(limited, f"SELECT * FROM vision.similar_many(ARRAY{IDS}::bigint[], 3, "
                           f"'{FAST}', source => '{TABLE}')")
        assert len(query(limited, f"SELECT * FROM vision.similar_many(ARRAY[1, 2]::bigint[], "
                                  f"3, '{FAST}', source => '{TABLE}')")) == 6
        query(db, f"ALTER ROLE {ROLES['reader']} SET pgvision.max_picture_images = 4")
        limited = shared("reader", options="")
        on_map = query(db, f"SELECT count(*) FROM vision.map_2d WHERE source = '{TABLE}'::"
                           "regclass")[0][0]
        assert on_map > 4
        with pytest.raises(pgerr.ProgramLimitExceeded,
                           match=rf"thumbnails \(images on the map\) = {on_map} is over "
                                 r"pgvision.max_picture_images \(4\)"):
            query(limited, f"SELECT vision.plot_map('{FAST}', 'cluster', '{TABLE}', "
                           "thumbnails => true)")
    finally:
        query(db, f"ALTER ROLE {ROLES['reader']} RESET ALL")


def test_row_level_security_without_an_extraction_uses_the_primary_key(db, shared):
    """Features written by other means (copied from another server): pgvision knows the id
    column by the table's primary key; without one it shows nothing rather than guess."""
    reader = shared("reader", options="")
    try:
        for table, key in (("sec_copied", "PRIMARY KEY"), ("sec_keyless", "")):
            query(db, f"CREATE TABLE {table} (id bigint {key}, tenant name)")
            query(db, f"INSERT INTO {table} SELECT i, CASE WHEN i %% 2 = 0 THEN %s END "
                      "FROM generate_series(1, 6) i", (ROLES["reader"],))
            query(db, f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            query(db, f"CREATE POLICY tenant ON {table} USING (tenant = current_user)")
            query(db, f"GRANT SELECT ON {table} TO {ROLES['reader']}")
            query(db, "INSERT INTO vision.features (model, source, image_id, feature) "
                      f"SELECT '{FAST}', '{table}'::regclass, i, ARRAY[i, 1]::real[] "
                      "FROM generate_series(1, 6) i")
        assert ids_of(query(reader, "SELECT image_id FROM vision.features "
                                    "WHERE source = 'sec_copied'::regclass")) == {2, 4, 6}
        assert query(reader, "SELECT count(*) FROM vision.features "
                             "WHERE source = 'sec_keyless'::regclass") == [(0,)]
    finally:
        query(db, "DROP TABLE IF EXISTS sec_copied, sec_keyless")
