"""Alembic environment: the target is given as `-x dsn=<libpq URI>` (or $PGVISION_DSN)."""

import os
import sys

from alembic import context
from sqlalchemy import create_engine, pool

# Revisions import migrations/extension.py (what a revision does to the extensions).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def target_url():
    dsn = context.get_x_argument(as_dictionary=True).get("dsn") or os.environ.get("PGVISION_DSN")
    if not dsn:
        raise SystemExit("pgvision migrations: pass -x dsn=postgresql://... or set PGVISION_DSN")
    # libpq URIs (postgresql://...) go to SQLAlchemy's psycopg2 dialect unchanged.
    return dsn.replace("postgresql://", "postgresql+psycopg2://", 1) if dsn.startswith(
        "postgresql://") else dsn


def run_migrations_online():
    engine = create_engine(target_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=target_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
