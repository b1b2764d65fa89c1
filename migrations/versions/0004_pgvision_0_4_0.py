"""pgvision 0.4.0: recommendations, clusters, bandit, 2-D maps.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VERSION = "0.4.0"


def upgrade():
    op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{VERSION}'")


def downgrade():
    # sql/pgvision--0.4.0--0.3.0.sql drops what 0.4.0 added
    op.execute("ALTER EXTENSION pgvision UPDATE TO '0.3.0'")
