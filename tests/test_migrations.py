"""Alembic revisions walk up and down on a fresh database; versions agree everywhere."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import psycopg2

import pytest

import pgvision
import stored_rows
from conftest import ROOT, SOCKET_DIR, extension_dir, image_bytes, query
ALEMBIC = [sys.executable, "-m", "alembic", "-c", os.path.join(ROOT, "migrations", "alembic.ini")]


def alembic(dbname, *args):
    dsn = f"postgresql://postgres@/{dbname}?host={SOCKET_DIR}&port=5432"
    return subprocess.run([*ALEMBIC, "-x", f"dsn={dsn}", *args], check=True,
                          capture_output=True, text=True)


def head_revision_version():
    sys.path.insert(0, os.path.join(ROOT, "migrations"))  # as env.py does for the revisions
    versions = os.path.join(ROOT, "migrations", "versions")
    heads = [f for f in sorted(os.listdir(versions)) if f.endswith(".py")]
    spec = importlib.util.spec_from_file_location("head", os.path.join(versions, heads[-1]))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VERSION


@pytest.mark.install
def test_versions_have_one_source():
    """The package's version names the head revision, the installed control files and the
    installed full scripts, which are the head files sql/<extension>.sql (it reads what
    make install wrote, so it is outside the fast tier)."""
    version = pgvision.__version__
    assert head_revision_version() == version
    for extension in ("pgvision", "pgvision_cluster"):
        with open(os.path.join(extension_dir(), f"{extension}.control")) as control:
            assert f"default_version = '{version}'" in control.read()
        with open(os.path.join(extension_dir(), f"{extension}--{version}.sql")) as installed, \
                open(os.path.join(ROOT, "sql", f"{extension}.sql")) as head:
            assert installed.read() == head.read()
        assert not os.path.exists(os.path.join(ROOT, "sql", f"{extension}--{version}.sql")), \
            "the full script of the current version is made from the head file, not kept"


def test_upgrade_downgrade_upgrade(fresh_db):
    conn = psycopg2.connect(host=SOCKET_DIR, port=5432, user="postgres", dbname=fresh_db)
    conn.autocommit = True
    try:
        alembic(fresh_db, "upgrade", "head")
        assert query(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pgvision'") == \
            [(pgvision.__version__,)]
        assert query(conn, "SELECT count(*) > 0 FROM vision.models")[0][0]
        assert f"{head_revision()} (head)" in alembic(fresh_db, "current").stdout
        alembic(fresh_db, "downgrade", "0001")
        assert query(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pgvision'") == \
            [("0.1.0",)]
        assert not query(conn, "SELECT 1 FROM pg_proc WHERE proname = 'similar'")
        alembic(fresh_db, "upgrade", "head")
        assert query(conn, "SELECT 1 FROM pg_proc WHERE proname = 'similar'")
        alembic(fresh_db, "downgrade", "base")
        assert not query(conn, "SELECT 1 FROM pg_extension WHERE extname = 'pgvision'")
        assert not query(conn, "SELECT 1 FROM pg_namespace WHERE nspname = 'vision'")
        alembic(fresh_db, "upgrade", "head")
        assert query(conn, "SELECT 1 FROM pg_namespace WHERE nspname = 'vision'")
    finally:
        conn.close()


def test_a_coordinator_upgrades_pgvision_cluster_with_pgvision(fresh_db):
    """Alembic's 0006 also updates pgvision_cluster (same version), and walks it back down."""
    conn = psycopg2.connect(host=SOCKET_DIR, port=5432, user="postgres", dbname=fresh_db)
    conn.autocommit = True
    versions = "SELECT extname, extversion FROM pg_extension WHERE extname LIKE 'pgvision%' " \
               "ORDER BY 1"
    try:
        alembic(fresh_db, "upgrade", "0005")
        query(conn, "CREATE EXTENSION pgvision_cluster VERSION '0.5.0' CASCADE")
        alembic(fresh_db, "upgrade", "0006")
        assert query(conn, versions) == [("pgvision", "0.6.0"), ("pgvision_cluster", "0.6.0")]
        assert query(conn, "SELECT to_regproc('vision_cluster.recommend') IS NOT NULL")[0][0]
        alembic(fresh_db, "downgrade", "0005")
        assert query(conn, versions) == [("pgvision", "0.5.0"), ("pgvision_cluster", "0.5.0")]
        assert query(conn, "SELECT to_regproc('vision_cluster.recommend') IS NULL")[0][0]
        alembic(fresh_db, "upgrade", "head")
        assert query(conn, versions) == [("pgvision", pgvision.__version__),
                                         ("pgvision_cluster", pgvision.__version__)]
    finally:
        conn.close()


APP_ENV = '''
from alembic import context
from sqlalchemy import create_engine, pool
import os
engine = create_engine(os.environ["APP_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
'''
APP_REVISION = '''
from alembic import op
revision = "0001"  # the same id as pgvision's first revision: the histories stay apart
down_revision = None
branch_labels = None
depends_on = None
def upgrade():
    op.execute("CREATE TABLE app_orders (id int PRIMARY KEY)")
def downgrade():
    op.execute("DROP TABLE app_orders")
'''


def pgvision_migrate(dbname, *args, password=None, returncode=0):
    """`pgvision migrate` with DATABASE_URL (a password in it, which trust auth ignores)."""
    secret = f":{password}" if password else ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["DATABASE_URL"] = f"postgresql://postgres{secret}@/{dbname}?host={SOCKET_DIR}&port=5432"
    done = subprocess.run([os.path.join(sys.prefix, "bin", "pgvision"), "migrate", *args],
                          capture_output=True, text=True, env=env)
    assert done.returncode == returncode, done.stderr
    return done


def test_pgvision_keeps_its_revision_apart_from_an_applications_alembic(fresh_db, tmp_path):
    app = tmp_path / "app"
    (app / "versions").mkdir(parents=True)
    (app / "env.py").write_text(APP_ENV)
    (app / "script.py.mako").write_text("")
    (app / "versions" / "0001_orders.py").write_text(APP_REVISION)
    (tmp_path / "alembic.ini").write_text(f"[alembic]\nscript_location = {app}\n")
    app_env = dict(os.environ, APP_URL="postgresql+psycopg2://postgres@/"
                   f"{fresh_db}?host={SOCKET_DIR}&port=5432")

    def app_alembic(*args):
        return subprocess.run([sys.executable, "-m", "alembic", "-c",
                               str(tmp_path / "alembic.ini"), *args], check=True,
                              capture_output=True, text=True, env=app_env).stdout

    app_alembic("upgrade", "head")
    done = pgvision_migrate(fresh_db, password="s3cret-in-the-url")
    assert "s3cret" not in done.stdout + done.stderr
    assert f"revision none -> {head_revision()}" in done.stderr
    conn = psycopg2.connect(host=SOCKET_DIR, port=5432, user="postgres", dbname=fresh_db)
    conn.autocommit = True
    try:
        assert query(conn, "SELECT version_num FROM public.alembic_version") == [("0001",)]
        assert query(conn, "SELECT version_num FROM public.pgvision_alembic_version") == \
            [(head_revision(),)]
        assert "0001 (head)" in app_alembic("current")
        pgvision_migrate(fresh_db, "--to", "0009")
        assert query(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pgvision'") \
            == [("0.9.0",)]
        app_alembic("downgrade", "base")
        assert query(conn, "SELECT to_regclass('app_orders')") == [(None,)]
        pgvision_migrate(fresh_db)
        assert query(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pgvision'") \
            == [(pgvision.__version__,)]
    finally:
        conn.close()


def test_a_database_migrated_before_0_10_moves_its_revision_to_pgvision_table(fresh_db):
    """pgvision up to 0.9.0 kept its revision in public.alembic_version."""
    pgvision_migrate(fresh_db, "--to", "0009")
    conn = psycopg2.connect(host=SOCKET_DIR, port=5432, user="postgres", dbname=fresh_db)
    conn.autocommit = True
    try:
        query(conn, "ALTER TABLE public.pgvision_alembic_version RENAME TO alembic_version")
        query(conn, "ALTER TABLE public.alembic_version RENAME CONSTRAINT "
                    "pgvision_alembic_version_pkc TO alembic_version_pkc")  # as 0.9.0 left it
        done = pgvision_migrate(fresh_db)
        assert f"revision (extension 0.9.0) -> {head_revision()}" in done.stderr
        assert query(conn, "SELECT to_regclass('public.alembic_version')") == [(None,)]
        assert query(conn, "SELECT version_num FROM public.pgvision_alembic_version") == \
            [(head_revision(),)]
        assert query(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pgvision'") \
            == [(pgvision.__version__,)]
    finally:
        conn.close()


def test_make_migrate_never_shows_the_password(fresh_db):
    url = f"postgresql://postgres:s3cret-in-make@/{fresh_db}?host={SOCKET_DIR}&port=5432"
    done = subprocess.run(["make", "-C", ROOT, "migrate", f"DSN={url}"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    assert f"migrating postgresql://postgres@{SOCKET_DIR}/{fresh_db} to head" in done.stderr
    assert "pgvision revision none -> " in done.stderr


def head_revision():
    versions = os.path.join(ROOT, "migrations", "versions")
    return sorted(f for f in os.listdir(versions) if f.endswith(".py"))[-1].split("_")[0]


# --- nothing lost: every installed version x every command, checked by row checksums --------

def revision_versions():
    """[(revision, extension version)] of the Alembic scripts, oldest first."""
    sys.path.insert(0, os.path.join(ROOT, "migrations"))
    versions = os.path.join(ROOT, "migrations", "versions")
    found = []
    for name in sorted(f for f in os.listdir(versions) if f.endswith(".py")):
        spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(versions, name))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.append((module.revision, module.VERSION))
    return found


VERSIONS = [version for _, version in revision_versions()]
# Derived rows that an upgrade rebuilds in a new form, each announced when it happens:
# 0.7.0 made vision.bandit_state a view over votes and clusters; 0.8.0 stores indexes in a new
# format and says (WARNING) which ones to build again.
REBUILT_BY = {"vision.bandit_state": "0.7.0", "vision.indexes": "0.8.0"}
# Tables an upgrade renamed, with the rows and columns they had: 0.17.0 stores features in
# vision.stored_features (and shows them through the view vision.features).
RENAMED = {"vision.features": "vision.stored_features"}


def extversion(conn):
    return query(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pgvision'")[0][0]


def parse(version):
    return tuple(int(part) for part in version.split("."))


@pytest.mark.parametrize("installed", VERSIONS)
def test_migrate_keeps_every_row_of_a_database_made_with_create_extension(fresh_db, installed):
    """The documented path without Alembic (CREATE EXTENSION, docs/operations.md), at any version, then `pgvision
    migrate`, twice, then Alembic itself: every row of every table is still there, equal in
    every column the installed version had. 0.10.0's migrate walked a 0.10.0 database down to
    0.2.0 and back, deleting classifiers, votes, indexes, clusters, maps and snapshots."""
    conn = psycopg2.connect(host=SOCKET_DIR, port=5432, user="postgres", dbname=fresh_db)
    conn.autocommit = True
    try:
        query(conn, f"CREATE EXTENSION pgvision VERSION '{installed}' CASCADE")
        filled = stored_rows.fill(conn)
        had = stored_rows.columns(conn)
        before = stored_rows.checksums(conn)
        assert all(count >= 1 for count, _ in before.values()), before
        done = pgvision_migrate(fresh_db)
        assert f"revision (extension {installed}) -> {head_revision()}" in done.stderr
        assert extversion(conn) == pgvision.__version__
        kept = {table: cols for table, cols in had.items()
                if parse(installed) >= parse(REBUILT_BY.get(table, "0.0.0"))}
        after = stored_rows.checksums(conn, {RENAMED.get(t, t): c for t, c in kept.items()})
        for table in kept:
            assert after.get(RENAMED.get(table, table)) == before[table], \
                f"{table} changed: {filled}"
        now = stored_rows.checksums(conn)
        pgvision_migrate(fresh_db)
        alembic(fresh_db, "upgrade", "head")
        assert stored_rows.checksums(conn) == now
        assert f"{head_revision()} (head)" in alembic(fresh_db, "current").stdout
    finally:
        conn.close()


def test_migrate_adopts_a_version_moved_by_hand(fresh_db):
    """Alembic's row says 0005, ALTER EXTENSION moved the extension to the newest version by
    hand: migrate starts from what is installed, not from its row."""
    conn = psycopg2.connect(host=SOCKET_DIR, port=5432, user="postgres", dbname=fresh_db)
    conn.autocommit = True
    try:
        pgvision_migrate(fresh_db, "--to", "0005")
        query(conn, "ALTER EXTENSION pgvision UPDATE")
        stored_rows.fill(conn)
        before = stored_rows.checksums(conn)
        done = pgvision_migrate(fresh_db)
        assert f"revision 0005 -> {head_revision()}" in done.stderr
        assert stored_rows.checksums(conn) == before
        assert extversion(conn) == pgvision.__version__
    finally:
        conn.close()


@pytest.fixture
def filled_at_head(fresh_db):
    """A database migrated to the head revision with one row in every table: (connection,
    checksums of what it stores)."""
    conn = psycopg2.connect(host=SOCKET_DIR, port=5432, user="postgres", dbname=fresh_db)
    conn.autocommit = True
    pgvision_migrate(fresh_db)
    stored_rows.fill(conn)
    yield conn, stored_rows.checksums(conn)
    conn.close()


def test_a_downgrade_that_would_delete_rows_is_refused_unless_asked(fresh_db, filled_at_head):
    conn, before = filled_at_head
    # 0.16.0 -> 0.15.0 drops the text of images: refused, nothing moved (0.17.0 -> 0.16.0
    # before it neither)
    done = pgvision_migrate(fresh_db, "--to", "0015", returncode=1)
    assert "refusing the downgrade of pgvision to 0.15.0" in done.stderr
    assert "table vision.image_text (1 rows)" in done.stderr, done.stderr
    assert extversion(conn) == pgvision.__version__
    assert stored_rows.checksums(conn) == before
    query(conn, "DELETE FROM vision.image_text")
    before = stored_rows.checksums(conn)
    # 0.8.0 -> 0.7.0 drops the snapshot, change and index tables: refused, nothing moved
    done = pgvision_migrate(fresh_db, "--to", "0007", returncode=1)
    assert "refusing the downgrade of pgvision to 0.7.0" in done.stderr
    for table in ("vision.feature_snapshots", "vision.feature_changes",
                  "vision.index_chunks"):
        assert f"table {table} (" in done.stderr
    assert "--allow-data-loss" in done.stderr
    assert extversion(conn) == pgvision.__version__
    assert stored_rows.checksums(conn) == before
    with pytest.raises(psycopg2.errors.ObjectNotInPrerequisiteState,
                       match="refusing to downgrade from"):
        query(conn, f"ALTER EXTENSION pgvision UPDATE TO '{VERSIONS[-2]}'")
    assert stored_rows.checksums(conn) == before
    with pytest.raises(subprocess.CalledProcessError) as refused:
        alembic(fresh_db, "downgrade", "base")
    assert "it would delete stored rows" in refused.value.stderr
    assert stored_rows.checksums(conn) == before
    # asked for: it goes
    pgvision_migrate(fresh_db, "--to", "0007", "--allow-data-loss")
    assert extversion(conn) == "0.7.0"
    assert query(conn, "SELECT to_regclass('vision.feature_snapshots')") == [(None,)]


def test_a_downgrade_that_deletes_nothing_needs_no_flag(fresh_db, filled_at_head):
    """0.17.0 -> 0.16.0 gives vision.features its table back, every row in real[] holding
    the values it held (half-precision rows convert): nothing lost, so no flag is needed;
    and back up again."""
    conn, _ = filled_at_head
    query(conn, "INSERT INTO vision.features (model, source, image_id, feature) VALUES "
                "('users_model', 'public.migrated_images', 2, %s::real[])", ([0.5, 0.1] * 150,))
    assert query(conn, "SELECT count(half), count(feature) FROM vision.stored_features") == \
        [(1, 1)]
    features = ("SELECT model, source::text, image_id, feature, extracted_at "
                "FROM vision.features ORDER BY 1, 2, 3")
    held = query(conn, features)
    # what half precision holds of 0.1
    assert np.float32(held[1][3][1]) == np.float32(np.float16(0.1)) != np.float32(0.1)
    # 0.18.0 -> 0.17.0 drops the index method columns, which hold only 'hnsw' here
    older = {"vision.indexes": [c for c in stored_rows.columns(conn)["vision.indexes"]
                                if c not in ("method", "lists", "probes")]}
    before = stored_rows.checksums(conn, older)
    pgvision_migrate(fresh_db, "--to", "0016")  # through 0.17.0
    assert extversion(conn) == "0.16.0"
    assert query(conn, "SELECT relkind FROM pg_class WHERE oid = 'vision.features'::regclass") \
        == [("r",)]
    assert query(conn, features) == held
    others = {t: sums for t, sums in before.items() if t != "vision.stored_features"}
    down = stored_rows.checksums(conn)
    assert {t: sums for t, sums in down.items() if t != "vision.features"} == others
    pgvision_migrate(fresh_db)
    assert query(conn, features) == held
    assert {t: sums for t, sums in stored_rows.checksums(conn, older).items()
            if t != "vision.stored_features"} == others
    assert query(conn, "SELECT method, lists, probes FROM vision.indexes") == [("hnsw", None, None)]


def test_a_downgrade_below_0_15_is_refused_while_tables_hold_hashes_or_content_scores(
        fresh_db, filled_at_head):
    """0.14.0 can neither compute perceptual hashes nor feed a model as TF.js does: their
    features would be orphaned, so the downgrade stops, even when asked, and moves nothing."""
    conn, _ = filled_at_head
    query(conn, "CREATE TABLE hashed (id bigint PRIMARY KEY, image bytea)")
    query(conn, "INSERT INTO hashed VALUES (1, %s)", (psycopg2.Binary(image_bytes(3)),))
    for model in ("perceptual_hash", "nsfwjs_mobilenet_v2"):
        query(conn, f"CALL vision.extract_table('hashed', model => '{model}')")
        before = stored_rows.checksums(conn)
        done = pgvision_migrate(fresh_db, "--to", "0014", "--allow-data-loss", returncode=1)
        assert "refusing to downgrade to 0.14.0" in done.stderr, done.stderr
        assert extversion(conn) == pgvision.__version__
        assert stored_rows.checksums(conn) == before
        query(conn, "DELETE FROM vision.features WHERE source = 'hashed'::regclass")


def test_the_upgrade_to_0_19_names_the_new_default_and_moves_no_feature(fresh_db):
    """0.18.0 -> 0.19.0 points every model DEFAULT at inception_v3_mixed6_grid_224, warns
    (pgvision migrate prints it) where a table holds the earlier default's features, and
    changes none of them; the way back restores the defaults and keeps the new model."""
    conn = psycopg2.connect(host=SOCKET_DIR, port=5432, user="postgres", dbname=fresh_db)
    conn.autocommit = True
    defaults = ("SELECT pg_catalog.pg_get_function_arguments('vision.similar(bigint, integer, "
                "text, text, regclass, bigint[], boolean)'::regprocedure)")
    warning = ("CALL vision.maintain('your_table', add_model => "
               "'inception_v3_mixed6_grid_224')")
    try:
        query(conn, "CREATE EXTENSION pgvision VERSION '0.18.0' CASCADE; "
                    "CREATE TABLE moved (id bigint PRIMARY KEY, image bytea)")
        query(conn, "INSERT INTO vision.features (model, source, image_id, feature) VALUES "
                    "('inception_v3_mixed6_grid', 'moved', 1, %s::real[])",
              (np.linspace(0, 2, 3840).tolist(),))
        features = "SELECT model, image_id, feature FROM vision.features ORDER BY 1, 2"
        held = query(conn, features)
        assert "model text DEFAULT 'inception_v3_mixed6_grid'::text" in query(conn, defaults)[0][0]
        done = pgvision_migrate(fresh_db)
        assert "WARNING:  pgvision 0.19.0: the default model is now " \
            "inception_v3_mixed6_grid_224" in done.stderr and warning in done.stderr
        assert "DEFAULT 'inception_v3_mixed6_grid_224'::text" in query(conn, defaults)[0][0]
        assert query(conn, "SELECT input_height FROM vision.models "
                           "WHERE name = 'inception_v3_mixed6_grid_224'") == [(224,)]
        assert query(conn, features) == held
        query(conn, "BEGIN; SET LOCAL pgvision.allow_downgrade = on; "
                    "ALTER EXTENSION pgvision UPDATE TO '0.18.0'; COMMIT")
        assert "model text DEFAULT 'inception_v3_mixed6_grid'::text" in query(conn, defaults)[0][0]
        assert query(conn, "SELECT 1 FROM vision.models "
                           "WHERE name = 'inception_v3_mixed6_grid_224'") == [(1,)]
        assert query(conn, features) == held
        query(conn, "ALTER EXTENSION pgvision UPDATE TO '0.19.0'")  # by hand: psql shows it
        assert any(n.startswith("WARNING:") and warning in n for n in conn.notices)
    finally:
        conn.close()
