"""pgvision 0.3.0: classification (train_classifier, classify, classify_table, compare).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VERSION = "0.3.0"


def upgrade():
    op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{VERSION}'")


def downgrade():
    # sql/pgvision--0.3.0--0.2.0.sql drops what 0.3.0 added
    op.execute("ALTER EXTENSION pgvision UPDATE TO '0.2.0'")
