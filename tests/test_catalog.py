"""The head files (sql/pgvision.sql, sql/pgvision_cluster.sql) and the upgrade scripts agree:
a fresh install of the current version and an upgrade from the oldest supported version give
the same catalog, and a downgrade gives back the previous version's catalog."""

import psycopg2
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

import pgvision
from conftest import PORT, SOCKET_DIR, USER, dsn, query

OLDEST = {"pgvision": "0.1.0", "pgvision_cluster": "0.5.0"}
PREVIOUS = "0.9.0"
SCHEMAS = ("vision", "vision_cluster")

# Everything an extension script can create or change, by name (OIDs differ between
# databases); ACLs and config-dump lists as sorted sets (their order is an accident of the
# order of GRANTs), a default ACL (NULL) as what it means.
SNAPSHOT = {
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_arguments(p.oid),
               pg_get_function_result(p.oid), l.lanname, md5(p.prosrc), p.prokind,
               p.provolatile, p.proparallel, p.prosecdef, p.proisstrict, p.procost, p.prorows,
               p.proconfig, (SELECT array_agg(a::text ORDER BY a::text)
                             FROM unnest(coalesce(p.proacl, acldefault('f', p.proowner))) a),
               obj_description(p.oid, 'pg_proc')
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        JOIN pg_language l ON l.oid = p.prolang
        WHERE n.nspname = ANY(%(schemas)s) ORDER BY 1, 2, 3""",
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
               c.reloptions, (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(coalesce(
                 c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
                                      c.relowner))) a),
               obj_description(c.oid, 'pg_class'),
               CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s) ORDER BY 1, 2""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attstorage, a.attidentity,
               col_description(c.oid, a.attnum)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = ANY(%(schemas)s) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace::regnamespace::text = ANY(%(schemas)s)
        ORDER BY 1, 2""",
    "indexes": """
        SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = ANY(%(schemas)s) ORDER BY 1, 2, 3""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace::regnamespace::text = ANY(%(schemas)s) AND NOT t.tgisinternal
        ORDER BY 1, 2""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = ANY(%(schemas)s) ORDER BY 1, 2, 3""",
    "sequences": """
        SELECT schemaname, sequencename, data_type, start_value, increment_by
        FROM pg_sequences WHERE schemaname = ANY(%(schemas)s) ORDER BY 1, 2""",
    "schemas": """
        SELECT nspname, (SELECT array_agg(a::text ORDER BY a::text)
                         FROM unnest(coalesce(nspacl, acldefault('n', nspowner))) a),
               obj_description(oid, 'pg_namespace')
        FROM pg_namespace WHERE nspname = ANY(%(schemas)s) ORDER BY 1""",
    "event_triggers": """
        SELECT evtname, evtevent, evtfoid::regproc::text, evttags, evtenabled
        FROM pg_event_trigger ORDER BY 1""",
    "extensions": """
        SELECT e.extname, e.extversion,
               (SELECT array_agg(x ORDER BY x) FROM (
                  SELECT format('%%s %%s', c::regclass, coalesce(w, '')) AS x
                  FROM unnest(e.extconfig, e.extcondition) AS u (c, w)) AS config)
        FROM pg_extension e WHERE e.extname LIKE 'pgvision%%' ORDER BY 1""",
    "members": """
        SELECT e.extname, pg_describe_object(d.classid, d.objid, d.objsubid)
        FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
        WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
          AND e.extname LIKE 'pgvision%%' ORDER BY 1, 2""",
    "database_settings": """
        SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
        WHERE d.datname = current_database() AND s.setrole = 0""",
}


def snapshot(conn):
    return {name: query(conn, sql, {"schemas": list(SCHEMAS)}) for name, sql in SNAPSHOT.items()}


def assert_same_catalog(expected, actual):
    for name in SNAPSHOT:
        only_expected = [r for r in expected[name] if r not in actual[name]]
        only_actual = [r for r in actual[name] if r not in expected[name]]
        assert not only_expected and not only_actual, (
            f"{name} differ:\n  only in the fresh install: {only_expected}\n"
            f"  only after the upgrade: {only_actual}")


@pytest.fixture
def two_databases(server):
    names = ("pgvision_catalog_a", "pgvision_catalog_b")
    janitors = [DatabaseJanitor(user=USER, host=SOCKET_DIR, port=PORT, dbname=name)
                for name in names]
    conns = []
    for janitor in janitors:
        janitor.drop()
        janitor.init()
    try:
        for name in names:
            conn = psycopg2.connect(dsn(name))
            conn.autocommit = True
            conns.append(conn)
        yield conns
    finally:
        for conn in conns:
            conn.close()
        for janitor in janitors:
            janitor.drop()


def test_a_fresh_install_equals_an_upgrade_from_the_oldest_version(two_databases):
    fresh, upgraded = two_databases
    query(fresh, "CREATE EXTENSION pgvision_cluster CASCADE")
    query(upgraded, f"CREATE EXTENSION pgvision VERSION '{OLDEST['pgvision']}' CASCADE")
    query(upgraded, f"CREATE EXTENSION pgvision_cluster VERSION '{OLDEST['pgvision_cluster']}' "
                    "CASCADE")
    query(upgraded, "ALTER EXTENSION pgvision UPDATE")
    query(upgraded, "ALTER EXTENSION pgvision_cluster UPDATE")
    expected = snapshot(fresh)
    assert [r[:2] for r in expected["extensions"]] == [
        ("pgvision", pgvision.__version__), ("pgvision_cluster", pgvision.__version__)]
    assert len(expected["functions"]) > 50 and expected["policies"] is not None
    assert_same_catalog(expected, snapshot(upgraded))
    # the coordinator's PL/Python functions pin search_path, but those that resolve a text
    # table name as the caller wrote it, and the procedures that commit (a SET clause would
    # forbid it): they pin it themselves, then
    unpinned = {name for _, name, _, _, lang, *_, config, _, _ in expected["functions"]
                if lang == "plpython3u" and config is None}
    assert unpinned == {"extract_table", "maintain", "train_classifier", "record_vote",
                        "recommend", "compact_features"}, unpinned


def test_a_downgrade_gives_back_the_previous_version(two_databases):
    previous, downgraded = two_databases
    for conn in two_databases:
        query(conn, f"CREATE EXTENSION pgvision VERSION '{OLDEST['pgvision']}' CASCADE")
        query(conn, f"CREATE EXTENSION pgvision_cluster VERSION '{OLDEST['pgvision_cluster']}' "
                    "CASCADE")
    for extension in ("pgvision", "pgvision_cluster"):
        query(previous, f"ALTER EXTENSION {extension} UPDATE TO '{PREVIOUS}'")
        query(downgraded, f"ALTER EXTENSION {extension} UPDATE")
    for extension in ("pgvision_cluster", "pgvision"):
        with pytest.raises(psycopg2.errors.ObjectNotInPrerequisiteState,
                           match="refusing to downgrade"):
            query(downgraded, f"ALTER EXTENSION {extension} UPDATE TO '{PREVIOUS}'")
    query(downgraded, "SET pgvision.allow_downgrade = on")  # asked for explicitly
    for extension in ("pgvision_cluster", "pgvision"):
        query(downgraded, f"ALTER EXTENSION {extension} UPDATE TO '{PREVIOUS}'")
    assert_same_catalog(snapshot(previous), snapshot(downgraded))
