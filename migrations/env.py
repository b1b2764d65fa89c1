"""Alembic environment: the target is given as `-x dsn=<libpq URI or key=value string>` or
$PGVISION_DSN (`pgvision migrate` and `make migrate` use the variable, so the password never
shows on a command line or in output); empty means libpq's PG* variables.

pgvision keeps its revision in public.pgvision_alembic_version, so a database whose
application uses Alembic too keeps both histories apart. Not in schema vision: the first
revision creates that schema, and DROP EXTENSION drops it.
"""

import logging
import os
import sys

import psycopg2
from alembic import context
from sqlalchemy import create_engine, pool

# Revisions import migrations/extension.py (what a revision does to the extensions).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

VERSION_TABLE = "pgvision_alembic_version"


def target_dsn():
    x = context.get_x_argument(as_dictionary=True)
    return x.get("dsn") if "dsn" in x else os.environ.get("PGVISION_DSN", "")


def adopt_legacy_version(connection):
    """pgvision up to 0.9.0 kept its revision in public.alembic_version (Alembic's default
    table): move it to pgvision's own table where the row there is pgvision's, i.e. a
    revision of these scripts whose version the installed extension has."""
    from alembic.script import ScriptDirectory

    exists = connection.exec_driver_sql(
        "SELECT pg_catalog.to_regclass('public.alembic_version') IS NOT NULL, "
        f"pg_catalog.to_regclass('public.{VERSION_TABLE}') IS NOT NULL, "
        "(SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgvision')").one()
    legacy, ours, extversion = exists
    if not legacy or ours or extversion is None:
        return
    script = ScriptDirectory.from_config(context.config)
    versions = {r.revision: getattr(r.module, "VERSION", None) for r in script.walk_revisions()}
    for (revision,) in connection.exec_driver_sql(
            "SELECT version_num FROM public.alembic_version").all():
        if versions.get(revision) == extversion:
            connection.exec_driver_sql(
                f"CREATE TABLE public.{VERSION_TABLE} (version_num varchar(32) NOT NULL "
                f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY)")
            connection.exec_driver_sql(
                f"INSERT INTO public.{VERSION_TABLE} VALUES ('{revision}')")
            connection.exec_driver_sql(
                f"DELETE FROM public.alembic_version WHERE version_num = '{revision}'")
            if not connection.exec_driver_sql("SELECT 1 FROM public.alembic_version").first():
                connection.exec_driver_sql("DROP TABLE public.alembic_version")
            return


def adopt_installed_extension(connection):
    """Make pgvision's revision say what is installed: a database where pgvision was made
    with CREATE EXTENSION (no revision yet), or moved by hand with ALTER EXTENSION ... UPDATE,
    gets the revision of its installed version, so the next upgrade starts there and never
    walks the extension backwards. A version newer than these scripts know is refused."""
    from alembic.script import ScriptDirectory

    from extension import installed_version, parse_version

    installed = installed_version(connection)
    if installed is None:
        return
    script = ScriptDirectory.from_config(context.config)
    by_version = {getattr(r.module, "VERSION", None): r.revision for r in script.walk_revisions()}
    newest = max((v for v in by_version if v), key=parse_version)
    if parse_version(installed) > parse_version(newest):
        raise RuntimeError(
            f"the database runs pgvision {installed}, newer than these migrations know "
            f"(up to {newest}): refusing to touch it. Use the migrations of pgvision "
            f"{installed} or later.")
    revision = by_version.get(installed)
    if revision is None:
        raise RuntimeError(f"the database runs pgvision {installed}, which no revision of "
                           "these migrations installs: refusing to touch it.")
    connection.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS public.{VERSION_TABLE} (version_num varchar(32) NOT NULL "
        f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY)")
    current = connection.exec_driver_sql(
        f"SELECT version_num FROM public.{VERSION_TABLE}").scalar()
    if current != revision:
        connection.exec_driver_sql(f"DELETE FROM public.{VERSION_TABLE}")
        connection.exec_driver_sql(
            f"INSERT INTO public.{VERSION_TABLE} VALUES (%(r)s)", {"r": revision})


class ServerWarnings(logging.Handler):
    """The server's WARNINGs (an upgrade script's word to the user: a new default, what to run
    next) to stderr. PostgreSQL runs extension scripts with client_min_messages at WARNING or
    above, so nothing milder reaches anyone; SQLAlchemy hands a connection's notices to its
    dialect's logger at INFO and clears them."""

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("WARNING:"):
            sys.stderr.write(message + "\n")


def relay_server_warnings():
    log = logging.getLogger("sqlalchemy.dialects.postgresql")
    if not any(isinstance(h, ServerWarnings) for h in log.handlers):
        log.addHandler(ServerWarnings())
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)


def run_migrations_online():
    relay_server_warnings()
    dsn = target_dsn()
    engine = create_engine("postgresql+psycopg2://", poolclass=pool.NullPool,
                           creator=lambda: psycopg2.connect(dsn))
    with engine.connect() as connection:
        with connection.begin():
            adopt_legacy_version(connection)
            adopt_installed_extension(connection)
        context.configure(connection=connection, transactional_ddl=True,
                          version_table=VERSION_TABLE, version_table_schema="public")
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url="postgresql+psycopg2://", literal_binds=True,
                      version_table=VERSION_TABLE, version_table_schema="public")
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
