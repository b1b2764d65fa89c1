"""pgvision 0.2.0: visual search (vision.similar, HNSW indexes, cached neighbours).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VERSION = "0.2.0"

# What sql/pgvision--0.1.0--0.2.0.sql added, newest first.


def upgrade():
    op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{VERSION}'")


def downgrade():
    # sql/pgvision--0.2.0--0.1.0.sql drops what 0.2.0 added
    op.execute("ALTER EXTENSION pgvision UPDATE TO '0.1.0'")
