"""pgvision 0.1.0: create the extension (schema vision, model registry, features tables).

Each later extension version adds one revision that runs ALTER EXTENSION pgvision UPDATE TO
'<version>' (the SQL lives in sql/pgvision--<from>--<to>.sql), and its downgrade the reverse
of what that script did.

Revision ID: 0001
Revises:
"""

from alembic import op

from extension import drop_extension

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

VERSION = "0.1.0"


def upgrade():
    op.execute(f"CREATE EXTENSION IF NOT EXISTS pgvision VERSION '{VERSION}' CASCADE")


def downgrade():
    # Drops the schema vision: refused while it holds users' rows, unless data loss is asked for.
    drop_extension(op)
