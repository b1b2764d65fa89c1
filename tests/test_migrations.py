"""Alembic revisions walk up and down on a fresh database; versions agree everywhere."""

import importlib.util
import os
import subprocess
import sys

import psycopg2

import pgvision
from conftest import ROOT, SOCKET_DIR, extension_dir, query
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


def test_versions_have_one_source():
    """The package's version names the head revision, the installed control files and the
    installed full scripts, which are the head files sql/<extension>.sql."""
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
        head = sorted(f for f in os.listdir(os.path.join(ROOT, "migrations", "versions"))
                      if f.endswith(".py"))[-1].split("_")[0]
        assert f"{head} (head)" in alembic(fresh_db, "current").stdout
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
