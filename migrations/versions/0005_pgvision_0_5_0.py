"""pgvision 0.5.0: scale-out (parallel extraction, model-backend cap, shard functions).

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

VERSION = "0.5.0"


def upgrade():
    op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{VERSION}'")


def downgrade():
    # sql/pgvision--0.5.0--0.4.0.sql drops what 0.5.0 added
    op.execute("ALTER EXTENSION pgvision UPDATE TO '0.4.0'")
